"""SAFMN: Spatially-Adaptive Feature Modulation for Efficient Image SR (Sun et al., ICCV 2023).

``to_feat`` (3x3 conv) -> ``feats`` (``n_blocks`` attention blocks) + the head's features -> ``to_img``
(3x3 conv to colors·scale² and pixel shuffle). Each block is ``x + SAFM(norm1(x))`` then
``x + CCM(norm2(x))``, with channels-first LayerNorms (eps 1e-6). SAFM splits the features into
``n_levels`` chunks: chunk 0 goes through a depthwise 3x3 conv at full resolution, chunk i > 0 is
adaptive-max-pooled to (H / 2^i, W / 2^i), depthwise-convolved and nearest-upsampled back; ``aggr`` (1x1)
mixes the chunks and GELU of the result modulates the block input. CCM is a 3x3 conv to
``ffn_scale``·dim, GELU, 1x1 conv back.

Key names are the official ones (``basicsr/archs/safmn_arch.py``): ``to_feat``,
``feats.{i}.norm1`` / ``norm2`` (``weight``, ``bias``), ``feats.{i}.safm.mfr.{l}``, ``feats.{i}.safm.aggr``,
``feats.{i}.ccm.ccm.{0,2}``, ``to_img.0``. The network works on [0, 1] with no mean shift.

Pooling: when H and W are multiples of 2^(n_levels-1), the adaptive max pool to H / 2^i is exactly
``max_pool2d`` with kernel = stride = 2^i (its windows ``[floor(j·H/o), ceil((j+1)·H/o))`` are then
``[j·2^i, (j+1)·2^i)``), and the nearest upsampling back is an integer ``scale_factor`` resize; this is
the form exported to every target. At other sizes ``forward`` runs the official adaptive pooling in
PyTorch (uneven windows), so official weights give official outputs everywhere, but an export at such a
size is refused with a ``ConfigError`` (and a dynamic-size export fails its shape proof): export at
multiples of 2^(n_levels-1) (8 for the published models), or tile. Inputs under 2^(n_levels-1) pixels a
side, where the official pooling has an empty output, are refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model


class LayerNorm(nn.Module):
    """LayerNorm over the channels of (N, C, H, W) (the official ``channels_first`` form, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        d = x - u
        var = (d * d).mean(1, keepdim=True)
        y = d / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * y + self.bias[:, None, None]


def pooled_level(x: Tensor, level: int, conv: nn.Module) -> Tensor:
    """One SAFM pyramid level: max-pool to 1/2^level, ``conv``, nearest back to (H, W). (N, c, H, W) -> same.

    Raises:
        ConfigError: Tracing for export at a size that is not a multiple of 2^level.
    """
    h, w = x.shape[-2], x.shape[-1]
    k = 2**level
    if h % k == 0 and w % k == 0:
        # adaptive max pool at a divisible size == max_pool2d(k, k); nearest back == integer upsampling
        s = conv(F.max_pool2d(x, kernel_size=k, stride=k))
        return F.interpolate(s, scale_factor=float(k), mode="nearest")
    if torch.compiler.is_compiling():
        raise ConfigError(
            None,
            f"SAFMN exports only at sizes that are multiples of {k} (its pooling pyramid); got {h}x{w}: "
            "choose such an input size or tile",
        )
    if h < k or w < k:
        raise ConfigError(None, f"SAFMN needs inputs of at least {k}x{k} pixels; got {h}x{w}")
    s = conv(F.adaptive_max_pool2d(x, (h // k, w // k)))
    return F.interpolate(s, size=(h, w), mode="nearest")


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation. (N, dim, H, W) -> (N, dim, H, W)."""

    def __init__(self, *, dim: int, n_levels: int = 4) -> None:
        super().__init__()
        if n_levels < 1 or dim % n_levels:
            raise ConfigError(None, f"SAFMN dim {dim} is not divisible by n_levels {n_levels}")
        self.n_levels = n_levels
        c = dim // n_levels
        self.mfr = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, groups=c) for _ in range(n_levels))
        self.aggr = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        parts = x.chunk(self.n_levels, dim=1)
        out = [self.mfr[0](parts[0])]
        out += [pooled_level(parts[i], i, self.mfr[i]) for i in range(1, self.n_levels)]
        return self.act(self.aggr(torch.cat(out, dim=1))) * x


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 conv to ``hidden``, GELU, 1x1 conv back (keys ``ccm.{0,2}``)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.ccm(x)


class AttBlock(nn.Module):
    """``x + SAFM(norm1(x))``, then ``x + CCM(norm2(x))``."""

    def __init__(self, *, dim: int, ffn_scale: float, n_levels: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.safm = SAFM(dim=dim, n_levels=n_levels)
        self.ccm = CCM(dim=dim, hidden=int(dim * ffn_scale))

    def forward(self, x: Tensor) -> Tensor:
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(nn.Module):
    """SAFMN. (N, colors, H, W) in [0, 1] -> (N, colors, H·scale, W·scale).

    Args:
        scale: Upscaling factor (the official ``upscaling_factor``).
        dim: Feature channels (36 for SAFMN, 128 for SAFMN-L).
        n_blocks: Attention blocks (8 for SAFMN, 16 for SAFMN-L).
        ffn_scale: CCM hidden width over ``dim``.
        n_levels: SAFM pyramid levels (``dim`` must be divisible by it).
        colors: Image channels.

    Raises:
        ConfigError: ``dim`` not divisible by ``n_levels``, or a scale below 1.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        dim: int = 36,
        n_blocks: int = 8,
        ffn_scale: float = 2.0,
        n_levels: int = 4,
        colors: int = 3,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ConfigError(None, f"SAFMN scale must be at least 1, got {scale}")
        self.scale = scale
        self.to_feat = nn.Conv2d(colors, dim, 3, padding=1)
        self.feats = nn.Sequential(
            *(AttBlock(dim=dim, ffn_scale=ffn_scale, n_levels=n_levels) for _ in range(n_blocks))
        )
        self.to_img = nn.Sequential(
            nn.Conv2d(dim, colors * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        f = self.to_feat(x)
        return self.to_img(self.feats(f) + f)


@register_model(family="safmn")
def safmn(**overrides) -> SAFMN:
    """SAFMN, the efficient model: dim 36, 8 blocks (the paper's 228K / 233K / 240K at x2 / x3 / x4)."""
    return SAFMN(**{"dim": 36, "n_blocks": 8, **overrides})


@register_model(family="safmn")
def safmn_l(**overrides) -> SAFMN:
    """SAFMN-L, the classic-SR / real-world model: dim 128, 16 blocks (5.6M at x4)."""
    return SAFMN(**{"dim": 128, "n_blocks": 16, **overrides})


@register_detector("safmn")
def _detect(state: StateDict) -> Detection | None:
    feat = shape(state, "to_feat.weight")
    out = shape(state, "to_img.0.weight")
    if feat is None or out is None or not has(state, "feats.0.safm.aggr.weight", "feats.0.ccm.ccm.0.weight"):
        return None
    dim, colors = feat[0], feat[1]
    scale = math.isqrt(out[0] // colors)
    if scale * scale * colors != out[0]:
        return None
    hidden = state["feats.0.ccm.ccm.0.weight"].shape[0]
    ffn_scale = hidden / dim
    if int(dim * ffn_scale) != hidden:  # a width no float ratio reproduces: not a SAFMN state dict
        return None
    args = {
        "scale": scale,
        "dim": dim,
        "n_blocks": len(indices(state, "feats.")),
        "ffn_scale": ffn_scale,
        "n_levels": len(indices(state, "feats.0.safm.mfr.")),
        "colors": colors,
    }
    arch = "safmn_l" if (dim, args["n_blocks"]) == (128, 16) else "safmn"
    return Detection(arch, args)
