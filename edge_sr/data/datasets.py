"""Training datasets: HR folders with LR made on the fly, and paired LR/HR folders.

Images are decoded once and cached in memory as uint8 arrays, so training on two CPU cores is
compute-bound. Sample ``i`` is a pure function of ``(seed, i)``: which image, which crop, which flips. A
training run that asks for samples ``step·batch .. step·batch + batch - 1`` therefore gets the same
batches whatever the number of DataLoader workers, and a resumed run continues bit-exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from edge_sr.data.augment import AugmentConfig, augment_pair
from edge_sr.data.imresize import imresize, modcrop
from edge_sr.errors import InputError

logger = logging.getLogger(__name__)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise InputError(folder, f"no images ({', '.join(IMAGE_EXTS)}) in this folder")
    return files


def load_rgb_uint8(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image to (H, W, 3) uint8 RGB (gray replicated, alpha dropped, 16-bit reduced)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.round(arr / 257.0).clip(0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(path, f"cannot decode image ({e})") from None


def to_tensor(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


# LR pixels of context on each side of a patch: the bicubic kernel of a 1/s downscale spans 4·s HR pixels,
# i.e. +-2 LR pixels, so with 2 LR pixels of context the patch's LR equals that of the whole image.
_LR_CONTEXT = 2


def lr_of_crop(img: np.ndarray, y: int, x: int, hp: int, s: int) -> np.ndarray:
    """The bicubic LR of the HR crop ``img[y:y+hp, x:x+hp]`` (``y``, ``x``, ``hp`` multiples of ``s``) as the
    benchmark sets make it: cut from the LR of the whole (modcropped) image, not from the crop alone.

    Downscaling the crop by itself replicates its edges into the kernel, so its outer two LR pixels on each
    side would differ from the LR a test image gets (an eighth of a 32-pixel patch). Only the crop and two
    LR pixels of context around it are resized, which gives the same values.
    """
    m = _LR_CONTEXT * s
    h, w = img.shape[0] // s * s, img.shape[1] // s * s
    y0, x0 = max(0, y - m), max(0, x - m)
    y1, x1 = min(h, y + hp + m), min(w, x + hp + m)
    lr = imresize(img[y0:y1, x0:x1], 1 / s)
    ly, lx, p = (y - y0) // s, (x - x0) // s, hp // s
    return lr[ly : ly + p, lx : lx + p]


class _Cached(Dataset):
    def __init__(
        self, *, scale: int, patch_size: int, length: int, augment: AugmentConfig | None, seed: int
    ) -> None:
        self.scale, self.patch_size, self.length, self.seed = scale, patch_size, length, seed
        self.augment = augment if augment is not None else AugmentConfig()
        self.hr: list[np.ndarray] = []
        self.names: list[str] = []

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def _check_sizes(self, min_hr: int, skip_small: bool) -> list[int]:
        """Indices of images large enough for one patch; a small image is an error unless ``skip_small``."""
        keep = []
        for i, (name, img) in enumerate(zip(self.names, self.hr)):
            if min(img.shape[:2]) >= min_hr:
                keep.append(i)
            elif not skip_small:
                raise InputError(
                    name,
                    f"image is {img.shape[1]}x{img.shape[0]}, smaller than the HR patch {min_hr}x{min_hr}",
                )
        if not keep:
            raise InputError(self.names[0], f"no image is at least {min_hr}x{min_hr} (the HR patch)")
        if len(keep) < len(self.hr):
            logger.warning(
                "skipped %d of %d images smaller than the HR patch %d",
                len(self.hr) - len(keep),
                len(self.hr),
                min_hr,
            )
        return keep


class HRFolderDataset(_Cached):
    """HR images from one or more folders; LR made on the fly with the MATLAB-compatible ``imresize``.

    Each sample: a random HR crop of ``patch_size·scale`` (aligned to the scale), its LR by bicubic
    downscaling (uint8, exactly as the benchmark LR sets are made), both flipped / rotated alike.
    ``hr_scales`` (FSRCNN's augmentation, e.g. 1, 0.9, 0.8, 0.7, 0.6): every image joins once per factor, reduced
    by it (MATLAB bicubic) before patches are cut; images are drawn in proportion to their area.
    Returns ``(lr (3, p, p), hr (3, p·s, p·s))`` float in [0, 1].
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike[str]],
        *,
        scale: int,
        patch_size: int = 48,
        length: int = 1_000_000,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        skip_small: bool = False,
        exclude: Collection[str | os.PathLike[str]] = (),
        hr_scales: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__(scale=scale, patch_size=patch_size, length=length, augment=augment, seed=seed)
        skip = {Path(e).resolve() for e in exclude}
        files = [f for folder in folders for f in find_images(folder) if f.resolve() not in skip]
        for name, img in ((str(f), load_rgb_uint8(f)) for f in files):
            for k in hr_scales:
                # FSRCNN's augmentation: each image also downscaled (MATLAB bicubic) serves as a new HR image
                self.names.append(name if k == 1 else f"{name} (x{k:g})")
                self.hr.append(img if k == 1 else imresize(img, k))
        keep = self._check_sizes(patch_size * scale, skip_small)
        self.names, self.hr = [self.names[i] for i in keep], [self.hr[i] for i in keep]
        # Sample images in proportion to their area, so big images are not under-used.
        areas = np.array([img.shape[0] * img.shape[1] for img in self.hr], dtype=np.float64)
        self._cum = np.cumsum(areas / areas.sum())

    def _image(self, rng: np.random.Generator) -> np.ndarray:
        """An image drawn in proportion to its area."""
        return self.hr[min(int(np.searchsorted(self._cum, rng.random(), side="right")), len(self.hr) - 1)]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rng = self._rng(index)
        img = self._image(rng)
        s, p = self.scale, self.patch_size
        hp = p * s
        y = int(rng.integers(0, (img.shape[0] - hp) // s + 1)) * s
        x = int(rng.integers(0, (img.shape[1] - hp) // s + 1)) * s
        hr = img[y : y + hp, x : x + hp]
        lr = lr_of_crop(img, y, x, hp, s)
        lr, hr = augment_pair(lr, hr, self.augment, rng)
        return to_tensor(lr), to_tensor(hr)


class RandomScaleDataset(HRFolderDataset):
    """Arbitrary-scale training samples (LIIF's ``sr-implicit-downsampled``): a factor ``s`` drawn uniformly
    from ``scale_range``, an HR crop of ``round(patch_size·s)``, its LR of ``patch_size`` by the
    MATLAB-compatible ``imresize`` (uint8; LIIF uses PIL's bicubic), both flipped / rotated alike, and
    ``sample_q`` HR pixels drawn without replacement as query points.

    Returns ``(lr (3, p, p), queries (Q, 7))``: per query its centre (row, column) and the HR pixel's size in
    LIIF's [-1, 1] units of the crop, then its RGB in [0, 1] (``Q = min(sample_q, p²)``, the same for every
    sample, so batches stack).
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike[str]],
        *,
        scale_range: tuple[float, float] = (1.0, 4.0),
        sample_q: int = 2304,
        patch_size: int = 48,
        length: int = 1_000_000,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        skip_small: bool = False,
        exclude: Collection[str | os.PathLike[str]] = (),
    ) -> None:
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 1.0 <= lo <= hi:
            raise InputError(None, f"scale range {lo}..{hi} is not a range of factors of at least 1")
        super().__init__(
            folders, scale=math.ceil(hi), patch_size=patch_size, length=length, augment=augment, seed=seed,
            skip_small=skip_small, exclude=exclude,
        )  # fmt: skip
        self.scale_range = (lo, hi)
        self.sample_q = min(sample_q, patch_size * patch_size)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rng = self._rng(index)
        img = self._image(rng)
        p = self.patch_size
        hp = min(round(p * rng.uniform(*self.scale_range)), min(img.shape[:2]))
        y = int(rng.integers(0, img.shape[0] - hp + 1))
        x = int(rng.integers(0, img.shape[1] - hp + 1))
        hr = img[y : y + hp, x : x + hp]
        lr = imresize(hr, output_shape=(p, p))
        lr, hr = augment_pair(lr, hr, self.augment, rng)
        pick = rng.choice(hp * hp, size=self.sample_q, replace=False)
        rows, cols = np.divmod(pick, hp)
        centre = np.stack([rows, cols], 1) * (2.0 / hp) + (1.0 / hp - 1.0)  # pixel centres in [-1, 1]
        cell = np.full((self.sample_q, 2), 2.0 / hp)
        rgb = hr[rows, cols].astype(np.float64) / 255.0
        queries = torch.from_numpy(np.concatenate([centre, cell, rgb], 1)).float()
        return to_tensor(lr), queries


def pair_lr_files(hr_dir: Path, lr_dir: Path, scale: int) -> list[tuple[Path, Path]]:
    """Match HR files to LR files named ``<stem>.png`` (benchmark layout) or ``<stem>x<s>.png`` (DIV2K)."""
    lr_files = {p.stem: p for p in find_images(lr_dir)}
    pairs = []
    for hr in find_images(hr_dir):
        lr = lr_files.get(hr.stem) or lr_files.get(f"{hr.stem}x{scale}")
        if lr is None:
            raise InputError(
                lr_dir, f"no LR image for {hr.name} (expected {hr.stem}.png or {hr.stem}x{scale}.png)"
            )
        pairs.append((hr, lr))
    return pairs


def resolve_paired_layout(root: str | os.PathLike[str], scale: int) -> tuple[Path, Path]:
    """``(hr_dir, lr_dir)`` of a paired folder: ``HR`` + ``LR_bicubic/X{s}``, or DIV2K's ``*_HR`` + ``*_LR_bicubic/X{s}``."""
    root = Path(root)
    if (root / "HR").is_dir():
        return root / "HR", root / "LR_bicubic" / f"X{scale}"
    hr_dirs = sorted(root.glob("*_HR"))
    if hr_dirs:
        prefix = hr_dirs[0].name[: -len("_HR")]
        return hr_dirs[0], root / f"{prefix}_LR_bicubic" / f"X{scale}"
    raise InputError(
        root, "not a paired dataset: expected HR/ + LR_bicubic/X{s}/ or <name>_HR/ + <name>_LR_bicubic/X{s}/"
    )


class PairedFolderDataset(_Cached):
    """Pre-made LR/HR pairs (BasicSR / DIV2K layouts); random aligned patches, augmented alike."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        scale: int,
        patch_size: int = 48,
        length: int = 1_000_000,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        skip_small: bool = False,
    ) -> None:
        super().__init__(scale=scale, patch_size=patch_size, length=length, augment=augment, seed=seed)
        hr_dir, lr_dir = resolve_paired_layout(root, scale)
        pairs = pair_lr_files(hr_dir, lr_dir, scale)
        self.names = [str(h) for h, _ in pairs]
        self.hr = [modcrop(load_rgb_uint8(h), scale) for h, _ in pairs]
        self.lr = [load_rgb_uint8(lr) for _, lr in pairs]
        for name, h, lr in zip(self.names, self.hr, self.lr):
            if h.shape[0] != lr.shape[0] * scale or h.shape[1] != lr.shape[1] * scale:
                raise InputError(
                    name,
                    f"HR {h.shape[1]}x{h.shape[0]} is not x{scale} of its LR {lr.shape[1]}x{lr.shape[0]}",
                )
        keep = self._check_sizes(patch_size * scale, skip_small)
        self.names = [self.names[i] for i in keep]
        self.hr, self.lr = [self.hr[i] for i in keep], [self.lr[i] for i in keep]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rng = self._rng(index)
        i = int(rng.integers(0, len(self.hr)))
        s, p = self.scale, self.patch_size
        lr_img, hr_img = self.lr[i], self.hr[i]
        y = int(rng.integers(0, lr_img.shape[0] - p + 1))
        x = int(rng.integers(0, lr_img.shape[1] - p + 1))
        lr = lr_img[y : y + p, x : x + p]
        hr = hr_img[y * s : (y + p) * s, x * s : (x + p) * s]
        lr, hr = augment_pair(lr, hr, self.augment, rng)
        return to_tensor(lr), to_tensor(hr)


class IndexRangeSampler(torch.utils.data.Sampler[int]):
    """Yields ``start, start + 1, ...`` up to ``stop``: sample indices are global step·batch positions."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
