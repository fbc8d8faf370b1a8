"""Image data: MATLAB-compatible bicubic, paired and on-the-fly datasets, augmentations."""

from __future__ import annotations

from edge_sr.data.augment import AugmentConfig, augment_batch, augment_pair
from edge_sr.data.datasets import (
    HRFolderDataset,
    IndexRangeSampler,
    PairedFolderDataset,
    find_images,
    load_rgb_uint8,
    to_tensor,
)
from edge_sr.data.imresize import imresize, modcrop
from edge_sr.data.paths import DATA_ENV, data_path, data_root

__all__ = [
    "DATA_ENV",
    "AugmentConfig",
    "HRFolderDataset",
    "IndexRangeSampler",
    "PairedFolderDataset",
    "augment_batch",
    "augment_pair",
    "data_path",
    "data_root",
    "find_images",
    "imresize",
    "load_rgb_uint8",
    "modcrop",
    "to_tensor",
]
