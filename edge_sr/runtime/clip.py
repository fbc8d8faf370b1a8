"""Run whole-clip and sliding-window video models over clips of any length: ``run_clip(clip_fn, frames)``.

Two kinds of model, one face (:class:`ClipFn`, float32 RGB frames in [0, 1]):

- **clip** (BasicVSR, IconVSR, BasicVSR++): bidirectional propagation wants the whole clip, so the clip is cut
  into temporal chunks of ``chunk`` frames that overlap by ``overlap`` frames on each side of a cut: two
  neighbouring chunks share ``2·overlap`` frames, whose outputs are blended with linear weights (the
  nearer a frame is to a chunk's cut, the less that chunk counts). The first chunk starts at frame 0 and
  the last one is shifted back so that it is full length and ends at the last frame. Blending was measured
  against discarding the overlap outputs (each chunk keeping the frames at least ``overlap`` from its cuts),
  as the worst frame's PSNR against the whole-clip output, on the papers' structures with random weights
  over 49 Vid4 frames (foliage, 32x32 / 64x64 LR) at the defaults, chunk 30 / overlap 5: BasicVSR 67.1 dB
  blended, 64.4 dB discarded (max |diff| 2.5e-3 against 3.5e-3, about one 8-bit step); BasicVSR++ 86.8 dB
  blended, 96.1 dB discarded (2.3e-4 against 8.3e-5, far under one step either way). Blending has the smaller
  worst case over the families, so it is the rule. (Overlap 0: 55.3 / 66.7 dB; overlap 3: 66.7 / 84.3 dB
  blended. An 8-channel tiny BasicVSR, whose propagation fades within a few frames, favours discarding.)
- **window** (EDVR): one output per input frame from the window of ``min_frames`` frames around it, the
  clip's borders padded as BasicSR's EDVR test options do (``generate_frame_indices`` with
  ``reflection_circle``: frame 0 of a 5-frame window reads ``[4, 3, 0, 1, 2]``).

Frames arrive from any iterable (a video reader, a generator) and leave in order, one output per input.
Memory is bounded by the chunk (at most ``chunk + step + 1`` LR frames and two chunks of outputs) or the
window (``2·T - 1`` frames, the reach of the circular reflection), never by the clip length. Frames larger
than ``tile`` are run tile by tile (``edge_sr.tiling``, the clip's frames folded into channels so every
frame of a tile position sees the same window), tiles exactly ``tile`` pixels and multiples of
``multiple``. Frames whose sides are not multiples of ``multiple``, or are under ``min_side``, are padded at
the bottom / right (reflect, else replicate) and the padding cropped from the outputs.

:func:`clip_fn` wraps an eager model of the four families (device, FP16 / BF16 autocast with the FP32 guard
of the image path); an artifact runner of these models provides ``Runner.clip_fn()`` with ``frames`` and
``size`` fixed by its export. On a CUDA out-of-memory error the chunk is retried with half the tile (then
half the chunk), with a logged warning.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError, InputError, RuntimeBackendError
from edge_sr.tiling import tiled_apply

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_OVERLAP",
    "ClipFn",
    "EagerClip",
    "chunking",
    "clip_fn",
    "default_overlap",
    "frame_indices",
    "is_clip_model",
    "run_clip",
]

DEFAULT_CHUNK = 30  # frames per temporal chunk of a whole-clip model (eager models)
DEFAULT_OVERLAP = 5  # frames of context on each side of an inner cut
_GUARD_MAX = 4.0  # as edge_sr.upscale: SR outputs live in [0, 1]; beyond this an FP16 output overflowed
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ClipFn:
    """One call of a whole-clip or sliding-window video model, on float32 RGB frames in [0, 1].

    Attributes:
        fn: kind ``"clip"``: (T, h, w, 3) -> (T, h·s, w·s, 3) (BasicVSR, IconVSR, BasicVSR++); kind
            ``"window"``: (T, h, w, 3) -> (h·s, w·s, 3), the centre frame ``T // 2`` (EDVR).
        kind: ``"clip"`` or ``"window"``.
        scale: the upscaling factor.
        frames: the T an artifact was exported for (fixed), or None: any T >= ``min_frames`` (eager).
        min_frames: clip models: 2 or more; window models: T of the window.
        multiple: tile / frame sides must be multiples of this (alignment pyramid).
        min_side: the smallest tile side the model's alignment needs.
        size: an artifact's fixed (h, w) input, or None (any size).
        name: what to call the model in messages.
    """

    fn: Callable[[np.ndarray], np.ndarray]
    kind: Literal["clip", "window"]
    scale: int
    frames: int | None
    min_frames: int
    multiple: int = 1
    min_side: int = 1
    size: tuple[int, int] | None = None
    name: str = ""


def default_overlap(chunk: int) -> int:
    """The overlap ``run_clip`` uses for a chunk of ``chunk`` frames when none is given:
    :data:`DEFAULT_OVERLAP`, or less for short chunks so that every chunk advances."""
    return max(0, min(DEFAULT_OVERLAP, (chunk - 1) // 2))


def frame_indices(i: int, n: int, t: int) -> list[int]:
    """The ``t`` frame indices of the window centred on frame ``i`` of an ``n``-frame clip, as BasicSR's
    ``generate_frame_indices(i, n, t, padding="reflection_circle")`` (``n >= t`` keeps them in the clip)."""
    p, last = t // 2, n - 1
    out = []
    for j in range(i - p, i + p + 1):
        if j < 0:
            out.append(i + p - j)
        elif j > last:
            out.append(i - p - (j - last))
        else:
            out.append(j)
    return out


def _as_float(frame: np.ndarray) -> np.ndarray:
    """uint8 or float (h, w, 3) -> float32 (h, w, 3) in [0, 1]."""
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(None, f"a video frame must be (h, w, 3) RGB, not {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1 / 255)
    return a.astype(np.float32, copy=False)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass
class _Plan:
    """How a chunk of frames is run spatially (mutable: a CUDA OOM halves ``tile``)."""

    model: ClipFn
    tile: int
    tile_overlap: int
    notes: list[str] = field(default_factory=list)

    def check_tile(self) -> None:
        m, name = self.model, self.model.name or "this model"
        if self.tile <= 0:
            return
        if self.tile % m.multiple or self.tile < m.min_side:
            need = f"multiples of {m.multiple} and " if m.multiple > 1 else ""
            raise ConfigError(
                None,
                f"--tile {self.tile} does not fit {name}: its alignment needs tiles that are {need}at least "
                f"{max(m.min_side, m.multiple)} pixels",
            )
        if self.tile <= 2 * self.tile_overlap:
            raise ConfigError(
                None, f"--tile {self.tile} must be larger than twice --tile-overlap ({self.tile_overlap})"
            )

    def run(self, lr: np.ndarray) -> np.ndarray:
        """(T, h, w, 3) float32 -> the model's output at the clip's own size (padding cropped)."""
        m = self.model
        t, h, w, _ = lr.shape
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(0, 3, 1, 2))).reshape(1, t * 3, h, w)
        out_c = 3 if m.kind == "window" else 3 * t

        def fold(tiles: Tensor) -> Tensor:  # (B, T·3, th, tw) -> (B, out_c, th·s, tw·s)
            outs = []
            for one in tiles:
                arr = one.reshape(t, 3, *one.shape[-2:]).permute(0, 2, 3, 1).numpy()
                y = np.asarray(m.fn(np.ascontiguousarray(arr)), dtype=np.float32)
                y = y[None] if m.kind == "window" else y  # (T', th·s, tw·s, 3)
                outs.append(torch.from_numpy(y).permute(0, 3, 1, 2).reshape(out_c, *y.shape[1:3]))
            return torch.stack(outs)

        if m.size is not None:  # a fixed-size artifact: tiles of exactly its size, small frames padded
            y = tiled_apply(fold, x, scale=m.scale, tile=m.size, overlap=self.tile_overlap, exact=True)
        elif self.tile > 0 and (h > self.tile or w > self.tile):
            y = tiled_apply(fold, x, scale=m.scale, tile=self.tile, overlap=self.tile_overlap, exact=True)
        else:  # one piece: pad up to the alignment's multiple and smallest side, crop after
            th = max(_round_up(h, m.multiple), _round_up(m.min_side, m.multiple))
            tw = max(_round_up(w, m.multiple), _round_up(m.min_side, m.multiple))
            y = tiled_apply(fold, x, scale=m.scale, tile=(th, tw), overlap=0, exact=True)
        out = y[0].reshape(out_c // 3, 3, h * m.scale, w * m.scale).permute(0, 2, 3, 1).numpy()
        return out[0] if m.kind == "window" else out


def _with_oom_retry(
    plan: _Plan, run: Callable[[], np.ndarray], shrink_chunk: Callable[[], bool]
) -> np.ndarray | None:
    """``run()``; on a CUDA out-of-memory error halve the tile and retry, saying so in the log and in
    ``plan.notes``; at the smallest tile halve the chunk (``shrink_chunk``) and return None: plan again."""
    while True:
        try:
            return run()
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            m = plan.model
            half = plan.tile // 2 if plan.tile > 0 else 0
            half -= half % m.multiple
            if m.size is None and half >= max(m.min_side, 2 * plan.tile_overlap + 1, 1) and half > 0:
                plan.tile = half
                note = f"out of device memory; retrying with --tile {half}"
            elif m.size is None and plan.tile <= 0:
                plan.tile = 256  # untiled: start tiling at the image path's default tile
                note = "out of device memory; retrying with --tile 256"
            elif shrink_chunk():
                note = "out of device memory at the smallest tile; retrying with half the chunk"
                log.warning(note)
                plan.notes.append(note)
                return None
            else:
                raise RuntimeBackendError(
                    None, "out of device memory even at the smallest tile and chunk; use --device cpu"
                ) from None
            log.warning(note)
            plan.notes.append(note)


def run_clip(
    model: ClipFn,
    frames: Iterable[np.ndarray],
    *,
    chunk: int | None = None,
    overlap: int | None = None,
    tile: int = 0,
    tile_overlap: int = 0,
    notes: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the SR frames (float32 (h·s, w·s, 3)) of a stream of LR frames (uint8 or float32 (h, w, 3)), in
    order, with memory bounded by the chunk and the tile (never by the clip length).

    Args:
        model: the model's :class:`ClipFn`.
        frames: the LR frames, in order (any iterable: read lazily).
        chunk: frames per temporal chunk of a clip model (None: :data:`DEFAULT_CHUNK` for an eager model,
            the artifact's fixed T); 0 runs the whole clip at once (memory grows with the clip).
        overlap: frames of context on each side of an inner cut (None: :func:`default_overlap`).
        tile: spatial tile side in LR pixels (0: whole frames); a fixed-size artifact tiles at its size.
        tile_overlap: context pixels around each tile.
        notes: where messages about retries (out of memory) are appended.

    Raises:
        InputError: a clip shorter than the model needs (the window, the artifact's T, ``min_frames``).
        ConfigError: a tile the model's alignment cannot take, a chunk or overlap that cannot advance.
        RuntimeBackendError: out of device memory even at the smallest tile and chunk.
    """
    plan = _Plan(model, tile, tile_overlap, notes if notes is not None else [])
    if model.size is not None:
        if 2 * tile_overlap >= min(model.size):
            raise ConfigError(
                None,
                f"--tile-overlap {tile_overlap} leaves nothing of the artifact's {model.size[0]}x{model.size[1]} "
                f"tiles; use a --tile-overlap under {min(model.size) // 2}",
            )
    else:
        plan.check_tile()
    if model.kind == "window":
        return _run_window(plan, iter(frames))
    chunk, ov = chunking(model, chunk, overlap)
    return _run_chunks(plan, iter(frames), chunk or _WHOLE, ov or 0)


def chunking(model: ClipFn, chunk: int | None, overlap: int | None) -> tuple[int | None, int | None]:
    """The (chunk, overlap) :func:`run_clip` uses for these arguments: None, None for a window model; chunk
    0 for the whole clip at once (overlap 0); an artifact's fixed T; else ``chunk`` or :data:`DEFAULT_CHUNK`
    with ``overlap`` or :func:`default_overlap`.

    Raises:
        ConfigError: a chunk under the frames the model needs, or other than an artifact's T; an overlap that
            leaves a chunk nothing to advance.
    """
    if model.kind == "window":
        return None, None
    if model.frames is not None:
        if chunk not in (None, 0, model.frames):
            raise ConfigError(
                None,
                f"{model.name or 'this artifact'} runs chunks of exactly {model.frames} frames, not --chunk {chunk}",
            )
        chunk = model.frames
    elif chunk is None:
        chunk = DEFAULT_CHUNK
    elif chunk == 0:
        return 0, 0
    if chunk < max(model.min_frames, 1):
        raise ConfigError(None, f"--chunk {chunk} is under the {model.min_frames} frames this model needs")
    ov = default_overlap(chunk) if overlap is None else overlap
    if ov < 0 or chunk - 2 * ov < 1:
        raise ConfigError(
            None, f"--chunk-overlap {ov} must be >= 0 and leave --chunk {chunk} frames to advance"
        )
    return chunk, ov


_WHOLE = 1 << 62  # a chunk longer than any clip


def _too_short(model: ClipFn, n: int, need: int, what: str) -> InputError:
    return InputError(
        None, f"the clip has {n} frames; {model.name or 'this model'} needs at least {need} ({what})"
    )


def _ramp(j: int, c: int, ov: int, *, first: bool, last: bool) -> float:
    """The blending weight of position ``j`` of a ``c``-frame chunk: rising over the ``2·ov`` frames after an
    inner cut at its start, falling over the ``2·ov`` before one at its end (1 at the clip's own ends), so the
    weights of two neighbouring chunks sum to 1 across their overlap."""
    n = 2 * ov + 1
    rise = 1.0 if first else min(1.0, (j + 1) / n)
    fall = 1.0 if last else min(1.0, (c - j) / n)
    return min(rise, fall)


def _run_chunks(plan: _Plan, frames: Iterator[np.ndarray], chunk: int, ov: int) -> Iterator[np.ndarray]:
    """Temporal chunks: each starts ``2·ov`` frames before the previous one ends, the outputs of their common
    frames blended (:func:`_ramp`); a frame leaves once no later chunk reaches it."""
    model = plan.model
    buf: deque[np.ndarray] = deque()  # LR frames [base, n_read)
    acc: deque[list] = deque()  # [weighted sum, weight] of the outputs of frames [emitted, emitted + len)
    base = n_read = emitted = 0
    ended = False
    size = [chunk]

    def shrink() -> bool:  # after a CUDA OOM at the smallest tile: half the chunk, if the model allows
        nonlocal ov
        half = size[0] // 2
        new_ov = min(ov, (half - 1) // 2)
        if model.frames is not None or half < max(model.min_frames, 2 * new_ov + 1, 2):
            return False
        size[0], ov = half, new_ov
        return True

    while True:
        a = emitted  # where the previous chunk's final frames end
        while not ended and n_read < a + size[0] + 1:  # one frame past the chunk: is this the last one?
            try:
                buf.append(_as_float(next(frames)))
                n_read += 1
            except StopIteration:
                ended = True
        if ended and emitted == n_read:
            return
        last = ended and n_read <= a + size[0]
        if last:
            a = max(0, n_read - size[0])  # shifted back: full length, ending at the last frame
            if n_read - a < max(model.min_frames, model.frames or 0):
                need = model.frames or model.min_frames
                raise _too_short(model, n_read, need, "its fixed T" if model.frames else "min_frames")
        lr = np.stack([buf[i - base] for i in range(a, min(a + size[0], n_read))])
        out = _with_oom_retry(plan, partial(plan.run, lr), shrink)
        if out is None:  # the chunk was halved: plan again from the same place
            continue
        c = len(lr)
        for j in range(max(0, emitted - a), c):
            w = _ramp(j, c, ov, first=a == 0, last=last)
            k = a + j - emitted
            if k < len(acc):
                acc[k][0] += w * out[j]
                acc[k][1] += w
            else:
                acc.append([w * out[j], w])
        end = n_read if last else a + c - 2 * ov  # the next chunk starts here: frames before it are final
        del out, lr
        while emitted < end:
            total, weight = acc.popleft()
            yield total if weight == 1.0 else total / np.float32(weight)
            emitted += 1
        keep_from = a + 1  # a shifted-back last chunk starts after this chunk's start
        while base < keep_from and buf:
            buf.popleft()
            base += 1


def _run_window(plan: _Plan, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """One output per frame from its window; frames kept: ``[i - 2p, i + 2p]`` (``p = T // 2``)."""
    model = plan.model
    t = model.frames or model.min_frames
    p = t // 2
    buf: deque[np.ndarray] = deque()  # LR frames [base, n_read)
    base = n_read = 0
    ended = False
    i = 0
    while True:
        while not ended and n_read <= i + 2 * p:  # frames reach i + 2p (circular reflection at the start)
            try:
                buf.append(_as_float(next(frames)))
                n_read += 1
            except StopIteration:
                ended = True
        if ended and n_read < t:
            raise _too_short(model, n_read, t, "its window")
        if ended and i >= n_read:
            return
        # the clip's length matters only near its end, where ``ended`` is known
        n = n_read if ended else i + 2 * p + 1
        idx = frame_indices(i, max(n, t), t)
        lr = np.stack([buf[j - base] for j in idx])
        sr = _with_oom_retry(plan, partial(plan.run, lr), lambda: False)
        assert sr is not None  # a window is never shortened
        yield sr
        i += 1
        while base < i - 2 * p and buf:
            buf.popleft()
            base += 1


# ---------------------------------------------------------------------------------------------------------
# eager models


def _alignment(model: nn.Module) -> tuple[Literal["clip", "window"], int, int, int]:
    """(kind, min_frames, multiple, min_side) of an eager model of the four families
    (``edge_sr.convert.clip.clip_contract``: the alignment pyramid of each)."""
    from edge_sr.convert.clip import clip_contract

    c = clip_contract(model)
    if c is None:
        raise ConfigError(
            None,
            f"{type(model).__name__} is not a whole-clip or window video model (BasicVSR, IconVSR, BasicVSR++, EDVR)",
        )
    return c.kind, c.min_frames, c.multiple, c.min_side


def is_clip_model(model: object) -> bool:
    """Whether ``model`` is an eager model :func:`clip_fn` runs."""
    try:
        _alignment(model)  # type: ignore[arg-type]
    except ConfigError:
        return False
    return True


class EagerClip:
    """The ``fn`` of an eager model: numpy frames in, numpy frames out, on ``device`` at ``precision``, with
    the FP32 guard (``fallbacks`` counts the calls recomputed in FP32)."""

    def __init__(self, model: nn.Module, kind: str, device: torch.device, precision: str) -> None:
        self.model, self.kind, self.device, self.precision = model, kind, device, precision
        self.fallbacks = 0

    def _forward(self, x: Tensor, low: bool) -> Tensor:
        with torch.inference_mode():
            if low:
                with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
                    return self.model(x).float()
            return self.model(x).float()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))[None].to(self.device)
        low = self.precision != "fp32"
        y = self._forward(x, low)
        if low and (not bool(torch.isfinite(y).all()) or float(y.abs().amax()) > _GUARD_MAX):
            self.fallbacks += 1
            log.warning("%s output not finite or out of range: this chunk recomputed in FP32", self.precision)
            y = self._forward(x, False)
        y = y[0].cpu()  # clip: (T, 3, H, W); window: (3, H, W)
        return (y.permute(0, 2, 3, 1) if self.kind == "clip" else y.permute(1, 2, 0)).contiguous().numpy()


def clip_fn(model: nn.Module, *, device: str = "cpu", precision: str = "fp32") -> ClipFn:
    """The :class:`ClipFn` of an eager BasicVSR / IconVSR / BasicVSR++ / EDVR module.

    Args:
        model: the module (carrying its card, or not).
        device: ``cpu``, ``cuda`` (refused in one line when there is none) or ``mps``.
        precision: ``fp32``, or ``fp16`` / ``bf16`` autocast; a chunk whose output is not finite or far out of
            [0, 1] is recomputed in FP32 (logged, counted in ``fn.fallbacks``).

    Raises:
        ConfigError: not one of these families, an unknown precision, a device that is not there.
    """
    from edge_sr.models import card_of, has_card

    if precision not in ("fp32", "fp16", "bf16"):
        raise ConfigError(None, f"unknown precision {precision!r}; choose from fp32, fp16, bf16")
    kind, min_frames, multiple, min_side = _alignment(model)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(None, "--device cuda: no CUDA device on this machine; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(None, "--device mps: no Apple GPU on this machine; use --device cpu")
    name = card_of(model).arch if has_card(model) else type(model).__name__
    fn = EagerClip(model.eval().to(dev), kind, dev, precision)
    scale = int(model.scale)  # type: ignore[arg-type]
    return ClipFn(fn, kind, scale, None, min_frames, multiple, min_side, None, name)
