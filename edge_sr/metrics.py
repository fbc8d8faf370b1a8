"""PSNR and SSIM the way SR papers compute them (the BasicSR / MATLAB convention).

Defaults: Y channel of BT.601 as MATLAB's ``rgb2ycbcr`` (``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``
for R, G, B in [0, 255]; :func:`rgb_to_ycbcr` / :func:`ycbcr_to_rgb` give all three channels and the inverse, the
colour conversion of Y-channel models), ``crop_border = scale`` pixels shaved at every border, float64 arithmetic, inputs
as uint8-valued images (a model's output is clipped to [0, 255] and rounded first). A single-channel image
is measured on its gray values, with no Y conversion (the classic MATLAB protocol: see the benchmark
README). SSIM is Wang et al.'s: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, 'valid'
filtering, as in the reference MATLAB ``ssim_index`` and BasicSR. Written here (numpy / scipy-free) to pin
the convention exactly; scikit-image's defaults differ (7x7 uniform window).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Channel = Literal["y", "rgb"]


def to_uint8_values(img: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> float64 integer values in [0, 255] (clip, round); uint8/uint16 -> 8-bit values."""
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        return np.round(img.astype(np.float64) / 257.0)
    return np.round(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) values in [0, 255] -> (H, W) Y in [16, 235], float64 (MATLAB ``rgb2ycbcr``)."""
    img = img.astype(np.float64)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


# MATLAB ``rgb2ycbcr`` (BT.601, studio swing): [Y, Cb, Cr] = YCBCR_OFFSET·peak/255 + YCBCR_MATRIX @ [R, G, B],
# for values in [0, peak]; Y spans [16, 235]·peak/255 and Cb, Cr [16, 240]·peak/255.
YCBCR_MATRIX = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
RGB_MATRIX = np.linalg.inv(YCBCR_MATRIX)  # MATLAB ``ycbcr2rgb``: RGB = RGB_MATRIX @ (YCbCr - offset)


def rgb_to_ycbcr(img: np.ndarray, *, peak: float = 255.0) -> np.ndarray:
    """(..., 3) RGB values in [0, ``peak``] -> (..., 3) Y, Cb, Cr in the same units, float64 (MATLAB
    ``rgb2ycbcr``; ``peak=1.0`` for float images in [0, 1])."""
    return np.asarray(img, dtype=np.float64) @ YCBCR_MATRIX.T + YCBCR_OFFSET * (peak / 255.0)


def ycbcr_to_rgb(img: np.ndarray, *, peak: float = 255.0) -> np.ndarray:
    """(..., 3) Y, Cb, Cr -> (..., 3) RGB in the same units, float64, unclipped (MATLAB ``ycbcr2rgb``)."""
    return (np.asarray(img, dtype=np.float64) - YCBCR_OFFSET * (peak / 255.0)) @ RGB_MATRIX.T


def _prepare(
    a: np.ndarray, b: np.ndarray, crop_border: int, channel: Channel
) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    a, b = to_uint8_values(a), to_uint8_values(b)
    gray = a.ndim == 2 or a.shape[-1] == 1
    if gray:
        a, b = a.reshape(a.shape[:2]), b.reshape(b.shape[:2])
    elif channel == "y":
        a, b = rgb_to_y(a), rgb_to_y(b)
    return _shave(a, crop_border), _shave(b, crop_border)


def _shave(a: np.ndarray, crop_border: int) -> np.ndarray:
    return a[crop_border:-crop_border, crop_border:-crop_border] if crop_border > 0 else a


def psnr(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, channel: Channel = "y") -> float:
    """PSNR in dB between two (H, W[, C]) images (uint8, or float in [0, 1]); ``inf`` when identical."""
    a, b = _prepare(a, b, crop_border, channel)
    return _psnr(a, b)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def psnr_values(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0) -> float:
    """PSNR in dB between two (H, W) arrays of pixel values in [0, 255] taken as they are (no rounding,
    no colour conversion): e.g. a Y-channel model's rounded output against :func:`rgb_to_y` of the HR."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (H, W) arrays of the same shape, got {a.shape} and {b.shape}")
    return _psnr(_shave(a.astype(np.float64), crop_border), _shave(b.astype(np.float64), crop_border))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return g


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation with a symmetric 1-D kernel: rows, then columns.
    k = g.size
    h, w = img.shape
    rows = sum(g[i] * img[i : h - k + 1 + i, :] for i in range(k))
    return sum(g[j] * rows[:, j : w - k + 1 + j] for j in range(k))  # type: ignore[index]


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    s_aa = _filter_valid(a * a, g) - mu_a**2
    s_bb = _filter_valid(b * b, g) - mu_b**2
    s_ab = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, channel: Channel = "y") -> float:
    """SSIM between two images; on RGB (``channel='rgb'``) the mean of the per-channel SSIMs."""
    a, b = _prepare(a, b, crop_border, channel)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def ssim_values(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0) -> float:
    """SSIM between two (H, W) arrays of pixel values in [0, 255] taken as they are (see :func:`psnr_values`)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two (H, W) arrays of the same shape, got {a.shape} and {b.shape}")
    return _ssim_2d(_shave(a.astype(np.float64), crop_border), _shave(b.astype(np.float64), crop_border))
