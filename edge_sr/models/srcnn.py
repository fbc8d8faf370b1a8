"""SRCNN: Image Super-Resolution Using Deep Convolutional Networks (Dong et al., ECCV 2014 / TPAMI 2016).

Three convolutions (patch extraction 9x9, non-linear mapping, reconstruction) on the bicubic-upsampled
image. The paper's best setting is 9-5-5 with 64 and 32 filters. Here the bicubic upsampling happens inside
the model, so SRCNN honours the zoo contract: (N, 3, H, W) -> (N, 3, sH, sW). Convs are zero-padded ("same")
so the output keeps its size, where the paper trained on valid convolutions. Key names follow the common
PyTorch port (``conv1``, ``conv2``, ``conv3``).

The upsampling equals ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` (PyTorch's
bicubic, a = -0.75, no antialiasing, borders clamped) but is written with ops every export target has
(:class:`BicubicUpsample`): coremltools has no ``upsample_bicubic2d`` and other targets lower it poorly.

Detection: the three kernels give ``colors`` (1 for the papers' Y-channel models), ``features``,
``mid_features`` and ``kernel_sizes``; the weights compute on [0, 1]. No weight depends on the scale (the
upsampling comes first and has no parameters), so the detection reports x2 under ``assumed["scale"]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import UNREADABLE_SCALE, conv_shape
from edge_sr.models.detect import Detection, StateDict, register_detector
from edge_sr.models.registry import register_model

CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient
HALO = 2  # input pixels each output phase reaches beyond its own: taps at offsets -2 .. +2


def _cubic(t: float) -> float:
    """Keys' cubic convolution kernel with a = -0.75 at distance ``t``."""
    t, a = abs(t), CUBIC_A
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_phase_taps(scale: int) -> Tensor:
    """(scale, 5) float64: output phase ``r`` of input pixel ``i`` is ``sum_k taps[r, k] * in[i + k - 2]``.

    With ``align_corners=False`` output pixel ``o = s·i + r`` samples the input at
    ``x = (o + 0.5) / s - 0.5 = i + d_r`` with ``d_r = (r + 0.5) / s - 0.5`` in (-0.5, 0.5). Its four taps are
    ``floor(x) - 1 .. floor(x) + 2``, so every phase reaches offsets -2 .. +2 around ``i``, and the weights
    depend on the phase only: a fixed filter per phase.
    """
    taps = torch.zeros(scale, 2 * HALO + 1, dtype=torch.float64)
    for r in range(scale):
        d = (r + 0.5) / scale - 0.5
        base = math.floor(d)  # -1 or 0: the tap left of the sample point
        frac = d - base
        for j in range(-1, 3):  # the four taps at base - 1 .. base + 2
            taps[r, base + j + HALO] = _cubic(frac - j)
    return taps


def _replicate_pad(x: Tensor, n: int) -> Tensor:
    """Repeat the outermost rows and columns ``n`` times: (N, C, H, W) -> (N, C, H + 2n, W + 2n).

    The same as ``F.pad(mode="replicate")`` (the bicubic's clamped border reads), spelled as slices and
    concats so every format takes it.
    """
    x = torch.cat([x[:, :, :1]] * n + [x] + [x[:, :, -1:]] * n, dim=2)
    return torch.cat([x[:, :, :, :1]] * n + [x] + [x[:, :, :, -1:]] * n, dim=3)


class BicubicUpsample(nn.Module):
    """Integer-scale bicubic upsampling as replicate pad + fixed depthwise 5x5 conv + pixel shuffle.

    (N, C, H, W) -> pad -> (N, C, H+4, W+4) -> depthwise conv, s² phases per channel -> (N, C·s², H, W)
    -> PixelShuffle(s) -> (N, C, sH, sW). Channel ``c·s² + ry·s + rx`` holds phase (ry, rx) of colour ``c``,
    which is the order ``PixelShuffle`` expects. The filter is the outer product of the 1-D phase taps
    (bicubic is separable); it is a non-persistent buffer, so checkpoints do not carry it.
    """

    weight: Tensor  # (C·s², 1, 5, 5) buffer

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale, self.channels = scale, channels
        taps = bicubic_phase_taps(scale)  # (s, 5)
        kernel = taps[:, None, :, None] * taps[None, :, None, :]  # (s_y, s_x, 5, 5)
        kernel = kernel.reshape(scale * scale, 1, 2 * HALO + 1, 2 * HALO + 1).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", kernel.to(torch.float32), persistent=False)  # (C·s², 1, 5, 5)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(_replicate_pad(x, HALO), self.weight.to(x.dtype), groups=self.channels)
        return self.shuffle(y)


class SRCNN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale). All convs run at the output resolution."""

    def __init__(
        self,
        *,
        scale: int = 4,
        colors: int = 3,
        features: int = 64,
        mid_features: int = 32,
        kernel_sizes: tuple[int, int, int] | list[int] = (9, 5, 5),
    ) -> None:
        super().__init__()
        k1, k2, k3 = (int(k) for k in kernel_sizes)
        self.scale = scale
        self.upsample = BicubicUpsample(scale, colors)
        self.conv1 = nn.Conv2d(colors, features, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(features, mid_features, k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(mid_features, colors, k3, padding=k3 // 2)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -bicubic-> (N, C, sH, sW) -> three convs at sH x sW
        up = self.upsample(x)
        y = self.relu(self.conv1(up))
        y = self.relu(self.conv2(y))
        return self.conv3(y)


@register_model(family="srcnn")
def srcnn_955(**overrides) -> SRCNN:
    return SRCNN(**{"kernel_sizes": (9, 5, 5), **overrides})


@register_model(family="srcnn")
def srcnn_915(**overrides) -> SRCNN:
    return SRCNN(**{"kernel_sizes": (9, 1, 5), **overrides})


_KEYS = frozenset(f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias"))


@register_detector("srcnn")
def _detect(state: StateDict) -> Detection | None:
    """``conv1`` / ``conv2`` / ``conv3`` and nothing else (the common PyTorch port's names)."""
    if set(state) != _KEYS:
        return None
    (f1, colors, k1, _), (f2, _, k2, _), (_, _, k3, _) = (
        conv_shape(state, f"conv{i}.weight") for i in (1, 2, 3)
    )
    kernels = [k1, k2, k3]
    args = {
        "scale": UNREADABLE_SCALE,
        "colors": colors,
        "features": f1,
        "mid_features": f2,
        "kernel_sizes": kernels,
    }
    return Detection(
        "srcnn_915" if kernels == [9, 1, 5] else "srcnn_955",
        args,
        form="deploy",
        assumed={
            "scale": f"x{UNREADABLE_SCALE}: SRCNN upsamples bicubically before its first conv, so no weight "
            "depends on the scale; pass --scale N for another factor"
        },
    )
