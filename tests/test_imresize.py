"""MATLAB bicubic imresize: bit-exact against every LR file shipped with the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_sr.data.imresize import imresize, modcrop


def _u8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


@pytest.mark.parametrize("bench", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bit_exact_against_shipped_lr(data_root: Path, bench: str, scale: int) -> None:
    hr_dir = data_root / "benchmarks" / bench / "HR"
    names = sorted(hr_dir.glob("*.png"))
    assert names
    for hr_path in names:
        hr = modcrop(_u8(hr_path), scale)
        lr = _u8(data_root / "benchmarks" / bench / "LR_bicubic" / f"X{scale}" / hr_path.name)
        ours = imresize(hr, 1.0 / scale)
        assert ours.dtype == np.uint8 and ours.shape == lr.shape, hr_path.name
        assert np.array_equal(ours, lr), (
            f"{bench} x{scale} {hr_path.name}: {np.count_nonzero(ours != lr)} pixels differ"
        )


def test_constant_image_stays_constant_and_sizes_are_ceil() -> None:
    img = np.full((13, 7, 3), 77, np.uint8)
    up = imresize(img, 3)
    assert up.shape == (39, 21, 3) and np.all(up == 77)
    assert imresize(img, 0.5).shape == (7, 4, 3)
    assert imresize(img, output_shape=(5, 9)).shape == (5, 9, 3)
