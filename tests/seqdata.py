"""A tiny sequence set in the Vid4 / mmagic layout for the video evaluation and verify tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edge_sr.data.imresize import imresize

# clip -> (frames, GT height, GT width): two clips of different lengths and sizes
CLIPS = {"alpha": (5, 48, 64), "beta": (3, 40, 56)}


def gt_frame(clip: str, i: int, h: int, w: int) -> np.ndarray:
    """A moving pattern: smooth gradients, a drifting sinusoid and a little noise, uint8 (h, w, 3)."""
    rng = np.random.default_rng([i, len(clip), ord(clip[0])])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = 0.7 * i + (0.0 if clip == "alpha" else 1.3)
    wave = 0.5 + 0.5 * np.sin((xx + 2.0 * i) / 4.0 + phase) * np.cos(yy / 6.0)
    img = np.stack([wave, 0.6 * xx / w + 0.4 * wave, yy / h], -1) * 0.9 + 0.1 * rng.random((h, w, 3))
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_sequence_set(root: Path, clips: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """Write ``root/GT/<clip>/0000000i.png`` and ``root/BIx4/<clip>/`` (MATLAB bicubic x1/4); returns root."""
    for clip, (n, h, w) in (clips or CLIPS).items():
        for i in range(n):
            gt = gt_frame(clip, i, h, w)
            for folder, img in (("GT", gt), ("BIx4", imresize(gt, 0.25))):
                d = root / folder / clip
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / f"{i:08d}.png")
    return root
