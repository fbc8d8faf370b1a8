"""Benchmark evaluation the way SR papers report it: ``evaluate(data_dir, scale, model)``.

The protocol (see the benchmark README): HR mod-cropped to a multiple of ``scale``; LR from
``LR_bicubic/X{scale}/<name>`` when the folder has it, else made from the cropped HR with the MATLAB-exact
``imresize``; the SR output taken as uint8 (clip, round); PSNR / SSIM on the Y channel with ``scale`` pixels
shaved at every border. A grayscale image is copied to 3 channels for the model and measured on its gray
values (the model's output reduced to BT.601 luma), as the classic MATLAB evaluation does.

A Y-channel model (``card.colors == 1``: SRCNN / FSRCNN / ESPCN / VDSR and ECBSR as their papers train them)
runs on the Y of the LR image (MATLAB ``rgb2ycbcr``, the conversion the metric uses, kept in float: values in
[16, 235] / 255) and is scored on its own output, taken as uint8, against the Y of the HR image; a grayscale
image goes straight in and is scored on its gray values.

A non-integer scale (an arbitrary-scale model such as LIIF, or bicubic) follows LIIF's benchmark protocol
(``sr-implicit-downsampled`` with ``eval_type benchmark-s``): the LR size is ``floor(H / s)`` x ``floor(W / s)``,
the HR is cropped to ``round(h_lr·s)`` x ``round(w_lr·s)`` (top left), LR is made from that crop with the
MATLAB-exact ``imresize`` (LIIF uses PIL's bicubic), the model decodes exactly the HR crop's size, and
``ceil(s)`` pixels are shaved (LIIF shaves ``s`` for its integer factors). Integer scales are unchanged.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.data.imresize import imresize, modcrop
from edge_sr.data.io import BT601_LUMA
from edge_sr.errors import CheckpointError, InputError
from edge_sr.metrics import psnr_values, rgb_to_y, ssim_values
from edge_sr.reparam import has_fusable, reparameterize

log = logging.getLogger(__name__)

ModelLike = None | str | os.PathLike[str] | nn.Module | Callable[[Tensor], Tensor]
LRSource = Literal["auto", "shipped", "imresize"]
_LUMA = np.array(BT601_LUMA)  # (3,) float64: an RGB image @ _LUMA -> its gray values


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass
class EvalResult:
    """Mean and per-image scores. ``lr_source`` says where LR came from: ``shipped`` files or ``imresize``."""

    psnr: float
    ssim: float
    scale: float
    images: list[ImageScore] = field(default_factory=list)
    model: str = ""
    lr_source: str = "shipped"

    def to_dict(self) -> dict[str, Any]:
        return {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "scale": self.scale,
            "model": self.model,
            "lr_source": self.lr_source,
            "images": [asdict(s) for s in self.images],
        }


def read_benchmark_u8(path: Path) -> np.ndarray:
    """Benchmark PNG -> (H, W) or (H, W, 3) uint8, gray kept single-channel."""
    from edge_sr.data.io import read_image

    im = read_image(path)
    v = np.round(im.rgb * 255.0).astype(np.uint8)
    return v[..., 0] if im.was_gray else v


def resolve_model(
    model: ModelLike, scale: float, device: str = "cpu"
) -> tuple[Callable[[Tensor], Tensor] | None, str]:
    """``model`` -> (a function (1, C, h, w) -> (1, C, sh, sw), or None for bicubic; a display name)."""
    fn, name, _ = resolve_model_colors(model, scale, device)
    return fn, name


def resolve_model_colors(
    model: ModelLike, scale: float, device: str = "cpu"
) -> tuple[Callable[[Tensor], Tensor] | None, str, int]:
    """As :func:`resolve_model`, with the model's colour channels (its card's; 3 for bicubic or a function).

    An arbitrary-scale model (LIIF) runs at ``scale`` whatever its card's factor.

    Raises:
        CheckpointError: a checkpoint or model of another scale than ``scale``.
    """
    from edge_sr.models import card_of, has_card, load_checkpoint
    from edge_sr.models.checkpoint import read_metadata
    from edge_sr.weights import bundled_checkpoint

    if isinstance(model, str) and model == "bicubic":
        return None, "bicubic", 3
    if model is None:
        if not float(scale).is_integer():
            raise CheckpointError(
                None, f"x{scale:g} needs an arbitrary-scale model (LIIF): pass --checkpoint P"
            )
        path = bundled_checkpoint(int(scale))
        if path is None:
            raise CheckpointError(
                None, f"no bundled x{scale} model in this build; pass --checkpoint P or --model bicubic"
            )
        model = path
    if isinstance(model, str | os.PathLike):
        p = Path(model)
        meta_scale = read_metadata(p)["scale"] if p.suffix == ".safetensors" else scale
        net = load_checkpoint(p).to(device) if meta_scale == scale else load_checkpoint(p)
        if meta_scale != scale and not _any_scale(net):
            raise CheckpointError(
                p, f"is a x{meta_scale} model; --scale {scale:g} needs a x{scale:g} checkpoint"
            )
        net = net.to(device)
        name = p.name
    elif isinstance(model, nn.Module):
        net, name = model.eval().to(device), type(model).__name__
        if has_card(model):
            card = card_of(model)
            if card.scale != scale and not _any_scale(model):
                raise CheckpointError(
                    card.source, f"is a x{card.scale} model; --scale {scale} needs a x{scale} model"
                )
            name = Path(card.source).name if card.source else card.arch
    else:
        return model, getattr(model, "__name__", type(model).__name__), 3
    colors = int(card_of(net).colors) if has_card(net) else 3
    if has_fusable(net):  # the deploy form computes the same function with a fraction of the ops
        net = reparameterize(net)

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            if _any_scale(net):
                return net(x.to(device), scale=scale).float().cpu()
            return net(x.to(device)).float().cpu()

    return run, name, colors


def _any_scale(net: object) -> bool:
    return bool(getattr(net, "arbitrary_scale", False))


def sr_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """The SR size of an ``h`` x ``w`` input: ``h·scale`` x ``w·scale``, rounded for a non-integer scale."""
    return round(h * scale), round(w * scale)


def fractional_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 HR -> (HR cropped to ``round(h_lr·s)`` x ``round(w_lr·s)``, its MATLAB-bicubic LR of
    ``floor(H / s + 1e-9)`` x ``floor(W / s + 1e-9)``): LIIF's ``sr-implicit-downsampled`` sizes."""
    lh, lw = math.floor(hr.shape[0] / scale + 1e-9), math.floor(hr.shape[1] / scale + 1e-9)
    if lh < 1 or lw < 1:
        raise InputError(None, f"an image of {hr.shape[0]}x{hr.shape[1]} has no LR at x{scale:g}")
    hr = hr[: round(lh * scale), : round(lw * scale)]
    return hr, imresize(hr, output_shape=(lh, lw))


def super_resolve(fn: Callable[[Tensor], Tensor] | None, lr: np.ndarray, scale: float) -> np.ndarray:
    """uint8 LR (H, W[, 3]) -> uint8 SR (sH, sW[, 3]); gray in, gray out (BT.601 luma of the RGB output)."""
    if fn is None:  # MATLAB bicubic, rounding to uint8 after each pass
        if float(scale).is_integer():
            return imresize(lr, float(scale))
        return imresize(lr, output_shape=sr_size(lr.shape[0], lr.shape[1], scale))
    gray = lr.ndim == 2
    rgb = np.repeat(lr[..., None], 3, axis=-1) if gray else lr
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    y = fn(x)  # (1, 3, sH, sW)
    if tuple(y.shape[-2:]) != sr_size(lr.shape[0], lr.shape[1], scale):
        raise CheckpointError(
            None, f"the model returned {tuple(y.shape)} for a x{scale:g} input {tuple(x.shape)}"
        )
    out = y[0].permute(1, 2, 0).double().clamp(0, 1).numpy() * 255.0
    if gray:  # full-range BT.601 luma: equal channels give back the same gray value
        out = out @ _LUMA
    return np.round(out).astype(np.uint8)


def y_input(lr: np.ndarray, *, gray: bool) -> np.ndarray:
    """uint8 LR (h, w[, 3]) -> the (1, 1, h, w) float32 input of a Y-channel model.

    ``gray``: the image is measured on gray values, which go straight in (an RGB copy reduced to BT.601
    luma); otherwise the Y of MATLAB ``rgb2ycbcr`` in [0, 1] units, unrounded (a gray LR counts as R = G = B).
    """
    if gray:
        v = lr.astype(np.float64) if lr.ndim == 2 else np.round(lr @ _LUMA)
    else:
        v = rgb_to_y(np.repeat(lr[..., None], 3, axis=-1) if lr.ndim == 2 else lr)
    return (v / 255.0).astype(np.float32)[None, None]


def super_resolve_y(fn: Callable[[Tensor], Tensor], lr: np.ndarray, scale: int, *, gray: bool) -> np.ndarray:
    """A Y-channel model on uint8 LR (H, W[, 3]) -> its uint8 output (sH, sW) (input: :func:`y_input`)."""
    x = torch.from_numpy(y_input(lr, gray=gray))
    y = fn(x)  # (1, 1, sH, sW)
    if tuple(y.shape) != (1, 1, lr.shape[0] * scale, lr.shape[1] * scale):
        raise CheckpointError(
            None, f"the model returned {tuple(y.shape)} for a x{scale} input {tuple(x.shape)}"
        )
    return np.round(y[0, 0].double().clamp(0, 1).numpy() * 255.0).astype(np.uint8)


def measure(sr: np.ndarray, hr: np.ndarray, scale: float, *, colors: int = 3) -> tuple[float, float]:
    """(PSNR, SSIM) of a uint8 SR result against uint8 HR on Y (a gray HR: on gray values), ``scale`` shaved.

    ``colors=3``: SR is RGB or gray, as :func:`super_resolve` returns; ``colors=1``: SR is a Y-channel
    model's output (:func:`super_resolve_y`), scored as it is against the HR's Y.
    """
    if colors == 3 and sr.ndim != hr.ndim:  # a gray HR with an RGB LR file (or the reverse): like with like
        sr = np.repeat(sr[..., None], 3, axis=-1) if hr.ndim == 3 else np.round(sr @ _LUMA).astype(np.uint8)
    ref = hr.astype(np.float64) if hr.ndim == 2 else rgb_to_y(hr)
    out = sr.astype(np.float64) if sr.ndim == 2 else rgb_to_y(sr)
    border = math.ceil(scale)  # a fractional scale shaves the next whole pixel
    return psnr_values(out, ref, crop_border=border), ssim_values(out, ref, crop_border=border)


def evaluate(
    data_dir: str | os.PathLike[str],
    scale: float,
    model: ModelLike = None,
    *,
    lr: LRSource = "auto",
    device: str = "cpu",
) -> EvalResult:
    """Score ``model`` on a benchmark folder (``HR/`` and optionally ``LR_bicubic/X{scale}/``).

    Args:
        data_dir: the benchmark folder.
        scale: 2, 3 or 4; any factor for an arbitrary-scale model or bicubic (the module docstring's
            protocol).
        model: ``"bicubic"``; a checkpoint path; a loaded ``nn.Module`` (a card's ``colors`` 1 makes it a
            Y-channel model, see the module docstring); a function mapping (1, 3, h, w) float in [0, 1] to
            (1, 3, h·scale, w·scale); None for the bundled model of that scale.
        lr: ``auto`` uses the shipped LR files when present, ``imresize`` always makes LR from HR,
            ``shipped`` requires the files.
        device: where a model runs.
    """
    root = Path(data_dir)
    hr_dir = root / "HR"
    if not hr_dir.is_dir():
        raise InputError(
            root, "has no HR/ folder; expected <DIR>/HR/*.png and optionally <DIR>/LR_bicubic/X<s>/"
        )
    from edge_sr.data.io import FORMATS

    names = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in FORMATS and not p.name.startswith("."))
    if not names:
        raise InputError(hr_dir, "holds no images")
    whole = float(scale).is_integer()
    if whole:
        scale = int(scale)
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    use_shipped = whole and lr != "imresize" and lr_dir.is_dir()
    if lr == "shipped" and not use_shipped:
        raise InputError(lr_dir, "no such folder; use lr='auto' to make LR with imresize")
    fn, name, colors = resolve_model_colors(model, scale, device)
    scores = []
    for hr_path in names:
        if not whole:
            hr, lr_img = fractional_pair(read_benchmark_u8(hr_path), scale)
        elif use_shipped:
            hr = modcrop(read_benchmark_u8(hr_path), int(scale))
            lr_path = lr_dir / hr_path.name
            if not lr_path.is_file():
                raise InputError(lr_path, "missing: every HR image needs its LR file (or pass lr='imresize')")
            lr_img = read_benchmark_u8(lr_path)
            if lr_img.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
                raise InputError(
                    lr_path, f"size {lr_img.shape[:2]} does not match HR {hr.shape[:2]} / {scale}"
                )
        else:
            hr = modcrop(read_benchmark_u8(hr_path), int(scale))
            lr_img = imresize(hr, 1.0 / scale)
        if colors == 1 and fn is not None:
            sr = super_resolve_y(fn, lr_img, int(scale), gray=hr.ndim == 2)  # Y models have whole factors
        else:
            sr = super_resolve(fn, lr_img, scale)
        s = ImageScore(hr_path.stem, *measure(sr, hr, scale, colors=colors if fn is not None else 3))
        log.info("%s: %.4f dB / %.4f", s.name, s.psnr, s.ssim)
        scores.append(s)
    return EvalResult(
        psnr=float(np.mean([s.psnr for s in scores])),
        ssim=float(np.mean([s.ssim for s in scores])),
        scale=scale,
        images=scores,
        model=name,
        lr_source="shipped" if use_shipped else "imresize",
    )
