"""Training clips for video models: T consecutive (LR, HR) frames, from three kinds of source.

- :class:`FrameFolderSource`: videos stored as folders of frames (sorted images per folder; a root holding
  such folders, or one such folder). HR is the stored frame; LR is made by the degradation.
- :class:`VideoFileSource`: the frames of real video files (mp4 / mov / mkv / webm), decoded once by
  :class:`edge_sr.data.video.VideoReader` (PyAV), optionally downscaled (a compressed frame is a poor HR; halving it removes most of the codec's
  blocking) and capped in count. Real camera motion, occlusions, noise; no ground truth beyond the frame.
- :class:`SyntheticMotionSource`: still images turned into sequences. A camera path with a random
  sub-pixel velocity, acceleration, rotation rate and zoom rate is applied to the HR image by
  ``torch.nn.functional.grid_sample`` (bicubic), frame 0 being an exact crop; then the degradation.
  The motion is known and global, the content is the full variety of the still sets.

:class:`ClipDataset` mixes the sources by weight. Sample ``k`` is a pure function of ``(seed, k)`` (which
source, which clip, which crop, flips / transpose and temporal reversal, applied alike to every frame), so a
training run resumes bit-exactly, as with the image datasets.

Degradations (:func:`degrade`): ``BI`` = MATLAB ``imresize(hr, 1/s, 'bicubic')`` on uint8 (the Vid4 BIx4
files); ``BD`` = Gaussian blur sigma 0.4·s (13 taps), reflect padding, sampling GT pixel (s·i, s·j), rounding
half to even (BasicSR's ``duf_downsample``, the Vid4 BDx4 files).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from edge_sr.data.datasets import find_images, load_rgb_uint8, to_tensor
from edge_sr.data.imresize import imresize, modcrop
from edge_sr.errors import InputError

logger = logging.getLogger(__name__)

Degradation = Literal["BI", "BD"]
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def _gaussian_taps(scale: int) -> np.ndarray:
    """The 13 taps of scipy's ``gaussian_filter`` (sigma 0.4·scale, truncate 4) centred in 13."""
    sigma = 0.4 * scale
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    taps = np.zeros(13)
    taps[6 - radius : 6 + radius + 1] = phi / phi.sum()
    return taps


def bd_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """BD degradation of a uint8 (H, W, 3) frame (H, W multiples of ``scale``) -> uint8 (H/s, W/s, 3)."""
    taps = torch.from_numpy(_gaussian_taps(scale))
    x = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1))).double()[:, None]  # (3, 1, H, W)
    x = F.pad(x, (6, 6, 6, 6), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 13, 1))[:, :, ::scale]  # blur rows, keep rows 0, s, 2s ...
    x = F.conv2d(x, taps.view(1, 1, 1, 13))[:, :, :, ::scale]
    return x[:, 0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def degrade(hr: np.ndarray, scale: int, kind: Degradation) -> np.ndarray:
    """uint8 (H, W, 3) HR frame -> its uint8 LR by the ``BI`` or ``BD`` protocol (see the module docstring)."""
    if kind == "BD":
        return bd_downsample(hr, scale)
    return imresize(hr, 1 / scale)


class ClipSource(Protocol):
    """Draws HR clips: ``sample(rng, frames, size) -> (frames, size, size, 3)`` uint8."""

    name: str

    def sample(self, rng: np.random.Generator, frames: int, size: int) -> np.ndarray: ...


def _random_window(rng: np.random.Generator, seq: Sequence[np.ndarray], frames: int, size: int, align: int):
    """``frames`` consecutive frames of ``seq`` (looped back and forth if shorter), one crop for all."""
    n = len(seq)
    if n >= frames:
        start = int(rng.integers(0, n - frames + 1))
        idx = list(range(start, start + frames))
    else:  # ping-pong: 0 1 2 1 0 1 ...
        period = max(1, 2 * n - 2)
        idx = [min(i % period, period - i % period) for i in range(frames)]
    h, w = seq[0].shape[:2]
    y = int(rng.integers(0, (h - size) // align + 1)) * align
    x = int(rng.integers(0, (w - size) // align + 1)) * align
    return np.stack([seq[i][y : y + size, x : x + size] for i in idx])


class FrameFolderSource:
    """Videos as folders of frames: ``root`` holds one folder per video, or is itself one such folder."""

    name = "frame_folders"

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *, min_size: int, scale: int) -> None:
        self.videos: list[list[np.ndarray]] = []
        for root in map(Path, roots):
            if not root.is_dir():
                raise InputError(root, "no such folder")
            subs = sorted(p for p in root.iterdir() if p.is_dir())
            folders = subs if subs else [root]
            for folder in folders:
                frames = [modcrop(load_rgb_uint8(f), scale) for f in find_images(folder)]
                if min(frames[0].shape[:2]) < min_size:
                    logger.warning("skipped %s: frames smaller than the HR patch %d", folder, min_size)
                    continue
                self.videos.append(frames)
        if not self.videos:
            raise InputError(roots[0], f"no frame folder with frames of at least {min_size}x{min_size}")

    def sample(self, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
        video = self.videos[int(rng.integers(0, len(self.videos)))]
        return _random_window(rng, video, frames, size, 1)


def decode_video_frames(
    path: str | os.PathLike[str], *, max_frames: int = 0, downscale: int = 1
) -> list[np.ndarray]:
    """The first ``max_frames`` (0: all) frames of a video file (or frame folder) as uint8 (H, W, 3) RGB,
    read by :class:`edge_sr.data.video.VideoReader`, each optionally reduced by ``downscale`` (MATLAB bicubic).

    Raises:
        InputError: not a readable video, or no video frames (the reader's one-line errors).
    """
    from edge_sr.data.video import VideoReader

    frames: list[np.ndarray] = []
    with VideoReader(path, max_frames=max_frames or None) as reader:
        for rgb in reader:
            frames.append(imresize(modcrop(rgb, downscale), 1 / downscale) if downscale > 1 else rgb)
    if not frames:
        raise InputError(path, "has no decodable video frames")
    return frames


class VideoFileSource:
    """Frames decoded from video files (``av``), kept in memory (``max_frames`` per file bounds it)."""

    name = "video_files"

    def __init__(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        min_size: int,
        scale: int,
        max_frames: int = 120,
        downscale: int = 2,
    ) -> None:
        self.videos = []
        for f in files:
            frames = [
                modcrop(x, scale) for x in decode_video_frames(f, max_frames=max_frames, downscale=downscale)
            ]
            if min(frames[0].shape[:2]) < min_size:
                raise InputError(f, f"frames are smaller than the HR patch {min_size}x{min_size}")
            self.videos.append(frames)
        if not self.videos:
            raise InputError(None, "no video files given")

    def sample(self, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
        video = self.videos[int(rng.integers(0, len(self.videos)))]
        return _random_window(rng, video, frames, size, 1)


@dataclass
class Motion:
    """Ranges of the synthetic camera path, per frame; distances in LR pixels.

    Attributes:
        speed: the velocity's magnitude is drawn in [0, speed] (random direction).
        accel: standard deviation of a constant acceleration (per frame²).
        rotation: rotation rate in [-rotation, rotation] degrees per frame.
        zoom: zoom rate in [-zoom, zoom] (relative) per frame.
        affine: the share of clips with rotation and zoom (warped by interpolation); the others translate
            along the path rounded to whole HR pixels (1/scale LR pixel steps: still sub-pixel motion in LR),
            which are exact crops of the still image, and cheap.
    """

    speed: float = 1.5
    accel: float = 0.1
    rotation: float = 0.5
    zoom: float = 0.01
    affine: float = 1.0


def motion_path(
    rng: np.random.Generator, frames: int, motion: Motion, scale: int, *, affine: bool = True
) -> np.ndarray:
    """(frames, 4) rows of (dx, dy, angle in radians, zoom) of each frame against frame 0 (HR pixels);
    ``affine=False``: no rotation or zoom (angle 0, zoom 1)."""
    ang = rng.uniform(0, 2 * math.pi)
    v = rng.uniform(0, motion.speed) * scale * np.array([math.cos(ang), math.sin(ang)])
    a = rng.normal(0, motion.accel, size=2) * scale
    rot = math.radians(rng.uniform(-motion.rotation, motion.rotation))
    zr = rng.uniform(-motion.zoom, motion.zoom)
    if not affine:
        rot, zr = 0.0, 0.0
    k = np.arange(frames, dtype=np.float64)[:, None]
    d = v * k + 0.5 * a * k**2
    return np.concatenate([d, rot * k, (1 + zr) ** k], axis=1)


def warp_sequence(img: np.ndarray, path: np.ndarray, center: tuple[float, float], size: int) -> Tensor:
    """Render ``size``² views of ``img`` (uint8 (H, W, 3)) along ``path`` (:func:`motion_path`) around
    ``center`` (x, y of frame 0's window centre, pixel units); bicubic, reflected at the borders; a float
    (frames, 3, size, size) tensor in 0..255, unrounded.

    Frame k's output pixel (u, v) samples ``img`` at ``c + d_k + z_k R(a_k) ((u, v) - size/2 + 1/2)``:
    the camera translates by d_k, rotates by a_k and zooms by z_k. With a zero path and an integer-plus-half
    window corner the result is an exact crop.
    """
    t = len(path)
    g = torch.arange(size, dtype=torch.float32) - size / 2 + 0.5
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    p = torch.from_numpy(path).float()
    cos, sin, z = (v[:, None, None] for v in (torch.cos(p[:, 2]), torch.sin(p[:, 2]), p[:, 3]))
    sx = center[0] + p[:, 0, None, None] + z * (cos * gx - sin * gy)
    sy = center[1] + p[:, 1, None, None] + z * (sin * gx + cos * gy)
    # only the part of the image the path covers (plus the bicubic support) is converted and sampled
    h, w = img.shape[:2]
    x0 = max(0, int(sx.min()) - 2)
    y0 = max(0, int(sy.min()) - 2)
    x1 = min(w, int(sx.max()) + 3)
    y1 = min(h, int(sy.max()) + 3)
    if x1 - x0 < 4 or y1 - y0 < 4:  # the path left the image: sample the whole of it (reflected)
        x0, y0, x1, y1 = 0, 0, w, h
    sub = img[y0:y1, x0:x1]
    sw, sh = x1 - x0, y1 - y0
    # pixel index -> grid_sample's normalised coordinates (align_corners=False: pixel i spans [i, i+1))
    grid = torch.stack([(2 * (sx - x0) + 1) / sw - 1, (2 * (sy - y0) + 1) / sh - 1], dim=-1)
    src = torch.from_numpy(np.ascontiguousarray(sub.transpose(2, 0, 1))).float()[None].expand(t, -1, -1, -1)
    return F.grid_sample(src, grid, mode="bicubic", padding_mode="reflection", align_corners=False)


class SyntheticMotionSource:
    """Still images made into sequences by a random smooth camera path (see the module docstring)."""

    name = "synthetic"

    def __init__(
        self,
        folders: Sequence[str | os.PathLike[str]],
        *,
        min_size: int,
        scale: int,
        motion: Motion | None = None,
        exclude: Collection[str | os.PathLike[str]] = (),
        files: Sequence[Path] | None = None,
        supersample: bool = True,
    ) -> None:
        self.supersample = supersample
        skip = {Path(e).resolve() for e in exclude}
        if files is None:
            files = [f for folder in folders for f in find_images(folder) if f.resolve() not in skip]
        self.motion, self.scale = motion or Motion(), scale
        images = [(str(f), load_rgb_uint8(f)) for f in files]
        kept = [(n, im) for n, im in images if min(im.shape[:2]) >= min_size]
        if not kept:
            raise InputError(files[0] if files else None, f"no image is at least {min_size}x{min_size}")
        if len(kept) < len(images):
            logger.warning(
                "synthetic motion: skipped %d images smaller than %d", len(images) - len(kept), min_size
            )
        self.names = [n for n, _ in kept]
        self.images = [im for _, im in kept]
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self._cum = np.cumsum(areas / areas.sum())

    def sample(self, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
        i = min(int(np.searchsorted(self._cum, rng.random(), side="right")), len(self.images) - 1)
        return self.render(self.images[i], rng, frames, size)

    def render(self, img: np.ndarray, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
        """A (frames, size, size, 3) uint8 clip of ``img``. Where the image is large enough the path is
        rendered at twice the size and reduced by MATLAB bicubic, so the interpolation of the warp does not
        soften the HR frames after the first (an HR target blurrier than frame 0 would teach blur)."""
        h, w = img.shape[:2]
        if self.motion.affine < 1 and rng.random() >= self.motion.affine:  # translation by whole HR pixels
            path = np.round(motion_path(rng, frames, self.motion, self.scale, affine=False)).astype(int)
            x0, y0 = self._corner(rng, path, size, h, w)
            xs = np.clip(x0 + path[:, 0], 0, w - size)
            ys = np.clip(y0 + path[:, 1], 0, h - size)
            return np.stack([img[y : y + size, x : x + size] for x, y in zip(xs, ys)])
        f = 2 if self.supersample and min(h, w) >= 2 * size + 16 else 1
        out = self._render(img, rng, frames, size * f, self.scale * f)
        if f > 1:  # antialiased bicubic (torch's, like MATLAB's up to rounding), all frames at once
            out = F.interpolate(out, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def _render(
        self, img: np.ndarray, rng: np.random.Generator, frames: int, size: int, scale: int
    ) -> Tensor:
        path = motion_path(rng, frames, self.motion, scale)
        x0, y0 = self._corner(rng, path, size, *img.shape[:2])
        return warp_sequence(img, path, (x0 + size / 2 - 0.5, y0 + size / 2 - 0.5), size)

    @staticmethod
    def _corner(rng: np.random.Generator, path: np.ndarray, size: int, h: int, w: int) -> tuple[int, int]:
        """Frame 0's window corner, keeping the path's track inside the image where it fits."""
        lo_x, hi_x = -path[:, 0].min(), w - size - path[:, 0].max()
        lo_y, hi_y = -path[:, 1].min(), h - size - path[:, 1].max()
        x0 = int(rng.integers(math.ceil(lo_x), math.floor(hi_x) + 1)) if hi_x >= lo_x else (w - size) // 2
        y0 = int(rng.integers(math.ceil(lo_y), math.floor(hi_y) + 1)) if hi_y >= lo_y else (h - size) // 2
        return x0, y0


def augment_clip(
    hr: np.ndarray, rng: np.random.Generator, *, flip: float, rot90: float, reverse: float
) -> np.ndarray:
    """Flips / transpose (the 8 dihedral variants) and temporal reversal, alike for every frame of (T, H, W, 3)."""
    if flip and rng.random() < flip:
        hr = hr[:, :, ::-1]
    if flip and rng.random() < flip:
        hr = hr[:, ::-1]
    if rot90 and rng.random() < rot90:
        hr = hr.transpose(0, 2, 1, 3)
    if reverse and rng.random() < reverse:
        hr = hr[::-1]
    return np.ascontiguousarray(hr)


class ClipDataset(Dataset):
    """Clips of ``frames`` (LR, HR) pairs: ``(lr (T, 3, p, p), hr (T, 3, p·s, p·s))`` float in [0, 1].

    Sample ``k`` draws a source by ``weights``, a clip from it, the flips / transpose / reversal, then
    degrades every HR frame (:func:`degrade`); all of it a function of ``(seed, k)``.
    """

    def __init__(
        self,
        sources: Sequence[ClipSource],
        weights: Sequence[float],
        *,
        scale: int,
        patch_size: int,
        frames: int,
        degradation: Degradation = "BI",
        flip: float = 0.5,
        rot90: float = 0.5,
        reverse: float = 0.5,
        seed: int = 0,
        length: int = 1 << 62,
    ) -> None:
        if not sources or len(sources) != len(weights) or sum(weights) <= 0:
            raise ValueError("ClipDataset needs sources with positive total weight")
        self.sources = list(sources)
        w = np.asarray(weights, dtype=np.float64)
        self._cum = np.cumsum(w / w.sum())
        self.scale, self.patch_size, self.frames, self.degradation = scale, patch_size, frames, degradation
        self.flip, self.rot90, self.reverse, self.seed, self.length = flip, rot90, reverse, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, index])
        src = self.sources[
            min(int(np.searchsorted(self._cum, rng.random(), side="right")), len(self.sources) - 1)
        ]
        hr = src.sample(rng, self.frames, self.patch_size * self.scale)
        hr = augment_clip(hr, rng, flip=self.flip, rot90=self.rot90, reverse=self.reverse)
        lr = [degrade(f, self.scale, self.degradation) for f in hr]
        return torch.stack([to_tensor(x) for x in lr]), torch.stack([to_tensor(x) for x in hr])


def synthetic_sequences(
    files: Sequence[Path],
    *,
    scale: int,
    frames: int,
    size: int,
    degradation: Degradation = "BI",
    motion: Motion | None = None,
    seed: int = 0,
) -> list[tuple[str, list[np.ndarray], list[np.ndarray]]]:
    """Fixed synthetic sequences (validation): per file ``(name, LR frames, HR frames)`` uint8, the HR a
    ``size``² view (smaller images: their largest square, a multiple of ``scale``)."""
    out = []
    for i, f in enumerate(files):
        img = load_rgb_uint8(f)
        side = min(size, *img.shape[:2]) // scale * scale
        src = SyntheticMotionSource([], min_size=side, scale=scale, motion=motion, files=[f])
        hr = src.render(img, np.random.default_rng([seed, 7919, i]), frames, side)
        out.append((f.stem, [degrade(x, scale, degradation) for x in hr], list(hr)))
    return out
