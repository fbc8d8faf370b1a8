"""FSRCNN: Accelerating the Super-Resolution Convolutional Neural Network (Dong, Loy, Tang, ECCV 2016).

Hourglass on the LR image: feature extraction 5x5/d, shrinking 1x1/s, m mapping layers 3x3/s, expanding
1x1/d (PReLU after each), then a 9x9 deconvolution with stride s as the upsampler. FSRCNN is d=56, s=12,
m=4; FSRCNN-s is d=32, s=5, m=1. The deconvolution uses padding 4 and output padding s-1 so the output is
exactly s·H x s·W. Key names follow the common PyTorch port (``first_part``, ``mid_part``, ``last_part``).

The forward runs that deconvolution unpadded and crops the s·H x s·W window it would keep
(:func:`deconv_same`): the same numbers, but a plain ``TRANSPOSE_CONV`` with VALID padding, which every
target takes (litert-torch cannot legalize a padded transposed convolution with output padding).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.registry import register_model


def deconv_same(x: Tensor, deconv: nn.ConvTranspose2d) -> Tensor:
    """``deconv(x)`` for a ``ConvTranspose2d(k, stride=s, padding=p, output_padding=s-1)``, as an unpadded
    transposed convolution ((H-1)·s + k rows) cropped to rows ``p .. p + s·H``. Needs ``p + s <= k``."""
    s, p, k = int(deconv.stride[0]), int(deconv.padding[0]), int(deconv.kernel_size[0])
    if p + s > k:
        raise ValueError(f"deconv_same needs padding + stride <= kernel, got {p} + {s} > {k}")
    h, w = x.shape[-2], x.shape[-1]
    y = F.conv_transpose2d(x, deconv.weight, deconv.bias, stride=s)
    return y[..., p : p + s * h, p : p + s * w]


class FSRCNN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(self, *, scale: int = 4, colors: int = 3, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(colors, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        # (H-1)·s - 2·4 + 9 + (s-1) = s·H
        self.last_part = nn.ConvTranspose2d(d, colors, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: Tensor) -> Tensor:
        return deconv_same(self.mid_part(self.first_part(x)), self.last_part)


@register_model(family="fsrcnn")
def fsrcnn(**overrides) -> FSRCNN:
    return FSRCNN(**{"d": 56, "s": 12, "m": 4, **overrides})


@register_model(family="fsrcnn")
def fsrcnn_s(**overrides) -> FSRCNN:
    return FSRCNN(**{"d": 32, "s": 5, "m": 1, **overrides})
