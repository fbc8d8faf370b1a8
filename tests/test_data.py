"""Training data: on-the-fly LR, paired layouts, determinism, augmentations keep LR/HR aligned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from PIL import Image

from edge_sr.data import (
    AugmentConfig,
    HRFolderDataset,
    PairedFolderDataset,
    augment_batch,
    augment_pair,
    imresize,
)
from edge_sr.errors import InputError

DATA = DATA_ROOT


def _rand_images(folder: Path, n: int, size: tuple[int, int] = (60, 44), seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    imgs = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
        imgs.append(img)
    return imgs


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_folder_lr_is_the_whole_images_matlab_bicubic(tmp_path: Path, scale: int) -> None:
    """A patch's LR is cut from the bicubic LR of the whole (modcropped) image, as the benchmark LR is made;
    the LR of the crop alone differs at its border (its edges are replicated into the kernel)."""
    from edge_sr.data.imresize import modcrop

    imgs = _rand_images(tmp_path / "hr", 3, size=(70, 58))
    ds = HRFolderDataset([tmp_path / "hr"], scale=scale, patch_size=8, augment=AugmentConfig(flip=0, rot90=0))
    whole = [imresize(modcrop(img, scale), 1 / scale) for img in imgs]
    hp, border_differs = 8 * scale, 0
    for i in range(12):
        lr, hr = ds[i]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, hp, hp)
        hr_u8 = np.round(hr.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        lr_u8 = np.round(lr.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        k, y, x = next(
            (k, y, x)
            for k, img in enumerate(imgs)
            for y in range(0, img.shape[0] - hp + 1, scale)
            for x in range(0, img.shape[1] - hp + 1, scale)
            if np.array_equal(img[y : y + hp, x : x + hp], hr_u8)
        )
        assert np.array_equal(lr_u8, whole[k][y // scale : y // scale + 8, x // scale : x // scale + 8])
        border_differs += not np.array_equal(lr_u8, imresize(hr_u8, 1 / scale))
    assert border_differs > 6


def test_samples_are_a_function_of_seed_and_index(tmp_path: Path) -> None:
    _rand_images(tmp_path / "hr", 4)
    a = HRFolderDataset([tmp_path / "hr"], scale=3, patch_size=6, seed=7)
    b = HRFolderDataset([tmp_path / "hr"], scale=3, patch_size=6, seed=7)
    c = HRFolderDataset([tmp_path / "hr"], scale=3, patch_size=6, seed=8)
    for i in (0, 5, 123456789):
        assert torch.equal(a[i][1], b[i][1])
    assert any(not torch.equal(a[i][1], c[i][1]) for i in range(5))


def test_hr_scales_add_reduced_copies_of_each_image(tmp_path: Path) -> None:
    """``hr_scales`` (FSRCNN's augmentation): each image joins once per factor, reduced by MATLAB bicubic; patches
    are cut from the reduced copies too, and a copy smaller than one HR patch is skipped like a small image."""
    imgs = _rand_images(tmp_path / "hr", 2, size=(60, 50))
    plain = AugmentConfig(flip=0, rot90=0)
    ds = HRFolderDataset([tmp_path / "hr"], scale=2, patch_size=12, hr_scales=[1.0, 0.8], augment=plain)
    assert len(ds.hr) == 4 and ds.names[1].endswith("0000.png (x0.8)")
    assert ds.hr[1].shape == (48, 40, 3) and np.array_equal(ds.hr[1], imresize(imgs[0], 0.8))
    small = HRFolderDataset([tmp_path / "hr"], scale=2, patch_size=13, hr_scales=[1.0, 0.4], skip_small=True)
    assert len(small.hr) == 2  # the 24x20 copies are under the 26-pixel HR patch
    reduced = [imresize(img, 0.8) for img in imgs]
    from_reduced = 0
    for i in range(40):
        hr = np.round(ds[i][1].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        from_reduced += any(
            np.array_equal(img[y : y + 24, x : x + 24], hr)
            for img in reduced
            for y in range(0, img.shape[0] - 23, 2)
            for x in range(0, img.shape[1] - 23, 2)
        )
    assert 0 < from_reduced < 40  # drawn by area: 0.64 of an original's share


def test_paired_div2k_and_benchmark_layouts(tmp_path: Path) -> None:
    hrs = _rand_images(tmp_path / "DIV2K_train_HR", 2, size=(40, 48))
    (tmp_path / "DIV2K_train_LR_bicubic" / "X4").mkdir(parents=True)
    for i, img in enumerate(hrs):
        Image.fromarray(imresize(img, 1 / 4)).save(
            tmp_path / "DIV2K_train_LR_bicubic" / "X4" / f"{i:04d}x4.png"
        )
    ds = PairedFolderDataset(tmp_path, scale=4, patch_size=5, augment=AugmentConfig(flip=0, rot90=0))
    lr, hr = ds[3]
    hr_u8 = np.round(hr.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert lr.shape == (3, 5, 5) and hr.shape == (3, 20, 20)
    # the LR patch is the matching window of the pre-made LR image: find it in one of the LR files
    lr_u8 = np.round(lr.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    found = False
    for img in hrs:
        full_lr = imresize(img, 1 / 4)
        for y in range(full_lr.shape[0] - 4):
            for x in range(full_lr.shape[1] - 4):
                if np.array_equal(full_lr[y : y + 5, x : x + 5], lr_u8):
                    found = found or np.array_equal(img[4 * y : 4 * y + 20, 4 * x : 4 * x + 20], hr_u8)
    assert found
    bench = DATA / "benchmarks" / "Set5"
    ds5 = PairedFolderDataset(bench, scale=2, patch_size=16)
    assert len(ds5.hr) == 5 and ds5[0][1].shape == (3, 32, 32)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        HRFolderDataset([tmp_path / "missing"], scale=2)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        HRFolderDataset([tmp_path / "txt"], scale=2)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="a.png"):
        HRFolderDataset([tmp_path / "bad"], scale=2)
    _rand_images(tmp_path / "small", 1, size=(10, 10))
    with pytest.raises(InputError, match="smaller than the HR patch"):
        HRFolderDataset([tmp_path / "small"], scale=2, patch_size=8)
    with pytest.raises(InputError, match="not a paired dataset"):
        PairedFolderDataset(tmp_path / "small", scale=2)


def test_pair_augment_keeps_alignment() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    lr = imresize(hr, 1 / 2)
    cfg = AugmentConfig(flip=1.0, rot90=1.0, rgb_shuffle=1.0)
    lr2, hr2 = augment_pair(lr, hr, cfg, np.random.default_rng(1))
    assert not np.array_equal(hr2, hr)
    # bicubic downscaling commutes with flips, transposes and channel permutations (up to the uint8
    # rounding between the two passes, whose order a transpose swaps)
    assert np.abs(imresize(hr2, 1 / 2).astype(int) - lr2.astype(int)).max() <= 1
    lr3, hr3 = augment_pair(
        lr, hr, AugmentConfig(flip=1.0, rot90=0.0, rgb_shuffle=1.0), np.random.default_rng(1)
    )
    assert np.array_equal(imresize(hr3, 1 / 2), lr3)


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "cutmixup", "blend"])
def test_batch_augment_keeps_lr_hr_consistent(kind: str) -> None:
    # HR = nearest-upsampled LR, so every augmentation that keeps the pair aligned keeps that relation.
    g0 = torch.Generator().manual_seed(0)
    lr = torch.rand(6, 3, 8, 8, generator=g0)
    hr = lr.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    cfg = AugmentConfig(**{kind: 1.0})
    lr2, hr2 = augment_batch(lr, hr, 2, cfg, torch.Generator().manual_seed(3))
    assert not torch.equal(lr2, lr)
    assert torch.allclose(hr2, lr2.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), atol=1e-6)
    again = augment_batch(lr, hr, 2, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], lr2)
