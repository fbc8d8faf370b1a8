"""CRAFT: Feature Modulation Transformer, Cross-Refinement of Global Representation via High-Frequency Prior
for Image Super-Resolution (Li et al., ICCV 2023), the lightweight SR transformer.

Parameter names follow the official ``basicsr/archs/craft_arch.py``, so the released ``CRAFT_MODEL_X{2,3,4}``
files load unchanged with strict key checking: ``conv_first``; per group ``layers.{i}``:
``residual_group.srwa_blocks.{j}`` (shift rectangle window attention: ``norm1``, ``qkv``, ``proj``,
``get_v``, ``attns.{0,1}.pos.{pos_proj, pos1.{0,2}, pos2.{0,2}, pos3.{0,2}}``, ``norm2``, ``mlp.{fc1, fc2}``),
``residual_group.hfer_blocks.{k}`` (high-frequency enhancement: ``conv``, ``fc``, ``last_fc``),
``residual_group.hf_blocks.{k}`` (hybrid fusion: ``norm1.body``, ``attn.{temperature, q, q_dwconv, kv,
kv_dwconv, project_out}``, ``norm2.body``, ``ffn.{project_in, dwconv, project_out}``), ``conv``; then
``norm.body``, ``conv_after_body`` and the one-step tail ``upsample.0``. The model-level buffers
``relative_position_index_h`` / ``_v`` (index tables of the horizontal and vertical rectangles) and
``biases_h`` / ``_v`` (the relative offsets the dynamic position bias MLP reads) are persistent, as in the
official model, whose files carry them.

Value range: the network computes on [0, 1] after subtracting the DIV2K mean (``img_range`` 1), which it adds
back at its output; the zoo model takes and returns [0, 1].

Size handling: rectangles of ``split_size_0 x split_size_1`` (horizontal branch) and the transpose (vertical
branch) need H and W to be multiples of both sides, so inputs are reflect-padded to multiples of their least
common multiple (16 for the release, the ``window_size`` of its option files) and the output cropped, as the
official ``CRAFT_Model.test`` does. The shifted blocks roll the map by half a rectangle without an attention
mask, as the official model does (it passes ``attn_mask=None``). The hybrid fusion block attends across
channels over the whole (padded) map, so its result depends on the padding, as officially.

Detection (:func:`_detect`) reads every shape argument: ``embed_dim`` (``conv_first``), fusion blocks per group
(``hfer_blocks``), heads per group (the ``temperature`` of each group's first fusion attention), the rectangle
sides (``relative_position_index_h`` holds ``s0·s1`` rows and ``biases_h`` ``(2·s0-1)(2·s1-1)``; the order of
the two sides is not in the shapes and is taken as the release's, the shorter first), ``mlp_ratio``,
``qkv_bias``, the residual connection and the scale (``upsample.0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, indices, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    RGB_MEAN,
    Mlp,
    UpsampleOneStep,
    check_scale,
    check_tile,
    crop,
    min_tile_size,
    pad_to_window,
    ratio_of,
)
from edge_sr.models.swinir import init_weights

__all__ = ["CRAFT", "craft", "min_tile_size"]

ResiConnection = Literal["1conv", "identity"]
FFN_EXPANSION = 2.66  # the hybrid fusion block's gated feed-forward width, fixed in the official model


def rectangle_index(hs: int, ws: int) -> Tensor:
    """(hs·ws, hs·ws) int64 index of each token pair's offset in an ``hs x ws`` rectangle into the
    ``(2hs-1)·(2ws-1)`` offsets of :func:`rectangle_offsets` (row-major over (dy, dx))."""
    coords = torch.stack(torch.meshgrid(torch.arange(hs), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2): dy, dx
    return (rel[..., 0] + hs - 1) * (2 * ws - 1) + (rel[..., 1] + ws - 1)


def rectangle_offsets(hs: int, ws: int) -> Tensor:
    """((2hs-1)·(2ws-1), 2) float32 offsets (dy, dx), row-major: the input of the dynamic position bias."""
    dy, dx = torch.meshgrid(
        torch.arange(1 - hs, hs, dtype=torch.float32),
        torch.arange(1 - ws, ws, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)


def roll_hw(x: Tensor, sh: int, sw: int, dims: tuple[int, int]) -> Tensor:
    """``torch.roll(x, (sh, sw), dims)`` as slices and concatenations (negative shifts allowed)."""
    for s, d in ((sh, dims[0]), (sw, dims[1])):
        if s == 0:
            continue
        n = x.shape[d]
        k = s if s > 0 else n + s  # the length of the tail that moves to the front (|s| < n)
        x = torch.cat([x.narrow(d, n - k, k), x.narrow(d, 0, n - k)], dim=d)
    return x


class DynamicPosBias(nn.Module):
    """An MLP from (dy, dx) offsets to per-head biases: ``pos_proj``, then three LayerNorm-ReLU-Linear stages
    (keys ``pos1.{0,2}``, ``pos2.{0,2}``, ``pos3.{0,2}``), without the residual path (the official setting)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)

        def stage(out: int) -> nn.Sequential:
            return nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, out))

        self.pos1 = stage(pos_dim)
        self.pos2 = stage(pos_dim)
        self.pos3 = stage(num_heads)

    def forward(self, offsets: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class RectangleAttention(nn.Module):
    """Self-attention inside ``hs x ws`` rectangles with a dynamic relative position bias.

    q, k, v (B, H·W, C) each -> (B, H, W, C); H and W are multiples of the rectangle's sides.
    """

    def __init__(self, *, dim: int, num_heads: int, hs: int, ws: int) -> None:
        super().__init__()
        self.num_heads, self.hs, self.ws = num_heads, hs, ws
        self.scale = (dim // num_heads) ** -0.5
        # the official bias MLP is sized from a quarter of this branch's width
        self.pos = DynamicPosBias(dim // 4, num_heads)

    def _windows(self, t: Tensor, b: Any, h: Any, w: Any) -> Tensor:
        """(B, H·W, C) -> (B·nW, heads, hs·ws, C/heads), rectangles in row-major order per image."""
        c, hs, ws = t.shape[-1], self.hs, self.ws
        t = t.reshape(b, h // hs, hs, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        t = t.reshape(b * (h // hs) * (w // ws), hs * ws, self.num_heads, c // self.num_heads)
        return t.permute(0, 2, 1, 3)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, hw: tuple[Any, Any], index: Tensor, offsets: Tensor
    ) -> Tensor:
        h, w = hw
        b, _, c = q.shape
        n = self.hs * self.ws
        q, k, v = (self._windows(t, b, h, w) for t in (q, k, v))
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B·nW, heads, N, N)
        bias = self.pos(offsets)[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2)  # (B·nW, N, heads, C/heads)
        y = y.reshape(b, h // self.hs, w // self.ws, self.hs, self.ws, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h, w, c)


class SRWAB(nn.Module):
    """Shift rectangle window attention block: (B, H·W, C) -> (B, H·W, C).

    Half the channels attend in ``s0 x s1`` rectangles, half in ``s1 x s0``; a depthwise conv of v (the
    locality complementary module) is added before the projection; then the token MLP.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        split: tuple[int, int],
        shift: bool,
        mlp_ratio: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        s0, s1 = split
        self.split = split
        self.shift = (s0 // 2, s1 // 2) if shift else (0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.attns = nn.ModuleList(
            [
                RectangleAttention(dim=dim // 2, num_heads=num_heads // 2, hs=s0, ws=s1),
                RectangleAttention(dim=dim // 2, num_heads=num_heads // 2, hs=s1, ws=s0),
            ]
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))

    def forward(self, x: Tensor, hw: tuple[Any, Any], pos: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        half = c // 2
        index_h, index_v, offsets_h, offsets_v = pos
        qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, c)
        v_img = qkv[:, :, :, 2].permute(0, 3, 1, 2)  # (B, C, H, W), before any shift
        a, s = self.shift
        parts = []
        for i, (sh, sw) in enumerate(((a, s), (s, a))):  # horizontal, then vertical rectangles
            t = qkv[..., i * half : (i + 1) * half]  # (B, H, W, 3, C/2)
            t = roll_hw(t, -sh, -sw, (1, 2)).reshape(b, h * w, 3, half)
            index, offsets = (index_h, offsets_h) if i == 0 else (index_v, offsets_v)
            y = self.attns[i](t[:, :, 0], t[:, :, 1], t[:, :, 2], hw, index, offsets)  # (B, H, W, C/2)
            parts.append(roll_hw(y, sh, sw, (1, 2)))
        y = torch.cat(parts, dim=-1).reshape(b, h * w, c)
        lcm = self.get_v(v_img).permute(0, 2, 3, 1).reshape(b, h * w, c)
        x = x + self.proj(y + lcm)
        return x + self.mlp(self.norm2(x))


class HFERB(nn.Module):
    """High-frequency enhancement residual block on (B, C, H, W): half the channels through a 3x3 conv, half
    through a 3x3 max pool and a 1x1 conv (both GELU), fused by a 1x1 conv, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mid = dim // 2
        self.conv = nn.Conv2d(self.mid, self.mid, 3, 1, 1)
        self.fc = nn.Conv2d(dim - self.mid, dim - self.mid, 1)
        self.max_pool = nn.MaxPool2d(3, 1, 1)
        self.act = nn.GELU()
        self.last_fc = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        local = self.act(self.conv(x[:, : self.mid]))
        high = self.act(self.fc(self.max_pool(x[:, self.mid :])))
        return x + self.last_fc(torch.cat([local, high], dim=1))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of (B, C, H, W) (key ``body``: weight and bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FusionAttention(nn.Module):
    """Channel ("transposed") attention whose queries come from the high-frequency branch and keys / values
    from the transformer branch; q and k L2-normalised over all pixels, a learned temperature per head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.q_dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, 3, 1, 1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        b, c, h, w = low.shape
        heads = self.num_heads
        q = self.q_dwconv(self.q(high)).reshape(b, heads, c // heads, h * w)
        kv = self.kv_dwconv(self.kv(low))
        k = kv[:, :c].reshape(b, heads, c // heads, h * w)
        v = kv[:, c:].reshape(b, heads, c // heads, h * w)
        # F.normalize(t, dim=-1): t / max(||t||, 1e-12), written out so every converter sees plain ops
        q = q / q.square().sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
        k = k / k.square().sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, heads, C/h, C/h)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """1x1 conv to 2·hidden, depthwise 3x3, GELU(first half) · second half, 1x1 conv back (no biases)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = int(dim * FFN_EXPANSION)
        self.hidden = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dwconv(self.project_in(x))
        return self.project_out(F.gelu(x[:, : self.hidden]) * x[:, self.hidden :])


class HFB(nn.Module):
    """Hybrid fusion block: ``low + attn(norm1(low), high)``, then ``+ ffn(norm2(·))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = FusionAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedFeedForward(dim)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = low + self.attn(self.norm1(low), high)
        return x + self.ffn(self.norm2(x))


class CRFB(nn.Module):
    """Cross-refinement fusion: per step, two SRWABs (plain, shifted) on tokens, an HFERB on the image, and
    an HFB fusing both (keys ``srwa_blocks``, ``hfer_blocks``, ``hf_blocks``)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        split: tuple[int, int],
        mlp_ratio: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.srwa_blocks = nn.ModuleList(
            SRWAB(
                dim=dim,
                num_heads=num_heads,
                split=split,
                shift=i % 2 == 1,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
            )
            for i in range(2 * depth)
        )
        self.hfer_blocks = nn.ModuleList(HFERB(dim) for _ in range(depth))
        self.hf_blocks = nn.ModuleList(HFB(dim, num_heads) for _ in range(depth))

    def forward(self, x: Tensor, pos: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        b, c, h, w = x.shape
        for i in range(self.depth):
            low = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
            low = self.srwa_blocks[2 * i + 1](self.srwa_blocks[2 * i](low, (h, w), pos), (h, w), pos)
            low = low.reshape(b, h, w, c).permute(0, 3, 1, 2)
            x = self.hf_blocks[i](low, self.hfer_blocks[i](x))
        return x


class RCRFG(nn.Module):
    """Residual cross-refinement fusion group: ``conv(residual_group(x)) + x``."""

    def __init__(self, *, dim: int, group: CRFB) -> None:
        super().__init__()
        self.residual_group = group
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: Tensor, pos: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        return self.conv(self.residual_group(x, pos)) + x


class CRAFT(nn.Module):
    """CRAFT. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4); the official ``upscale``.
        embed_dim: feature width (48 for the release).
        depths: cross-refinement steps per group (each: two SRWABs, an HFERB, an HFB).
        num_heads: attention heads per group (half per rectangle branch; all in the fusion attention).
        split_size_0: the short side of the rectangles (4).
        split_size_1: the long side of the rectangles (16); inputs are padded to multiples of
            ``lcm(split_size_0, split_size_1)``, and tiles must be at least that size.
        mlp_ratio: token MLP width over ``embed_dim``.
        qkv_bias: bias on the qkv projections.
        img_range: the network's internal value range (1.0 for the release).
        resi_connection: ``1conv`` (the release) or ``identity`` after the body.

    Raises:
        ConfigError: an unsupported scale or residual connection, heads that do not divide the width, or
            rectangle sides the shift cannot halve.
    """

    mean: Tensor  # (1, 3, 1, 1) buffer
    relative_position_index_h: Tensor
    relative_position_index_v: Tensor
    biases_h: Tensor
    biases_v: Tensor

    def __init__(
        self,
        *,
        scale: int = 4,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        split_size_0: int = 4,
        split_size_1: int = 16,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        resi_connection: ResiConnection = "1conv",
    ) -> None:
        super().__init__()
        check_scale(scale)
        if len(depths) != len(num_heads):
            raise ConfigError(None, f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        for heads in num_heads:
            if heads < 2 or embed_dim % heads or (embed_dim // 2) % (heads // 2):
                raise ConfigError(
                    None, f"num_heads {list(num_heads)} do not divide embed_dim {embed_dim} and its halves"
                )
        if embed_dim < 32:
            # the position-bias MLP is embed_dim // 32 wide (a quarter of a quarter of each branch's half)
            raise ConfigError(None, f"embed_dim {embed_dim} is too narrow; CRAFT needs at least 32")
        if split_size_0 < 1 or split_size_1 < 1:
            raise ConfigError(None, f"split sizes must be positive, got {split_size_0} and {split_size_1}")
        if resi_connection not in ("1conv", "identity"):
            raise ConfigError(
                None, f"resi_connection {resi_connection!r} is not supported; choose 1conv or identity"
            )
        self.scale, self.img_range = scale, img_range
        self.split_size = (split_size_0, split_size_1)
        # both rectangle orientations tile the map: the smallest tile / padding multiple
        self.window_size = math.lcm(split_size_0, split_size_1)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("relative_position_index_h", rectangle_index(split_size_0, split_size_1))
        self.register_buffer("relative_position_index_v", rectangle_index(split_size_1, split_size_0))
        self.register_buffer("biases_v", rectangle_offsets(split_size_1, split_size_0))
        self.register_buffer("biases_h", rectangle_offsets(split_size_0, split_size_1))

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.layers = nn.ModuleList(
            RCRFG(
                dim=embed_dim,
                group=CRFB(
                    dim=embed_dim,
                    depth=d,
                    num_heads=heads,
                    split=self.split_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                ),
            )
            for d, heads in zip(depths, num_heads)
        )
        self.norm = ChannelLayerNorm(embed_dim)
        self.conv_after_body: nn.Module = (
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        )
        self.upsample = UpsampleOneStep(scale, embed_dim, 3)
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        pos = (self.relative_position_index_h, self.relative_position_index_v, self.biases_h, self.biases_v)
        for layer in self.layers:
            x = layer(x, pos)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if not torch.compiler.is_compiling():
            check_tile(self, int(h), int(w))
        mean = self.mean.to(x.dtype)
        x = (pad_to_window(x, self.window_size) - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.upsample(x)
        return crop(x, h * self.scale, w * self.scale) / self.img_range + mean


@register_model(family="craft", kind="heavy")
def craft(**overrides) -> CRAFT:
    """CRAFT (the ×2/×3/×4 DIV2K releases): 48 wide, 4 groups of 2 steps, 6 heads, 4x16 rectangles."""
    return CRAFT(**overrides)


# ---- detection


def _split_sizes(index_rows: int, offset_rows: int) -> tuple[int, int] | None:
    """(s0, s1) with ``s0·s1 == index_rows`` and ``(2·s0-1)(2·s1-1) == offset_rows``, shorter side first."""
    total = 4 * index_rows + 1 - offset_rows  # 2·(s0 + s1)
    if total <= 0 or total % 2:
        return None
    ssum = total // 2
    disc = ssum * ssum - 4 * index_rows
    if disc < 0 or math.isqrt(disc) ** 2 != disc:
        return None
    root = math.isqrt(disc)
    if (ssum - root) % 2:
        return None
    s0, s1 = (ssum - root) // 2, (ssum + root) // 2
    return (s0, s1) if s0 >= 1 else None


@register_detector("craft")
def _detect(state: StateDict) -> Detection | None:
    """CRAFT from the official key layout."""
    first = shape(state, "conv_first.weight")
    index, offsets = shape(state, "relative_position_index_h"), shape(state, "biases_h")
    up = shape(state, "upsample.0.weight")
    groups = indices(state, "layers.")
    if first is None or index is None or offsets is None or up is None or len(first) != 4 or len(index) != 2:
        return None
    if not groups or groups != list(range(len(groups))) or len(offsets) != 2:
        return None
    dim = first[0]
    depths, heads = [], []
    for i in groups:
        steps = indices(state, f"layers.{i}.residual_group.hfer_blocks.")
        temp = shape(state, f"layers.{i}.residual_group.hf_blocks.0.attn.temperature")
        if not steps or temp is None:
            return None
        depths.append(len(steps))
        heads.append(temp[0])
    split = _split_sizes(index[0], offsets[0])
    fc1 = shape(state, "layers.0.residual_group.srwa_blocks.0.mlp.fc1.weight")
    scale = math.isqrt(up[0] // 3)
    if split is None or fc1 is None or scale * scale * 3 != up[0]:
        return None
    args: dict[str, Any] = {
        "scale": scale,
        "embed_dim": dim,
        "depths": tuple(depths),
        "num_heads": tuple(heads),
        "split_size_0": split[0],
        "split_size_1": split[1],
        "mlp_ratio": ratio_of(fc1[0], dim),
        "qkv_bias": "layers.0.residual_group.srwa_blocks.0.qkv.bias" in state,
        "img_range": 1.0,
        "resi_connection": "1conv" if "conv_after_body.weight" in state else "identity",
    }
    assumed = {"img_range": "not stored; 1.0, the value of every CRAFT release"}
    if split[0] != split[1]:
        assumed["split_size_0"] = (
            f"the shapes give rectangles of {split[0]}x{split[1]} but not which side is split_size_0; the "
            "shorter, as in the release"
        )
    return Detection("craft", args, mean=RGB_MEAN, assumed=assumed)
