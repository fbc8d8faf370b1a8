"""PAN: Efficient Image Super-Resolution Using Pixel Attention (Zhao et al., ECCV Workshops 2020, AIM 2020
efficient SR challenge).

A 3x3 head conv, ``nb`` SC-PA blocks and a trunk conv with a long skip, then an upsampler of
nearest-neighbour enlargement + conv + pixel attention + conv per stage (one x2 / x3 stage; two x2 stages
at x4) at ``unf`` channels, a last conv, and the bilinearly enlarged input added to the output.

SC-PA (self-calibrated pixel attention) splits the features through two 1x1 convs into halves: one runs a
3x3 conv, the other a PA conv (``k3(x) * sigmoid(k2(x))`` followed by ``k4``); the halves, after
LeakyReLU(0.2), are concatenated, merged by a 1x1 conv and added to the input. PA (pixel attention) is
``x * sigmoid(conv1x1(x))``.

Key names are the official ``PAN_arch.py`` ones: ``conv_first``, ``SCPA_trunk.{i}.conv1_a`` /
``conv1_b`` / ``k1.0`` / ``PAConv.k2`` / ``PAConv.k3`` / ``PAConv.k4`` / ``conv3``, ``trunk_conv``,
``upconv1``, ``att1.conv``, ``HRconv1`` (and ``upconv2``, ``att2.conv``, ``HRconv2`` at x4),
``conv_last``. The official network computes on [0, 1]; so does this one.

The weights tell x4 (two upsampling stages) from x2 / x3 (one), but not x2 from x3: both have the same
tensors. Both enlargements are written with ops every export target has: the nearest-neighbour one as
a channel repeat + pixel shuffle, the bilinear one as a fixed depthwise 3x3 conv on the replicate-padded
input + pixel shuffle (:class:`BilinearUpsample`), equal to ``F.interpolate(..., align_corners=False)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model

_SLOPE = 0.2  # LeakyReLU slope of the official network


def nearest_upsample(x: Tensor, scale: int) -> Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="nearest")`` for an integer ``scale``.

    (N, C, H, W) -> every channel repeated scale² times, consecutively -> (N, C·s², H, W) -> PixelShuffle
    -> (N, C, sH, sW): each s x s output cell copies its input pixel.
    """
    if scale == 1:
        return x
    n, c, h, w = x.shape
    y = x.unsqueeze(2).expand(n, c, scale * scale, h, w).reshape(n, c * scale * scale, h, w)
    return F.pixel_shuffle(y, scale)


def bilinear_phase_taps(scale: int) -> Tensor:
    """(scale, 3) float64: output phase ``r`` of input pixel ``i`` is ``sum_k taps[r, k] * in[i + k - 1]``.

    With ``align_corners=False`` output pixel ``s·i + r`` samples the input at ``i + d`` with
    ``d = (r + 0.5) / s - 0.5`` in (-0.5, 0.5): it mixes pixel ``i`` and its neighbour on the side of ``d``
    with weights ``1 - |d|`` and ``|d|``. Border reads are clamped (replicate padding), as PyTorch does.
    """
    taps = torch.zeros(scale, 3, dtype=torch.float64)
    for r in range(scale):
        d = (r + 0.5) / scale - 0.5
        base = math.floor(d)  # -1 or 0: the left tap
        frac = d - base
        taps[r, base + 1] += 1.0 - frac
        taps[r, base + 2] += frac
    return taps


def _replicate_pad1(x: Tensor) -> Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")`` as slices and concats (every target takes them)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)


class BilinearUpsample(nn.Module):
    """Integer-scale bilinear upsampling (``align_corners=False``) as replicate pad + depthwise 3x3 conv +
    pixel shuffle.

    (N, C, H, W) -> pad -> (N, C, H+2, W+2) -> depthwise conv, s² phases per channel -> (N, C·s², H, W)
    -> PixelShuffle(s) -> (N, C, sH, sW). The filter (outer product of the 1-D phase taps) is a
    non-persistent buffer: checkpoints do not carry it.
    """

    weight: Tensor  # (C·s², 1, 3, 3)

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale, self.channels = scale, channels
        taps = bilinear_phase_taps(scale)  # (s, 3)
        kernel = taps[:, None, :, None] * taps[None, :, None, :]  # (s_y, s_x, 3, 3)
        kernel = kernel.reshape(scale * scale, 1, 3, 3).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", kernel.to(torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(_replicate_pad1(x), self.weight.to(x.dtype), groups=self.channels)
        return F.pixel_shuffle(y, self.scale)


class PA(nn.Module):
    """Pixel attention: ``x * sigmoid(conv1x1(x))`` (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """``k4(k3(x) * sigmoid(k2(x)))``: a 3x3 conv gated by a 1x1 pixel attention, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: (N, nf, H, W) -> (N, nf, H, W)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        half = nf // 2  # the official reduction 2
        self.conv1_a = nn.Conv2d(nf, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, half, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(2 * half, nf, 1, bias=False)
        self.lrelu = nn.LeakyReLU(_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    """PAN. (N, C, H, W) in [0, 1] -> (N, C, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        colors: colour channels in and out (3 RGB, 1 Y).
        nf: trunk feature channels (even: SC-PA splits them in halves).
        unf: feature channels of the upsampler.
        nb: SC-PA blocks.

    Raises:
        ConfigError: a scale other than 2, 3, 4, or an odd ``nf``.
    """

    def __init__(self, *, scale: int = 4, colors: int = 3, nf: int = 40, unf: int = 24, nb: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ConfigError(None, f"PAN scale {scale} is not supported; choose 2, 3 or 4")
        if nf % 2:
            raise ConfigError(None, f"PAN nf {nf} must be even (SC-PA splits the features in halves)")
        self.scale = scale
        self.conv_first = nn.Conv2d(colors, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*[SCPA(nf) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = PA(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
            self.att2 = PA(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, colors, 3, padding=1)
        self.lrelu = nn.LeakyReLU(_SLOPE)
        self.skip = BilinearUpsample(scale, colors)

    def forward(self, x: Tensor) -> Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        step = 2 if self.scale == 4 else self.scale
        for i in range(1, 3 if self.scale == 4 else 2):
            up = getattr(self, f"upconv{i}")(nearest_upsample(fea, step))
            fea = self.lrelu(getattr(self, f"att{i}")(up))
            fea = self.lrelu(getattr(self, f"HRconv{i}")(fea))
        return self.conv_last(fea) + self.skip(x)


@register_model(family="pan")
def pan(**overrides) -> PAN:
    """PAN: 40 trunk features, 24 upsampler features, 16 SC-PA blocks (272K parameters at x4)."""
    return PAN(**{"nf": 40, "unf": 24, "nb": 16, **overrides})


@register_detector("pan")
def _detect(state: StateDict) -> Detection | None:
    if not has(state, "conv_first.weight", "trunk_conv.weight", "upconv1.weight", "att1.conv.weight"):
        return None
    if not has(state, "SCPA_trunk.0.conv1_a.weight", "conv_last.weight"):
        return None
    nf, colors = shape(state, "conv_first.weight")[:2]  # type: ignore[index]
    unf = shape(state, "upconv1.weight")[0]  # type: ignore[index]
    nb = len(indices(state, "SCPA_trunk."))
    assumed: dict[str, str] = {}
    if "upconv2.weight" in state:
        scale = 4
    else:
        scale = 2
        assumed["scale"] = (
            "PAN x2 and x3 weights have the same tensors; 2 assumed, pass --model-arg scale=3 for an x3 model"
        )
    args = {"scale": scale, "colors": colors, "nf": nf, "unf": unf, "nb": nb}
    return Detection("pan", args, assumed=assumed)
