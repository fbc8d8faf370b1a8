"""DAT: Dual Aggregation Transformer for Image Super-Resolution (Chen et al., ICCV 2023), DAT, DAT-S, DAT-light.

Blocks alternate spatial window attention (even blocks: half the channels in ``s0 × s1`` windows, the
other half in ``s1 × s0`` windows, a dynamic position bias MLP per branch) and channel attention (odd
blocks: XCiT-style attention over channels with a learned temperature); each has a depthwise-conv branch
and an adaptive interaction module (channel and spatial gates crossing the two branches), and a
spatial-gate FFN (SGFN).

Parameter names follow the official ``basicsr/archs/dat_arch.py`` (zhengchen1999/DAT), so released
``.pth`` files load unchanged with strict key checking: ``conv_first``, ``before_RG.1`` (LayerNorm),
``layers.{i}.blocks.{j}.{norm1, attn, norm2, ffn.{fc1, sg.norm, sg.conv, fc2}}`` with spatial ``attn``:
``qkv``, ``proj``, ``attns.{0,1}.{rpe_biases, relative_position_index, pos.{pos_proj, pos1.{0,2},
pos2.{0,2}, pos3.{0,2}}}``, ``dwconv.{0,1}``, ``channel_interaction.{1,2,4}``,
``spatial_interaction.{0,1,3}`` (BatchNorms with running statistics), ``attn_mask_0`` / ``attn_mask_1`` in
shifted blocks; channel ``attn``: ``temperature``, ``qkv``, ``proj`` and the same interaction convs;
``layers.{i}.conv``, ``norm``, ``conv_after_body``, then ``conv_before_upsample.0``, ``upsample.{0,2}``,
``conv_last`` (classical) or ``upsample.0`` (DAT-light).

Shifted windows: spatial block ``j`` of group ``i`` is shifted (by half of each window side) when ``i`` is
even and ``j ≡ 2 (mod 4)``, or ``i`` is odd and ``j ≡ 0 (mod 4)``, as officially. The official
``torch.roll`` is written as slices and concatenations, and the masks stored for the training size
(``img_size``) are only kept for checkpoint compatibility: ``forward`` computes them from the runtime
(padded) size with tensor ops, so one exported graph serves every size.

Padding: inside each spatial block the q/k/v maps are zero-padded at the bottom/right to the larger
window side, attended, and cropped back, as officially; the model takes any input size.

Contract: (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale) with the DIV2K mean subtracted inside
(``img_range`` 1).

Detection (:func:`_detect`) reads every argument from shapes: ``embed_dim``, blocks per group, heads (the
channel blocks' ``temperature``, or twice a spatial branch's bias MLP output), ``split_size`` (the index
buffer is ``(s0·s1)²`` and ``rpe_biases`` has ``(2s0 - 1)(2s1 - 1)`` rows; the order of the two sides is not
in the shapes: the smaller first, as in every release), ``img_size`` (a stored mask holds
``img_size² / (s0·s1)`` windows), ``expansion_factor`` (``ffn.fc1``), ``qkv_bias``, ``resi_connection``,
the upsampler and its scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    RGB_MEAN,
    Upsample,
    UpsampleOneStep,
    check_scale,
    classical_head,
    ratio_of,
)
from edge_sr.models.swinir import resi_conv

__all__ = ["DAT", "dat", "dat_light", "dat_s", "dual_window_masks", "is_shifted"]

Upsampler = Literal["pixelshuffle", "pixelshuffledirect"]


def is_shifted(group: int, block: int) -> bool:
    """Whether spatial block ``block`` of residual group ``group`` uses shifted windows (official rule)."""
    if group % 2 == 0:
        return block > 0 and (block - 2) % 4 == 0
    return block % 4 == 0


def rect_partition(x: Tensor, hs: int, ws: int) -> Tensor:
    """(B, H, W, C) -> (B·nW, hs·ws, C): ``hs × ws`` windows in row-major order (H, W multiples)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // hs, hs, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (h // hs) * (w // ws), hs * ws, c)


def rect_reverse(windows: Tensor, hs: int, ws: int, b: Any, h: Any, w: Any) -> Tensor:
    """(B·nW, hs·ws, C) -> (B, H, W, C); the inverse of :func:`rect_partition`."""
    c = windows.shape[-1]
    x = windows.reshape(b, h // hs, w // ws, hs, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def roll_hw(x: Tensor, dh: int, dw: int) -> Tensor:
    """``torch.roll(x, (dh, dw), dims=(1, 2))`` on (B, H, W, C) as slices + concat (shifts may be < 0)."""
    if dh:
        x = torch.cat([x[:, -dh:], x[:, :-dh]], dim=1)
    if dw:
        x = torch.cat([x[:, :, -dw:], x[:, :, :-dw]], dim=2)
    return x


def _region(idx: Tensor, size: Any, window: int, shift: int) -> Tensor:
    """Region 0 / 1 / 2 of each index: before ``size - window``, up to ``size - shift``, after."""
    return (idx >= size - window).to(torch.int64) + (idx >= size - shift).to(torch.int64)


def _window_mask(label: Tensor, hs: int, ws: int) -> Tensor:
    win = rect_partition(label[None, :, :, None], hs, ws)[..., 0]  # (nW, N)
    return torch.where(win[:, None, :] != win[:, :, None], -100.0, 0.0).to(torch.float32)


def dual_window_masks(
    h: Any, w: Any, split: tuple[int, int], device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """The shifted-window masks of both spatial branches on an (h, w) map: (nW, N, N) each, N = s0·s1.

    Branch 0 uses ``s0 × s1`` windows shifted by ``(s0 // 2, s1 // 2)``, branch 1 the transposed ones; tokens
    attend across regions with -100 added, as the official ``calculate_mask``. ``h`` / ``w`` may be symbolic.
    """
    s0, s1 = split
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    label0 = _region(rows, h, s0, s0 // 2)[:, None] * 3 + _region(cols, w, s1, s1 // 2)[None, :]
    label1 = _region(rows, h, s1, s1 // 2)[:, None] * 3 + _region(cols, w, s0, s0 // 2)[None, :]
    return _window_mask(label0, s0, s1), _window_mask(label1, s1, s0)


def rect_position_index(hs: int, ws: int) -> Tensor:
    """(N, N) index into the ``(2hs - 1)(2ws - 1)`` relative offsets of an ``hs × ws`` window (N = hs·ws)."""
    coords = torch.stack(torch.meshgrid(torch.arange(hs), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + hs - 1) * (2 * ws - 1) + (rel[..., 1] + ws - 1)


def rpe_offsets(hs: int, ws: int) -> Tensor:
    """((2hs - 1)(2ws - 1), 2) float relative offsets (dy, dx), row-major: the official ``rpe_biases``."""
    dy, dx = torch.arange(1 - hs, hs), torch.arange(1 - ws, ws)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij")).flatten(1).transpose(0, 1).float()


def _crop_hw(x: Tensor, h: Any, w: Any) -> Tensor:
    """The top-left (h, w) of (B, H', W', C) as a gather (a slice view would keep the padded strides,
    which export then guards on)."""
    x = x.contiguous().index_select(1, torch.arange(h, device=x.device))
    return x.index_select(2, torch.arange(w, device=x.device))


class DynamicPosBias(nn.Module):
    """Offset (dy, dx) -> per-head bias: Linear, then three (LayerNorm, ReLU, Linear) stages."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, pos_dim)

        def stage(out: int) -> nn.Sequential:
            return nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, out))

        self.pos1, self.pos2, self.pos3 = stage(pos_dim), stage(pos_dim), stage(num_heads)

    def forward(self, offsets: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class SpatialAttention(nn.Module):
    """Window attention of one branch: (3, B, H, W, C') q/k/v maps -> (B, H, W, C') (H, W window multiples)."""

    rpe_biases: Tensor  # ((2hs-1)(2ws-1), 2) buffer
    relative_position_index: Tensor  # (N, N) buffer

    def __init__(self, *, dim: int, window: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.hs, self.ws = window
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.pos = DynamicPosBias(dim // 4, num_heads)
        self.register_buffer("rpe_biases", rpe_offsets(self.hs, self.ws))
        self.register_buffer("relative_position_index", rect_position_index(self.hs, self.ws))

    def forward(self, qkv: Tensor, mask: Tensor | None) -> Tensor:
        _, b, h, w, c = qkv.shape
        n, heads = self.hs * self.ws, self.num_heads
        win = rect_partition(qkv.reshape(3 * b, h, w, c), self.hs, self.ws)  # (3·B·nW, N, C')
        bn = win.shape[0] // 3
        win = win.reshape(3, bn, n, heads, c // heads).permute(0, 1, 3, 2, 4)  # (3, B·nW, heads, N, d)
        q, k, v = win[0] * self.scale, win[1], win[2]
        attn = q @ k.transpose(-2, -1)  # (B·nW, heads, N, N)
        bias = self.pos(self.rpe_biases)[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:  # (B·nW, N, N), repeated per image
            attn = attn + mask[:, None].to(attn.dtype)
        y = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bn, n, c)
        return rect_reverse(y, self.hs, self.ws, b, h, w)


def _interaction(dim: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """The depthwise-conv branch and the two gates of the adaptive interaction module (official indices)."""
    dwconv = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim), nn.GELU())
    channel = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(dim, dim // 8, 1),
        nn.BatchNorm2d(dim // 8),
        nn.GELU(),
        nn.Conv2d(dim // 8, dim, 1),
    )
    spatial = nn.Sequential(
        nn.Conv2d(dim, dim // 16, 1), nn.BatchNorm2d(dim // 16), nn.GELU(), nn.Conv2d(dim // 16, 1, 1)
    )
    return dwconv, channel, spatial


class AdaptiveSpatialAttention(nn.Module):
    """Spatial block attention: two window branches on half the channels each, plus the conv branch."""

    attn_mask_0: Tensor  # only in shifted blocks: the training-size masks (checkpoint compatibility)
    attn_mask_1: Tensor

    def __init__(
        self, *, dim: int, num_heads: int, split: tuple[int, int], qkv_bias: bool, shifted: bool, reso: int
    ) -> None:
        super().__init__()
        self.split, self.shifted = split, shifted
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        s0, s1 = split
        self.attns = nn.ModuleList(
            SpatialAttention(dim=dim // 2, window=win, num_heads=num_heads // 2)
            for win in ((s0, s1), (s1, s0))
        )
        if shifted:
            m0, m1 = dual_window_masks(reso, reso, split)
            self.register_buffer("attn_mask_0", m0)
            self.register_buffer("attn_mask_1", m1)
        self.dwconv, self.channel_interaction, self.spatial_interaction = _interaction(dim)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        b, n, c = x.shape
        s0, s1 = self.split
        half = c // 2
        qkv = self.qkv(x).reshape(b, h, w, 3, c).permute(3, 0, 1, 2, 4)  # (3, B, H, W, C)
        v = qkv[2].permute(0, 3, 1, 2)  # (B, C, H, W), unpadded, for the conv branch
        m = max(s0, s1)
        ph, pw = ((h + m - 1) // m) * m, ((w + m - 1) // m) * m
        qkv = F.pad(qkv.reshape(3 * b, h, w, c), (0, 0, 0, pw - w, 0, ph - h)).reshape(3, b, ph, pw, c)
        q0, q1 = qkv[..., :half], qkv[..., half:]
        if self.shifted:
            mask0, mask1 = dual_window_masks(ph, pw, self.split, x.device)
            q0 = roll_hw(q0.reshape(3 * b, ph, pw, half), -(s0 // 2), -(s1 // 2)).reshape(3, b, ph, pw, half)
            q1 = roll_hw(q1.reshape(3 * b, ph, pw, half), -(s1 // 2), -(s0 // 2)).reshape(3, b, ph, pw, half)
            y0 = roll_hw(self.attns[0](q0, mask0.repeat(b, 1, 1)), s0 // 2, s1 // 2)
            y1 = roll_hw(self.attns[1](q1, mask1.repeat(b, 1, 1)), s1 // 2, s0 // 2)
        else:
            y0, y1 = self.attns[0](q0, None), self.attns[1](q1, None)
        attended = torch.cat([_crop_hw(y0, h, w), _crop_hw(y1, h, w)], dim=3).reshape(b, n, c)

        conv_x = self.dwconv(v)  # (B, C, H, W)
        channel_map = self.channel_interaction(conv_x).reshape(b, 1, c)
        spatial_map = self.spatial_interaction(attended.transpose(1, 2).reshape(b, c, h, w))
        attended = attended * torch.sigmoid(channel_map)
        conv_x = (torch.sigmoid(spatial_map) * conv_x).permute(0, 2, 3, 1).reshape(b, n, c)
        return self.proj(attended + conv_x)


class AdaptiveChannelAttention(nn.Module):
    """Channel block attention: heads attend over channels (L2-normalised over tokens, learned
    temperature), plus the conv branch and the interaction gates."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwconv, self.channel_interaction, self.spatial_interaction = _interaction(dim)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 4, 1)  # (3, B, heads, d, N)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, heads, d, d)
        attended = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        conv_x = self.dwconv(v.reshape(b, c, h, w))
        channel_map = self.channel_interaction(attended.transpose(1, 2).reshape(b, c, h, w))
        spatial_map = self.spatial_interaction(conv_x).permute(0, 2, 3, 1).reshape(b, n, 1)
        attended = attended * torch.sigmoid(spatial_map)
        conv_x = (conv_x * torch.sigmoid(channel_map)).permute(0, 2, 3, 1).reshape(b, n, c)
        return self.proj(attended + conv_x)


class SpatialGate(nn.Module):
    """Second half of the channels -> LayerNorm -> 3×3 depthwise conv, gating the first half."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        b, n, c = x.shape
        x1, x2 = x[..., : c // 2], x[..., c // 2 :]
        x2 = self.conv(self.norm(x2).transpose(1, 2).reshape(b, c // 2, h, w)).flatten(2).transpose(1, 2)
        return x1 * x2


class SGFN(nn.Module):
    """Spatial-gate FFN: fc1 -> GELU -> spatial gate (halves the width) -> fc2."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.sg = SpatialGate(hidden // 2)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        return self.fc2(self.sg(self.act(self.fc1(x)), h, w))


class DATB(nn.Module):
    """Dual aggregation block: (B, H·W, C) -> (B, H·W, C); spatial attention on even blocks, channel on odd."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        split: tuple[int, int],
        expansion_factor: float,
        qkv_bias: bool,
        group: int,
        block: int,
        reso: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn: nn.Module
        if block % 2 == 0:
            self.attn = AdaptiveSpatialAttention(
                dim=dim,
                num_heads=num_heads,
                split=split,
                qkv_bias=qkv_bias,
                shifted=is_shifted(group, block),
                reso=reso,
            )
        else:
            self.attn = AdaptiveChannelAttention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.ffn = SGFN(dim=dim, hidden=int(dim * expansion_factor))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)


class ResidualGroup(nn.Module):
    """DAT blocks -> image -> conv -> tokens, plus the group input (keys ``blocks``, ``conv``)."""

    def __init__(self, *, dim: int, blocks: list[DATB], resi_connection: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: Tensor, h: Any, w: Any) -> Tensor:
        b, n, c = x.shape
        y = x
        for blk in self.blocks:
            y = blk(y, h, w)
        return x + self.conv(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H·W, C) (the official ``Rearrange``; no weights)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


class DAT(nn.Module):
    """DAT for SR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale); any H, W.

    Args:
        scale: upscaling factor (2, 3 or 4); the official ``upscale``.
        img_size: training patch size; only sizes the stored ``attn_mask_*`` buffers (a multiple of the
            larger window side).
        embed_dim: transformer width (at least 32: the position-bias MLP is ``embed_dim / 32`` wide).
        depths: blocks per residual group (the official ``depth``).
        num_heads: heads per group (even: each spatial branch takes half).
        split_size: spatial window ``(s0, s1)``; the larger a multiple of the smaller.
        expansion_factor: SGFN hidden width over ``embed_dim``.
        qkv_bias: bias on the qkv projections.
        img_range: the network's internal value range (1.0 for the released models).
        upsampler: ``pixelshuffle`` (classical) or ``pixelshuffledirect`` (DAT-light).
        resi_connection: ``1conv`` or ``3conv``.
        num_feat: channels of the classical reconstruction head.

    Raises:
        ConfigError: an unsupported scale or upsampler, or sizes the official blocks cannot be built with.
    """

    mean: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        *,
        scale: int = 4,
        img_size: int = 64,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        split_size: Sequence[int] = (8, 32),
        expansion_factor: float = 4.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        upsampler: Upsampler = "pixelshuffle",
        resi_connection: str = "1conv",
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        check_scale(scale)
        if len(depths) != len(num_heads):
            raise ConfigError(None, f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if embed_dim < 32 or embed_dim % 2:
            raise ConfigError(None, f"embed_dim {embed_dim} must be even and at least 32")
        if any(h < 2 or h % 2 or embed_dim % h for h in num_heads):
            raise ConfigError(
                None, f"num_heads {list(num_heads)} must be even divisors of embed_dim {embed_dim}"
            )
        if len(split_size) != 2 or min(split_size) < 1 or max(split_size) % min(split_size):
            raise ConfigError(
                None, f"split_size {list(split_size)}: two sides, the larger a multiple of the smaller"
            )
        split = (int(split_size[0]), int(split_size[1]))
        if img_size < 1 or img_size % max(split):
            raise ConfigError(None, f"img_size {img_size} is not a multiple of the window side {max(split)}")
        self.scale, self.img_range, self.upsampler = scale, img_range, upsampler
        self.split_size, self.depths = split, tuple(depths)
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.before_RG = nn.Sequential(ToTokens(), nn.LayerNorm(embed_dim))
        self.layers = nn.ModuleList(
            ResidualGroup(
                dim=embed_dim,
                blocks=[
                    DATB(
                        dim=embed_dim,
                        num_heads=heads,
                        split=split,
                        expansion_factor=expansion_factor,
                        qkv_bias=qkv_bias,
                        group=i,
                        block=j,
                        reso=img_size,
                    )
                    for j in range(depth)
                ],
                resi_connection=resi_connection,
            )
            for i, (depth, heads) in enumerate(zip(depths, num_heads))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
            self.upsample: nn.Module = Upsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(scale, embed_dim, 3)
        else:
            raise ConfigError(
                None, f"upsampler {upsampler!r} is not supported; choose pixelshuffle or pixelshuffledirect"
            )
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.before_RG(x)
        for layer in self.layers:
            t = layer(t, h, w)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.to(x.dtype)
        x = self.conv_first((x - mean) * self.img_range)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        return x / self.img_range + mean

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """As ``nn.Module.load_state_dict``; a DAT state dict of another window (``split_size``) or depths
        is refused first with a ``CheckpointError`` saying which."""
        check_config(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _init_weights(m: nn.Module) -> None:
    # The official initialisation: truncated normal linears with zero bias, unit norms.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def check_config(model: DAT, state: Mapping[str, Any]) -> None:
    """Raise ``CheckpointError`` when ``state`` is a DAT state dict whose window (``split_size``) or depths
    differ from ``model``'s, naming them (other mismatches are left to the strict load)."""
    sd = dict(state)
    depths = _depths(sd)
    split = _split(sd)
    if depths is None or split is None:
        return
    diff = []
    if sorted(split) != sorted(model.split_size):
        diff.append(f"split_size {split} (model {model.split_size})")
    if depths != model.depths:
        diff.append(f"depths {depths} (model {model.depths})")
    if diff:
        raise CheckpointError(None, f"the DAT checkpoint does not match the model: it has {'; '.join(diff)}")


@register_model(family="dat", kind="heavy")
def dat(**overrides: Any) -> DAT:
    """DAT: 180 wide, 6 groups of 6 blocks, 8×32 windows, expansion 4 (14.80 M); DAT-2 is expansion 2."""
    return DAT(**{"embed_dim": 180, "split_size": (8, 32), "expansion_factor": 4.0, **overrides})


@register_model(family="dat", kind="heavy")
def dat_s(**overrides: Any) -> DAT:
    """DAT-S: 180 wide, 6 groups of 6 blocks, 8×16 windows, expansion 2 (11.21 M)."""
    return DAT(**{"embed_dim": 180, "split_size": (8, 16), "expansion_factor": 2.0, **overrides})


@register_model(family="dat", kind="heavy")
def dat_light(**overrides: Any) -> DAT:
    """DAT-light: 60 wide, one group of 18 blocks, 8×32 windows, expansion 2, 3conv, one-step tail."""
    return DAT(
        **{
            "embed_dim": 60,
            "depths": (18,),
            "num_heads": (6,),
            "split_size": (8, 32),
            "expansion_factor": 2.0,
            "resi_connection": "3conv",
            "upsampler": "pixelshuffledirect",
            **overrides,
        }
    )


# ---- detection

_SA = "layers.{i}.blocks.{j}.attn"


def _depths(state: StateDict) -> tuple[int, ...] | None:
    groups = indices(state, "layers.")
    if not groups or groups != list(range(len(groups))):
        return None
    depths = tuple(len(indices(state, f"layers.{i}.blocks.")) for i in groups)
    return depths if all(depths) else None


def _split(state: StateDict) -> tuple[int, int] | None:
    """(s0, s1), smaller side first, from the index buffer ``(s0·s1)²`` and ``rpe_biases``
    ``((2s0 - 1)(2s1 - 1), 2)`` of the first spatial branch; None when absent or inconsistent."""
    index = shape(state, f"{_SA.format(i=0, j=0)}.attns.0.relative_position_index")
    offsets = shape(state, f"{_SA.format(i=0, j=0)}.attns.0.rpe_biases")
    if index is None or offsets is None or len(index) != 2 or len(offsets) != 2:
        return None
    n, rows = index[0], offsets[0]
    total2 = 4 * n + 1 - rows  # 2 (s0 + s1)
    if total2 <= 0 or total2 % 2:
        return None
    total = total2 // 2
    disc = total * total - 4 * n
    root = math.isqrt(max(disc, 0))
    if disc < 0 or root * root != disc or (total - root) % 2:
        return None
    small, large = (total - root) // 2, (total + root) // 2
    return (small, large) if small >= 1 and small * large == n else None


def _heads(state: StateDict, i: int, depth: int) -> int | None:
    temp = shape(state, f"{_SA.format(i=i, j=1)}.temperature") if depth > 1 else None
    if temp is not None:
        return temp[0]
    pos3 = shape(state, f"{_SA.format(i=i, j=0)}.attns.0.pos.pos3.2.weight")
    return 2 * pos3[0] if pos3 is not None else None


def _img_size(state: StateDict, depths: tuple[int, ...]) -> int | None:
    """The training size from a stored mask: (img² / (s0·s1), s0·s1, s0·s1)."""
    for i, depth in enumerate(depths):
        for j in range(0, depth, 2):
            mask = shape(state, f"{_SA.format(i=i, j=j)}.attn_mask_0")
            if mask is not None:
                return math.isqrt(mask[0] * mask[1])
    return None


def _fill_masks(
    depths: tuple[int, ...], split: tuple[int, int], img_size: int
) -> Callable[[StateDict], StateDict]:
    """Adds the training-size masks a file lacks (forks that keep them out of the state dict); the model
    recomputes them at run time, so the official values only complete the file."""

    def adapt(state: StateDict) -> StateDict:
        out = dict(state)
        m0, m1 = dual_window_masks(img_size, img_size, split)
        for i, depth in enumerate(depths):
            for j in range(0, depth, 2):
                if is_shifted(i, j):
                    out.setdefault(f"{_SA.format(i=i, j=j)}.attn_mask_0", m0)
                    out.setdefault(f"{_SA.format(i=i, j=j)}.attn_mask_1", m1)
        return out

    return adapt


@register_detector("dat")
def _detect(state: StateDict) -> Detection | None:
    """DAT, DAT-S, DAT-2 or DAT-light from the official key layout."""
    first = shape(state, "conv_first.weight")
    if first is None or len(first) != 4 or not has(state, "before_RG.1.weight", "norm.weight"):
        return None
    depths, split = _depths(state), _split(state)
    fc1 = shape(state, "layers.0.blocks.0.ffn.fc1.weight")
    if depths is None or split is None or fc1 is None:
        return None
    dim = first[0]
    heads = tuple(_heads(state, i, d) for i, d in enumerate(depths))
    if any(h is None for h in heads):
        return None
    if "conv_after_body.weight" in state:
        resi = "1conv"
    elif has(state, "conv_after_body.0.weight", "conv_after_body.4.weight"):
        resi = "3conv"
    else:
        return None
    args: dict[str, Any] = {
        "scale": 0,
        "img_size": 64,
        "embed_dim": dim,
        "depths": depths,
        "num_heads": heads,
        "split_size": split,
        "expansion_factor": ratio_of(fc1[0], dim),
        "qkv_bias": f"{_SA.format(i=0, j=0)}.qkv.bias" in state,
        "img_range": 1.0,
        "resi_connection": resi,
    }
    if (head := classical_head(state)) is not None:
        args.update(scale=head[0], upsampler="pixelshuffle", num_feat=head[1])
    elif (one := shape(state, "upsample.0.weight")) is not None and "upsample.2.weight" not in state:
        scale = math.isqrt(one[0] // 3)
        if scale * scale * 3 != one[0]:
            return None
        args.update(scale=scale, upsampler="pixelshuffledirect")
    else:
        return None
    assumed = {
        "img_range": "not stored; 1.0, the value of every DAT release",
        "split_size": "the shapes give the two window sides, not their order; smaller first, as every release",
    }
    shifted = any(is_shifted(i, j) for i, d in enumerate(depths) for j in range(0, d, 2))
    img_size = _img_size(state, depths)
    adapt = None
    if img_size is not None:
        args["img_size"] = img_size
    else:
        why = "a model without shifted blocks stores no mask" if not shifted else "no attn_mask stored"
        assumed["img_size"] = f"{why}; 64 (the releases' training size), which only sizes that buffer"
        if shifted:
            adapt = _fill_masks(depths, split, 64)
    if args["upsampler"] == "pixelshuffledirect":
        arch = "dat_light"
    elif split == (8, 16):
        arch = "dat_s"
    else:
        arch = "dat"
    return Detection(
        arch,
        args,
        mean=RGB_MEAN,
        layout="official" if adapt is None else "official-nobuffers",
        assumed=assumed,
        adapt=adapt,
    )
