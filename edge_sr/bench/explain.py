"""docs/EXPLAIN.md: DI of the bundled models, float against deploy, FP16 and INT8, on Set14 crops.

edge-sr bench explain            # $EDGE_SR_DATA holds benchmarks/Set14; rewrites docs/EXPLAIN.md
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge_sr.explain import explain

IMAGES = ("baboon", "barbara", "comic")
FORMS = ("float", "deploy", "fp16", "int8")
CROP = 48  # LR pixels: the map is over the crop, DI compares the same area for every model


def di_rows(
    checkpoints: Sequence[Path],
    set14: Path,
    *,
    images: Sequence[str] = IMAGES,
    crop: int = CROP,
    steps: int = 50,
) -> list[str]:
    """One markdown row per (checkpoint, image): the centred ``crop``² LR crop, the centred 16×16 output box."""
    from edge_sr.data import load_rgb_uint8, to_tensor
    from edge_sr.models import card_of, load_checkpoint

    rows = []
    for ckpt in checkpoints:
        card = card_of(load_checkpoint(ckpt))
        scale, label = card.scale, f"{card.arch}_x{card.scale}"
        for name in images:
            lr = to_tensor(load_rgb_uint8(set14 / "LR_bicubic" / f"X{scale}" / f"{name}.png"))
            top, left = (lr.shape[1] - crop) // 2, (lr.shape[2] - crop) // 2
            patch = lr[:, top : top + crop, left : left + crop]
            rep = explain(ckpt, patch, compare=FORMS, steps=steps).to_dict()
            m = rep["maps"]
            dis = " | ".join(f"{m[f]['di']:.2f}" for f in FORMS)
            diffs = " | ".join(f"{m[f]['rel_l1_diff_vs_float']:.1e}" for f in FORMS[1:])
            gaps = f"{m['float']['completeness_gap']:.1e} / {m['int8']['completeness_gap']:.1e}"
            rows.append(f"| {label} | {name} ({left},{top}) | {dis} | {diffs} | {gaps} |")
    return rows


def explain_report(
    data: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    command: str,
    checkpoints: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Measure the bundled x2 / x4 models (and ``checkpoints``) on Set14 crops; write the page ``out`` atomically.

    Args:
        data: the folder holding Set14/ (default ``$EDGE_SR_DATA/benchmarks``).
        out: the markdown page to write.
        command: the command line quoted in the page.
        checkpoints: more models to measure after the bundled ones (e.g. another architecture trained here).
    """
    from edge_sr.data import data_path
    from edge_sr.io_utils import atomic_path
    from edge_sr.weights import bundled_checkpoint

    ckpts = [c for c in (bundled_checkpoint(s) for s in (2, 4)) if c is not None]
    ckpts += [Path(c) for c in checkpoints]
    set14 = Path(data) / "Set14" if data else data_path("benchmarks", "Set14")
    rows = di_rows(ckpts, set14)
    head = (
        "| model | Set14 image (crop x,y in LR) | DI float | DI deploy | DI fp16 | DI int8 "
        "| rel. L1 Δ deploy | rel. L1 Δ fp16 | rel. L1 Δ int8 | completeness gap float / int8 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    path = Path(out)
    with atomic_path(path) as tmp:
        tmp.write_text(_TEXT.format(crop=CROP, table="\n".join([head, *rows]), command=command))
    return path


_TEXT = """# Local attribution maps: does INT8, FP16 or fusion change what the network looks at?

`edge-sr explain` computes the local attribution map (LAM, Gu & Dong, CVPR 2021) of an output window: the
gradient of the window's sum of SR output values, integrated along a blur path from a Gaussian-blurred copy
of the LR input (sigma 1.2 input pixels) to the input itself (50 steps, trapezoidal rule). The map is the
absolute attribution summed over colour channels; the diffusion index is DI = (1 − Gini(map))·100 (higher:
the window draws on a wider area of the input).

```bash
edge-sr explain edge_sr/weights/ecbsr_m4c16_x2.safetensors ../shared/data/benchmarks/Set14/LR_bicubic/X2/baboon.png \\
    --box 240,200 --compare float deploy fp16 int8 -o lam.png      # box X,Y[,W,H] in OUTPUT pixels, default 16x16
edge-sr explain out/ecbsr_m4c16_x4_int8.pte photo.png --json   # an artifact: its source checkpoint, as int8
```

The forms: **float** is the checkpoint as trained (multi-branch ECB blocks); **deploy** the fused plain convs;
**fp16** the deploy form computed in float16; **int8** the deploy form as a QAT-prepared PT2E graph for the
ExecuTorch (XNNPACK) quantizer, with observers calibrated on the explained crop and its flips and then frozen:
it computes the int8 function of PTQ (the convs reading the image kept in float, as PTQ does by default),
with straight-through-estimator gradients. The converted int8 graph itself (rounding quantize / dequantize
ops) has zero gradient almost everywhere, so the fake-quantized graph is the nearest function that has one.
The int8 form's completeness gap (Σ attributions against F(image) − F(baseline)) is therefore a measure of how
far the STE surrogate's gradient is from the int8 function's change, not a quadrature error.

## DI of the bundled models on Set14 crops

Centred {crop}×{crop} LR crops, the centred 16×16 output window; "rel. L1 Δ" is Σ|map − float map| / Σ float map.
Generated by `{command}` (about a minute on two cores).

{table}

At the same 16×16 output window the x4 model's window covers 4×4 LR pixels against the x2 model's 8×8, so its
DI over the crop is lower: compare DI across forms of one model, not across scales. Beside the bundled
ECBSR-M4C16 models, FSRCNN x2 is a second architecture trained here for this table
(`edge-sr train configs/fsrcnn_x2.yaml`, a short CPU schedule: for attribution maps, not for quality;
then `edge-sr bench explain --checkpoints runs/fsrcnn_x2/best.safetensors`). Any checkpoint runs with the same
command. Video models are not supported by `edge-sr explain` yet.
"""
