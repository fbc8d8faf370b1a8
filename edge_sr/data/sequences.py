"""Video test and training sequences stored as frame folders, in the Vid4 / BasicSR / mmagic layout.

::

    <root>/GT/<clip>/00000000.png ...     ground truth frames, in name order
    <root>/BIx4/<clip>/00000000.png ...   the bicubic (MATLAB imresize) x4 LR frames, same names
    <root>/BDx4/<clip>/00000000.png ...   the blur-downsample x4 LR frames, same names

``open_sequences(root, scale=4, degradation="BI")`` lists the clips, pairs every GT frame with the LR frame of
the same name and checks sizes (from the file headers, nothing decoded); a :class:`Clip` decodes its frames
only when asked (:meth:`Clip.read_lr`, :meth:`Clip.read_gt`, :meth:`Clip.pairs`), so memory does not grow with
the clip. ``degradation=None`` opens the GT frames alone (training makes its own LR). Frames are uint8 RGB
``(H, W, 3)`` (gray replicated, alpha dropped, 16-bit reduced); frame order is the natural order of the names
(``Frame 2.png`` before ``Frame 10.png``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from edge_sr.data.datasets import IMAGE_EXTS, load_rgb_uint8
from edge_sr.data.imresize import modcrop
from edge_sr.errors import ConfigError, InputError

__all__ = [
    "DEGRADATIONS",
    "Clip",
    "Degradation",
    "frame_files",
    "is_sequence_root",
    "list_clips",
    "lr_dirname",
    "open_sequences",
]

Degradation = Literal["BI", "BD"]
DEGRADATIONS: tuple[Degradation, ...] = ("BI", "BD")


def lr_dirname(degradation: str, scale: int) -> str:
    """The LR folder of a degradation: ``lr_dirname("BD", 4) == "BDx4"``."""
    return f"{degradation}x{scale}"


def _natural_key(p: Path) -> list[int | str]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside ``folder`` in natural name order (an error if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
    if not files:
        raise InputError(folder, f"no frames ({', '.join(IMAGE_EXTS)}) in this folder")
    return sorted(files, key=_natural_key)


def is_sequence_root(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is meant as a sequence root: a ``GT/`` folder holding clip folders, or (no ``HR/``
    beside them) a ``BIx<s>`` / ``BDx<s>`` folder, so that a set missing its GT is told so."""
    root = Path(path)
    gt = root / "GT"
    if gt.is_dir():
        return any(p.is_dir() for p in gt.iterdir())
    if not root.is_dir() or (root / "HR").is_dir():
        return False
    return any(p.is_dir() and re.fullmatch(r"(BI|BD)x\d+", p.name) for p in root.iterdir())


def list_clips(root: str | os.PathLike[str]) -> list[str]:
    """The clip names of a sequence root (the folders under ``GT/``), sorted."""
    root = Path(root)
    gt = root / "GT"
    if not gt.is_dir():
        if not root.is_dir():
            raise InputError(root, "no such folder")
        raise InputError(
            root,
            "has no GT/ folder; expected <DIR>/GT/<clip>/*.png and <DIR>/BIx4/<clip>/ (Vid4 / mmagic layout)",
        )
    names = sorted(p.name for p in gt.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise InputError(gt, "holds no clip folders (expected GT/<clip>/*.png)")
    return names


@dataclass(frozen=True)
class Clip:
    """One clip: its GT frame files and (unless opened GT-only) the LR frame of each, in frame order.

    Attributes:
        name: the clip folder's name.
        gt: the GT frame files.
        lr: the LR frame files (same names as ``gt``), or None.
        scale: GT size / LR size; GT frames are read mod-cropped to a multiple of it.
        size: (H, W) of the (mod-cropped) GT frames.
    """

    name: str
    gt: tuple[Path, ...]
    lr: tuple[Path, ...] | None
    scale: int
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.gt)

    def head(self, frames: int | None) -> Clip:
        """The clip cut to its first ``frames`` frames (all when None)."""
        if frames is None or frames >= len(self):
            return self
        if frames < 1:
            raise ConfigError(None, f"frames must be at least 1, got {frames}")
        return replace(self, gt=self.gt[:frames], lr=None if self.lr is None else self.lr[:frames])

    def read_gt(self, i: int) -> np.ndarray:
        """GT frame ``i`` as (H, W, 3) uint8, mod-cropped to a multiple of ``scale``."""
        return modcrop(load_rgb_uint8(self.gt[i]), self.scale)

    def read_lr(self, i: int) -> np.ndarray:
        """LR frame ``i`` as (H / scale, W / scale, 3) uint8."""
        if self.lr is None:
            raise InputError(self.gt[i].parent, "opened without LR frames (degradation=None)")
        return load_rgb_uint8(self.lr[i])

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(LR, GT) uint8 frames in order, each decoded when reached."""
        for i in range(len(self)):
            yield self.read_lr(i), self.read_gt(i)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(path, f"cannot read image ({e})") from None
    return h, w


def _pair_names(gt_files: list[Path], lr_dir: Path, gt_dir: Path) -> list[Path]:
    """The LR file of each GT frame (same stem); an error naming the first frame without a partner."""
    lr_files = {p.stem: p for p in frame_files(lr_dir)}
    gt_stems = {p.stem for p in gt_files}
    for p in gt_files:
        if p.stem not in lr_files:
            raise InputError(
                lr_dir, f"no LR frame for {gt_dir.name}/{p.name}: LR and GT frame names must match"
            )
    extra = sorted(set(lr_files) - gt_stems)
    if extra:
        raise InputError(lr_files[extra[0]], f"has no GT frame in {gt_dir}: LR and GT frame names must match")
    return [lr_files[p.stem] for p in gt_files]


def _open_clip(root: Path, name: str, lr_root: Path | None, scale: int) -> Clip:
    gt_dir = root / "GT" / name
    gt_files = frame_files(gt_dir)
    h, w = _image_size(gt_files[0])
    if h < scale or w < scale:
        raise InputError(gt_files[0], f"is {w}x{h}, smaller than the scale {scale}")
    for p in gt_files[1:]:
        if _image_size(p) != (h, w):
            hh, ww = _image_size(p)
            raise InputError(
                p, f"is {ww}x{hh} but {gt_files[0].name} is {w}x{h}: a clip's frames share one size"
            )
    size = (h - h % scale, w - w % scale)
    lr_files: list[Path] | None = None
    if lr_root is not None:
        lr_dir = lr_root / name
        if not lr_dir.is_dir():
            raise InputError(lr_dir, f"missing: every clip in {root / 'GT'} needs its LR frames")
        lr_files = _pair_names(gt_files, lr_dir, gt_dir)
        want = (size[0] // scale, size[1] // scale)
        for p in lr_files:
            if _image_size(p) != want:
                lh, lw = _image_size(p)
                raise InputError(
                    p, f"is {lw}x{lh}; expected {want[1]}x{want[0]} (GT {size[1]}x{size[0]} / {scale})"
                )
    return Clip(name, tuple(gt_files), None if lr_files is None else tuple(lr_files), scale, size)


def open_sequences(
    root: str | os.PathLike[str],
    *,
    scale: int = 4,
    degradation: str | None = "BI",
    clips: Sequence[str] | None = None,
) -> list[Clip]:
    """The clips of a sequence root, paired and size-checked (frames are decoded later, on demand).

    Args:
        root: the folder holding ``GT/`` and ``<degradation>x<scale>/``.
        scale: the LR folder's factor.
        degradation: ``"BI"`` or ``"BD"`` (any ``<name>x<scale>`` folder works), or None for GT alone.
        clips: clip names to open, in the given order (default: all, sorted).

    Raises:
        InputError: no ``GT/``, no such LR folder or clip, a GT frame without its LR frame (or the reverse),
            frames of different sizes within a clip, or an LR size other than GT size / ``scale``.
    """
    root = Path(root)
    names = list_clips(root)
    lr_root = None
    if degradation is not None:
        lr_root = root / lr_dirname(degradation, scale)
        if not lr_root.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "GT")
            raise InputError(
                lr_root,
                f"no such folder: this set has no {degradation} x{scale} frames (found: {', '.join(found) or 'none'})",
            )
    if clips is not None:
        unknown = [c for c in clips if c not in names]
        if unknown:
            raise InputError(root / "GT", f"no clip {unknown[0]!r}; clips: {', '.join(names)}")
        names = list(clips)
    return [_open_clip(root, n, lr_root, scale) for n in names]
