"""The model zoo table of docs/MODEL_ZOO.md: every bundled model measured on Set5 / Set14 beside bicubic
and published results, with the command that reproduces it (``edge-sr bench zoo``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_sr.bench._env import data_dir, environment, environment_block
from edge_sr.bench.report import update_section
from edge_sr.errors import CheckpointError
from edge_sr.models.checkpoint import load_checkpoint, read_metadata
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
    # the bundled architecture trained on DIV2K (800 2K images; RGB, LR patches 64, batch 32, 1.6 M iterations,
    # PReLU) by the ETDS authors (Chao et al., CVPR 2023), from the test logs in their repository
    # (ECNUSR/ETDS results/ECBSR_M4C16_x{2,3,4}/test_*.log): the same network with far more data and steps
    "ECBSR-M4C16 on DIV2K (ETDS)": {
        2: {"Set5": (37.18, 0.9577), "Set14": (32.79, 0.9105)},
        3: {"Set5": (33.07, 0.9149), "Set14": (29.53, 0.8269)},
        4: {"Set5": (30.87, 0.8741), "Set14": (27.80, 0.7626)},
    },
}


def _cost_order(arch: str) -> tuple[float, str]:
    """Bundled tiers in order of cost: the deploy MACs per LR pixel of the architecture (at x2)."""
    from edge_sr.models.registry import create_model
    from edge_sr.models.stats import macs_per_lr_pixel
    from edge_sr.reparam import reparameterize

    return macs_per_lr_pixel(reparameterize(create_model(arch, scale=2)), 2), arch


def _eval(ckpt: Any, data: Path, scale: int) -> dict[str, tuple[float, float]]:
    from edge_sr.evaluate import evaluate

    out = {}
    for bench in ("Set5", "Set14"):
        r = evaluate(data / bench, scale, ckpt)
        out[bench] = (r.psnr, r.ssim)
    return out


def zoo_report(
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "docs/MODEL_ZOO.md",
    command: str | None = None,
) -> Path:
    """Measure every bundled model on Set5 / Set14 and rewrite the ``zoo`` section of ``out``.

    Args:
        data: the folder holding ``Set5/`` and ``Set14/`` (default: ``benchmarks/`` under ``EDGE_SR_DATA``).
        out: the markdown page.
        command: the command line quoted in the section.

    Returns:
        ``out``.
    """
    from edge_sr.models.stats import count_params, macs_per_lr_pixel
    from edge_sr.reparam import reparameterize

    data = data_dir(data, "benchmarks")
    rows = [
        "| model | scale | params (train / deploy) | deploy MACs per LR px | Set5 PSNR / SSIM | Set14 PSNR / SSIM "
        "| training steps | wall time | reproduce |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    bundled = bundled_checkpoints()
    if not bundled:
        raise CheckpointError(WEIGHTS_DIR, "no bundled checkpoints to report")
    by_scale: dict[int, list[tuple[str, Path]]] = {}
    for arch, scales in sorted(bundled.items(), key=lambda kv: _cost_order(kv[0])):
        for scale, path in scales.items():
            by_scale.setdefault(scale, []).append((arch, path))
    for scale in sorted(by_scale):  # each scale: the bundled tiers, then bicubic and the published rows
        for arch, path in by_scale[scale]:
            meta = read_metadata(path)
            model = load_checkpoint(path)
            deploy = reparameterize(model)
            m = _eval(path, data, scale)
            hours = float(meta.get("train_seconds") or 0) / 3600
            init = f" --init {meta['init']}" if meta.get("init") else ""
            act = (meta.get("args") or {}).get("act")
            label = f"{arch} ({act})" if act else arch
            cmd = f"`edge-sr train {meta.get('recipe', '')}{init}`, then `edge-sr eval --checkpoint {path.stem} --data DIR --scale {scale}`"
            rows.append(
                f"| **{label}** | x{scale} | {count_params(model):,} / {count_params(deploy):,} "
                f"| {macs_per_lr_pixel(deploy, scale):,.0f} | **{m['Set5'][0]:.2f} / {m['Set5'][1]:.4f}** "
                f"| **{m['Set14'][0]:.2f} / {m['Set14'][1]:.4f}** | {meta.get('train_steps', '?')} | {hours:.2f} h | {cmd} |"
            )
        b = _eval("bicubic", data, scale)
        rows.append(
            f"| bicubic | x{scale} | - | - | {b['Set5'][0]:.2f} / {b['Set5'][1]:.4f} "
            f"| {b['Set14'][0]:.2f} / {b['Set14'][1]:.4f} | - | - | `edge-sr eval --model bicubic --scale {scale} --data DIR` |"
        )
        for name, table in PUBLISHED.items():
            if scale in table:
                s5, s14 = table[scale]["Set5"], table[scale]["Set14"]
                fmt = lambda v: f"{v[0]:.2f}" + (f" / {v[1]:.4f}" if v[1] else "")  # noqa: E731
                rows.append(f"| {name}, published | x{scale} | - | - | {fmt(s5)} | {fmt(s14)} | - | - | - |")
    text = (
        "Y-channel PSNR / SSIM, `scale` pixels shaved, on the shipped bicubic LR of the benchmark sets "
        "(the `edge-sr eval` protocol). Checkpoints were selected on images held out of the training folders.\n"
        f"{environment_block(environment(), command)}\n\n" + "\n".join(rows)
    )
    return update_section(out, "zoo", text, title="Model zoo")
