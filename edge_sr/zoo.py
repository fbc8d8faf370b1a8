"""Bundling trained models into the package and writing docs/MODEL_ZOO.md from measurements.

    python -m edge_sr.zoo bundle runs/ecbsr_m4c16_x2            # best checkpoint -> edge_sr/weights/
    python -m edge_sr.zoo report --data ../shared/data/benchmarks  # measure every bundled model -> MODEL_ZOO.md

A bundled file is the run's best checkpoint (selected on images held out of the training folders, never
on the benchmarks reported here), in train form, with the training-only ``collapsed`` flag dropped from
its arguments (same parameters, multi-branch forward), and the run's step count, wall time and recipe
in its metadata.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from edge_sr.errors import CheckpointError
from edge_sr.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from edge_sr.weights import WEIGHTS_DIR, bundled_checkpoints

# Published results, Y-PSNR / SSIM on Set5 and Set14 (FSRCNN: Dong et al. ECCV 2016, trained on T91 +
# General-100; ESPCN: Shi et al. CVPR 2016, trained on the 91 images, x3 only).
PUBLISHED: dict[str, dict[int, dict[str, tuple[float, float | None]]]] = {
    "FSRCNN (12 K params)": {
        2: {"Set5": (37.00, 0.9558), "Set14": (32.63, 0.9088)},
        3: {"Set5": (33.16, 0.9140), "Set14": (29.43, 0.8242)},
        4: {"Set5": (30.71, 0.8657), "Set14": (27.59, 0.7535)},
    },
    "ESPCN (91 images)": {3: {"Set5": (32.55, None), "Set14": (29.08, None)}},
}
TRAINING_ONLY_ARGS = ("collapsed",)


def bundle(run_dir: str | Path, *, name: str | None = None, init: str | None = None) -> Path:
    """Copy ``<run>/best.safetensors`` into the package as ``<arch>_x<scale>.safetensors``.

    ``init``: the ``--init`` checkpoint the run started from (default: the one ``<run>/init.json`` records),
    kept in the metadata so the zoo's reproduce command names it.
    """
    run = Path(run_dir)
    if init is None and (run / "init.json").is_file():
        init = json.loads((run / "init.json").read_text()).get("init")
    src = run / "best.safetensors"
    meta = read_metadata(src)
    model = load_checkpoint(src)
    args = {k: v for k, v in meta["args"].items() if k not in TRAINING_ONLY_ARGS}
    last = run / "metrics.jsonl"
    records = [json.loads(x) for x in last.read_text().splitlines()] if last.exists() else []
    steps = max((r["step"] for r in records), default=0)
    seconds = max((r.get("elapsed_s", 0.0) for r in records), default=0.0)
    extra = {
        "step": meta.get("step", ""),
        "val_psnr": meta.get("val_psnr", ""),
        "train_steps": str(steps),
        "train_seconds": str(seconds),
        "recipe": f"configs/{run.name}.yaml",
    }
    if init:
        extra["init"] = str(init)
    out = WEIGHTS_DIR / f"{name or meta['arch']}_x{meta['scale']}.safetensors"
    save_checkpoint(model, out, arch=meta["arch"], args=args, form="train", extra=extra)
    return out


def _eval(ckpt: Any, data: Path, scale: int) -> dict[str, tuple[float, float]]:
    from edge_sr.evaluate import evaluate

    out = {}
    for bench in ("Set5", "Set14"):
        r = evaluate(data / bench, scale, ckpt)
        out[bench] = (r.psnr, r.ssim)
    return out


def report(data: str | Path, out: str | Path = "docs/MODEL_ZOO.md") -> Path:
    """Measure every bundled model on Set5 / Set14 and rewrite the ``zoo`` section of ``out``."""
    from edge_sr.models.stats import count_params, macs_per_lr_pixel
    from edge_sr.reparam import reparameterize
    from edge_sr.report import update_section

    data = Path(data)
    rows = [
        "| model | scale | params (train / deploy) | deploy MACs per LR px | Set5 PSNR / SSIM | Set14 PSNR / SSIM "
        "| training steps | wall time | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    bundled = bundled_checkpoints()
    if not bundled:
        raise CheckpointError(WEIGHTS_DIR, "no bundled checkpoints to report")
    for arch, scales in sorted(bundled.items()):
        for scale, path in sorted(scales.items()):
            meta = read_metadata(path)
            model = load_checkpoint(path)
            deploy = reparameterize(model)
            m = _eval(path, data, scale)
            b = _eval("bicubic", data, scale)
            hours = float(meta.get("train_seconds") or 0) / 3600
            init = f" --init {meta['init']}" if meta.get("init") else ""
            act = (meta.get("args") or {}).get("act")
            label = f"{arch} ({act})" if act else arch
            cmd = f"`edge-sr train {meta.get('recipe', '')}{init}`, then `edge-sr eval --checkpoint {path.name} --data DIR --scale {scale}`"
            rows.append(
                f"| **{label}** | x{scale} | {count_params(model):,} / {count_params(deploy):,} "
                f"| {macs_per_lr_pixel(deploy, scale):,.0f} | **{m['Set5'][0]:.2f} / {m['Set5'][1]:.4f}** "
                f"| **{m['Set14'][0]:.2f} / {m['Set14'][1]:.4f}** | {meta.get('train_steps', '?')} | {hours:.2f} h | {cmd} |"
            )
            rows.append(
                f"| bicubic | x{scale} | - | - | {b['Set5'][0]:.2f} / {b['Set5'][1]:.4f} "
                f"| {b['Set14'][0]:.2f} / {b['Set14'][1]:.4f} | - | - | `edge-sr eval --model bicubic --scale {scale} --data DIR` |"
            )
            for name, table in PUBLISHED.items():
                if scale in table:
                    s5, s14 = table[scale]["Set5"], table[scale]["Set14"]
                    fmt = lambda v: f"{v[0]:.2f}" + (f" / {v[1]:.4f}" if v[1] else "")  # noqa: E731
                    rows.append(
                        f"| {name}, published | x{scale} | - | - | {fmt(s5)} | {fmt(s14)} | - | - | - |"
                    )
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    text = (
        "Y-channel PSNR / SSIM, `scale` pixels shaved, on the shipped bicubic LR of ../shared/data/benchmarks "
        "(the `edge-sr eval` protocol). Checkpoints were selected on images held out of the training folders.\n"
        f"Measured with `python -m edge_sr.zoo report --data {data}` ({machine}).\n\n" + "\n".join(rows)
    )
    return update_section(out, "zoo", text, title="Model zoo")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_sr.zoo")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("run_dir")
    b.add_argument("--init", help="the --init checkpoint the run started from (default: <run>/init.json)")
    r = sub.add_parser("report")
    r.add_argument("--data", default="../shared/data/benchmarks")
    r.add_argument("--out", default="docs/MODEL_ZOO.md")
    args = p.parse_args(argv)
    if args.cmd == "bundle":
        print(bundle(args.run_dir, init=args.init))
    else:
        print(report(args.data, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
