"""SwinFIR: Revisiting the SwinIR with Fast Fourier Convolution and Improved Training for Image
Super-Resolution (Zhang et al., 2022), classical SwinFIR and lightweight SwinFIR-T.

Parameter names follow the official ``swinfir/archs/swinfir_arch.py``, so the released ``SwinFIR_SRx{2,3,4}``
and ``SwinFIR-T_SRx{2,3,4}`` files load unchanged with strict key checking. The body is SwinIR's
(``conv_first``, ``patch_embed.norm``, ``layers.{i}.residual_group.blocks.{j}.{norm1, attn.{relative_position_bias_table,
relative_position_index, qkv, proj}, norm2, mlp.{fc1, fc2}}``, ``attn_mask`` in the shifted blocks, ``norm``,
``conv_after_body``, and SwinIR's heads: ``conv_before_upsample.0`` / ``upsample.{0,2}`` / ``conv_last``,
``upsample.0`` alone, or ``conv_up1`` / ``conv_up2`` / ``conv_hr`` / ``conv_last``); each group closes with a
spatial-frequency block instead of a conv: ``layers.{i}.conv.S.body.{0,2}`` (a residual block, its first conv
halved in width for ``HSFB``), ``layers.{i}.conv.F.{conv1.0, fu.conv_layer, conv2}`` (a Fourier unit between
two 1x1 convs) and ``layers.{i}.conv.fusion``.

Value range: [0, 1] with the official mean (0.3014, 0.3152, 0.3094) subtracted inside and added back.

Size handling: inputs are padded to the window multiple above their size by mirroring (the row order the
official ``SwinFIRModel.test`` builds from ``torch.flip``: one window more even when the size is already a
multiple) and the output cropped. The Fourier unit sees the whole padded map, so the padding matters as it
does officially. The shifted-window mask is computed from the runtime size (the stored ``attn_mask`` buffers,
sized for the training patch, are kept only so that released files load strictly).

Fourier unit: ``fourier="fft"`` (the default) calls ``torch.fft.rfft2`` / ``irfft2``; ``fourier="dft"``
computes the same transforms as real matrix products with DFT matrices built from the runtime size
(``cos`` / ``sin`` of ``2π·(k·n mod N)/N``). Both give the same result to float32 rounding; ``dft`` is the
form for targets without FFT ops (Core ML and TFLite; see the conversion notes in the README), at
``O(N²)`` rather than ``O(N log N)`` cost per row and column.

Detection (:func:`_detect`) reads every shape argument: width, blocks and heads per group, window (the bias
tables' ``(2ws-1)²`` rows), ``img_size`` (the stored masks hold ``(img_size / ws)²`` windows), ``mlp_ratio``,
``qkv_bias``, ``patch_norm``, ``SFB`` / ``HSFB`` (the width of ``conv.S.body.0``), the upsampler, its scale
and ``num_feat``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    Upsample,
    UpsampleOneStep,
    check_scale,
    check_tile,
    classical_head,
    crop,
    gather_hw,
    min_tile_size,
    shifted_window_mask,
    swin_body_args,
)
from edge_sr.models.swinir import RSTB, PatchEmbed, SwinBlock, init_weights

__all__ = ["SwinFIR", "min_tile_size", "swinfir", "swinfir_t", "use_fourier"]

SWINFIR_MEAN = (0.3014, 0.3152, 0.3094)  # the official model's RGB mean
Upsampler = Literal["pixelshuffle", "pixelshuffledirect", "nearest+conv"]
ResiConnection = Literal["SFB", "HSFB"]
Fourier = Literal["fft", "dft"]


def mirror_pad_next_window(x: Tensor, ws: int) -> Tensor:
    """(N, C, H, W) -> (N, C, ws·(H // ws + 1), ws·(W // ws + 1)): rows / columns past the end mirrored
    (``H`` then ``H-1`` ...: the edge pixel repeated), as ``cat([x, flip(x)])[:size]``. Needs H, W >= ws."""
    h, w = x.shape[-2], x.shape[-1]

    def mirrored(n: Any) -> Tensor:
        i = torch.arange((n // ws + 1) * ws, device=x.device)
        return torch.where(i < n, i, 2 * n - 1 - i)

    return gather_hw(x, mirrored(h), mirrored(w))


def _dft_matrices(n_out: Any, n_in: Any, period: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """(cos, sin) of ``2π·k·n / period`` for k < n_out, n < n_in, each (n_out, n_in) float32, times
    ``1 / sqrt(period)`` (the orthonormal scaling of one axis).

    ``k·n`` is reduced modulo ``period`` in integers first, so the angles stay in [0, 2π) and float32
    keeps them exact to rounding at any size.
    """
    k = torch.arange(n_out, device=device)[:, None]
    n = torch.arange(n_in, device=device)[None, :]
    kn = k * n
    reduced = kn - torch.div(kn, period, rounding_mode="floor") * period  # kn mod period, in integers
    angle = reduced.to(torch.float32) * (2.0 * math.pi) / period
    # 1 / sqrt(period) as a (1, 1) tensor built from ``k`` (period may be symbolic; Core ML refuses a
    # rank-0 fill)
    norm = torch.rsqrt((k[:1] * 0 + period).to(torch.float32))
    return torch.cos(angle) * norm, torch.sin(angle) * norm


def rfft2_dft(x: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.fft.rfft2(x, norm="ortho")`` of (..., H, W) as (real, imag), each (..., H, W // 2 + 1),
    computed with matrix products."""
    h, w = x.shape[-2], x.shape[-1]
    cw, sw = _dft_matrices(w, w // 2 + 1, w, x.device)  # (W, Wf), symmetric in the index product
    ch, sh = _dft_matrices(h, h, h, x.device)  # (H, H)
    xf = x.to(torch.float32)
    re_w, im_w = xf @ cw, -(xf @ sw)  # along W: e^{-iθ}
    re = ch @ re_w + sh @ im_w  # along H: (a + ib)(cos - i sin)
    im = ch @ im_w - sh @ re_w
    return re.to(x.dtype), im.to(x.dtype)


def irfft2_dft(re: Tensor, im: Tensor, size: tuple[Any, Any]) -> Tensor:
    """``torch.fft.irfft2(complex(re, im), s=size, norm="ortho")`` with matrix products.

    As ``irfft``, the imaginary parts of the zero-frequency (and, for even W, the Nyquist) column are
    ignored: their sine weights are zero.
    """
    h, w = size
    wf = re.shape[-1]
    ch, sh = _dft_matrices(h, h, h, re.device)
    cw, sw = _dft_matrices(wf, w, w, re.device)  # (Wf, W)
    rf, imf = re.to(torch.float32), im.to(torch.float32)
    zr = ch @ rf - sh @ imf  # inverse along H: (a + ib)(cos + i sin)
    zi = ch @ imf + sh @ rf
    # Hermitian weights: 1 for column 0 and, when W is even, the Nyquist column W/2; 2 for the others
    col = torch.arange(wf, device=re.device)
    # (arithmetic rather than a logical or, which Core ML's converter does not take)
    weight = (2.0 - (col == 0).to(torch.float32) - (2 * col == w).to(torch.float32))[:, None]
    out = zr @ (cw * weight) - zi @ (sw * weight)
    return out.to(re.dtype)


class FourierUnit(nn.Module):
    """rfft2 (ortho) -> 1x1 conv on the interleaved (real, imag) channels -> LeakyReLU 0.2 -> irfft2 back to
    the input size (key ``conv_layer``)."""

    def __init__(self, dim: int, fourier: Fourier) -> None:
        super().__init__()
        self.fourier = fourier
        self.conv_layer = nn.Conv2d(dim * 2, dim * 2, 1, 1, 0)
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if self.fourier == "fft":  # in float32 whatever the model's precision: torch has no half FFT on CPU
            spec = torch.fft.rfft2(x.float(), norm="ortho")
            re, im = spec.real.to(x.dtype), spec.imag.to(x.dtype)
        else:
            re, im = rfft2_dft(x)
        wf = re.shape[-1]
        # channels interleaved as (c0 real, c0 imag, c1 real, ...), the official layout
        f = torch.stack((re, im), dim=2).reshape(b, 2 * c, h, wf)
        f = self.relu(self.conv_layer(f)).reshape(b, c, 2, h, wf)
        re, im = f[:, :, 0], f[:, :, 1]
        if self.fourier == "fft":
            out = torch.fft.irfft2(torch.complex(re.float(), im.float()), s=(h, w), norm="ortho")
            return out.to(x.dtype)
        return irfft2_dft(re, im, (h, w))


class SpectralTransform(nn.Module):
    """1x1 conv to half width + LeakyReLU (key ``conv1.0``), a Fourier unit (``fu``) added to its input, 1x1
    conv back (``conv2``)."""

    def __init__(self, dim: int, fourier: Fourier) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(dim, dim // 2, 1, 1, 0), nn.LeakyReLU(0.2))
        self.fu = FourierUnit(dim // 2, fourier)
        self.conv2 = nn.Conv2d(dim // 2, dim, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class ResB(nn.Module):
    """conv 3x3 (to width / ``red``) -> LeakyReLU 0.2 -> conv 3x3, plus the input (key ``body``)."""

    def __init__(self, dim: int, red: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim // red, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(dim // red, dim, 3, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class SFB(nn.Module):
    """Spatial-frequency block: a spatial residual branch ``S`` and a spectral branch ``F``, concatenated and
    fused by a 1x1 conv (``fusion``). ``red`` 2 is the official ``HSFB``."""

    def __init__(self, dim: int, red: int, fourier: Fourier) -> None:
        super().__init__()
        self.S = ResB(dim, red)
        self.F = SpectralTransform(dim, fourier)
        self.fusion = nn.Conv2d(dim * 2, dim, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.fusion(torch.cat([self.S(x), self.F(x)], dim=1))


class SwinFIR(nn.Module):
    """SwinFIR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4; ``nearest+conv``: 4 only, as officially); the official ``upscale``.
        img_size: training patch size (60 for the releases); sizes the stored ``attn_mask`` buffers (and, as
            officially, a window not smaller than it shrinks to it without shifting).
        embed_dim: transformer width (180 SwinFIR, 60 SwinFIR-T).
        depths: Swin blocks per group.
        num_heads: attention heads per group.
        window_size: attention window (12 for the releases); tiles must be at least this size.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias on the qkv projections.
        img_range: the network's internal value range (1.0 for the releases).
        upsampler: ``pixelshuffle`` (SwinFIR), ``pixelshuffledirect`` (SwinFIR-T) or ``nearest+conv``.
        resi_connection: ``SFB`` (SwinFIR) or ``HSFB`` (SwinFIR-T: the spatial branch halved).
        num_feat: channels of the ``pixelshuffle`` / ``nearest+conv`` heads.
        patch_norm: LayerNorm after the patch embedding.
        fourier: ``fft`` (torch.fft) or ``dft`` (matrix products; for targets without FFT ops).

    Raises:
        ConfigError: an unsupported scale, upsampler, residual connection or Fourier form, or heads that do
            not divide the width.
    """

    mean: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        *,
        scale: int = 4,
        img_size: int = 60,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 12,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        img_range: float = 1.0,
        upsampler: Upsampler = "pixelshuffle",
        resi_connection: ResiConnection = "SFB",
        num_feat: int = 64,
        patch_norm: bool = True,
        fourier: Fourier = "fft",
    ) -> None:
        super().__init__()
        check_scale(scale)
        if len(depths) != len(num_heads):
            raise ConfigError(None, f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if any(embed_dim % h for h in num_heads):
            raise ConfigError(None, f"embed_dim {embed_dim} is not divisible by num_heads {list(num_heads)}")
        if resi_connection not in ("SFB", "HSFB"):
            raise ConfigError(
                None, f"resi_connection {resi_connection!r} is not supported; choose SFB or HSFB"
            )
        if fourier not in ("fft", "dft"):
            raise ConfigError(None, f"fourier {fourier!r} is not supported; choose fft or dft")
        self.scale, self.img_range, self.upsampler, self.fourier = scale, img_range, upsampler, fourier
        # Official rule: a window not smaller than the training patch shrinks to it and disables the shift.
        self.window_size = min(window_size, img_size)
        self.shift = window_size // 2 if img_size > window_size else 0
        if img_size % self.window_size:
            raise ConfigError(
                None, f"img_size {img_size} is not a multiple of window_size {self.window_size}"
            )
        self.register_buffer("mean", torch.tensor(SWINFIR_MEAN).view(1, 3, 1, 1), persistent=False)
        red = 1 if resi_connection == "SFB" else 2

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
            RSTB(dim=embed_dim, blocks=blocks(d, h), conv=SFB(embed_dim, red, fourier))  # closed by an SFB
            for d, h in zip(depths, num_heads)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
            self.upsample: nn.Module = Upsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(scale, embed_dim, 3)
        elif upsampler == "nearest+conv":
            if scale != 4:
                raise ConfigError(None, f"the nearest+conv upsampler supports scale 4 only, not {scale}")
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
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

    def for_target(self, target: str) -> nn.Module:
        """The form ``edge_sr.convert.export`` exports for ``target``: the DFT form (a copy) for targets
        without complex tensors (CoreML, TFLite, ExecuTorch); ONNX and PT2 keep the FFT."""
        if self.fourier == "fft" and target in ("coreml", "tflite", "executorch"):
            return use_fourier(copy.deepcopy(self), "dft")
        return self

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if not torch.compiler.is_compiling():
            check_tile(self, int(h), int(w))
        mean = self.mean.to(x.dtype)
        x = (mirror_pad_next_window(x, self.window_size) - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif self.upsampler == "nearest+conv":
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            x = self.upsample(x)
        return crop(x, h * self.scale, w * self.scale) / self.img_range + mean


def use_fourier(model: nn.Module, fourier: Fourier) -> nn.Module:
    """Switch every Fourier unit of ``model`` to ``fourier`` in place (same weights; returns ``model``).

    ``use_fourier(model, "dft")`` gives the form Core ML and TFLite convert; its card is updated so the
    artifact's manifest records it.
    """
    if fourier not in ("fft", "dft"):
        raise ConfigError(None, f"fourier {fourier!r} is not supported; choose fft or dft")
    for m in model.modules():
        if isinstance(m, (FourierUnit, SwinFIR)):
            m.fourier = fourier
    from dataclasses import replace

    from edge_sr.models.card import card_of, has_card

    if has_card(model):
        card = card_of(model)
        replace(card, args={**card.args, "fourier": fourier}).attach(model)
    return model


@register_model(family="swinfir", kind="heavy")
def swinfir(**overrides) -> SwinFIR:
    """SwinFIR (classical SR): 180 wide, 6 groups of 6 blocks, window 12, SFB, pixel-shuffle head."""
    return SwinFIR(
        **{
            "embed_dim": 180,
            "depths": (6,) * 6,
            "num_heads": (6,) * 6,
            "upsampler": "pixelshuffle",
            "resi_connection": "SFB",
            **overrides,
        }
    )


@register_model(family="swinfir", kind="heavy")
def swinfir_t(**overrides) -> SwinFIR:
    """SwinFIR-T (lightweight SR): 60 wide, groups of 6/5/5/6 blocks, window 12, HSFB, one-step tail."""
    return SwinFIR(
        **{
            "embed_dim": 60,
            "depths": (6, 5, 5, 6),
            "num_heads": (6,) * 4,
            "upsampler": "pixelshuffledirect",
            "resi_connection": "HSFB",
            **overrides,
        }
    )


# ---- detection


def _img_size(state: StateDict, depths: tuple[int, ...], ws: int) -> int | None:
    """The training patch size from the first stored ``attn_mask`` (``(img_size / ws)²`` windows)."""
    for i, depth in enumerate(depths):
        for j in range(1, depth, 2):
            mask = shape(state, f"layers.{i}.residual_group.blocks.{j}.attn_mask")
            if mask is not None:
                return math.isqrt(mask[0]) * ws
    return None


@register_detector("swinfir")
def _detect(state: StateDict) -> Detection | None:
    """SwinFIR or SwinFIR-T from the official key layout."""
    spatial = shape(state, "layers.0.conv.S.body.0.weight")
    if spatial is None or "layers.0.conv.F.fu.conv_layer.weight" not in state:
        return None
    body = swin_body_args(state)
    if body is None:
        return None
    dim, ws, depths = body["embed_dim"], body["window_size"], body["depths"]
    if spatial[0] == dim:
        resi = "SFB"
    elif spatial[0] == dim // 2:
        resi = "HSFB"
    else:
        return None
    img_size = _img_size(state, depths, ws)
    assumed = {
        "img_range": "not stored; 1.0, the value of every SwinFIR release",
        "fourier": "not a weight; fft (torch.fft), the official form; dft for targets without FFT ops",
    }
    if img_size is None:  # no shifted block stored a mask: depth 1 everywhere, or a window = patch size
        img_size = ws if all(d < 2 for d in depths) else 5 * ws
        assumed["img_size"] = f"no attn_mask stored; {img_size}, which only sizes that buffer"
    args: dict[str, Any] = {
        "scale": 0,
        "img_size": img_size,
        "embed_dim": dim,
        "depths": depths,
        "num_heads": body["num_heads"],
        "window_size": ws,
        "mlp_ratio": body["mlp_ratio"],
        "qkv_bias": body["qkv_bias"],
        "patch_norm": body["patch_norm"],
        "resi_connection": resi,
    }
    if "conv_up1.weight" in state:
        before = shape(state, "conv_before_upsample.0.weight")
        if before is None:
            return None
        args.update(scale=4, upsampler="nearest+conv", num_feat=before[0])
    elif (head := classical_head(state)) is not None:
        args.update(scale=head[0], upsampler="pixelshuffle", num_feat=head[1])
    elif (one := shape(state, "upsample.0.weight")) is not None and "upsample.2.weight" not in state:
        scale = math.isqrt(one[0] // 3)
        if scale * scale * 3 != one[0]:
            return None
        args.update(scale=scale, upsampler="pixelshuffledirect")
    else:
        return None  # no upsampler: a restoration model, not SR
    args.update(img_range=1.0, fourier="fft")
    arch = "swinfir_t" if args["upsampler"] == "pixelshuffledirect" else "swinfir"
    return Detection(arch, args, mean=SWINFIR_MEAN, assumed=assumed)
