"""ACT: Enriched CNN-Transformer Feature Aggregation Networks for Super-Resolution (Yoo et al., WACV 2023).

Two branches run side by side on the shallow features: a CNN branch of RCAN residual groups and a
transformer branch on non-overlapping ``token_size``² patches (global multi-head self-attention, then
cross-scale token attention between the small tokens and overlapping 2·``token_size`` tokens). After
every stage a fusion block of 1x1 residual convs mixes the two, and the mixed features go back into the
branches crosswise.

State-dict keys and shapes are those of the official ``src/models/act_net.py``, so the released
``act_sr_x{2,3,4}.pt`` files (bare state dicts) load with strict key checking: ``sub_mean`` /
``add_mean`` (the frozen 1x1 ``MeanShift`` convs), ``head.{0, 1.body.{0,2}, 2.body.{0,2}}`` (a 3x3 conv and
two 5x5 residual blocks), ``linear_encoding``, ``mhsa_block.{i}.{0: norm, fn.to_qkv, fn.to_out.0;
1: norm, fn.net.{0,3}}``, ``csta_block.{i}.{0: {0,1,3}; 1, 2: norm, norm2, fn.to_q, fn.to_kv,
fn.to_out.0; 3: {0,1,3}; 4: norm, fn.net.{0,3}}``, ``cnn_branch.{g}`` (RCAN groups,
``body.{b}.body.{0,2,3.conv_du.{0,2}}`` and ``body.{n_resblocks}``) and ``cnn_branch.{n_resgroups}`` (a
closing conv the official forward never uses), ``fusion_block.{i}.{k}.body.{0,2}`` (bias-free 1x1),
``fusion_mlp.{i}.{0,1,3}``, ``fusion_cnn.{i}.{0,2}``, ``conv_last``, ``tail.0.{0,2}`` and ``tail.1``.

Value range: the official network computes on [0, 255] (``rgb_range`` 255) with the DIV2K mean removed by
``sub_mean``; the zoo model takes and returns [0, 1] and scales at its boundary.

Sizes: attention is global over all ``(H/t)·(W/t)`` tokens, so memory grows with the square of the tile
area; the released models were trained and evaluated on 48x48 LR tiles (the official test chops the image
into them), which is the tile size to use. The official forward needs H and W to be multiples of
``token_size``; here the input is reflect-padded to the next multiple and the output cropped (identical
output on multiples, the official case). The smallest input is one large token, 2·``token_size`` pixels
a side (``min_tile_size``).

Export: the official ``F.unfold`` / ``F.fold`` pairs are written as reshapes and slices. Tokenising is a
6-D reshape and permute (as Swin's window partition); the overlapping 2t tokens are four shifted slices
of the small-token grid, concatenated, and their fold back is four zero-pads of that grid, summed. The
concatenation orders a large token's features (quadrant, channel, row, column) where ``F.unfold`` orders
them (channel, row, column); the two layers that read and write large tokens take their official weights
through a fixed permutation (:func:`large_token_permutation`), so checkpoints stay official. Every size
dependent value comes from the runtime H and W: one exported graph serves a range of sizes.

Detection (:func:`_detect`) reads ``n_feats`` (``head.0``), ``token_size`` (``linear_encoding`` is
``n_feats·t²`` wide), ``n_layers`` (two per ``mhsa_block``), ``expansion_ratio`` (the MLP width),
``n_resgroups`` / ``n_resblocks`` / ``reduction`` (the CNN branch), ``n_fusionblocks`` and the scale
(``tail.0``); the head count and ``rgb_range`` are not stored and take the release values (8, 255).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.edsr import (
    DIV2K_MEAN,
    MeanShift,
    Upsampler,
    check_scale,
    conv3x3,
    inverse_floor_div,
    pixelshuffle_scale,
)
from edge_sr.models.rcan import ResidualGroup
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import crop, pad_to_window

__all__ = ["ACT", "act", "check_declared", "large_token_permutation"]


# ---- tokens as reshapes (F.unfold / F.fold with kernel == stride, and the overlapping 2t tokens)


def to_tokens(x: Tensor, t: int) -> Tensor:
    """``F.unfold(x, t, stride=t).transpose(1, 2)`` for H, W multiples of ``t``: (B, C, H, W) -> (B, n·m, C·t²),
    tokens row-major, features ordered (channel, row, column)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // t, t, w // t, t).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // t) * (w // t), c * t * t)


def from_tokens(tokens: Tensor, t: int, n: Any, m: Any) -> Tensor:
    """The inverse of :func:`to_tokens` on an ``n x m`` token grid: (B, n·m, C·t²) -> (B, C, n·t, m·t)."""
    b, _, d = tokens.shape
    c = d // (t * t)
    x = tokens.reshape(b, n, m, c, t, t).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, n * t, m * t)


def large_tokens(tokens: Tensor, n: Any, m: Any) -> Tensor:
    """The overlapping 2t x 2t tokens (stride t) of an ``n x m`` grid of t x t tokens: (B, n·m, D) ->
    (B, (n-1)·(m-1), 4D), each the concatenation of its four small tokens (top-left, top-right,
    bottom-left, bottom-right)."""
    b, _, d = tokens.shape
    g = tokens.reshape(b, n, m, d)
    parts = [g[:, a : a + n - 1, c : c + m - 1] for a in (0, 1) for c in (0, 1)]
    return torch.cat(parts, dim=-1).reshape(b, (n - 1) * (m - 1), 4 * d)


def fold_large_tokens(tokens: Tensor, n: Any, m: Any) -> Tensor:
    """Sum each large token's four quarters back onto the small-token grid: (B, (n-1)·(m-1), 4D) ->
    (B, n·m, D). ``F.fold(…, 2t, stride=t)`` then ``F.unfold(…, t, stride=t)``, as zero-pads of the grid."""
    b, _, d4 = tokens.shape
    d = d4 // 4
    g = tokens.reshape(b, n - 1, m - 1, d4)
    out = None
    for k, (a, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        # quarter (a, c) of the large token at (r, s) lands on small token (r + a, s + c)
        part = F.pad(g[..., k * d : (k + 1) * d], (0, 0, c, 1 - c, a, 1 - a))
        out = part if out is None else out + part
    assert out is not None
    return out.reshape(b, n * m, d)


def large_token_permutation(channels: int, t: int) -> Tensor:
    """Index ``q`` with ``ours[p] == official[q[p]]`` for a large token's features.

    ``F.unfold(·, 2t)`` orders a token's ``channels·(2t)²`` features as (channel, row, column); the
    concatenation of :func:`large_tokens` orders them (quadrant row, quadrant column, channel, row in the
    quadrant, column in the quadrant).
    """
    a, b, c, i, j = torch.meshgrid(
        torch.arange(2),
        torch.arange(2),
        torch.arange(channels),
        torch.arange(t),
        torch.arange(t),
        indexing="ij",
    )
    q = c * (4 * t * t) + (a * t + i) * (2 * t) + (b * t + j)
    return q.reshape(-1)


# ---- transformer pieces (official names)


class PreNorm(nn.Module):
    """LayerNorm, then ``fn`` (keys ``norm``, ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class PreNorm2(nn.Module):
    """One LayerNorm per input, then ``fn(x, context)`` (keys ``norm``, ``norm2``, ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.fn(self.norm(x), self.norm2(context))


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear (keys ``net.0``, ``net.3``; the official dropouts sit at 2 and 4)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, heads·d) -> (B, heads, N, d)."""
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention, (B, h, N, d) x (B, h, M, d) -> (B, N, h·d)."""
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    out = attn @ v
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def _projection(inner: int, dim: int, needed: bool) -> nn.Module:
    # official: Sequential(Linear, Dropout) unless one head already spans the width
    return nn.Sequential(nn.Linear(inner, dim)) if needed else nn.Identity()


class SelfAttention(nn.Module):
    """Global multi-head self-attention over all tokens (keys ``to_qkv``, ``to_out.0``)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = _projection(inner, dim, not (heads == 1 and dim_head == dim))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        h = self.heads
        return self.to_out(_attend(_heads(q, h), _heads(k, h), _heads(v, h), self.scale))


class CrossAttention(nn.Module):
    """Queries from one token set, keys and values from another (keys ``to_q``, ``to_kv``, ``to_out.0``)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = _projection(inner, dim, not (heads == 1 and dim_head == dim))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        k, v = self.to_kv(context).chunk(2, dim=-1)
        h = self.heads
        return self.to_out(_attend(_heads(self.to_q(x), h), _heads(k, h), _heads(v, h), self.scale))


class LargeTokenIn(nn.Sequential):
    """LayerNorm(4D) -> Linear(4D, D/2) -> GELU -> Linear (keys ``0``, ``1``, ``3``), reading large tokens in
    :func:`large_tokens` order with the official weights permuted to it."""

    perm: Tensor

    def __init__(self, dim: int, channels: int, t: int) -> None:
        super().__init__(
            nn.LayerNorm(dim * 2), nn.Linear(dim * 2, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 2)
        )
        self.register_buffer("perm", large_token_permutation(channels, t), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        norm, lin = self[0], self[1]
        assert isinstance(norm, nn.LayerNorm) and isinstance(lin, nn.Linear)
        w, b = norm.weight[self.perm], norm.bias[self.perm]
        x = F.layer_norm(x, norm.normalized_shape, w, b, norm.eps)
        x = F.linear(x, lin.weight[:, self.perm], lin.bias)
        return self[3](self[2](x))


class LargeTokenOut(nn.Sequential):
    """LayerNorm(D/2) -> Linear -> GELU -> Linear(D/2, 4D) (keys ``0``, ``1``, ``3``), writing large tokens in
    :func:`large_tokens` order with the official output rows permuted to it."""

    perm: Tensor

    def __init__(self, dim: int, channels: int, t: int) -> None:
        super().__init__(
            nn.LayerNorm(dim // 2), nn.Linear(dim // 2, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim * 2)
        )
        self.register_buffer("perm", large_token_permutation(channels, t), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        lin = self[3]
        assert isinstance(lin, nn.Linear) and lin.bias is not None
        x = self[2](self[1](self[0](x)))
        return F.linear(x, lin.weight[self.perm], lin.bias[self.perm])


class TokenMLP(nn.Sequential):
    """LayerNorm -> Linear -> GELU -> Linear (keys ``0``, ``1``, ``3``), the fusion's token MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


# ---- convolutional pieces (official names)


class ResBlock(nn.Module):
    """conv -> ReLU -> conv, plus the input (keys ``body.0``, ``body.2``); ``bias`` off in the fusion block."""

    def __init__(self, channels: int, kernel: int, *, bias: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=bias),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class ACT(nn.Module):
    """ACT for SR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_feats: CNN feature channels (64); the token width is ``n_feats · token_size²``.
        n_resgroups: RCAN residual groups of the CNN branch (4).
        n_resblocks: RCABs per group (12).
        reduction: channel-attention squeeze ratio (16).
        token_size: side of a token in pixels (3); the cross-scale tokens are twice as wide.
        n_heads: attention heads (8); the cross-attentions use half as many.
        n_layers: transformer layers, a self-attention and a cross-scale layer per stage (8).
        expansion_ratio: MLP width over the token width (4).
        n_fusionblocks: stages, each ending in a fusion block (4).
        rgb_range: the value range the weights were trained on (255 for the official releases).

    Raises:
        ConfigError: An unsupported scale, an odd ``n_layers`` or ``n_feats``, fewer CNN groups or
            transformer stages than fusion blocks, or heads that do not divide the token width.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_feats: int = 64,
        n_resgroups: int = 4,
        n_resblocks: int = 12,
        reduction: int = 16,
        token_size: int = 3,
        n_heads: int = 8,
        n_layers: int = 8,
        expansion_ratio: int = 4,
        n_fusionblocks: int = 4,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        check_scale(scale)
        if n_layers % 2:
            raise ConfigError(
                None, f"n_layers {n_layers} must be even (a self-attention and a cross-scale layer per stage)"
            )
        if n_feats % 2:
            raise ConfigError(
                None, f"n_feats {n_feats} must be even (the cross-scale branch takes half the channels)"
            )
        if n_fusionblocks < 1 or n_resgroups < n_fusionblocks or n_layers // 2 < n_fusionblocks:
            raise ConfigError(
                None,
                f"n_fusionblocks {n_fusionblocks} needs as many CNN groups (n_resgroups {n_resgroups}) and "
                f"transformer stages (n_layers / 2 = {n_layers // 2})",
            )
        dim = n_feats * token_size * token_size
        dim_head = dim // n_heads
        if n_heads < 2 or dim_head == 0:
            raise ConfigError(None, f"n_heads {n_heads} must be between 2 and the token width {dim}")
        hidden = dim * expansion_ratio
        self.scale, self.rgb_range = scale, rgb_range
        self.n_feats, self.token_size, self.n_fusionblocks = n_feats, token_size, n_fusionblocks
        # the smallest input: one cross-scale (2t x 2t) token; read by tiling and dynamic export
        self.window_size = self.min_tile_size = 2 * token_size

        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats), ResBlock(n_feats, 5), ResBlock(n_feats, 5))
        self.linear_encoding = nn.Linear(dim, dim)
        self.mhsa_block = nn.ModuleList(
            nn.ModuleList(
                [PreNorm(dim, SelfAttention(dim, n_heads, dim_head)), PreNorm(dim, FeedForward(dim, hidden))]
            )
            for _ in range(n_layers // 2)
        )
        half = n_feats // 2
        self.csta_block = nn.ModuleList(
            nn.ModuleList(
                [
                    LargeTokenIn(dim, half, token_size),
                    PreNorm2(dim // 2, CrossAttention(dim // 2, n_heads // 2, dim_head)),
                    PreNorm2(dim // 2, CrossAttention(dim // 2, n_heads // 2, dim_head)),
                    LargeTokenOut(dim, half, token_size),
                    PreNorm(dim, FeedForward(dim, hidden)),
                ]
            )
            for _ in range(n_layers // 2)
        )
        self.cnn_branch = nn.Sequential(
            *[ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)],
            conv3x3(n_feats, n_feats),  # in the official state dict; the official forward never uses it
        )
        self.fusion_block = nn.ModuleList(
            nn.Sequential(*[ResBlock(2 * n_feats, 1, bias=False) for _ in range(4)])
            for _ in range(n_fusionblocks)
        )
        self.fusion_mlp = nn.ModuleList(TokenMLP(dim, hidden) for _ in range(n_fusionblocks - 1))
        self.fusion_cnn = nn.ModuleList(
            nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(), conv3x3(n_feats, n_feats))
            for _ in range(n_fusionblocks - 1)
        )
        self.conv_last = conv3x3(2 * n_feats, n_feats)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        t = self.token_size
        if not torch.compiler.is_compiling() and (int(h) < 2 * t or int(w) < 2 * t):
            raise ConfigError(
                None,
                f"act: input {int(h)}x{int(w)} is smaller than one cross-scale token ({2 * t} px, twice the "
                f"token size {t}); use tiles of at least {2 * t} px",
            )
        x = self.head(self.sub_mean(pad_to_window(x, t) * self.rgb_range))  # [0, 255] - mean
        n, m = x.shape[-2] // t, x.shape[-1] // t
        half = x.shape[1] * t * t // 2
        identity = x
        tok = to_tokens(x, t)
        tok = self.linear_encoding(tok) + tok
        f = x
        for i in range(self.n_fusionblocks):
            attn, mlp = cast(nn.ModuleList, self.mhsa_block[i])
            tok = attn(tok) + tok
            tok = mlp(tok) + tok
            large_in, cross_a, cross_b, large_out, ffn = cast(nn.ModuleList, self.csta_block[i])
            small, big = tok[..., :half], large_in(large_tokens(tok[..., half:], n, m))
            small, big = cross_a(small, big) + small, cross_b(big, small) + big
            tok = torch.cat([small, fold_large_tokens(large_out(big), n, m)], dim=-1)
            tok = ffn(tok) + tok
            x = self.cnn_branch[i](x)
            f = torch.cat([x, from_tokens(tok, t, n, m)], dim=1)
            f = f + self.fusion_block[i](f)
            if i < self.n_fusionblocks - 1:
                # crosswise, as the official: the CNN half of the fused map feeds the tokens and back
                tok = self.fusion_mlp[i](to_tokens(f[:, : self.n_feats], t)) + tok
                x = self.fusion_cnn[i](f[:, self.n_feats :]) + x
        x = self.conv_last(f) + identity
        x = self.add_mean(self.tail(x)) / self.rgb_range
        return crop(x, h * self.scale, w * self.scale)


@register_model(family="act", kind="heavy")
def act(**overrides) -> ACT:
    """ACT (the x2 / x3 / x4 releases): 64 channels, 4 groups of 12 RCABs, 3x3 tokens (576 wide), 8 heads,
    8 transformer layers, 4 fusion blocks."""
    return ACT(**overrides)


# ---- detection


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    found = indices(state, prefix)
    return len(found) if found == list(range(len(found))) else -1


def _heads_for(dim: int, qkv_inner: int, cross_inner: int) -> int | None:
    """The head count: 8 (the release's) when the shapes allow it, else the smallest that fits them."""
    for heads in (8, *range(2, dim + 1)):
        dh = dim // heads
        if dh and dh * heads == qkv_inner and dh * (heads // 2) == cross_inner:
            return heads
    return None


@register_detector("act")
def _detect(state: StateDict) -> Detection | None:
    """ACT from the official (jinsuyoo/act) key layout."""
    if not has(
        state,
        "linear_encoding.weight",
        "mhsa_block.0.0.fn.to_qkv.weight",
        "csta_block.0.1.fn.to_q.weight",
        "cnn_branch.0.body.0.body.0.weight",
        "head.0.weight",
        "tail.1.weight",
    ):
        return None
    first, enc = shape(state, "head.0.weight"), shape(state, "linear_encoding.weight")
    qkv, q = shape(state, "mhsa_block.0.0.fn.to_qkv.weight"), shape(state, "csta_block.0.1.fn.to_q.weight")
    ffn = shape(state, "mhsa_block.0.1.fn.net.0.weight")
    du = shape(state, "cnn_branch.0.body.0.body.3.conv_du.0.weight")
    ups = pixelshuffle_scale(state, "tail.0")
    if first is None or enc is None or qkv is None or q is None or ffn is None or du is None or ups is None:
        return None
    n_feats, dim = first[0], enc[0]
    token = round((dim / n_feats) ** 0.5)
    if token < 1 or n_feats * token * token != dim or ffn[0] % dim or ups[1] != n_feats:
        return None
    heads = _heads_for(dim, qkv[0] // 3, q[0])
    reduction = inverse_floor_div(n_feats, du[0])
    stages = _count(state, "mhsa_block.")
    groups = _count(state, "cnn_branch.") - 1  # the groups and the closing conv
    blocks = _count(state, "cnn_branch.0.body.") - 1  # the RCABs and the group's closing conv
    fusions = _count(state, "fusion_block.")
    if heads is None or reduction is None or min(stages, groups, blocks, fusions) < 1:
        return None
    assumed = {
        "rgb_range": "not stored as an argument; 255, the release value (sub_mean / add_mean hold it too)",
        "n_heads": f"not stored (the head count does not change any shape); {heads}"
        + (", the release value" if heads == 8 else ", the most that fits the shapes"),
    }
    args = {
        "scale": ups[0],
        "n_feats": n_feats,
        "n_resgroups": groups,
        "n_resblocks": blocks,
        "reduction": reduction,
        "token_size": token,
        "n_heads": heads,
        "n_layers": 2 * stages,
        "expansion_ratio": ffn[0] // dim,
        "n_fusionblocks": fusions,
        "rgb_range": 255.0,
    }
    return Detection("act", args, value_range=255.0, mean=DIV2K_MEAN, layout="official", assumed=assumed)


_SHAPE_ARGS = ("scale", "n_feats", "n_resgroups", "n_resblocks", "reduction", "token_size", "n_layers",
               "expansion_ratio", "n_fusionblocks")  # fmt: skip


def check_declared(state: StateDict, declared: Mapping[str, Any], *, path: str | None = None) -> Detection:
    """The detection of ``state`` when it agrees with the ``declared`` constructor arguments.

    Only arguments the weights determine are compared (the head count and ``rgb_range`` are not stored).

    Raises:
        CheckpointError: ``state`` is not an ACT state dict, or names each declared argument the weights
            contradict, with both values (a token size, stage or block count that differs).
    """
    det = _detect(state)
    if det is None:
        raise CheckpointError(
            path, "not an ACT state dict (no linear_encoding / mhsa_block / csta_block keys)"
        )
    wrong = [
        f"{k} {det.args[k]!r} (declared {declared[k]!r})"
        for k in _SHAPE_ARGS
        if k in declared and declared[k] != det.args[k]
    ]
    if wrong:
        raise CheckpointError(
            path, "the weights do not match the declared ACT configuration: they have " + ", ".join(wrong)
        )
    return det
