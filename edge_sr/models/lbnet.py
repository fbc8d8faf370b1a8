"""LBNet: Lightweight Bimodal Network for Single-Image Super-Resolution via Symmetric CNN and Recursive
Transformer (Gao et al., IJCAI 2022), LBNet and LBNet-T.

A 3x3 head, a symmetric CNN of three local feature fusion modules (LFFM, each three feature-refinement
dual-attention blocks, FRDAB, densely fused by grouped 1x1 convs) run twice (the second pass on the first
pass's outputs plus their channel attention), a 1x1 merge of all six outputs, then a recursive transformer:
3x3 patch tokens (9·``n_feat`` wide) through one efficient transformer block applied three times, folded
back, a 3x3 conv, again with a second block, a 3x3 conv, the head's features added, and a conv + pixel
shuffle. The efficient attention narrows the tokens by ``reduction`` (2 for LBNet, 1 for LBNet-T) and
attends inside the 16 consecutive chunks of the token sequence.

Key names are the official ``model/lbnet.py`` / ``util/rlutrans.py`` ones, so released ``.pt`` files load
unchanged with strict key checking: ``sub_mean``, ``head``, ``r{1,2,3}.b{1,2,3}.{c1..c6, se.conv_du.{0,2},
sa.conv1}``, ``r{1,2,3}.c{1,2,3}``, ``se{1,2,3}.conv_du.{0,2}``, ``attention`` / ``attention2``
``.{atten.{reduce, qkv, proj}, norm1, mlp.{fc1, fc2}, norm2}``, ``c1``, ``c2``, ``c3``, ``tail.0``,
``add_mean``.

Value range: the official network computes on [0, 255] (``rgb_range`` 255, EDSR's framework) and its
``sub_mean`` / ``add_mean`` are 1x1 convs that the official code leaves trainable, so the stored ones are
applied as they are. Our contract is [0, 1]: ``forward`` multiplies by ``rgb_range`` on entry and divides on
exit.

The patch extraction and folding, the chunked attention and the transformer block are ESRT's
(``edge_sr.models.esrt``), written in ops every target takes. Checked against PyTorch (fp32, max abs
diff <= 1e-4) on a tiny configuration: ONNX, ExecuTorch and PT2 over a range of sizes (sides of 16 and up:
16 chunks of at least 16 tokens), CoreML and TFLite at a fixed size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, register_detector, shape
from edge_sr.models.edsr import DIV2K_MEAN, MeanShift, check_scale
from edge_sr.models.esrt import ChannelAttention, EfficientTransformer, PatchFold, PatchUnfold, check_tokens
from edge_sr.models.registry import register_model

__all__ = ["LBNet", "lbnet", "lbnet_t"]

_PARTS = 16  # LBNet's attention splits the token sequence into 16 chunks
_RECURSIONS = 3  # each transformer block is applied three times
_HEADS = {"lbnet": 8, "lbnet_t": 6}  # the official READMEs' heads per variant


class SpatialAttention(nn.Module):
    """``x * sigmoid(conv7x7([mean_c(x), max_c(x)]))`` (key ``conv1``, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv1(pooled))


class FRDAB(nn.Module):
    """Feature refinement dual-attention block: (N, C, H, W) -> (N, C, H, W) (keys ``c1`` .. ``c6``, ``se``,
    ``sa``).

    ``y1 = relu(c1 x)``, ``y2 = relu(c2 y1)``, ``y3 = relu(c3 y1)`` (half width each), ``y4 = relu(c4 [y1,
    y2, y3])``, ``y5 = c5 y3``; on ``z = [y2, y5, y4]`` channel plus spatial attention, ``c6`` back to C,
    plus ``x``.
    """

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        half = n_feats // 2
        self.c1 = nn.Conv2d(n_feats, n_feats, 1)
        self.c2 = nn.Conv2d(n_feats, half, 3, padding=1)
        self.c3 = nn.Conv2d(n_feats, half, 3, padding=1)
        self.c4 = nn.Conv2d(2 * n_feats, n_feats, 3, padding=1)
        self.c5 = nn.Conv2d(half, half, 3, padding=1)
        self.c6 = nn.Conv2d(2 * n_feats, n_feats, 1)
        self.se = ChannelAttention(2 * n_feats)
        self.sa = SpatialAttention()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y1 = self.act(self.c1(x))
        y2 = self.act(self.c2(y1))
        y3 = self.act(self.c3(y1))
        y4 = self.act(self.c4(torch.cat([y1, y2, y3], dim=1)))
        z = torch.cat([y2, self.c5(y3), y4], dim=1)
        return x + self.c6(self.se(z) + self.sa(z))


class LFFM(nn.Module):
    """Local feature fusion module: three FRDABs, each fed the grouped 1x1 fusion of all before it, a 1x1
    fusion of all four, plus the input (keys ``b1`` .. ``b3``, ``c1`` .. ``c3``)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.b1 = FRDAB(n_feats)
        self.b2 = FRDAB(n_feats)
        self.b3 = FRDAB(n_feats)
        self.c1 = nn.Conv2d(2 * n_feats, n_feats, 1, groups=2)
        self.c2 = nn.Conv2d(3 * n_feats, n_feats, 1, groups=2)
        self.c3 = nn.Conv2d(4 * n_feats, n_feats, 1)

    def forward(self, x: Tensor) -> Tensor:
        o1 = self.b1(x)
        o2 = self.b2(self.c1(torch.cat([x, o1], dim=1)))
        o3 = self.b3(self.c2(torch.cat([x, o1, o2], dim=1)))
        return x + self.c3(torch.cat([x, o1, o2, o3], dim=1))


class LBNet(nn.Module):
    """LBNet. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_feat: feature channels (32 LBNet, 18 LBNet-T; even, and at least 16 for the channel attention's
            squeeze); the transformer is 9·n_feat wide.
        num_heads: attention heads (8 LBNet, 6 LBNet-T; the weights do not tell).
        reduction: the attention's narrowing of the tokens (2 LBNet, 1 LBNet-T).
        rgb_range: the value range the weights were trained on (255 for the official releases).

    Raises:
        ConfigError: a scale other than 2, 3, 4; an odd or too small ``n_feat``; heads that do not divide
            the attention width ``9·n_feat / reduction``.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_feat: int = 32,
        num_heads: int = 8,
        reduction: int = 2,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        check_scale(scale)
        if n_feat % 2:
            raise ConfigError(None, f"LBNet n_feat {n_feat} must be even (its blocks split it in halves)")
        if reduction < 1 or (9 * n_feat) % reduction:
            raise ConfigError(None, f"LBNet reduction {reduction} must divide the token width {9 * n_feat}")
        self.scale, self.rgb_range = scale, rgb_range
        dim = 9 * n_feat
        self.sub_mean = _trainable(MeanShift(rgb_range, DIV2K_MEAN, sign=-1))
        self.head = nn.Conv2d(3, n_feat, 3, padding=1)
        self.r1 = LFFM(n_feat)
        self.r2 = LFFM(n_feat)
        self.r3 = LFFM(n_feat)
        self.se1 = ChannelAttention(n_feat)
        self.se2 = ChannelAttention(n_feat)
        self.se3 = ChannelAttention(n_feat)
        self.attention = EfficientTransformer(dim=dim, num_heads=num_heads, reduction=reduction, parts=_PARTS)
        self.attention2 = EfficientTransformer(
            dim=dim, num_heads=num_heads, reduction=reduction, parts=_PARTS
        )
        self.c1 = nn.Conv2d(6 * n_feat, n_feat, 1)
        self.c2 = nn.Conv2d(n_feat, n_feat, 3, padding=1)
        self.c3 = nn.Conv2d(n_feat, n_feat, 3, padding=1)
        self.tail = nn.Sequential(nn.Conv2d(n_feat, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.add_mean = _trainable(MeanShift(rgb_range, DIV2K_MEAN, sign=1))
        self.unfold = PatchUnfold(n_feat)
        self.fold = PatchFold(n_feat)

    def _recursive(self, block: nn.Module, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        tokens = self.unfold(x)
        for _ in range(_RECURSIONS):
            tokens = block(tokens)
        return self.fold(tokens, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            check_tokens(int(x.shape[-2]), int(x.shape[-1]), _PARTS, "lbnet")
        feat = self.head(self.sub_mean(x * self.rgb_range))
        y1 = self.r1(feat)
        y2 = self.r2(y1)
        y3 = self.r3(y2)
        y5 = self.r1(y3 + self.se1(y1))
        y6 = self.r2(y5 + self.se2(y2))
        y7 = self.r3(y6 + self.se3(y3))
        y = self.c1(torch.cat([y1, y2, y3, y5, y6, y7], dim=1))
        y = self.c2(self._recursive(self.attention, y))
        y = self.c3(self._recursive(self.attention2, y))
        return self.add_mean(self.tail(y + feat)) / self.rgb_range


def _trainable(shift: MeanShift) -> MeanShift:
    # The official MeanShift sets `requires_grad` on the module, not on its parameters: they train.
    for p in shift.parameters():
        p.requires_grad = True
    return shift


@register_model(family="lbnet", kind="heavy")
def lbnet(**overrides) -> LBNet:
    """LBNet: 32 features, 8 heads, attention narrowed by 2 (742K parameters at x4, 731K at x2)."""
    return LBNet(**{"n_feat": 32, "num_heads": 8, "reduction": 2, **overrides})


@register_model(family="lbnet", kind="heavy")
def lbnet_t(**overrides) -> LBNet:
    """LBNet-T: 18 features, 6 heads, attention at full width (410K parameters at x4, 404K at x2)."""
    return LBNet(**{"n_feat": 18, "num_heads": 6, "reduction": 1, **overrides})


# ---- detection


@register_detector("lbnet")
def _detect(state: StateDict) -> Detection | None:
    """LBNet / LBNet-T from the official key layout; the narrowing picks the variant and its heads."""
    if not has(
        state,
        "sub_mean.weight",
        "head.weight",
        "r1.b1.c1.weight",
        "se1.conv_du.0.weight",
        "attention.atten.reduce.weight",
        "attention2.atten.reduce.weight",
        "tail.0.weight",
        "add_mean.weight",
    ):
        return None
    head = shape(state, "head.weight")
    reduce = shape(state, "attention.atten.reduce.weight")
    tail = shape(state, "tail.0.weight")
    if head is None or reduce is None or tail is None or len(head) != 4 or len(reduce) != 2:
        return None
    n_feat = head[0]
    dim, width = reduce[1], reduce[0]
    if dim != 9 * n_feat or width < 1 or dim % width:
        return None
    scale = round((tail[0] / 3) ** 0.5)
    if scale * scale * 3 != tail[0]:
        return None
    reduction = dim // width
    arch = "lbnet_t" if reduction == 1 else "lbnet"
    heads = _HEADS[arch]
    assumed = {
        "num_heads": f"not stored in the weights; {heads}, the official {'LBNet-T' if arch == 'lbnet_t' else 'LBNet'}'s",
        "rgb_range": "not stored; 255, the official training range",
    }
    args = {"scale": scale, "n_feat": n_feat, "num_heads": heads, "reduction": reduction, "rgb_range": 255.0}
    return Detection(arch, args, value_range=255.0, mean=DIV2K_MEAN, assumed=assumed)
