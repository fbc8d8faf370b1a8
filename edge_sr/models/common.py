"""Small building blocks shared by model families, and helpers their state-dict detectors share."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from torch import Tensor, nn

UNREADABLE_SCALE = 2
"""The scale a detector reports for a family whose weights hold no scale-dependent shape (SRCNN upsamples
bicubically before its first conv; FSRCNN's transposed convolution has the same kernel at every stride):
x2, the factor the classic papers report first. ``--scale`` / ``--model-arg scale=N`` overrides it."""


def make_act(name: str, channels: int) -> nn.Module:
    """Activation by name: prelu (per channel), relu, lrelu (0.2 / 0.1 as in the literature), linear."""
    if name == "prelu":
        return nn.PReLU(num_parameters=channels)
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=False)
    if name == "lrelu02":
        return nn.LeakyReLU(0.2, inplace=False)
    if name in ("linear", "identity"):
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; choose from prelu, relu, lrelu, lrelu02, linear")


# ---- helpers for detectors (edge_sr.models.detect): key patterns and shapes, never values


def keys_match(state: Iterable[str], pattern: str) -> bool:
    """Every key fully matches the regular expression ``pattern`` (and there is at least one key)."""
    rx = re.compile(pattern)
    keys = list(state)
    return bool(keys) and all(rx.fullmatch(k) for k in keys)


def pixel_shuffle_scale(out_channels: int, colors: int) -> int:
    """The factor ``s`` of a conv that feeds ``PixelShuffle(s)`` with ``colors · s²`` channels.

    Raises:
        ValueError: ``out_channels`` is not ``colors`` times a square.
    """
    if colors <= 0 or out_channels % colors:
        raise ValueError(f"{out_channels} output channels are not a multiple of {colors} colours")
    s = math.isqrt(out_channels // colors)
    if s < 1 or s * s * colors != out_channels:
        raise ValueError(f"{out_channels} output channels are not {colors}·s² for an integer scale s")
    return s


def conv_shape(state: Mapping[str, Tensor], key: str) -> tuple[int, int, int, int]:
    """The (out, in, kh, kw) shape of the conv weight ``state[key]``.

    Raises:
        KeyError: The key is absent.
        ValueError: The tensor is not 4-D.
    """
    shape = tuple(state[key].shape)
    if len(shape) != 4:
        raise ValueError(f"{key} has shape {shape}; expected a 4-D convolution kernel")
    return shape  # type: ignore[return-value]


def nearest_name(table: Mapping[tuple[int, ...], str], key: tuple[int, ...]) -> str:
    """The registry name of ``table`` whose size tuple equals ``key``, else the closest one (the sizes
    compared in order: the first differing entry decides). A detection passes every argument, so the name
    only says which published configuration the weights are closest to."""
    if key in table:
        return table[key]
    return table[min(table, key=lambda k: tuple(abs(a - b) for a, b in zip(k, key, strict=False)))]
