"""Tiled inference: run an SR function over an image in overlapping tiles and assemble a seamless result.

Each tile carries ``overlap`` pixels of context on every inner side. Neighbouring tiles split their shared
region at the midpoint between their centres, so every output pixel comes from the tile in which it lies
farthest from an edge; when ``overlap`` covers the model's receptive field the result equals the untiled
one. :func:`tiled_bands` hands the output over one band of tile rows at a time (an encoder can stream it, so
memory grows with the tile and the image width, not the image); :func:`tiled_apply` gathers the bands into
one buffer (optionally uint8 / uint16 / float16). ``exact=True`` gives fixed-shape runners tiles of exactly ``tile``
size: the last tile of a row or column shifts inward, and an image smaller than the tile is padded
(reflect, else replicate) and the padding cropped from the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_sr.errors import ConfigError

TileFn = Callable[[Tensor], Tensor]
Progress = Callable[[int, int], None]
Sink = Callable[[int, Tensor], None]


@dataclass(frozen=True)
class Span:
    """One tile along one axis: input window ``[start, start + size)`` and the kept part ``[keep0, keep1)``."""

    start: int
    size: int
    keep0: int
    keep1: int


def plan_axis(length: int, tile: int, overlap: int, *, exact: bool = False) -> list[Span]:
    """Tiles covering ``[0, length)`` along one axis (``length`` already padded to ``tile`` in exact mode)."""
    if length <= tile:
        if exact and length != tile:
            raise ValueError(f"exact tiling needs length >= tile, got {length} < {tile}")
        return [Span(0, length, 0, length)]
    step = tile - 2 * overlap
    n = 1 + math.ceil((length - tile) / step)
    starts = [min(i * step, length - tile) for i in range(n)]  # the last tile shifts inward
    # The boundary between neighbours sits midway between their centres: a + T/2 and b + T/2.
    cuts = [0] + [(a + b + tile) // 2 for a, b in zip(starts[:-1], starts[1:])] + [length]
    return [Span(s, tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def count_tiles(
    height: int, width: int, tile: int | tuple[int, int], overlap: int, *, exact: bool = False
) -> int:
    """How many tiles :func:`tiled_apply` runs for an image of this size."""
    th, tw = _pair(tile)
    return len(plan_axis(max(height, th) if exact else height, th, overlap, exact=exact)) * len(
        plan_axis(max(width, tw) if exact else width, tw, overlap, exact=exact)
    )


def _pair(tile: int | tuple[int, int]) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def _pad_to(x: Tensor, th: int, tw: int) -> Tensor:
    """Pad (1, C, H, W) at the bottom / right up to (th, tw): reflect where the image is large enough."""
    ph, pw = max(0, th - x.shape[-2]), max(0, tw - x.shape[-1])
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x.float(), (0, pw, 0, ph), mode=mode).to(x.dtype)


def _store(y: Tensor, dtype: torch.dtype) -> Tensor:
    """Float tile output -> the buffer's dtype (integer buffers hold values of [0, 1] quantized, rounded)."""
    if dtype == torch.uint8:
        return y.clamp(0, 1).mul(255).round_().to(torch.uint8)
    if dtype == torch.uint16:
        return y.clamp(0, 1).mul(65535).round_().to(torch.int32).to(torch.uint16)
    return y.to(dtype)


def _load(t: Tensor) -> Tensor:
    """Input buffer slice -> float32 (integer buffers hold quantized [0, 1] values).

    Multiplies by the float32 reciprocal, as ``read_image`` does: a file upscaled from its stored samples
    gives the same bytes as from the float image.
    """
    if t.dtype == torch.uint8:
        return t.float().mul_(1 / 255)
    if t.dtype == torch.uint16:
        return t.to(torch.int32).float().mul_(1 / 65535)
    return t.float()


@torch.no_grad()
def tiled_apply(
    fn: TileFn,
    x: Tensor,
    *,
    scale: int,
    tile: int | tuple[int, int],
    overlap: int,
    batch: int = 1,
    progress: Progress | None = None,
    exact: bool = False,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Tensor:
    """Apply ``fn`` tile by tile and return the whole result.

    Args:
        fn: maps a float32 batch (B, C, h, w) to (B, C', h·scale, w·scale); C' may differ from C.
        x: (1, C, H, W) float, or uint8 / uint16 holding [0, 1] quantized (kept small for huge images).
        scale: the upscaling factor of ``fn``.
        tile: tile size (int, or (h, w)).
        overlap: context in pixels on each inner side of a tile, cropped from the output.
        batch: tiles passed to ``fn`` at once.
        progress: called as ``progress(done_tiles, total_tiles)`` after each batch.
        exact: every tile exactly ``tile`` in size (fixed-shape runners).
        out_dtype: dtype of the returned buffer; default ``x``'s float dtype (float32 for integer input).
        channels_last: lay the buffer out as (1, H, W, C) in memory (still indexed NCHW), so that
            ``out[0].permute(1, 2, 0)`` is a contiguous (H, W, C) image that writers take without a copy.

    Returns:
        (1, C', H·scale, W·scale) in ``out_dtype``, on the CPU.
    """
    out: list[Tensor] = []

    def gather(row0: int, band: Tensor) -> None:
        if not out:  # allocate once the output channel count is known
            c, h, w = band.shape[1], x.shape[-2] * scale, x.shape[-1] * scale
            buf = torch.empty((1, h, w, c) if channels_last else (1, c, h, w), dtype=band.dtype)
            out.append(buf.permute(0, 3, 1, 2) if channels_last else buf)
        out[0][:, :, row0 : row0 + band.shape[-2]] = band

    tiled_bands(
        fn, x, gather, scale=scale, tile=tile, overlap=overlap, batch=batch, progress=progress, exact=exact,
        out_dtype=out_dtype, channels_last=channels_last,
    )  # fmt: skip
    return out[0]


@torch.no_grad()
def tiled_bands(
    fn: TileFn,
    x: Tensor,
    sink: Sink,
    *,
    scale: int,
    tile: int | tuple[int, int],
    overlap: int,
    batch: int = 1,
    progress: Progress | None = None,
    exact: bool = False,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> None:
    """Apply ``fn`` tile by tile and pass the result to ``sink`` one band of tile rows at a time, top to bottom.

    Arguments as :func:`tiled_apply`; ``sink(row0, band)`` receives the output rows ``[row0, row0 + rows)``
    as a (1, C', rows, W·scale) tensor in ``out_dtype`` (laid out (1, rows, W·scale, C') in memory with
    ``channels_last``), which it must copy or consume before returning. At most the bands that one batch of
    tiles touches are held at once, so memory grows with the tile and the image width, not its height.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"tiled_apply expects (1, C, H, W), got {tuple(x.shape)}")
    th, tw = _pair(tile)
    if min(th, tw) <= 2 * overlap:
        raise ConfigError(
            None, f"tile {th}x{tw} must be larger than twice the overlap ({overlap}); use a larger --tile"
        )
    h, w = x.shape[-2:]
    if exact:
        x = _pad_to(x, th, tw)
    rows = plan_axis(x.shape[-2], th, overlap, exact=exact)
    cols = plan_axis(x.shape[-1], tw, overlap, exact=exact)
    jobs = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    if out_dtype is None:
        out_dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    s, step = scale, max(1, batch)
    bands: dict[int, Tensor] = {}  # tile row -> its output band, while some of its tiles are pending
    left = [len(cols)] * len(rows)
    emitted = 0
    for i in range(0, len(jobs), step):
        group = jobs[i : i + step]
        inp = torch.cat(
            [
                _load(x[..., rows[a].start : rows[a].start + rows[a].size, cols[b].start : cols[b].start + cols[b].size])
                for a, b in group
            ]
        )  # fmt: skip
        y = fn(inp)  # (B, C', r.size·s, c.size·s)
        if y.shape[-2:] != (inp.shape[-2] * s, inp.shape[-1] * s) or y.shape[0] != inp.shape[0]:
            raise ValueError(f"fn returned {tuple(y.shape)} for input {tuple(inp.shape)} at scale {s}")
        y = y.detach().cpu()
        for k, (a, b) in enumerate(group):
            r, c = rows[a], cols[b]
            left[a] -= 1
            r1, c1 = min(r.keep1, h), min(c.keep1, w)  # in exact mode, drop the padding
            if r.keep0 >= r1 or c.keep0 >= c1:
                continue
            if a not in bands:
                shape = (1, (r1 - r.keep0) * s, w * s, y.shape[1])
                band = torch.empty(shape if channels_last else (1, y.shape[1], *shape[1:3]), dtype=out_dtype)
                bands[a] = band.permute(0, 3, 1, 2) if channels_last else band
            piece = y[
                k,
                :,
                (r.keep0 - r.start) * s : (r1 - r.start) * s,
                (c.keep0 - c.start) * s : (c1 - c.start) * s,
            ]
            bands[a][0, :, :, c.keep0 * s : c1 * s] = _store(piece, out_dtype)
        del y, inp
        while emitted < len(rows) and left[emitted] == 0:  # finished rows go out in order
            if emitted in bands:  # absent for a row of padding only (exact mode)
                sink(rows[emitted].keep0 * s, bands.pop(emitted))
            emitted += 1
        if progress is not None:
            progress(min(i + len(group), len(jobs)), len(jobs))
