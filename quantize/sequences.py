"""Calibration sequences for a streaming (video) step: clips of consecutive LR frames, cut at one window.

A recurrent step's state inputs (the hidden features, the previous output) only take realistic values when the
float model has run over the frames before them, in order. Static INT8 fixes each tensor's scale from the
values seen in calibration, so calibration runs the float step in stream order over real clips
(:func:`step_inputs`) and records what every input of every step was.

Sources (:func:`load_sequences`):

- a Vid4 / mmagic sequence root (``<root>/BIx4/<clip>/*.png``, or ``BDx4``): the LR frames as they are;
- a folder of LR clip folders (``<dir>/<clip>/*.png``, e.g. ``<root>/BIx4``), or one folder of LR frames;
- a video file (``edge_sr.data.video.VideoReader``): its frames are HR, bicubic-downscaled by the scale.

Clip ``i`` takes the window of ``input_size`` at a position fixed by ``(seed, i)`` for all its frames; more
clips than sources reuse them at other windows. :func:`synthetic_sequences` makes moving textures (sub-pixel
translation) for tests and when no clip is at hand.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.errors import InputError

__all__ = ["SequenceSet", "load_sequences", "step_inputs", "synthetic_sequences"]


@dataclass(frozen=True)
class SequenceSet:
    """``clips`` (N, T, C, h, w) float32 in [0, 1]: N clips of T LR frames, and where they came from."""

    clips: Tensor
    folder: str
    seed: int
    source: str  # "lr-frames", "video-bicubic" or "synthetic"
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        return int(self.clips.shape[0])

    @property
    def frames(self) -> int:
        return int(self.clips.shape[1])

    @property
    def colors(self) -> int:
        return int(self.clips.shape[2])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.clips.shape[3]), int(self.clips.shape[4])

    def with_colors(self, colors: int) -> SequenceSet:
        """This set for a ``colors``-channel model (the Y of RGB frames for ``colors=1``)."""
        from edge_sr.quantize.calib import y_of

        if colors == self.colors:
            return self
        if colors != 1 or self.colors != 3:
            raise InputError(
                self.folder, f"{self.colors}-channel sequences cannot feed a {colors}-colour model"
            )
        n, t = self.clips.shape[:2]
        y = y_of(self.clips.flatten(0, 1)).unflatten(0, (n, t))
        return dataclasses.replace(self, clips=y)

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest records about the calibration sequences."""
        return {
            "folder": self.folder,
            "clips": list(self.names),
            "count": self.count,
            "frames": self.frames,
            "seed": self.seed,
            "input_size": list(self.input_size),
            "source": self.source,
            "order": "stream (float state fed back)",
            **({"channel": "Y"} if self.colors == 1 else {}),
        }


def _crop(frames: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> Tensor:
    """One window of ``size`` at a random position, the same for every frame -> (T, 3, h, w)."""
    from edge_sr.data import to_tensor

    h, w = size
    y = int(rng.integers(0, frames[0].shape[0] - h + 1))
    x = int(rng.integers(0, frames[0].shape[1] - w + 1))
    return torch.stack([to_tensor(f[y : y + h, x : x + w]) for f in frames])


def _lr_clip_folders(path: Path, scale: int) -> list[Path]:
    """The LR clip folders under a sequence root (BI first), a folder of clips, or the folder itself."""
    if not path.is_dir():
        raise InputError(path, "no such folder or video file")
    for lr in (path / f"BIx{scale}", path / f"BDx{scale}"):
        if lr.is_dir():
            return sorted(p for p in lr.iterdir() if p.is_dir() and not p.name.startswith("."))
    subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return subs or [path]


def _read_frames(
    source: Path, frames: int, scale: int, size: tuple[int, int], is_video: bool
) -> list[np.ndarray]:
    from edge_sr.data import find_images, imresize, load_rgb_uint8, modcrop

    if is_video:
        from edge_sr.data.video import VideoReader

        with VideoReader(source, max_frames=frames) as reader:
            out = [imresize(modcrop(f, scale), 1 / scale) for f in reader]
    else:
        out = [load_rgb_uint8(f) for f in find_images(source)[:frames]]
    if len(out) < frames:
        raise InputError(
            source, f"has {len(out)} frames but calibration asks for {frames}; lower --calib-frames"
        )
    if out[0].shape[0] < size[0] or out[0].shape[1] < size[1]:
        raise InputError(
            source, f"LR frames of {out[0].shape[0]}x{out[0].shape[1]} are smaller than {size[0]}x{size[1]}"
        )
    return out


def load_sequences(
    path: str | os.PathLike[str],
    *,
    input_size: tuple[int, int],
    scale: int,
    clips: int = 4,
    frames: int = 8,
    seed: int = 0,
    colors: int = 3,
) -> SequenceSet:
    """``clips`` sequences of ``frames`` consecutive LR frames of ``input_size`` from ``path`` (see the module
    docstring for what ``path`` may be).

    Raises:
        InputError: no such path, too few frames, frames smaller than the window, or an unreadable video.
    """
    from edge_sr.data.video import is_video_file

    p = Path(path)
    if clips < 1 or frames < 2:
        raise InputError(p, f"calibration needs at least 1 clip of 2 frames (asked {clips} x {frames})")
    if not p.exists():
        raise InputError(p, "no such folder or video file")
    video = p.is_file() and is_video_file(p)
    if p.is_file() and not video:
        raise InputError(p, "not a video file or a folder of frames")
    sources = [p] if video else _lr_clip_folders(p, scale)
    decoded = [_read_frames(s, frames, scale, input_size, video) for s in sources[:clips]]
    out = [
        _crop(decoded[i % len(decoded)], input_size, np.random.default_rng([seed, i])) for i in range(clips)
    ]
    return SequenceSet(
        clips=torch.stack(out),
        folder=str(p),
        seed=seed,
        source="video-bicubic" if video else "lr-frames",
        names=tuple(sources[i % len(sources)].name for i in range(clips)),
    ).with_colors(colors)


def synthetic_sequences(
    *, count: int, frames: int, input_size: tuple[int, int], seed: int = 0, colors: int = 3
) -> SequenceSet:
    """Smooth random textures moving by a constant sub-pixel step per frame (a different one per clip)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    h, w = input_size
    pad = frames * 2 + 2
    # (N, C, H/4, W/4) noise -> bicubic x4: a texture with edges at several scales
    tex = torch.rand(count, colors, (h + 2 * pad) // 4 + 1, (w + 2 * pad) // 4 + 1, generator=g)
    tex = F.interpolate(tex, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    step = (torch.rand(count, 2, generator=g) * 2 - 1) * 1.5  # pixels per frame, in (-1.5, 1.5)
    ys = torch.linspace(-1, 1, tex.shape[2])[pad : pad + h]
    xs = torch.linspace(-1, 1, tex.shape[3])[pad : pad + w]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    out = []
    for t in range(frames):
        dy = step[:, 0].view(-1, 1, 1) * t * 2 / (tex.shape[2] - 1)
        dx = step[:, 1].view(-1, 1, 1) * t * 2 / (tex.shape[3] - 1)
        grid = torch.stack([gx + dx, gy + dy], dim=-1)  # (N, h, w, 2)
        out.append(F.grid_sample(tex, grid, mode="bilinear", align_corners=True))
    return SequenceSet(
        clips=torch.stack(out, dim=1).clamp(0, 1).contiguous(),
        folder="<synthetic motion>",
        seed=seed,
        source="synthetic",
        names=tuple(f"synthetic{i}" for i in range(count)),
    )


@torch.no_grad()
def step_inputs(model: nn.Module, seqs: SequenceSet) -> Iterator[tuple[Tensor, ...]]:
    """The inputs of every step of the float ``model`` streamed over ``seqs`` (the clips as one batch), in
    the step's call order (frames, then state), the state fed back as an app feeds it."""
    from edge_sr.models.card import card_of
    from edge_sr.models.stream import advance, initial_state, stream_spec

    spec = stream_spec(model)
    if spec is None:
        raise TypeError(f"{type(model).__name__} is not a streaming (video) model")
    card = card_of(model)
    state: dict[str, Tensor] | None = None
    for t in range(seqs.frames):
        frame = seqs.clips[:, t]
        if state is None:
            state = initial_state(spec, frame, colors=card.colors, scale=card.scale)
        inputs = (frame, *(state[s.name] for s in spec.state))
        yield inputs
        outs = model(*inputs)
        state = advance(spec, dict(zip(spec.frames, (frame,))), dict(zip(spec.output_names, outs)))
