"""Tiny constructor arguments per model family, so zoo-wide tests run in seconds on two cores.

Families not listed here are made tiny by each test file's own argument-name table.
"""

from __future__ import annotations

FAMILY_TINY: dict[str, dict] = {
    "pan": {"nf": 8, "unf": 4, "nb": 1},
    "rlfn": {"feature_channels": 8, "mid_channels": 8, "num_blocks": 1, "esa_channels": 4},
    "imdn": {"nf": 16, "num_modules": 1},
    "safmn": {"dim": 8, "n_blocks": 1},
    "dipnet": {"feature_channels": 8, "mid_channels": 6, "esa_channels": 4, "blocks": 1, "rep_channels": 8},
    "liif": {"depth": 1, "feats": 4, "hidden": [8]},
}
