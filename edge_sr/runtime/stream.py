"""Streaming runners for video models: ``push(frame) -> sr``, the state carried from frame to frame.

``edge_sr.runtime.load(path).stream()`` (or ``from_model(model).stream()``) returns a :class:`StreamRunner`
for an artifact of a video model's step (its manifest has a ``stream`` entry) or a video checkpoint::

    stream = load("rrn_edge_x4_fp32.tflite").stream()
    for frame in frames:                       # (H, W, 3) RGB, float [0, 1] or uint8
        sr = stream.push(frame)                # (H·s, W·s, 3) float32, not clipped
    stream.reset()                             # the next push starts a new clip

What feeds what comes from the step's contract (``edge_sr.models.stream``): before the first frame each
state takes its ``init`` (zeros, or the first frame), after each call it takes the value its ``next`` names,
exactly as the artifact gave it (an int8 state is fed back with its own scale and zero point). A checkpoint
runs through the eager :class:`edge_sr.models.stream.Stream`.

Frame sizes: an artifact exports the step at one LR size. A frame of that size goes in as it is; a larger
one is cut into tiles of the artifact's size (``tile`` to choose another for a model that takes any size)
with ``overlap`` pixels of context, blended as :mod:`edge_sr.tiling` blends images, and **each tile position
keeps its own state**: the tile grid is fixed by the first frame, and a frame of another size is refused
until ``reset()``. A smaller frame is padded (reflect, bottom / right) to the artifact's size and the
padding cropped from the output, as the image runner does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from edge_sr.errors import InputError
from edge_sr.models.stream import StateTensor, Stream, StreamSpec, advance, initial_state

if TYPE_CHECKING:
    from edge_sr.runtime import Runner

__all__ = ["StreamRunner", "spec_from_manifest"]


class _Pusher(Protocol):
    def push(self, frame: Tensor) -> Tensor: ...


def spec_from_manifest(entry: dict[str, Any]) -> StreamSpec:
    """The step contract a (checked) manifest's ``stream`` entry describes, channel counts resolved."""
    state = tuple(
        StateTensor(
            s["name"], next=s["next"], channels=int(s["shape"][1]), resolution=s["resolution"], init=s["init"]
        )
        for s in entry["state"]
    )
    return StreamSpec(
        frames=tuple(entry["frames"]),
        state=state,
        output=entry["output"],
        state_outputs=tuple(entry["state_outputs"]),
    )


class _StepStream:
    """One stream through a step artifact: (1, C, h, w) float32 -> (1, C, h·s, w·s), state kept here."""

    def __init__(self, runner: Runner, spec: StreamSpec) -> None:
        self.runner, self.spec = runner, spec
        self.state: dict[str, Tensor] | None = None

    def push(self, frame: Tensor) -> Tensor:
        if self.state is None:
            self.state = initial_state(self.spec, frame, colors=self.runner.colors, scale=self.runner.scale)
        frames = dict(zip(self.spec.frames, (frame,), strict=True))
        feeds = {n: t.numpy() for n, t in {**frames, **self.state}.items()}
        outs = {n: torch.from_numpy(a) for n, a in self.runner.step(feeds).items()}
        self.state = advance(self.spec, frames, outs)
        return outs[self.spec.output]


class StreamRunner:
    """``push(frame) -> sr`` over a video step (see the module docstring); ``reset()`` starts a new clip.

    Attributes:
        runner: the :class:`edge_sr.runtime.Runner` of the artifact or model.
        spec: the step contract.
        tile: the tile (h, w) frames of another size are cut into (None: the artifact's own size).
        overlap: context pixels on each inner side of a tile.
    """

    def __init__(
        self, runner: Runner, spec: StreamSpec, *, tile: int | tuple[int, int] | None, overlap: int
    ) -> None:
        self.runner, self.spec = runner, spec
        self.tile = (tile, tile) if isinstance(tile, int) else tile
        self.overlap = int(overlap)
        self._streams: list[_Pusher] = []
        self._size: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the state (and the tile grid): the next frame starts a new clip."""
        self._streams, self._size = [], None

    @property
    def tiles(self) -> int:
        """How many tile positions (one state each) the current clip uses; 0 before its first frame."""
        return len(self._streams)

    def _new_stream(self) -> _Pusher:
        if self.runner.kind == "torch":
            return Stream(self.runner.backend.model)
        return _StepStream(self.runner, self.spec)

    def _frame(self, frame: np.ndarray | Tensor) -> Tensor:
        """(H, W, C) RGB (or (H, W) gray for a 1-colour model), float [0, 1] or uint8 -> (1, C, H, W) float32."""
        img = frame.numpy() if isinstance(frame, Tensor) else np.asarray(frame)
        c = self.runner.colors
        if img.ndim == 2 and c == 1:
            img = img[..., None]
        if img.ndim != 3 or img.shape[-1] != c or min(img.shape[:2]) < 1:
            want = "(H, W, 3) RGB" if c == 3 else "(H, W) or (H, W, 1)"
            raise InputError(self.runner.path, f"expected an {want} frame, got shape {img.shape}")
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))[None]

    def push(self, frame: np.ndarray | Tensor) -> np.ndarray:
        """The SR frame (H·s, W·s, C) float32 of the next LR frame (H, W, C); see the module docstring."""
        x = self._frame(frame)
        h, w = x.shape[-2:]
        if self._size is not None and (h, w) != self._size:
            raise InputError(
                self.runner.path,
                f"frame {h}x{w} after frames of {self._size[0]}x{self._size[1]}: a clip keeps one size "
                "(reset() to start a new clip)",
            )
        tile = self.tile or (None if self.runner.accepts(h, w) else self.runner.tile_size())
        if tile is None:
            if not self._streams:
                self._streams = [self._new_stream()]
            y = self._streams[0].push(x)
        else:
            y = self._tiled(x, tile)
        self._size = (h, w)
        return y[0].permute(1, 2, 0).numpy()

    def _tiled(self, x: Tensor, tile: tuple[int, int]) -> Tensor:
        """Tile by tile as ``edge_sr.tiling`` cuts and blends them, tile k of every frame on stream k."""
        from edge_sr.tiling import tiled_apply

        exact = self.runner.input_shape.get("mode") in ("fixed", "enumerated")
        h, w = x.shape[-2:]
        overlap = 0 if h <= tile[0] and w <= tile[1] else self.overlap  # one padded tile: no seams
        first = not self._streams  # the first frame lays out the grid: one new stream per tile
        count = iter(range(1 << 30))  # tiled_apply visits the tiles in one fixed order

        def fn(t: Tensor) -> Tensor:  # (1, C, th, tw) -> (1, C, th·s, tw·s)
            k = next(count)
            if first:
                self._streams.append(self._new_stream())
            return self._streams[k].push(t)

        return tiled_apply(fn, x, scale=self.runner.scale, tile=tile, overlap=overlap, exact=exact)


def moving_frames(h: int, w: int, *, n: int = 4, colors: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` reproducible (h, w, colors) float32 frames in [0, 1]: windows of one smooth random texture that
    move one pixel right and down per frame (motion a recurrent step has to follow)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, colors, (h + n) // 3 + 2, (w + n) // 3 + 2, generator=g)
    tex = torch.nn.functional.interpolate(small, size=(h + n, w + n), mode="bilinear", align_corners=False)
    tex = tex[0].permute(1, 2, 0)
    return [tex[k : k + h, k : k + w].contiguous().numpy() for k in range(n)]


def stream_agreement(runner: Runner, reference: Runner, *, frames: int = 4) -> dict[str, Any]:
    """Stream ``frames`` :func:`moving_frames` at the artifact's own size through ``runner`` and through
    ``reference`` (the float model): the largest difference per frame (growing along the clip when the
    state drifts), overall, and the PSNR against float (peak 1)."""
    size = runner.tile_size() or (64, 64)
    clip = moving_frames(size[0], size[1], n=frames, colors=runner.colors)
    a, b = runner.stream(), reference.stream()
    per_frame, sq = [], []
    for f in clip:
        d = a.push(f) - b.push(f)
        per_frame.append(float(np.abs(d).max()))
        sq.append(float(np.mean(d.astype(np.float64) ** 2)))
    mse = float(np.mean(sq))
    return {
        "frames": frames,
        "size": list(size),
        "max_abs_diff": max(per_frame),
        "per_frame_max_abs_diff": per_frame,
        "psnr_vs_float": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
    }
