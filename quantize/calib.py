"""Calibration data: N low-resolution patches cut at the export input size from an image folder.

Static INT8 fixes one scale / zero point per activation tensor from the ranges seen here, so the patches must
look like what the deployed model will see: LR images at the exported (H, W). HR folders are downscaled with the
MATLAB-compatible bicubic (``edge_sr.data.imresize``), exactly as the benchmark LR sets are made; folders that
already hold LR images are cropped directly (``lr=True``). Image ``i`` of the sorted folder gives patch ``i``, its
crop position a pure function of ``(seed, i)``, so a calibration set is reproducible from the manifest entry.
A Y-channel model (``colors=1``) calibrates on the Y of the LR crops (BT.601 as MATLAB's ``rgb2ycbcr``, in [0, 1]
units, unrounded: what ``edge-sr eval`` and the runtime feed it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from edge_sr.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSet:
    """``patches`` (N, C, H, W) float32 in [0, 1] (C = 3 RGB, or 1 Y) and where they came from (for the manifest)."""

    patches: Tensor
    folder: str
    seed: int
    lr_input: bool
    names: tuple[str, ...]

    @property
    def colors(self) -> int:
        """The channels of the patches: 3 (RGB) or 1 (Y)."""
        return int(self.patches.shape[1])

    def with_colors(self, colors: int) -> CalibrationSet:
        """This set for a ``colors``-channel model: RGB patches become their Y for ``colors=1``.

        Raises:
            InputError: Y patches asked for RGB, or a channel count other than 1 or 3.
        """
        if colors == self.colors:
            return self
        if colors != 1 or self.colors != 3:
            raise InputError(
                self.folder,
                f"calibration patches have {self.colors} channels and cannot feed a {colors}-colour model",
            )
        return dataclasses.replace(self, patches=y_of(self.patches))

    @property
    def count(self) -> int:
        return int(self.patches.shape[0])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.patches.shape[2]), int(self.patches.shape[3])

    def batches(self, batch_size: int = 8) -> Iterator[Tensor]:
        """(b, C, H, W) slices in order."""
        for i in range(0, self.count, batch_size):
            yield self.patches[i : i + batch_size]

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest records about the calibration set."""
        return {
            "folder": self.folder,
            "count": self.count,
            "seed": self.seed,
            "input_size": list(self.input_size),
            "source": "lr" if self.lr_input else "hr-bicubic",
            **({"channel": "Y"} if self.colors == 1 else {}),
        }


def y_of(patches: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Y of MATLAB ``rgb2ycbcr`` in [0, 1] units, float32."""
    from edge_sr.metrics import YCBCR_MATRIX, YCBCR_OFFSET

    w = torch.from_numpy(YCBCR_MATRIX[0]).view(1, 3, 1, 1)
    return ((patches.double() * w).sum(1, keepdim=True) + YCBCR_OFFSET[0] / 255.0).float()


def _lr_of(img: np.ndarray, scale: int, lr_input: bool) -> np.ndarray:
    from edge_sr.data import imresize, modcrop

    if lr_input:
        return img
    # (H, W, 3) uint8 -> modcrop -> (H/s, W/s, 3) uint8 MATLAB bicubic
    return imresize(modcrop(img, scale), 1 / scale)


def load_calibration(
    folder: str | os.PathLike[str],
    *,
    count: int,
    input_size: tuple[int, int],
    scale: int,
    seed: int = 0,
    lr_input: bool = False,
    colors: int = 3,
) -> CalibrationSet:
    """Cut ``count`` LR patches of ``input_size`` (H, W), one per image of ``folder`` (sorted by name).

    Images whose LR is smaller than the patch are skipped with a warning. ``colors=1`` (a Y-channel model,
    ``card.colors``) gives the Y of each RGB crop, the same crops as ``colors=3``.

    Raises:
        InputError: no such folder, no images, or fewer usable images than ``count``.
    """
    from edge_sr.data import find_images, load_rgb_uint8, to_tensor

    if count < 1:
        raise InputError(folder, f"calibration needs at least one image (asked for {count})")
    if colors not in (1, 3):
        raise InputError(folder, f"calibration for a {colors}-colour model; expected colors 1 or 3")
    files = find_images(folder)  # InputError when the folder is missing or holds no images
    if len(files) < count:
        raise InputError(
            folder,
            f"asked for {count} calibration images but the folder has {len(files)}; lower --calib-count",
        )
    h, w = input_size
    patches: list[Any] = []
    names: list[str] = []
    skipped = 0
    for i, f in enumerate(files):
        if len(patches) == count:
            break
        lr = _lr_of(load_rgb_uint8(f), scale, lr_input)
        if lr.shape[0] < h or lr.shape[1] < w:
            skipped += 1
            continue
        rng = np.random.default_rng([seed, i])
        y = int(rng.integers(0, lr.shape[0] - h + 1))
        x = int(rng.integers(0, lr.shape[1] - w + 1))
        patches.append(to_tensor(lr[y : y + h, x : x + w]))  # (3, h, w)
        names.append(f.name)
    if skipped:
        logger.warning("skipped %d calibration images whose LR is smaller than %dx%d", skipped, h, w)
    if len(patches) < count:
        raise InputError(
            folder,
            f"only {len(patches)} images give a {h}x{w} LR patch at x{scale} but {count} were asked; "
            "use a smaller --input-size or --calib-count",
        )
    return CalibrationSet(
        patches=torch.stack(patches),
        folder=str(Path(folder)),
        seed=seed,
        lr_input=lr_input,
        names=tuple(names),
    ).with_colors(colors)


def from_tensors(patches: Tensor, *, name: str = "<tensors>", seed: int = 0) -> CalibrationSet:
    """Wrap ready-made (N, 3, H, W) RGB or (N, 1, H, W) Y patches (tests, synthetic data) as a calibration set."""
    if patches.ndim != 4 or patches.shape[1] not in (1, 3):
        raise InputError(
            name, f"calibration patches must be (N, 3, H, W) or (N, 1, H, W); got {tuple(patches.shape)}"
        )
    return CalibrationSet(
        patches=patches.float(),
        folder=name,
        seed=seed,
        lr_input=True,
        names=tuple(str(i) for i in range(len(patches))),
    )
