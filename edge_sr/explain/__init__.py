"""``edge-sr explain``: local attribution maps (LAM) of an output window, and what INT8, FP16 and fusion do to
them.

    report = explain("edge_sr/weights/ecbsr_m4c16_x2.safetensors", "photo.png", box=(96, 64),
                     compare=("float", "deploy", "int8", "fp16"))
    report.maps["int8"].di, report.to_dict()
    save_figure(report, "lam.png")     # the image with the box, each map with its DI, differences vs float

The box is in OUTPUT pixels (x, y, w, h) of the SR image, as the paper's HR window: the attributed value is
the sum of the SR output (all channels) inside it; the maps are over the LR input. The method lives in
:mod:`edge_sr.explain.lam`, the differentiable function of each form in :mod:`edge_sr.explain.forms`.

Sources: a model, a checkpoint, or an artifact (``.pte``, ``.onnx``, ``.tflite``, ``.mlpackage``, ``.pt2``): an
artifact has no gradients, so its manifest's source checkpoint is explained in the form of the artifact's
precision (int8 → fake-quant for the artifact's target, fp16 → fp16, fp32 → deploy). The int8 form is
calibrated on the explained image and its flips (not the artifact's calibration set), so its quantization
parameters are close to, not equal to, the artifact's. Video models: not supported yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError, InputError
from edge_sr.explain.forms import FORMS, Form, calibration_of, check_forms, form_fn
from edge_sr.explain.lam import Attribution, Box, diffusion_index, gini, lam

__all__ = [
    "FORMS",
    "Attribution",
    "ExplainReport",
    "diffusion_index",
    "explain",
    "gini",
    "lam",
    "save_figure",
]

DEFAULT_WINDOW = 16


@dataclass(frozen=True)
class ExplainReport:
    """The LAM of one output window for each compared form.

    Attributes:
        source: what was explained (checkpoint or artifact path, or the module's class name).
        image: the image path (or ``<tensor>``).
        box: (x, y, w, h) in output pixels.
        scale: the model's upscaling factor.
        steps: path-integral intervals.
        sigma_max: blur of the baseline, in input pixels.
        maps: one :class:`Attribution` per form, in the order asked.
        lr: the explained input (H, W, C) float32 in [0, 1] (for the figure).
        notes: how the source was resolved (artifact → checkpoint, int8 target).
    """

    source: str
    image: str
    box: Box
    scale: int
    steps: int
    sigma_max: float
    maps: dict[str, Attribution]
    lr: np.ndarray = field(repr=False)
    notes: tuple[str, ...] = ()

    def diff(self, form: str) -> np.ndarray:
        """``form``'s map minus the float map (H, W); KeyError when float was not computed."""
        return self.maps[form].map - self.maps["float"].map

    def to_dict(self) -> dict[str, Any]:
        x, y, w, h = self.box
        maps: dict[str, Any] = {}
        for name, a in self.maps.items():
            entry: dict[str, Any] = {
                "di": a.di,
                "attribution_sum": float(a.signed.sum()),
                "output_delta": a.f_image - a.f_baseline,
                "completeness_gap": a.completeness_gap,
            }
            if name != "float" and "float" in self.maps:
                d, ref = np.abs(self.diff(name)), self.maps["float"].map
                entry["max_abs_diff_vs_float"] = float(d.max())
                entry["rel_l1_diff_vs_float"] = float(d.sum() / max(float(ref.sum()), 1e-12))
            maps[name] = entry
        return {
            "source": self.source,
            "image": self.image,
            "box": {"x": x, "y": y, "w": w, "h": h},
            "scale": self.scale,
            "steps": self.steps,
            "sigma_max": self.sigma_max,
            "maps": maps,
            "notes": list(self.notes),
        }


def _resolve(source: str | os.PathLike[str] | nn.Module) -> tuple[nn.Module, str, dict[str, Any]]:
    """(float model, its name, what the source implies: ``form`` for an artifact, ``target``, ``keep_float``)."""
    if isinstance(source, nn.Module):
        return source.eval(), type(source).__name__, {}
    from edge_sr.convert import target_for_path
    from edge_sr.models import load_checkpoint

    path = Path(source)
    target = target_for_path(path)
    if target is None:
        return load_checkpoint(path), str(path), {}
    from edge_sr.convert.manifest import read_manifest

    if not path.exists():
        raise InputError(path, "no such artifact")
    manifest = read_manifest(path, required=False)
    ckpt = ((manifest or {}).get("source") or {}).get("checkpoint")
    if ckpt and not Path(ckpt).is_file() and (path.parent / ckpt).is_file():
        ckpt = str(path.parent / ckpt)  # a relative path written from another working folder
    if not ckpt or not Path(ckpt).is_file():
        why = (
            "its manifest names no source checkpoint" if not ckpt else f"its source checkpoint {ckpt} is gone"
        )
        if manifest is None:
            why = "it has no manifest naming a source checkpoint"
        raise InputError(
            path, f"a {target} artifact has no gradients and {why}; explain the checkpoint instead"
        )
    precision = str(manifest.get("precision")) if manifest else "fp32"
    form = {"int8": "int8", "fp16": "fp16"}.get(precision, "deploy")
    quant = (manifest or {}).get("quantization") or {}
    hints: dict[str, Any] = {
        "form": form,
        "target": target,
        "keep_float": quant.get("keep_float"),
        "checkpoint": ckpt,
    }
    return load_checkpoint(ckpt), str(path), hints


def _image(image: str | os.PathLike[str] | Tensor, colors: int) -> tuple[Tensor, str]:
    """(C, H, W) float32 in [0, 1] and its name; 1-colour models get the Y channel (in [0, 1])."""
    if isinstance(image, Tensor):
        t = image[0] if image.ndim == 4 else image
        return t.detach().float(), "<tensor>"
    from edge_sr.data import load_rgb_uint8, to_tensor

    rgb = load_rgb_uint8(image)  # InputError when missing / undecodable
    if colors == 1:
        from edge_sr.metrics import rgb_to_y

        return torch.from_numpy(rgb_to_y(rgb) / 255.0).float()[None], str(image)
    return to_tensor(rgb), str(image)


def _scale(model: nn.Module, img: Tensor) -> int:
    from edge_sr.models import card_of, has_card

    if has_card(model):
        return int(card_of(model).scale)
    with torch.no_grad():
        out = model(img[None, :, :8, :8].float())
    return max(1, int(out.shape[-1]) // min(8, int(img.shape[-1])))


def check_box(box: tuple[int, ...] | None, scale: int, out_hw: tuple[int, int], image: str) -> Box:
    """The (x, y, w, h) output window of ``box`` ((x, y) → a 16×16 window there; None → centred), checked.

    Raises:
        ConfigError: a box of other than 2 or 4 numbers, or smaller than the scale.
        InputError: a box not inside the output image.
    """
    oh, ow = out_hw
    if box is None:
        w, h = min(DEFAULT_WINDOW, ow), min(DEFAULT_WINDOW, oh)
        box = ((ow - w) // 2, (oh - h) // 2, w, h)
    if len(box) == 2:
        box = (*box, DEFAULT_WINDOW, DEFAULT_WINDOW)
    if len(box) != 4:
        raise ConfigError(None, f"box takes X,Y or X,Y,W,H (output pixels); got {len(box)} numbers")
    x, y, w, h = (int(v) for v in box)
    if w < scale or h < scale:
        raise ConfigError(
            None, f"box {w}x{h} is smaller than the scale x{scale}; make it at least {scale}x{scale}"
        )
    if x < 0 or y < 0 or x + w > ow or y + h > oh:
        raise InputError(
            image,
            f"box {x},{y},{w},{h} is not inside the x{scale} output ({ow}x{oh} pixels, X,Y,W,H in output pixels)",
        )
    return x, y, w, h


def explain(
    source: str | os.PathLike[str] | nn.Module,
    image: str | os.PathLike[str] | Tensor,
    *,
    box: tuple[int, ...] | None = None,
    compare: tuple[str, ...] | None = None,
    steps: int = 50,
    sigma_max: float = 1.2,
    target: str | None = None,
    calib: Tensor | None = None,
    batch: int = 16,
) -> ExplainReport:
    """LAM of the output window ``box`` for each form in ``compare``.

    Args:
        source: a module, an edge-sr checkpoint, or an artifact (its source checkpoint is explained).
        image: the LR input (a path, or a (C, H, W) tensor in [0, 1]).
        box: (x, y[, w, h]) in output pixels (default 16×16; None: centred).
        compare: forms among ``float``, ``deploy``, ``fp16``, ``int8`` (default: float, plus the artifact's
            form for an artifact).
        steps: intervals of the path integral (trapezoidal rule over ``steps + 1`` blur levels).
        sigma_max: blur of the baseline, in input pixels.
        target: the quantizer of the int8 form (default: the artifact's target, else executorch).
        calib: int8 calibration patches (N, C, H, W) of the image's size (default: the image and its flips).
        batch: path points per forward / backward.

    Raises:
        ConfigError: an unknown form, too few steps, a box smaller than the scale.
        InputError: an unreadable image, a box outside the output, an artifact without a source checkpoint.
    """
    if steps < 1:
        raise ConfigError(None, f"steps must be at least 1; got {steps}")
    if not sigma_max > 0:
        raise ConfigError(None, f"sigma_max must be positive; got {sigma_max}")
    model, name, hints = _resolve(source)
    forms: tuple[Form, ...] = check_forms(compare or ("float", *([hints["form"]] if hints else [])))
    from edge_sr.models import card_of, has_card

    colors = card_of(model).colors if has_card(model) else 3
    img, img_name = _image(image, colors)
    scale = _scale(model, img)
    win = check_box(box, scale, (int(img.shape[1]) * scale, int(img.shape[2]) * scale), img_name)
    cal = calibration_of(img) if calib is None else calib.float()
    if tuple(cal.shape[1:]) != tuple(img.shape):
        raise ConfigError(
            None, f"calibration patches {tuple(cal.shape[1:])} must match the image {tuple(img.shape)}"
        )
    maps: dict[str, Attribution] = {}
    notes: list[str] = (
        [f"{name} has no gradients: its source {hints['checkpoint']} is explained as {hints['form']}"]
        if hints
        else []
    )
    q_target = target or hints.get("target") or "executorch"
    for form in forms:
        fn = form_fn(form, model, cal, target=q_target, keep_float=hints.get("keep_float"))
        if form == "int8":
            notes.append(f"int8: {q_target} fake-quant, calibrated on {len(cal)} patches, STE gradients")
        maps[form] = lam(fn, img, win, steps=steps, sigma_max=sigma_max, batch=batch)
    lr = img.permute(1, 2, 0).numpy()
    return ExplainReport(name, img_name, win, scale, steps, float(sigma_max), maps, lr, tuple(notes))


def save_figure(report: ExplainReport, out: str | os.PathLike[str]) -> Path:
    """Write the comparison PNG (atomically); see :func:`edge_sr.explain.figure.draw`."""
    from edge_sr.explain.figure import draw
    from edge_sr.io_utils import atomic_path

    path = Path(out)
    with atomic_path(path) as tmp:
        draw(report, tmp)
    return path
