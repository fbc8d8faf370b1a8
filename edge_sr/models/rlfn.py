"""RLFN: Residual Local Feature Network for Efficient Super-Resolution (Kong et al., CVPRW 2022), winner of
the runtime track of the NTIRE 2022 efficient SR challenge.

A 3x3 head conv, ``num_blocks`` residual local feature blocks (RLFB), a 3x3 conv with a long skip, and a
3x3 conv + pixel shuffle. An RLFB is three 3x3 convs with LeakyReLU(0.05) and a local skip, a 1x1 conv,
and enhanced spatial attention (ESA): 1x1 squeeze to ``esa_channels``, a strided 3x3 conv, a 7x7 / stride 3
max pool, a 3x3 conv, bilinear enlargement back to the block's size, a 1x1 branch added, a 1x1 expand and a
sigmoid gate.

Configurations: RLFN has 52 features and 6 blocks (543K parameters at x4); RLFN-S is the released challenge
model (``rlfn_ntire_x4.pth``: 46 features, 48 mid channels in the blocks' three convs, 4 blocks; 317K
parameters, the paper's RLFN-S size).

Key names are the official ``model/rlfn.py`` / ``rlfn_ntire.py`` ones: ``conv_1``, ``block_{i}.c1_r`` /
``c2_r`` / ``c3_r`` / ``c5``, ``block_{i}.esa.conv1`` / ``conv_f`` / ``conv2`` / ``conv3`` / ``conv4``,
``conv_2``, ``upsampler.0``.

Value range: the released weights compute on [0, 255] (the official test multiplies the [0, 1] image by
255 and divides the output by 255); ``img_range`` does the same at this model's boundary, so it takes and
returns [0, 1].

The official ESA needs feature maps of at least 15 pixels a side (the pooling window must fit). Smaller
inputs, down to 3 pixels, pool over what there is (the strided map is replicate-padded to the window): for
every size the official network takes the result is the same. A dynamic-size export whose range starts
below 15 may fail its shape proof, which names the range that works.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, register_detector, shape
from edge_sr.models.registry import register_model

_SLOPE = 0.05  # LeakyReLU slope of the official blocks
_POOL, _POOL_STRIDE = 7, 3


def _replicate_pad_to(x: Tensor, size: int) -> Tensor:
    """Repeat the last rows / columns of ``x`` until both sides are at least ``size`` (no copy when they are).

    Written as slices and concats; the padding only happens for maps smaller than the window, and repeated
    edge values do not change a maximum.
    """
    h, w = x.shape[-2], x.shape[-1]
    if h < size:
        x = torch.cat([x] + [x[:, :, -1:]] * (size - h), dim=2)
    if w < size:
        x = torch.cat([x] + [x[:, :, :, -1:]] * (size - w), dim=3)
    return x


class ESA(nn.Module):
    """Enhanced spatial attention as RLFN uses it: (N, C, H, W) -> x * sigmoid(mask)."""

    def __init__(self, esa_channels: int, channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.conv1(x)  # (N, f, H, W)
        small = self.conv2(c1)  # (N, f, (H-3)//2+1, (W-3)//2+1)
        small = F.max_pool2d(_replicate_pad_to(small, _POOL), kernel_size=_POOL, stride=_POOL_STRIDE)
        small = self.conv3(small)
        up = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(up + self.conv_f(c1)))


class RLFB(nn.Module):
    """Residual local feature block: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, mid_channels: int, esa_channels: int) -> None:
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid_channels, 3, padding=1)
        self.c2_r = nn.Conv2d(mid_channels, mid_channels, 3, padding=1)
        self.c3_r = nn.Conv2d(mid_channels, channels, 3, padding=1)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(esa_channels, channels)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out)) + x
        return self.esa(self.c5(out))


class RLFN(nn.Module):
    """RLFN. (N, C, H, W) in [0, 1] -> (N, C, H·scale, W·scale).

    Args:
        scale: upscaling factor.
        colors: colour channels in and out (3 RGB, 1 Y).
        feature_channels: channels between the blocks.
        mid_channels: channels inside a block's three 3x3 convs (None: ``feature_channels``).
        num_blocks: RLFB blocks.
        esa_channels: channels of the spatial attention branch.
        img_range: the value range the weights compute on (255 for the released weights).

    Raises:
        ConfigError: no blocks.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        colors: int = 3,
        feature_channels: int = 52,
        mid_channels: int | None = None,
        num_blocks: int = 6,
        esa_channels: int = 16,
        img_range: float = 255.0,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ConfigError(None, f"RLFN num_blocks {num_blocks} must be at least 1")
        c, mid = feature_channels, mid_channels or feature_channels
        self.scale, self.img_range = scale, img_range
        self.conv_1 = nn.Conv2d(colors, c, 3, padding=1)
        for i in range(1, num_blocks + 1):
            self.add_module(f"block_{i}", RLFB(c, mid, esa_channels))
        self.num_blocks = num_blocks
        self.conv_2 = nn.Conv2d(c, c, 3, padding=1)
        self.upsampler = nn.Sequential(
            nn.Conv2d(c, colors * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_1(x * self.img_range)
        out = feat
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + feat) / self.img_range


@register_model(family="rlfn")
def rlfn(**overrides) -> RLFN:
    """RLFN: 52 features, 6 blocks (543K parameters at x4)."""
    return RLFN(**{"feature_channels": 52, "num_blocks": 6, **overrides})


@register_model(family="rlfn")
def rlfn_s(**overrides) -> RLFN:
    """RLFN-S, the released NTIRE 2022 model: 46 features, 48 mid channels, 4 blocks (317K at x4)."""
    return RLFN(**{"feature_channels": 46, "mid_channels": 48, "num_blocks": 4, **overrides})


_BLOCK = re.compile(r"block_(\d+)\.")


@register_detector("rlfn")
def _detect(state: StateDict) -> Detection | None:
    if not has(state, "conv_1.weight", "conv_2.weight", "upsampler.0.weight", "block_1.c1_r.weight"):
        return None
    if not has(state, "block_1.esa.conv1.weight", "block_1.esa.conv_f.weight", "block_1.c5.weight"):
        return None
    if not has(state, "conv_1.bias", "block_1.c1_r.bias", "block_1.c5.bias", "upsampler.0.bias"):
        return None  # RLFN's convs all have biases (DIPNet's pruned, RLFN-like blocks have none)
    c, colors = shape(state, "conv_1.weight")[:2]  # type: ignore[index]
    mid = shape(state, "block_1.c1_r.weight")[0]  # type: ignore[index]
    esa = shape(state, "block_1.esa.conv1.weight")[0]  # type: ignore[index]
    num_blocks = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    up = shape(state, "upsampler.0.weight")[0]  # type: ignore[index]
    scale = round((up / colors) ** 0.5)
    if scale * scale * colors != up:
        return None
    args = {
        "scale": scale,
        "colors": colors,
        "feature_channels": c,
        "mid_channels": mid,
        "num_blocks": num_blocks,
        "esa_channels": esa,
        "img_range": 255.0,
    }
    why = "the released RLFN weights compute on [0, 255]; pass --model-arg img_range=1 for weights trained on [0, 1]"
    arch = "rlfn_s" if (c, mid, num_blocks) == (46, 48, 4) else "rlfn"  # the released RLFN-S, by name
    return Detection(arch, args, value_range=255.0, assumed={"img_range": why})
