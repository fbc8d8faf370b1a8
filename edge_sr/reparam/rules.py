"""Fusion rules of structural re-parameterization, each a small pure function on tensors.

Shapes follow ``nn.Conv2d``: weights (out, in/groups, kh, kw), biases (out,). Every rule returns a
``(weight, bias)`` pair describing one convolution that computes exactly what the branch computed,
borders included (the branches that need it pad their intermediate maps with the value that a
zero-padded input would produce, see ``merge_1x1_kxk``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an inference-mode BatchNorm that follows a conv into the conv.

    ``bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta``. Uses the module's own ``eps``,
    its running statistics, and treats a non-affine BN as gamma = 1, beta = 0.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    b = bias if bias is not None else torch.zeros_like(std)
    t = gamma / std
    return weight * t.reshape(-1, 1, 1, 1), beta + (b - bn.running_mean) * t


def pad_kernel(weight: Tensor, size: int) -> Tensor:
    """Zero-pad a (out, in, k, k) kernel to (out, in, size, size), centred (k and size odd)."""
    k = weight.shape[-1]
    if k == size:
        return weight
    p = (size - k) // 2
    return F.pad(weight, (p, p, p, p))


def identity_kernel(channels: int, size: int = 3, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """A (C, C, size, size) kernel computing the identity map."""
    k = torch.zeros(channels, channels, size, size, dtype=dtype)
    idx = torch.arange(channels)
    k[idx, idx, size // 2, size // 2] = 1.0
    return k


def repeat_identity_kernel(
    channels: int, repeats: int, size: int = 3, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(C*r, C, size, size) kernel copying input channel c to outputs c*r .. c*r + r - 1.

    Followed by ``pixel_shuffle(s)`` with r = s², this is nearest-neighbour upsampling: the global
    residual of ECBSR-style nets folded into the last conv.
    """
    k = torch.zeros(channels * repeats, channels, size, size, dtype=dtype)
    out = torch.arange(channels * repeats)
    k[out, out // repeats, size // 2, size // 2] = 1.0
    return k


def depthwise_to_dense(weight: Tensor) -> Tensor:
    """(C, 1, k, k) depthwise kernel -> (C, C, k, k) dense kernel with zeros off the diagonal."""
    c = weight.shape[0]
    dense = torch.zeros(c, c, *weight.shape[2:], dtype=weight.dtype, device=weight.device)
    idx = torch.arange(c)
    dense[idx, idx] = weight[:, 0]
    return dense


def merge_1x1_kxk(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """Merge a 1x1 conv (w1 (M, C, 1, 1), b1) followed by an unpadded kxk conv (w2 (O, M, k, k), b2).

    The branch must pad the 1x1 output with ``b1`` (what the 1x1 conv yields on the zero padding of
    its input), not with zeros; then the merged kxk conv with zero padding is exact at the borders.
    """
    weight = F.conv2d(w2, w1.permute(1, 0, 2, 3))  # (O, C, k, k)
    k = w2.shape[-1]
    bias = (w2 * b1.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3)) + b2
    assert weight.shape[-1] == k
    return weight, bias


def pad_with_bias(y: Tensor, bias: Tensor, pad: int = 1) -> Tensor:
    """Pad a 1x1-conv output by ``pad`` pixels filled with the conv bias (per channel). (N, M, H, W) ->
    (N, M, H+2p, W+2p)."""
    y = F.pad(y, (pad, pad, pad, pad), mode="constant", value=0.0)
    b = bias.reshape(1, -1, 1, 1)
    y[:, :, :pad, :] = b
    y[:, :, -pad:, :] = b
    y[:, :, :, :pad] = b
    y[:, :, :, -pad:] = b
    return y


def sum_branches(*branches: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Parallel branches of equal kernel size add up: sum the weights and the biases."""
    size = max(w.shape[-1] for w, _ in branches)
    weight = sum(pad_kernel(w, size) for w, _ in branches)
    bias = sum(b for _, b in branches)
    return weight, bias  # type: ignore[return-value]


def conv_from(weight: Tensor, bias: Tensor | None, *, padding: int | None = None) -> nn.Conv2d:
    """Build a plain ``nn.Conv2d`` holding ``weight`` / ``bias`` (same dtype and device)."""
    out_c, in_c, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_c, out_c, (kh, kw), padding=kh // 2 if padding is None else padding, bias=bias is not None
    )
    conv = conv.to(device=weight.device, dtype=weight.dtype)
    conv.weight.data.copy_(weight)
    if bias is not None:
        assert conv.bias is not None
        conv.bias.data.copy_(bias)
    return conv


def merge_kxk_1x1(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """Merge a kxk conv (w1 (M, C, k, k), b1) followed by a 1x1 conv (w2 (O, M, 1, 1), b2).

    A 1x1 conv has no spatial extent, so the result is exact everywhere, borders included:
    ``W[o] = sum_m w2[o, m] * w1[m]`` and ``b = w2 @ b1 + b2``.
    """
    m2 = w2.reshape(w2.shape[0], w2.shape[1])  # (O, M)
    weight = torch.einsum("om,mckl->ockl", m2, w1)
    return weight, m2 @ b1 + b2


def identity_bn(channels: int, bn: nn.BatchNorm2d, size: int = 3) -> tuple[Tensor, Tensor]:
    """An identity branch followed by BatchNorm (RepVGG's third branch) as one (C, C, size, size) conv."""
    assert bn.running_var is not None, "BatchNorm2d without running statistics"
    idt = identity_kernel(channels, size, dtype=bn.running_var.dtype).to(bn.running_var.device)
    return fuse_conv_bn(idt, None, bn)


def edge_filter_branch(
    k0: Tensor, b0: Tensor, scale: Tensor, mask: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """ECB's 1x1 -> scaled fixed edge filter branch (Sobel-x, Sobel-y or Laplacian) as one 3x3 conv.

    ``k0`` (C', C, 1, 1), ``b0`` (C',): the 1x1 conv; ``scale`` (C', 1, 1, 1) the learned per-channel gain;
    ``mask`` (C', 1, 3, 3) the fixed filter, applied depthwise; ``bias`` (C',). The depthwise kernel
    ``scale * mask`` becomes dense, then merges with the 1x1 (the branch pads with ``b0``, see
    ``merge_1x1_kxk``).
    """
    return merge_1x1_kxk(k0, b0, depthwise_to_dense(scale * mask), bias)


def expand_squeeze_bn(
    expand: tuple[Tensor, Tensor], bn: nn.BatchNorm2d, squeeze: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """A RepSR path: kxk expand conv -> BatchNorm (population statistics) -> 1x1 squeeze conv, as one kxk conv."""
    w, b = fuse_conv_bn(expand[0], expand[1], bn)
    return merge_kxk_1x1(w, b, squeeze[0], squeeze[1])


def repsr_block(
    paths: list[tuple[tuple[Tensor, Tensor], nn.BatchNorm2d, tuple[Tensor, Tensor]]],
    identity_channels: int | None,
    size: int = 3,
) -> tuple[Tensor, Tensor]:
    """The RepSR block (expand-BN-squeeze paths plus a clean residual) as one ``size`` x ``size`` conv.

    ``paths`` lists ``(expand, bn, squeeze)``; ``identity_channels`` is C when the block adds its input
    (no BatchNorm on that path, as in the paper), else None.
    """
    branches = [expand_squeeze_bn(e, bn, s) for e, bn, s in paths]
    w, b = sum_branches(*[(pad_kernel(w, size), b) for w, b in branches])
    if identity_channels is not None:
        w = w + identity_kernel(identity_channels, size, dtype=w.dtype).to(w.device)
    return w, b


def conv3xc(
    first: tuple[Tensor, Tensor],
    middle: tuple[Tensor, Tensor],
    last: tuple[Tensor, Tensor],
    skip: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor]:
    """SPAN's Conv3XC as one 3x3 conv: (1x1 -> unpadded 3x3 -> 1x1 on the zero-padded input) + 1x1 skip.

    Padding the *input* with zeros makes the first 1x1 emit its bias on the border ring, which is exactly
    what ``merge_1x1_kxk`` assumes, so the fused conv (zero padding 1) is exact at the borders.
    """
    w, b = merge_1x1_kxk(first[0], first[1], middle[0], middle[1])
    w, b = merge_kxk_1x1(w, b, last[0], last[1])
    return sum_branches((w, b), skip)
