"""Modulated deformable convolution (DCNv2, Zhu, Hu, Lin, Dai, CVPR 2019) in plain PyTorch.

No torchvision, no CUDA extension: each kernel tap samples the input bilinearly at its shifted position with
``grid_sample`` (zeros outside the image, as the CUDA kernels of mmcv / BasicSR / torchvision do), the samples
are scaled by the modulation mask, and one grouped 1x1 convolution over the k·k-expanded input
(im2col by sampling) applies the weights. Every step is a fixed-shape tensor operation, so the module exports
with ``torch.export`` (no data-dependent control flow).

Tensor layouts are the official ones (mmcv ``modulated_deform_conv2d``, ``torchvision.ops.deform_conv2d``):

- ``offset``: (N, 2·G·kh·kw, Ho, Wo), per deformable group ``g`` and tap ``k = i·kw + j`` the pair
  (dy, dx) at channels ``g·2·K + 2k`` and ``g·2·K + 2k + 1`` (y first, interleaved);
- ``mask``: (N, G·kh·kw, Ho, Wo), channel ``g·K + k``, already through the sigmoid;
- tap ``(i, j)`` of output pixel ``(ho, wo)`` reads the input at
  ``(ho·stride - pad + i·dilation + dy, wo·stride - pad + j·dilation + dx)``.

The modules keep the official parameter names: ``weight`` (out, in / groups, kh, kw) and ``bias`` on
:class:`ModulatedDeformConv2d`, plus ``conv_offset.weight`` / ``conv_offset.bias`` on :class:`DCNv2Pack`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from edge_sr.errors import ConfigError

__all__ = ["DCNv2Pack", "ModulatedDeformConv2d", "modulated_deform_conv2d", "zero_init"]


def zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` with zero weight and bias: an offset predictor that starts with no deformation."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _taps(out: int, k: int, stride: int, pad: int, dil: int, like: Tensor) -> Tensor:
    """(k, out): the undeformed input coordinate of each tap and output position along one axis."""
    pos = torch.arange(out, dtype=like.dtype, device=like.device) * stride - pad
    tap = torch.arange(k, dtype=like.dtype, device=like.device) * dil
    return tap[:, None] + pos[None, :]


def modulated_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    deform_groups: int = 1,
) -> Tensor:
    """DCNv2 on (N, C, H, W) -> (N, out, Ho, Wo), with the offset and mask layouts of the module docstring.

    Args:
        x: The input.
        offset: (N, 2·deform_groups·kh·kw, Ho, Wo), (dy, dx) interleaved per tap.
        mask: (N, deform_groups·kh·kw, Ho, Wo), the modulation (after the sigmoid).
        weight: (out, C / groups, kh, kw).
        bias: (out,) or None.
        stride: As ``nn.Conv2d``.
        padding: As ``nn.Conv2d`` (zeros).
        dilation: As ``nn.Conv2d``.
        groups: Convolution groups.
        deform_groups: Channel groups that share one offset field (C divisible by it).
    """
    n, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k, g = kh * kw, deform_groups
    # (kh, ho) and (kw, wo) -> (K, Ho, Wo) each, tap k = i·kw + j
    base_y = _taps(ho, kh, sh, ph, dh, x)[:, None, :, None].expand(kh, kw, ho, wo).reshape(k, ho, wo)
    base_x = _taps(wo, kw, sw, pw, dw, x)[None, :, None, :].expand(kh, kw, ho, wo).reshape(k, ho, wo)
    # batch and deformable groups share one axis: no tensor above rank 5 (Core ML's limit)
    off = offset.reshape(n * g, k, 2, ho, wo)
    py = base_y + off[:, :, 0]  # (N·G, K, Ho, Wo) input rows
    px = base_x + off[:, :, 1]
    # grid_sample with align_corners=False puts pixel i at (2i + 1) / size - 1; zeros outside, bilinear
    # with the out-of-image corners counted as zero, as the CUDA kernel's im2col
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).reshape(n * g, k * ho, wo, 2)
    cols = F.grid_sample(
        x.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (N·G, C/G, K·Ho, Wo)
    cols = cols.reshape(n * g, c // g, k, ho, wo) * mask.reshape(n * g, 1, k, ho, wo)
    # (N, C·K, Ho, Wo), channel c·K + k: the layout of weight.reshape(out, C/groups·K)
    cols = cols.reshape(n, c * k, ho, wo)
    return F.conv2d(cols, weight.reshape(out_c, -1, 1, 1), bias, groups=groups)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 with external offsets and mask: ``forward(x, offset, mask)``; mmcv's ``ModulatedDeformConv2d``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: As ``nn.Conv2d``.
        stride: As ``nn.Conv2d``.
        padding: As ``nn.Conv2d``.
        dilation: As ``nn.Conv2d``.
        groups: Convolution groups.
        deform_groups: Offset groups (``in_channels`` divisible by it).
        bias: Whether the convolution has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ConfigError(
                None, f"channels {in_channels} -> {out_channels} are not divisible by groups {groups}"
            )
        if in_channels % deform_groups:
            raise ConfigError(
                None, f"in_channels {in_channels} are not divisible by deform_groups {deform_groups}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's initialisation: uniform in ±1/sqrt(fan_in), zero bias."""
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def deform(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        """The convolution with this module's weights (offset and mask as :func:`modulated_deform_conv2d`)."""
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.groups, self.deform_groups,
        )  # fmt: skip

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self.deform(x, offset, mask)


class DCNv2Pack(ModulatedDeformConv2d):
    """DCNv2 whose offsets and mask come from a conv on a second feature (EDVR's alignment unit).

    ``forward(x, feat)``: ``conv_offset(feat)`` gives 3·G·kh·kw channels, split in three: the first two
    thirds are the offsets (already in the interleaved (dy, dx) layout), the last the mask through a sigmoid.
    BasicSR's ``DCNv2Pack`` and mmagic's ``ModulatedDCNPack``; ``conv_offset`` starts at zero (no deformation,
    mask 0.5) as in both.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, deform_groups, bias
        )
        kh, kw = self.kernel_size
        out = deform_groups * 3 * kh * kw
        # BasicSR's pack gives it the DCN's stride, padding and dilation; it starts at zero as both packs do
        self.conv_offset = zero_init(
            nn.Conv2d(in_channels, out, self.kernel_size, self.stride, self.padding, self.dilation)
        )

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:  # type: ignore[override]
        o1, o2, mask = torch.chunk(self.conv_offset(feat), 3, dim=1)
        return self.deform(x, torch.cat((o1, o2), dim=1), torch.sigmoid(mask))
