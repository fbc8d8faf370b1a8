"""Bundling a trained model into the package (its table in docs/MODEL_ZOO.md: ``edge-sr bench zoo``).

    python -m edge_sr.zoo bundle runs/ecbsr_m4c16_x2            # best checkpoint -> edge_sr/weights/
    python -m edge_sr.zoo bundle runs/ecbvsr_m4c16_x4_bd --name ecbvsr_m4c16_bd   # -> ecbvsr_m4c16_bd_x4

A bundled file is the run's best checkpoint (selected on images held out of the training folders, never
on the benchmarks reported here), in train form, with the training-only ``collapsed`` flag dropped from
its arguments (same parameters, multi-branch forward), and the run's step count, wall time and recipe
in its metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge_sr.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from edge_sr.weights import WEIGHTS_DIR

TRAINING_ONLY_ARGS = ("collapsed",)


def _wall_seconds(records: list[dict[str, Any]]) -> float:
    """A run's training wall time from its metrics: each sitting's clock restarts at a ``--resume`` (its
    ``elapsed_s`` falls), so the sittings' last readings add up."""
    total, last = 0.0, 0.0
    for r in records:
        t = float(r.get("elapsed_s", 0.0))
        if t < last:
            total += last
        last = t
    return round(total + last, 1)


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
    seconds = _wall_seconds(records)
    extra = {
        "step": meta.get("step", ""),
        "val_psnr": meta.get("val_psnr", ""),
        "train_steps": str(steps),
        "train_seconds": str(seconds),
        "recipe": f"configs/{run.name}.yaml",
    }
    if init:
        extra["init"] = str(init)
    degradation = _video_degradation(run, meta["arch"])
    if degradation:  # a video model's LR degradation (BI / BD): the file name need not say it
        extra["degradation"] = degradation
    out = WEIGHTS_DIR / f"{name or meta['arch']}_x{meta['scale']}.safetensors"
    save_checkpoint(model, out, arch=meta["arch"], args=args, form="train", extra=extra)
    return out


def _video_degradation(run: Path, arch: str) -> str | None:
    """``data.video.degradation`` of the run's recipe (``<run>/config.yaml``; BI when unset) for a video model."""
    import yaml

    from edge_sr.models.registry import get_entry

    cfg = run / "config.yaml"
    if get_entry(arch).kind != "video" or not cfg.is_file():
        return None
    data = yaml.safe_load(cfg.read_text()) or {}
    return str(((data.get("data") or {}).get("video") or {}).get("degradation") or "BI")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_sr.zoo")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("run_dir")
    b.add_argument("--init", help="the --init checkpoint the run started from (default: <run>/init.json)")
    b.add_argument(
        "--name", help="the file's name before _x<scale> (default: the architecture; e.g. ecbvsr_m4c16_bd)"
    )
    args = p.parse_args(argv)
    print(bundle(args.run_dir, name=args.name, init=args.init))
    return 0


if __name__ == "__main__":
    sys.exit(main())
