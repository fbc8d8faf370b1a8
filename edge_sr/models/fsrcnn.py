"""FSRCNN: Accelerating the Super-Resolution Convolutional Neural Network (Dong, Loy, Tang, ECCV 2016).

Hourglass on the LR image: feature extraction 5x5/d, shrinking 1x1/s, m mapping layers 3x3/s, expanding
1x1/d (PReLU after each), then a 9x9 deconvolution with stride s as the upsampler. FSRCNN is d=56, s=12,
m=4; FSRCNN-s is d=32, s=5, m=1. The deconvolution uses padding 4 and output padding s-1 so the output is
exactly s·H x s·W. Key names follow the common PyTorch port (``first_part``, ``mid_part``, ``last_part``).

The forward runs that deconvolution unpadded and crops the s·H x s·W window it would keep
(:func:`deconv_same`): the same numbers, but a plain ``TRANSPOSE_CONV`` with VALID padding, which every
target takes (litert-torch cannot legalize a padded transposed convolution with output padding).

Detection: ``d`` and ``colors`` from the first conv (1 for the paper's Y-channel models), ``s`` from the
shrinking conv, ``m`` from the number of mapping convs; the weights compute on [0, 1]. The deconvolution's
kernel is 9x9 at every stride, so no weight depends on the scale: the detection reports x2 under
``assumed["scale"]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import UNREADABLE_SCALE, conv_shape, keys_match, nearest_name
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
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


_KEY = r"(first_part\.[01]|mid_part\.\d+|last_part)\.(weight|bias)"
_NAMES: dict[tuple[int, ...], str] = {(56, 12, 4): "fsrcnn", (32, 5, 1): "fsrcnn_s"}


@register_detector("fsrcnn")
def _detect(state: StateDict) -> Detection | None:
    """``first_part`` (conv, PReLU), ``mid_part`` (convs at even indices, PReLUs at odd), ``last_part``
    (the transposed convolution), the common PyTorch port's names."""
    if not keys_match(state, _KEY) or "last_part.weight" not in state or "mid_part.0.weight" not in state:
        return None
    d, colors, _, _ = conv_shape(state, "first_part.0.weight")
    s, _, _, _ = conv_shape(state, "mid_part.0.weight")
    convs = [i for i in indices(state, "mid_part.") if f"mid_part.{i}.bias" in state]
    m = len(convs) - 2  # shrinking and expanding convs around the m mapping convs
    args = {"scale": UNREADABLE_SCALE, "colors": colors, "d": d, "s": s, "m": m}
    return Detection(
        nearest_name(_NAMES, (d, s, m)),
        args,
        form="deploy",
        assumed={
            "scale": f"x{UNREADABLE_SCALE}: FSRCNN's 9x9 deconvolution has the same shape at every stride, "
            "so no weight depends on the scale; pass --scale N for another factor"
        },
    )
