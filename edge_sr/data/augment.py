"""The augmentations of the SR literature, each with its own probability.

Per sample (in the dataset, on uint8 (H, W, 3) arrays, LR and HR transformed alike): horizontal / vertical
flip and transpose (the 8 dihedral rot90 variants), and RGB channel shuffle.

Per batch (on float (N, 3, h, w) LR and (N, 3, h·s, w·s) HR tensors), the CutBlur family (Yoo et al., CVPR
2020, "Rethinking Data Augmentation for Image Super-resolution"): ``blend`` (both images blended with one
random constant colour), ``mixup`` (with a shuffled partner, weight ~ Beta(α, α)), ``cutmix`` (a random box
pasted from the partner), ``cutmixup`` (the box pasted from the *mixed-up* partner: outside the box plain,
inside it the mixture). Boxes are drawn on the LR grid and scaled by ``s`` for the HR, so the pair stays
aligned. All randomness comes from an explicit ``torch.Generator`` so training is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class AugmentConfig:
    """Probabilities of each augmentation (0 disables)."""

    flip: float = 0.5  # horizontal flip; vertical flip and transpose use the same probability
    rot90: float = 0.5  # transpose (with the flips this gives all 8 rot90/flip variants)
    rgb_shuffle: float = 0.0
    mixup: float = 0.0
    mixup_alpha: float = 1.2
    cutmix: float = 0.0
    cutmix_alpha: float = 0.7  # box side ~ sqrt(U(0, alpha^2)) of the patch, as in CutBlur's defaults
    cutmixup: float = 0.0
    blend: float = 0.0
    blend_alpha: tuple[float, float] = (0.6, 1.0)


def augment_pair(
    lr: np.ndarray, hr: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dihedral flips / transpose and RGB shuffle, the same for LR and HR. Arrays are (H, W, 3)."""
    if cfg.flip and rng.random() < cfg.flip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if cfg.flip and rng.random() < cfg.flip:
        lr, hr = lr[::-1], hr[::-1]
    if cfg.rot90 and rng.random() < cfg.rot90:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    if cfg.rgb_shuffle and rng.random() < cfg.rgb_shuffle:
        perm = rng.permutation(3)
        lr, hr = lr[..., perm], hr[..., perm]
    return np.ascontiguousarray(lr), np.ascontiguousarray(hr)


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _box(h: int, w: int, alpha: float, g: torch.Generator) -> tuple[int, int, int, int]:
    # Side ratio drawn as in CutBlur: cut_ratio = sqrt(U(0, alpha²)) ... bounded by the patch.
    ratio = min(1.0, (alpha**2 * _rand(g)) ** 0.5)
    bh, bw = max(1, int(h * ratio)), max(1, int(w * ratio))
    y = int(_rand(g) * (h - bh + 1))
    x = int(_rand(g) * (w - bw + 1))
    return y, x, bh, bw


def _beta(alpha: float, g: torch.Generator) -> float:
    # Beta(α, α) from two Gamma draws using the generator (torch.distributions has no generator argument).
    a = torch._standard_gamma(torch.full((2,), alpha, dtype=torch.float64), generator=g)
    return float(a[0] / a.sum())


def augment_batch(
    lr: Tensor, hr: Tensor, scale: int, cfg: AugmentConfig, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Batch-level CutBlur-family augmentations; each applied to the whole batch with its probability."""
    n = lr.shape[0]
    if cfg.blend and _rand(g) < cfg.blend:
        c = torch.rand(n, 3, 1, 1, generator=g, dtype=lr.dtype)
        lo, hi = cfg.blend_alpha
        a = lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g, dtype=lr.dtype)
        lr, hr = a * lr + (1 - a) * c, a * hr + (1 - a) * c
    if n < 2:
        return lr, hr
    perm = torch.randperm(n, generator=g)
    if cfg.mixup and _rand(g) < cfg.mixup:
        v = _beta(cfg.mixup_alpha, g)
        lr, hr = v * lr + (1 - v) * lr[perm], v * hr + (1 - v) * hr[perm]
    elif cfg.cutmix and _rand(g) < cfg.cutmix:
        y, x, bh, bw = _box(lr.shape[2], lr.shape[3], cfg.cutmix_alpha, g)
        lr, hr = lr.clone(), hr.clone()
        lr[:, :, y : y + bh, x : x + bw] = lr[perm][:, :, y : y + bh, x : x + bw]
        hr[:, :, y * scale : (y + bh) * scale, x * scale : (x + bw) * scale] = hr[perm][
            :, :, y * scale : (y + bh) * scale, x * scale : (x + bw) * scale
        ]
    elif cfg.cutmixup and _rand(g) < cfg.cutmixup:
        v = _beta(cfg.mixup_alpha, g)
        lr_mix, hr_mix = v * lr + (1 - v) * lr[perm], v * hr + (1 - v) * hr[perm]
        y, x, bh, bw = _box(lr.shape[2], lr.shape[3], cfg.cutmix_alpha, g)
        lr, hr = lr.clone(), hr.clone()
        lr[:, :, y : y + bh, x : x + bw] = lr_mix[:, :, y : y + bh, x : x + bw]
        hr[:, :, y * scale : (y + bh) * scale, x * scale : (x + bw) * scale] = hr_mix[
            :, :, y * scale : (y + bh) * scale, x * scale : (x + bw) * scale
        ]
    return lr, hr
