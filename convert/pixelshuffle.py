"""Pixel-shuffle lowerings: the same function as ``nn.PixelShuffle`` written the ways edge runtimes accept.

Pixel shuffle is where SR artifacts break on phone NPUs and GPU delegates: torch writes it as a rank-6
reshape / permute, which many of them reject. Every lowering here maps (N, C·s², H, W) to (N, C, H·s, W·s)
with ``out[n, c, h·s + i, w·s + j] = x[n, c·s² + i·s + j, h, w]`` (PyTorch's channel order, "CRD"):

- ``reshape``: the rank-6 reshape / permute spelled out (the reference formula).
- ``rank4``: the same permutation with tensors of rank 4 at most (GPU delegates take this).
- ``depth_to_space``: the single ``pixel_shuffle`` op, so formats that have one keep it (ONNX
  ``DepthToSpace`` mode CRD, CoreML ``pixel_shuffle``).
- ``conv_transpose``: a fixed-weight transposed convolution with kernel = stride = s; each output pixel
  receives exactly one input value times 1.0, so it is exact in every precision.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReshapeShuffle(nn.Module):
    """``nn.PixelShuffle`` as an explicit rank-6 reshape and permute."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        n, cs2, h, w = x.shape
        s = self.scale
        c = cs2 // (s * s)
        # (N, C, s, s, H, W) -> (N, C, H, s, W, s) -> (N, C, H·s, W·s)
        x = x.reshape(n, c, s, s, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c, h * s, w * s)


class Rank4Shuffle(nn.Module):
    """``nn.PixelShuffle`` with tensors of rank 4 at most (two reshape / transpose rounds)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        n, cs2, h, w = x.shape
        s = self.scale
        c = cs2 // (s * s)
        x = x.reshape(n * c * s, s, h, w)  # [(n, c, i), j, h, w]
        x = x.permute(0, 2, 3, 1)  # [(n, c, i), h, w, j]
        x = x.reshape(n * c, s, h, w * s)  # [(n, c), i, h, (w, j)]
        x = x.permute(0, 2, 1, 3)  # [(n, c), h, i, (w, j)]
        return x.reshape(n, c, h * s, w * s)


class DepthToSpace(nn.Module):
    """The single ``pixel_shuffle`` op (a format's native depth-to-space, CRD order)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(x, self.scale)


class ConvTransposeShuffle(nn.Module):
    """``nn.PixelShuffle`` as a fixed 0/1-weight ``conv_transpose2d`` with kernel = stride = scale.

    Weight (C·s², C, s, s): ``w[c·s² + i·s + j, c, i, j] = 1``, so input channel ``c·s² + i·s + j`` lands on
    output channel ``c`` at offset (i, j) of every s×s output block.
    """

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale = scale
        s = scale
        weight = torch.zeros(channels * s * s, channels, s, s)
        for c in range(channels):
            for i in range(s):
                for j in range(s):
                    weight[c * s * s + i * s + j, c, i, j] = 1.0
        self.register_buffer("weight", weight)

    def forward(self, x: Tensor) -> Tensor:
        weight: Tensor = self.weight  # type: ignore[assignment]  # a registered buffer
        return F.conv_transpose2d(x, weight.to(x.dtype), stride=self.scale)


def make_shuffle(mode: str, scale: int, channels: int = 3) -> nn.Module:
    """The module for one lowering ``mode`` (``channels`` = output channels, for ``conv_transpose``)."""
    if mode == "reshape":
        return ReshapeShuffle(scale)
    if mode == "rank4":
        return Rank4Shuffle(scale)
    if mode == "depth_to_space":
        return DepthToSpace(scale)
    if mode == "conv_transpose":
        return ConvTransposeShuffle(scale, channels)
    raise ValueError(f"unknown pixel shuffle lowering {mode!r}")


def without_rank6(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with every ``ReshapeShuffle`` (rank 6) replaced by ``Rank4Shuffle``; a copy if any was.

    For converters that cannot take a rank-6 reshape whose sizes are symbolic: Core ML holds tensors of rank
    5 at most, and coremltools rewrites the rank-6 reshape / transpose into lower ranks only when every size
    is known, so flexible input shapes need the rank-4 form. Both are the same permutation (bit-exact).

    Returns:
        (the model, how many modules were replaced).
    """
    if not any(isinstance(m, ReshapeShuffle) for m in model.modules()):
        return model, 0
    m = copy.deepcopy(model)
    count = 0
    for mod in list(m.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, ReshapeShuffle):
                setattr(mod, child_name, Rank4Shuffle(child.scale))
                count += 1
    return m.eval(), count


@torch.no_grad()
def _shuffle_channels(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> dict[int, int]:
    """id(PixelShuffle module) -> its output channels, recorded by running ``example`` (one input, or a
    tuple: a video step's inputs) once."""
    seen: dict[int, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.__setitem__(id(mod), int(out.shape[1])))
        for m in model.modules()
        if isinstance(m, nn.PixelShuffle)
    ]
    try:
        model.eval()(*(example if isinstance(example, tuple) else (example,)))
    finally:
        for h in hooks:
            h.remove()
    return seen


def lower_pixel_shuffle(
    model: nn.Module, mode: str, example: Tensor | tuple[Tensor, ...] | None = None
) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every ``nn.PixelShuffle`` replaced by the ``mode`` lowering.

    Args:
        model: any module; ``nn.PixelShuffle`` submodules are replaced.
        mode: one of ``reshape``, ``rank4``, ``depth_to_space``, ``conv_transpose``.
        example: an input batch (a tuple for a model with several inputs); ``conv_transpose`` runs it once
            to learn each shuffle's channel count.

    Returns:
        (the new model, how many modules were replaced). Functional ``F.pixel_shuffle`` calls inside a
        ``forward`` are left as they are (they convert as ``depth_to_space``).
    """
    m = copy.deepcopy(model)
    channels: dict[int, int] = {}
    if mode == "conv_transpose":
        if example is None:
            raise ValueError("the conv_transpose lowering needs an example input")
        channels = _shuffle_channels(m, example)
    count = 0
    for mod in list(m.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.PixelShuffle):
                c = channels.get(id(child), 3)
                setattr(mod, child_name, make_shuffle(mode, child.upscale_factor, c))
                count += 1
    return m.eval(), count  # the deep copy keeps the model card
