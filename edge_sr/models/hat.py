"""HAT: Activating More Pixels in Image Super-Resolution Transformer (Chen et al., CVPR 2023), HAT-S and HAT.

Parameter names follow the official ``hat/archs/hat_arch.py``, so released ``.pth`` files load unchanged
with strict key checking: ``conv_first``, ``patch_embed.norm``, ``layers.{i}.residual_group.blocks.{j}``
(hybrid attention blocks: ``norm1``, ``attn.{relative_position_bias_table, qkv, proj}``,
``conv_block.cab.{0, 2, 3.attention.1, 3.attention.3}``, ``norm2``, ``mlp.{fc1, fc2}``),
``layers.{i}.residual_group.overlap_attn`` (overlapping cross-attention: ``norm1``, ``qkv``,
``relative_position_bias_table``, ``proj``, ``norm2``, ``mlp``), ``layers.{i}.conv``, ``norm``,
``conv_after_body``, ``conv_before_upsample.0``, ``upsample.{0,2}``, ``conv_last``, and the persistent
model-level buffers ``relative_position_index_SA`` / ``relative_position_index_OCA``.

Export: the official OCAB gathers overlapping key/value windows with ``nn.Unfold``; here they are gathered
with two ``index_select`` calls on indices built from ``arange`` (same values, same order), which every
target lowers and which stay valid for dynamic H/W. The shifted-window mask is computed from the runtime
size, and inputs are reflect-padded to the window multiple and the output cropped, as the official test
code does around the network.

Detection (:func:`_detect`) reads every shape argument: width, blocks and heads per group, window (the
bias tables' ``(2ws-1)²`` rows), ``overlap_ratio`` (the OCAB table has ``(ws + ows - 1)²`` rows,
``ows = ws + int(ws · overlap_ratio)``), ``compress_ratio`` / ``squeeze_factor`` (the CAB convs' reduced
widths), ``mlp_ratio``, ``resi_connection``, ``num_feat`` and the scale. A CAB compressed more than
4× (HAT-S: 24×) is named ``hat_s``; HAT (3×) and HAT-L (12 groups) are ``hat`` with their depths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, register_detector, shape
from edge_sr.models.edsr import inverse_floor_div
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    RGB_MEAN,
    Mlp,
    Upsample,
    WindowAttention,
    check_scale,
    check_tile,
    classical_head,
    crop,
    cyclic_shift,
    gather_hw,
    min_tile_size,
    pad_to_window,
    relative_position_index,
    relative_position_index_overlap,
    shifted_window_mask,
    swin_body_args,
    window_partition,
    window_reverse,
)
from edge_sr.models.swinir import PatchEmbed, init_weights, resi_conv

__all__ = ["HAT", "hat", "hat_s", "min_tile_size"]


class ChannelAttention(nn.Module):
    """RCAN-style channel gate (keys ``attention.1``, ``attention.3``)."""

    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3x3 conv to C/compress -> GELU -> 3x3 conv to C -> channel gate (key ``cab``)."""

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid attention block: (B, H·W, C) -> (B, H·W, C); window attention plus ``conv_scale`` · CAB."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        mlp_ratio: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        self.window_size, self.shift, self.conv_scale = window_size, shift, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias, own_index=False
        )
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))

    def forward(self, x: Tensor, hw: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).reshape(b, h, w, c)
        conv_x = self.conv_block(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.shift > 0:
            y = cyclic_shift(y, -self.shift)
        y = self.attn(window_partition(y, self.window_size), mask=mask if self.shift > 0 else None, rpi=rpi)
        y = window_reverse(y, self.window_size, b, h, w)
        if self.shift > 0:
            y = cyclic_shift(y, self.shift)
        x = x + y.reshape(b, h * w, c) + conv_x * self.conv_scale
        return x + self.mlp(self.norm2(x))


def overlapping_windows(x: Tensor, ws: int, ows: int) -> Tensor:
    """(B, C, H, W) -> (B·nW, ows·ows, C): windows of ``ows`` centred on each ``ws`` window, zero-padded.

    Same values and order as ``nn.Unfold(ows, stride=ws, padding=(ows-ws)//2)`` followed by the official
    rearrange, built from index gathers so the window count follows the runtime size.
    """
    b, c, h, w = x.shape
    p = (ows - ws) // 2
    x = F.pad(x, (p, p, p, p))  # zeros, as Unfold pads
    nh, nw = h // ws, w // ws
    # (nH·ows,) row indices: window i covers padded rows [i·ws, i·ws + ows)
    rows = (
        torch.arange(nh, device=x.device)[:, None] * ws + torch.arange(ows, device=x.device)[None, :]
    ).reshape(-1)
    cols = (
        torch.arange(nw, device=x.device)[:, None] * ws + torch.arange(ows, device=x.device)[None, :]
    ).reshape(-1)
    x = gather_hw(x, rows, cols)  # (B, C, nH·ows, nW·ows)
    x = x.reshape(b, c, nh, ows, nw, ows).permute(0, 2, 4, 3, 5, 1)  # (B, nH, nW, ows, ows, C)
    return x.reshape(b * nh * nw, ows * ows, c)


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries from ws windows, keys/values from enlarged ows windows."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        overlap_ratio: float,
        mlp_ratio: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))

    def forward(self, x: Tensor, hw: tuple[int, int], rpi: Tensor) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        ws, ows, heads, d = self.window_size, self.overlap_win_size, self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, c)
        q = window_partition(qkv[:, :, :, 0], ws)  # (B·nW, ws², C)
        kv = qkv[:, :, :, 1:].reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (B, 2C: k then v, H, W)
        kv = overlapping_windows(kv, ws, ows)  # (B·nW, ows², 2C)
        k, v = kv[..., :c], kv[..., c:]
        bn = q.shape[0]
        q = q.reshape(bn, ws * ws, heads, d).transpose(1, 2) * self.scale  # (B·nW, heads, ws², d)
        k = k.reshape(bn, ows * ows, heads, d).transpose(1, 2)
        v = v.reshape(bn, ows * ows, heads, d).transpose(1, 2)
        attn = q @ k.transpose(-2, -1)  # (B·nW, heads, ws², ows²)
        bias = (
            self.relative_position_bias_table[rpi.reshape(-1)]
            .reshape(ws * ws, ows * ows, -1)
            .permute(2, 0, 1)
        )
        attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(bn, ws * ws, c)
        y = window_reverse(y, ws, b, h, w).reshape(b, h * w, c)
        x = self.proj(y) + x
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """HABs alternating plain and shifted windows, then one OCAB (keys ``blocks``, ``overlap_attn``)."""

    def __init__(self, *, blocks: list[HAB], overlap_attn: OCAB) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.overlap_attn = overlap_attn

    def forward(
        self, x: Tensor, hw: tuple[int, int], rpi_sa: Tensor, rpi_oca: Tensor, mask: Tensor | None
    ) -> Tensor:
        for blk in self.blocks:
            x = blk(x, hw, rpi_sa, mask)
        return self.overlap_attn(x, hw, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: attention blocks -> image -> conv -> tokens, plus the input."""

    def __init__(self, *, dim: int, group: AttenBlocks, resi_connection: str) -> None:
        super().__init__()
        self.residual_group = group
        self.conv = resi_conv(dim, resi_connection)

    def forward(
        self, x: Tensor, hw: tuple[int, int], rpi_sa: Tensor, rpi_oca: Tensor, mask: Tensor | None
    ) -> Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, hw, rpi_sa, rpi_oca, mask).transpose(1, 2).reshape(b, c, hw[0], hw[1])
        return self.conv(y).flatten(2).transpose(1, 2) + x


class HAT(nn.Module):
    """HAT. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4); the official ``upscale``.
        embed_dim: transformer width (180 HAT, 144 HAT-S).
        depths: hybrid attention blocks per group.
        num_heads: attention heads per group.
        window_size: attention window (16 for the released models); tiles must be at least this size.
        compress_ratio: CAB channel compression (3 HAT, 24 HAT-S).
        squeeze_factor: channel-attention squeeze (30 HAT, 24 HAT-S).
        conv_scale: weight of the CAB branch (0.01).
        overlap_ratio: OCAB key window enlargement (0.5: ows = 1.5 · ws).
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias on the qkv projections.
        img_range: internal value range (1.0 for the released models).
        resi_connection: ``1conv`` or ``3conv``.
        num_feat: channels of the reconstruction head.
        patch_norm: LayerNorm after the patch embedding.
    """

    mean: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        *,
        scale: int = 4,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        resi_connection: str = "1conv",
        num_feat: int = 64,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        check_scale(scale)
        if len(depths) != len(num_heads):
            raise ConfigError(None, f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if any(embed_dim % h for h in num_heads):
            raise ConfigError(None, f"embed_dim {embed_dim} is not divisible by num_heads {list(num_heads)}")
        if (int(window_size * overlap_ratio)) % 2:
            raise ConfigError(
                None, f"window_size·overlap_ratio must be even, got {int(window_size * overlap_ratio)}"
            )
        self.scale, self.img_range, self.window_size = scale, img_range, window_size
        self.shift = window_size // 2
        ows = int(window_size * overlap_ratio) + window_size
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        # Official checkpoints carry both index tables: persistent buffers.
        self.register_buffer("relative_position_index_SA", relative_position_index(window_size))
        self.register_buffer("relative_position_index_OCA", relative_position_index_overlap(window_size, ows))

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim=embed_dim, norm=patch_norm)

        def group(depth: int, heads: int) -> AttenBlocks:
            blocks = [
                HAB(
                    dim=embed_dim,
                    num_heads=heads,
                    window_size=window_size,
                    shift=0 if i % 2 == 0 else self.shift,
                    compress_ratio=compress_ratio,
                    squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                )
                for i in range(depth)
            ]
            ocab = OCAB(
                dim=embed_dim,
                num_heads=heads,
                window_size=window_size,
                overlap_ratio=overlap_ratio,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
            )
            return AttenBlocks(blocks=blocks, overlap_attn=ocab)

        self.layers = nn.ModuleList(
            RHAG(dim=embed_dim, group=group(d, h), resi_connection=resi_connection)
            for d, h in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
        self.upsample = Upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (B·nW, N, N), computed once per forward from the runtime size
        mask = shifted_window_mask(h, w, self.window_size, self.shift, x.device).repeat(b, 1, 1)
        t = self.patch_embed(x)  # (B, H·W, C)
        for layer in self.layers:
            t = layer(t, (h, w), self.relative_position_index_SA, self.relative_position_index_OCA, mask)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if not torch.compiler.is_compiling():
            check_tile(self, int(h), int(w))
        mean = self.mean.to(x.dtype)
        x = (pad_to_window(x, self.window_size) - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return crop(x, h * self.scale, w * self.scale) / self.img_range + mean


@register_model(family="hat", kind="heavy")
def hat_s(**overrides) -> HAT:
    """HAT-S: 144 wide, compress ratio 24, squeeze factor 24, window 16."""
    return HAT(**{"embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24, **overrides})


@register_model(family="hat", kind="heavy")
def hat(**overrides) -> HAT:
    """HAT: 180 wide, 6 groups of 6 blocks, compress ratio 3, squeeze factor 30, window 16."""
    return HAT(**{"embed_dim": 180, "compress_ratio": 3, "squeeze_factor": 30, **overrides})


# ---- detection


def overlap_ratio_of(ws: int, ows: int) -> float | None:
    """A ratio ``r`` with ``int(ws · r) == ows - ws``, preferring round values (0.5 for the releases)."""
    extra = ows - ws
    if extra < 0:
        return None
    for r in (0.5, 0.25, 0.75, 1.0, 0.0, *(k / 8 for k in range(1, 17)), extra / ws, extra / ws + 1e-9):
        if int(ws * r) == extra:
            return float(r)
    return None


@register_detector("hat")
def _detect(state: StateDict) -> Detection | None:
    """HAT-S, HAT or HAT-L from the official key layout."""
    cab = "layers.0.residual_group.blocks.0.conv_block.cab"
    table = shape(state, "layers.0.residual_group.overlap_attn.relative_position_bias_table")
    compressed, squeezed = shape(state, f"{cab}.0.weight"), shape(state, f"{cab}.3.attention.1.weight")
    if table is None or compressed is None or squeezed is None:
        return None
    body = swin_body_args(state)
    head = classical_head(state)
    if body is None or head is None:
        return None
    body.pop("colors")  # the zoo's HAT is RGB; the skeleton check reports a file that is not
    dim, ws = body["embed_dim"], body["window_size"]
    side = math.isqrt(table[0])
    if side * side != table[0]:
        return None
    overlap = overlap_ratio_of(ws, side - ws + 1)
    compress, squeeze = inverse_floor_div(dim, compressed[0]), inverse_floor_div(dim, squeezed[0])
    if overlap is None or compress is None or squeeze is None:
        return None
    args: dict[str, Any] = {
        "scale": head[0],
        **body,
        "compress_ratio": compress,
        "squeeze_factor": squeeze,
        "overlap_ratio": overlap,
        "conv_scale": 0.01,
        "img_range": 1.0,
        "num_feat": head[1],
    }
    complete = "relative_position_index_SA" in state and "relative_position_index_OCA" in state
    return Detection(
        "hat_s" if compress > 4 else "hat",
        args,
        mean=RGB_MEAN,
        layout="official" if complete else "official-nobuffers",
        assumed={
            "conv_scale": "not stored; 0.01, the value of every HAT release",
            "img_range": "not stored; 1.0, the value of every HAT release",
        },
        adapt=None if complete else _fill_indices(ws, side - ws + 1),
    )


def _fill_indices(ws: int, ows: int) -> Callable[[StateDict], StateDict]:
    """Adds the two index buffers a file lacks (forks that keep them out of the state dict)."""

    def adapt(state: StateDict) -> StateDict:
        out = dict(state)
        out.setdefault("relative_position_index_SA", relative_position_index(ws))
        out.setdefault("relative_position_index_OCA", relative_position_index_overlap(ws, ows))
        return out

    return adapt
