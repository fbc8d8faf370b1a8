"""Validation during training: Y-PSNR / SSIM on held-out full images, the ``edge-sr eval`` convention."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_sr.data.clips import Degradation, Motion, synthetic_sequences
from edge_sr.data.datasets import find_images, load_rgb_uint8, to_tensor
from edge_sr.data.imresize import imresize, modcrop
from edge_sr.errors import InputError
from edge_sr.metrics import psnr, ssim


@dataclass
class ValImage:
    name: str
    lr: np.ndarray  # (h, w, 3) uint8
    hr: np.ndarray  # (h·s, w·s, 3) uint8


def holdout_split(files: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """Take ``count`` files, evenly spread over the sorted list, out for validation: (train, held out)."""
    if count <= 0:
        return files, []
    if count >= len(files):
        raise InputError(files[0].parent, f"cannot hold out {count} of {len(files)} images")
    step = len(files) / count
    picked = {int(i * step + step / 2) for i in range(count)}
    return [f for i, f in enumerate(files) if i not in picked], [
        f for i, f in enumerate(files) if i in picked
    ]


def make_val_images(files: list[Path], scale: int, max_size: int = 0) -> list[ValImage]:
    """HR files -> (LR by MATLAB bicubic of the mod-cropped HR, HR); optionally centre-cropped to ``max_size``."""
    out = []
    for f in files:
        hr = load_rgb_uint8(f)
        if max_size:
            h, w = hr.shape[:2]
            top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
            hr = hr[top : top + max_size, left : left + max_size]
        hr = modcrop(hr, scale)
        out.append(ValImage(f.stem, imresize(hr, 1 / scale), hr))
    return out


def load_val_dir(folder: str | os.PathLike[str], scale: int, max_size: int = 0) -> list[ValImage]:
    """A benchmark-style folder: ``HR/`` plus optionally ``LR_bicubic/X{s}/`` (else LR made by imresize)."""
    folder = Path(folder)
    if not (folder / "HR").is_dir():
        raise InputError(folder, "validation folder has no HR/ subfolder")
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir() or max_size:
        return make_val_images(find_images(folder / "HR"), scale, max_size)
    out = []
    for f in find_images(folder / "HR"):
        lr_path = lr_dir / f.name
        hr = modcrop(load_rgb_uint8(f), scale)
        lr = load_rgb_uint8(lr_path) if lr_path.exists() else imresize(hr, 1 / scale)
        out.append(ValImage(f.stem, lr, hr))
    return out


@dataclass
class ValSequence:
    """A validation sequence of a video model: LR and HR frames, uint8 (h, w, 3) / (h·s, w·s, 3)."""

    name: str
    lr: list[np.ndarray]
    hr: list[np.ndarray]


def make_val_sequences(
    files: list[Path],
    scale: int,
    *,
    frames: int,
    max_size: int,
    degradation: Degradation = "BI",
    motion: Motion | None = None,
) -> list[ValSequence]:
    """Held-out still images -> fixed synthetic-motion sequences (:func:`edge_sr.data.clips.synthetic_sequences`)."""
    seqs = synthetic_sequences(
        files, scale=scale, frames=frames, size=max_size or 256, degradation=degradation, motion=motion
    )
    return [ValSequence(name, lr, hr) for name, lr, hr in seqs]


def _to_uint8(y: torch.Tensor) -> np.ndarray:
    return np.round(y.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy() * 255.0).astype(np.uint8)


@torch.no_grad()
def validate(
    model: nn.Module, images: list[ValImage] | list[ValSequence], scale: int, device: str = "cpu"
) -> dict[str, float]:
    """Mean Y-PSNR / SSIM (crop = scale) of ``model`` over ``images``; a video model streams each
    :class:`ValSequence` from a fresh state and is scored on every frame (mean per sequence, then of them)."""
    from edge_sr.models.stream import Stream, is_stream_model

    was_training = model.training
    model.eval()
    ps, ss = [], []
    for item in images:
        if isinstance(item, ValSequence) and is_stream_model(model):
            stream = Stream(model)
            srs = [_to_uint8(stream.push(to_tensor(x).unsqueeze(0).to(device))) for x in item.lr]
            ps.append(float(np.mean([psnr(a, b, crop_border=scale) for a, b in zip(srs, item.hr)])))
            ss.append(float(np.mean([ssim(a, b, crop_border=scale) for a, b in zip(srs, item.hr)])))
            continue
        if isinstance(item, ValSequence):
            raise TypeError("validation sequences need a video (streaming) model")
        sr = _to_uint8(model(to_tensor(item.lr).unsqueeze(0).to(device)))
        ps.append(psnr(sr, item.hr, crop_border=scale))
        ss.append(ssim(sr, item.hr, crop_border=scale))
    model.train(was_training)
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
