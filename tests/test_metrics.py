"""SR metrics: Y conversion, border crop, identical images, and agreement with scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_sr.metrics import psnr, rgb_to_y, ssim


def _pair(seed: int = 0, shape: tuple[int, ...] = (48, 40, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    noise = rng.integers(-12, 13, shape)
    return a, np.clip(a.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def test_rgb_to_y_matches_matlab_rgb2ycbcr_corners() -> None:
    # MATLAB rgb2ycbcr maps black to 16 and white to 235; pure R/G/B to 16 + 65.481 / 128.553 / 24.966.
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.float64)
    np.testing.assert_allclose(rgb_to_y(px)[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-9)


def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    a, _ = _pair()
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)


def test_crop_border_removes_border_errors() -> None:
    a, _ = _pair()
    b = a.copy()
    b[:3] = 255 - b[:3]  # damage the top 3 rows only
    assert psnr(a, b, crop_border=2) < 40
    assert psnr(a, b, crop_border=3) == math.inf
    assert ssim(a, b, crop_border=3) == pytest.approx(1.0)


def test_psnr_known_value_rgb_and_y() -> None:
    a = np.full((20, 20, 3), 100, np.uint8)
    b = a + 3  # every sample off by 3
    assert psnr(a, b, channel="rgb") == pytest.approx(10 * math.log10(255**2 / 9), abs=1e-9)
    # On Y every pixel is off by 3 * 219 / 255.
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (3 * 219 / 255) ** 2), abs=1e-9)


def test_float_inputs_are_rounded_to_uint8_values() -> None:
    a, b = _pair(1)
    assert psnr(a / 255.0, b.astype(np.float32) / 255.0) == pytest.approx(psnr(a, b), abs=1e-9)


def test_gray_images_are_measured_on_gray_values() -> None:
    a, b = _pair(2, (40, 40))
    ref = 10 * math.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))
    assert psnr(a, b) == pytest.approx(ref, abs=1e-9)


def test_against_scikit_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _pair(3, (64, 56, 3))
    ya, yb = rgb_to_y(a)[4:-4, 4:-4], rgb_to_y(b)[4:-4, 4:-4]
    assert psnr(a, b, crop_border=4) == pytest.approx(
        peak_signal_noise_ratio(ya, yb, data_range=255), abs=1e-9
    )
    # The MATLAB ssim_index convention in scikit-image terms: 11x11 Gaussian (sigma 1.5), population covariance.
    ref = structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(a, b, crop_border=4) == pytest.approx(ref, abs=1e-6)
