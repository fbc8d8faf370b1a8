"""SPAN: Swift Parameter-free Attention Network for Efficient Super-Resolution (Wan et al., CVPRW 2024),
winner of the NTIRE 2024 efficient SR challenge.

Six SPAB blocks: three re-parameterizable Conv3XC convs with SiLU between them, and a parameter-free
attention ``sigmoid(out) - 0.5`` that multiplies ``out + x``. Features of the head, the first block, the
first conv of the last block and the (conv-refined) last block are concatenated, squeezed by a 1x1 conv,
and a 3x3 conv + pixel shuffle upsamples. The input is mean-shifted and scaled by 255 as in the official
code; the output is used as it is.

Conv3XC (training form): on the zero-padded input, 1x1 (C -> gain·C), unpadded 3x3 (-> gain·O),
1x1 (-> O), plus a 1x1 skip; ``fuse()`` returns the single 3x3 conv (``edge_sr.reparam.rules.conv3xc``).
Key names are the official ones (``conv_1.sk``, ``conv_1.conv.0``, ``block_1.c1_r``, ``conv_cat``,
``upsampler.0``). The official module also stores its fused kernel as ``eval_conv``; here ``eval_conv``
holds buffers that every ``state_dict()`` refreshes from the branches, so official checkpoints load
unchanged and saved ones carry a consistent fused kernel. ``forward`` always runs the branches.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.registry import register_model
from edge_sr.reparam.rules import conv3xc, conv_from

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _FusedKernel(nn.Module):
    """Buffers ``weight`` (O, C, 3, 3) and ``bias`` (O,): the official ``eval_conv`` keys."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(c_out, c_in, 3, 3))
        self.register_buffer("bias", torch.zeros(c_out))


class Conv3XC(nn.Module):
    """(N, C, H, W) -> (N, O, H, W); training-time branches of one 3x3 conv."""

    def __init__(self, *, c_in: int, c_out: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),  # unpadded: the input is padded before the first 1x1
            nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = _FusedKernel(c_in, c_out)
        self.register_state_dict_post_hook(_store_fused_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)

    def rep_params(self) -> tuple[Tensor, Tensor]:
        c0, c1, c2 = self.conv
        pairs = [(c.weight, c.bias) for c in (c0, c1, c2, self.sk)]
        return conv3xc(*pairs)  # type: ignore[arg-type]

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w, b = self.rep_params()
        return conv_from(w, b)


def _store_fused_kernel(module: Conv3XC, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    # Keep the official ``eval_conv`` entries equal to the current fused kernel.
    with torch.no_grad():
        w, b = module.rep_params()
    state[prefix + "eval_conv.weight"] = w.detach()
    state[prefix + "eval_conv.bias"] = b.detach()


class SPAB(nn.Module):
    """Swift parameter-free attention block. Returns (output, first conv output)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.c1_r = Conv3XC(c_in=channels, c_out=channels)
        self.c2_r = Conv3XC(c_in=channels, c_out=channels)
        self.c3_r = Conv3XC(c_in=channels, c_out=channels)
        self.act1 = nn.SiLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(self.act1(self.c2_r(self.act1(out1))))
        att = torch.sigmoid(out3) - 0.5  # parameter-free attention, in (-0.5, 0.5)
        return (out3 + x) * att, out1


class SPAN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    mean: Tensor

    def __init__(self, *, scale: int = 4, feature_channels: int = 48, img_range: float = 255.0) -> None:
        super().__init__()
        c = feature_channels
        self.scale = scale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(c_in=3, c_out=c)
        self.block_1, self.block_2, self.block_3 = (SPAB(channels=c) for _ in range(3))
        self.block_4, self.block_5, self.block_6 = (SPAB(channels=c) for _ in range(3))
        self.conv_cat = nn.Conv2d(c * 4, c, 1)
        self.conv_2 = Conv3XC(c_in=c, c_out=c)
        self.upsampler = nn.Sequential(nn.Conv2d(c, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean.to(x.dtype)) * self.img_range
        f = self.conv_1(x)
        b1, _ = self.block_1(f)
        b = b1
        for block in (self.block_2, self.block_3, self.block_4, self.block_5):
            b, _ = block(b)
        b6, b6_first = self.block_6(b)
        out = self.conv_cat(
            torch.cat([f, self.conv_2(b6), b1, b6_first], dim=1)
        )  # (N, 4C, H, W) -> (N, C, H, W)
        return self.upsampler(out)


@register_model(family="span", reparameterizable=True)
def span_ch48(**overrides) -> SPAN:
    return SPAN(**{"feature_channels": 48, **overrides})


@register_model(family="span", reparameterizable=True)
def span_ch52(**overrides) -> SPAN:
    return SPAN(**{"feature_channels": 52, **overrides})
