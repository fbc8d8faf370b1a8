"""SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021), classical and lightweight SR.

State-dict keys and shapes are those of the official ``network_swinir.py``, so released ``.pth`` files load
unchanged with strict key checking (the ``params`` wrapper is unwrapped by the loader):
``conv_first``, ``patch_embed.norm``, ``layers.{i}.residual_group.blocks.{j}.{norm1, attn.{relative_position_bias_table,
relative_position_index, qkv, proj}, norm2, mlp.{fc1, fc2}}``, ``layers.{i}.residual_group.blocks.{odd j}.attn_mask``,
``layers.{i}.conv``, ``norm``, ``conv_after_body``, then ``conv_before_upsample.0``, ``upsample.{0,2}``,
``conv_last`` (classical), ``upsample.0`` (lightweight), or ``conv_before_upsample.0``, ``conv_up1``,
``conv_up2`` (×4 only), ``conv_hr``, ``conv_last`` (the real-world SR ``nearest+conv`` head of the
Real-SwinIR releases: nearest ×2 upsampling, conv, LeakyReLU 0.2 per stage).

Buffers: official files carry ``relative_position_index`` and, for shifted blocks, ``attn_mask`` sized for
the training patch (``img_size``, 64 for the DF2K releases, 48 for DIV2K ones). Both are persistent buffers
here so those files load strictly; ``forward`` never reads ``attn_mask`` and recomputes the mask from the
runtime size (see :mod:`edge_sr.models.swin_common`), so one exported graph serves every size. The RGB mean
is a non-persistent buffer, as the official model keeps it out of its state dict.

Contract: (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale); inputs are reflect-padded to the window
multiple and the output cropped, as the official test script does.

Detection (:func:`_detect`) reads every argument from shapes: ``embed_dim`` (``conv_first``), blocks per
group, heads per group (the bias tables' columns), ``window_size`` (the tables' ``(2ws-1)²`` rows),
``img_size`` (a stored ``attn_mask`` holds ``(img_size / ws)²`` windows), ``mlp_ratio`` (``fc1``),
``resi_connection``, the upsampler and its scale, ``num_feat``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    RGB_MEAN,
    Mlp,
    Upsample,
    UpsampleOneStep,
    WindowAttention,
    check_scale,
    check_tile,
    classical_head,
    crop,
    cyclic_shift,
    min_tile_size,
    pad_to_window,
    relative_position_index,
    shifted_window_mask,
    swin_body_args,
    window_partition,
    window_reverse,
)

__all__ = ["SwinIR", "min_tile_size", "swinir_classical", "swinir_lightweight"]

Upsampler = Literal["pixelshuffle", "pixelshuffledirect", "nearest+conv"]


def resi_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing each residual group and the body: ``1conv`` (one 3x3) or ``3conv`` (3x3, 1x1, 3x3)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ConfigError(None, f"resi_connection {kind!r} is not supported; choose 1conv or 3conv")


class SwinBlock(nn.Module):
    """Swin transformer block: (B, H·W, C) -> (B, H·W, C), window attention (shifted when ``shift`` > 0)."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        img_size: int,
    ) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias, own_index=True
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        if shift > 0:
            # Only for checkpoint compatibility: the mask at the training size, as official files store it.
            self.register_buffer("attn_mask", shifted_window_mask(img_size, img_size, window_size, shift))

    def forward(self, x: Tensor, hw: tuple[int, int], mask: Tensor | None) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).reshape(b, h, w, c)
        if self.shift > 0:
            y = cyclic_shift(y, -self.shift)
        y = self.attn(window_partition(y, self.window_size), mask=mask if self.shift > 0 else None)
        y = window_reverse(y, self.window_size, b, h, w)
        if self.shift > 0:
            y = cyclic_shift(y, self.shift)
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """A stack of window-attention blocks alternating plain and shifted windows (key ``blocks``); SwinFIR
    and SRFormer stack theirs with it too."""

    def __init__(self, *, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, hw: tuple[int, int], mask: Tensor | None) -> Tensor:
        for blk in self.blocks:
            x = blk(x, hw, mask)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer Block: tokens -> Swin blocks -> image -> conv -> tokens, plus the input
    (SRFormer's ``PSA_Group`` is the same group around its permuted-attention blocks; SwinFIR closes it with
    its spectral block, passed as ``conv``)."""

    def __init__(
        self,
        *,
        dim: int,
        blocks: Sequence[nn.Module],
        resi_connection: str = "1conv",
        conv: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.residual_group = BasicLayer(blocks=blocks)
        self.conv = conv if conv is not None else resi_conv(dim, resi_connection)

    def forward(self, x: Tensor, hw: tuple[int, int], mask: Tensor | None) -> Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, hw, mask).transpose(1, 2).reshape(b, c, hw[0], hw[1])
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H·W, C), with the optional LayerNorm the official model keeps (key ``norm``)."""

    def __init__(self, *, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinIR(nn.Module):
    """SwinIR for SR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4); the official ``upscale``.
        img_size: training patch size; sizes the stored ``attn_mask`` buffers (and, as officially, a window
            larger than it shrinks to it).
        embed_dim: transformer width.
        depths: Swin blocks per residual group.
        num_heads: attention heads per residual group.
        window_size: attention window (8 for the official SR models).
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias on the qkv projection.
        img_range: the network's internal value range (1.0 for the released SR models).
        upsampler: ``pixelshuffle`` (classical), ``pixelshuffledirect`` (lightweight) or ``nearest+conv``
            (real-world SR; scale 2 or 4).
        resi_connection: ``1conv`` or ``3conv``.
        num_feat: channels of the classical reconstruction head.
        patch_norm: LayerNorm after the patch embedding.
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
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        upsampler: Upsampler = "pixelshuffle",
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
        self.scale, self.img_range, self.upsampler = scale, img_range, upsampler
        # Official rule: a window larger than the training patch shrinks to it and disables the shift.
        self.window_size = min(window_size, img_size)
        self.shift = window_size // 2 if img_size > window_size else 0
        if img_size % self.window_size:
            raise ConfigError(
                None, f"img_size {img_size} is not a multiple of window_size {self.window_size}"
            )
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim=embed_dim, norm=patch_norm)

        def blocks(depth: int, heads: int) -> list[SwinBlock]:
            return [
                SwinBlock(
                    dim=embed_dim,
                    num_heads=heads,
                    window_size=self.window_size,
                    shift=0 if i % 2 == 0 else self.shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    img_size=img_size,
                )
                for i in range(depth)
            ]

        self.layers = nn.ModuleList(
            RSTB(dim=embed_dim, blocks=blocks(d, h), resi_connection=resi_connection)
            for d, h in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
            self.upsample: nn.Module = Upsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(scale, embed_dim, 3)
        elif upsampler == "nearest+conv":
            if scale not in (2, 4):
                raise ConfigError(None, f"the nearest+conv upsampler supports scales 2 and 4, not {scale}")
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            if scale == 4:
                self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2)
        else:
            raise ConfigError(
                None,
                f"upsampler {upsampler!r} is not supported; choose pixelshuffle, pixelshuffledirect or "
                "nearest+conv",
            )
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        mask = None
        if self.shift > 0:  # (B·nW, N, N), computed once per forward from the runtime size
            mask = shifted_window_mask(h, w, self.window_size, self.shift, x.device).repeat(b, 1, 1)
        t = self.patch_embed(x)  # (B, H·W, C)
        for layer in self.layers:
            t = layer(t, (h, w), mask)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if not torch.compiler.is_compiling():
            check_tile(self, int(h), int(w))
        mean = self.mean.to(x.dtype)
        x = (pad_to_window(x, self.window_size) - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif self.upsampler == "nearest+conv":
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            if self.scale == 4:
                x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            x = self.upsample(x)
        return crop(x, h * self.scale, w * self.scale) / self.img_range + mean


def init_weights(m: nn.Module) -> None:
    # The official initialisation: truncated normal linears with zero bias, unit LayerNorms.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@register_model(family="swinir", kind="heavy")
def swinir_classical(**overrides) -> SwinIR:
    """SwinIR-M classical SR (the ×2/×3/×4 DF2K releases, ``img_size`` 64)."""
    return SwinIR(
        **{
            "embed_dim": 180,
            "depths": (6,) * 6,
            "num_heads": (6,) * 6,
            "upsampler": "pixelshuffle",
            **overrides,
        }
    )


@register_model(family="swinir", kind="heavy")
def swinir_lightweight(**overrides) -> SwinIR:
    """SwinIR-S lightweight SR: 60 wide, 4 groups, one-step pixel-shuffle tail."""
    return SwinIR(
        **{
            "embed_dim": 60,
            "depths": (6,) * 4,
            "num_heads": (6,) * 4,
            "upsampler": "pixelshuffledirect",
            **overrides,
        }
    )


# ---- detection


def _img_size(state: StateDict, depths: tuple[int, ...], ws: int) -> tuple[int, bool]:
    """The training patch size from a stored ``attn_mask`` (``(img_size / ws)²`` windows), and whether the
    file stores its masks. Without one, the size is assumed: 64 (the released models'), or the smallest
    multiple of the window above it when the window is wider."""
    for i, depth in enumerate(depths):
        for j in range(1, depth, 2):
            mask = shape(state, f"layers.{i}.residual_group.blocks.{j}.attn_mask")
            if mask is not None:
                return math.isqrt(mask[0]) * ws, True
    return ws * max(2, -(-64 // ws)), False


def _fill_buffers(depths: tuple[int, ...], ws: int, img_size: int) -> Callable[[StateDict], StateDict]:
    """Adds the index and mask buffers a file lacks (forks that keep them out of the state dict); the
    model recomputes both, so their values only have to be the official ones for completeness."""

    def adapt(state: StateDict) -> StateDict:
        out = dict(state)
        index = relative_position_index(ws)
        mask = shifted_window_mask(img_size, img_size, ws, ws // 2)
        for i, depth in enumerate(depths):
            for j in range(depth):
                p = f"layers.{i}.residual_group.blocks.{j}"
                out.setdefault(f"{p}.attn.relative_position_index", index)
                if j % 2 == 1:
                    out.setdefault(f"{p}.attn_mask", mask)
        return out

    return adapt


# every key a SwinIR residual group holds: its Swin blocks and the conv closing it (1conv or 3conv)
_LAYER_KEY = re.compile(
    r"layers\.\d+\.(residual_group\.blocks\.\d+\.(norm[12]\.(weight|bias)|attn\.(relative_position_bias_table|"
    r"relative_position_index|qkv\.(weight|bias)|proj\.(weight|bias))|mlp\.fc[12]\.(weight|bias)|attn_mask)"
    r"|conv\.(\d+\.)?(weight|bias))"
)


@register_detector("swinir")
def _detect(state: StateDict) -> Detection | None:
    """SwinIR classical, lightweight or real-world (``nearest+conv``) from the official key layout."""
    if "relative_position_index_SA" in state or "layers.0.residual_group.overlap_attn.qkv.weight" in state:
        return None  # HAT
    if any(".conv_block." in k for k in state):
        return None
    if any(k.startswith("layers.") and not _LAYER_KEY.fullmatch(k) for k in state):
        return None  # a Swin relative with other blocks (SwinFIR's Fourier conv, SRFormer's attention ...)
    body = swin_body_args(state)
    if body is None:
        return None
    body.pop("colors")  # the zoo's SwinIR is RGB; the skeleton check reports a file that is not
    ws, depths = body["window_size"], body["depths"]
    img_size, has_mask = _img_size(state, depths, ws)
    args: dict[str, Any] = {"scale": 0, "img_size": img_size, **body}
    if "conv_up1.weight" in state:
        before = shape(state, "conv_before_upsample.0.weight")
        if before is None:
            return None
        args.update(
            scale=4 if "conv_up2.weight" in state else 2, upsampler="nearest+conv", num_feat=before[0]
        )
    elif (head := classical_head(state)) is not None:
        args.update(scale=head[0], upsampler="pixelshuffle", num_feat=head[1])
    elif (one := shape(state, "upsample.0.weight")) is not None and "upsample.2.weight" not in state:
        scale = math.isqrt(one[0] // 3)
        if scale * scale * 3 != one[0]:
            return None
        args.update(scale=scale, upsampler="pixelshuffledirect")
    else:
        return None  # denoising / JPEG models (no upsampler): not an SR model
    args["img_range"] = 1.0
    assumed = {"img_range": "not stored; 1.0, the value of every SwinIR SR release"}
    index_key = "layers.0.residual_group.blocks.0.attn.relative_position_index"
    shifted = any(d > 1 for d in depths)
    complete = index_key in state and (has_mask or not shifted)
    if not has_mask:
        assumed["img_size"] = (
            f"no attn_mask stored; {img_size}, which only sizes that buffer (windows shifted as in "
            "every release)"
        )
    arch = "swinir_lightweight" if args["upsampler"] == "pixelshuffledirect" else "swinir_classical"
    return Detection(
        arch,
        args,
        mean=RGB_MEAN,
        layout="official" if complete else "official-nobuffers",
        assumed=assumed,
        adapt=None if complete else _fill_buffers(depths, ws, img_size),
    )
