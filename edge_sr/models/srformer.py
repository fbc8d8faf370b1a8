"""SRFormer: Permuted Self-Attention for Single Image Super-Resolution (Zhou et al., ICCV 2023).

SRFormer is SwinIR with its window attention replaced by permuted self-attention (PSA): queries keep every
token of a ``ws × ws`` window, while keys and values are projected to half the channels and each 2×2 group
of tokens is folded into one token of a ``ws/2 × ws/2`` window (its four quarter-width vectors concatenated),
so attention is ``ws² × ws²/4``. The MLP is a ConvFFN (a 5×5 depthwise conv plus GELU added inside the
hidden layer).

Parameter names follow the official ``basicsr/archs/srformer_arch.py`` (HVision-NKU/SRFormer), so released
``.pth`` files load unchanged with strict key checking: ``conv_first``, ``patch_embed.norm``,
``layers.{i}.residual_group.blocks.{j}.{norm1, attn.{relative_position_bias_table,
aligned_relative_position_index, kv, q, proj}, norm2, mlp.{fc1, dwconv.depthwise_conv.0, fc2}}``,
``layers.{i}.residual_group.blocks.{odd j}.attn_mask``, ``layers.{i}.conv``, ``norm``, ``conv_after_body``,
then ``conv_before_upsample.0``, ``upsample.{0,2}``, ``conv_last`` (classical), ``upsample.0``
(lightweight), or ``conv_before_upsample.0``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``
(``nearest+conv``, ×4 only as officially).

Buffers: official files carry ``aligned_relative_position_index`` per block and, for shifted blocks,
``attn_mask`` sized for the training patch rounded up to the window multiple (``img_size`` 48 → 48 with the
paper's 24 window, 64 → 66 for the DF2K releases' 22 window). Both are persistent so those files load
strictly; ``forward`` recomputes the mask from the runtime size (tensor ops only, as
:mod:`edge_sr.models.swin_common`), so one exported graph serves every size. The official permuted-window
labels give the last window row / column one region each (its middle slice is empty); the mask here is the
same.

Contract: (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale) with the DIV2K mean subtracted inside
(``img_range`` 1); inputs are reflect-padded to the window multiple and the output cropped, as the official
forward does. Tiles must be at least one window (``window_size`` px).

Detection (:func:`_detect`) reads every argument from shapes: ``embed_dim`` (``conv_first``), blocks and
heads per group (the bias tables' columns), ``window_size`` (the tables hold ``(ws - 1)²`` rows: the
permuted window is ``ws / 2``), ``img_size`` (a stored ``attn_mask`` holds ``(img_size / ws)²`` windows),
``mlp_ratio`` (``fc1``), ``qkv_bias``, ``patch_norm``, ``resi_connection``, the upsampler, its scale and
``num_feat``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models.detect import Detection, StateDict, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.swin_common import (
    RGB_MEAN,
    Upsample,
    UpsampleOneStep,
    check_scale,
    check_tile,
    classical_head,
    crop,
    cyclic_shift,
    min_tile_size,
    pad_to_window,
    ratio_of,
    relative_position_index,
    swin_body_args,
    window_partition,
    window_reverse,
)
from edge_sr.models.swinir import RSTB, PatchEmbed, init_weights, resi_conv

__all__ = ["SRFormer", "min_tile_size", "permuted_window_mask", "srformer", "srformer_light"]

Upsampler = Literal["pixelshuffle", "pixelshuffledirect", "nearest+conv"]


def aligned_relative_position_index(ws: int) -> Tensor:
    """(ws², (ws/2)²) index into the ``(ws - 1)²``-row bias table: query (r, c) of the ws window takes the
    Swin index of permuted token (r // 2, c // 2) against each permuted key, as the official buffer."""
    p = ws // 2
    index = relative_position_index(p)  # (p², p²)
    return index.reshape(p, 1, p, 1, p * p).expand(p, 2, p, 2, p * p).reshape(ws * ws, p * p)


def _region(idx: Tensor, size: Any, window: int, shift: int) -> Tensor:
    """Shifted-window region of each row (or column) index: 0 before ``size - window``, 1 up to
    ``size - shift``, 2 after (the official slice labelling)."""
    return (idx >= size - window).to(torch.int64) + (idx >= size - shift).to(torch.int64)


def permuted_window_mask(h: Any, w: Any, ws: int, device: torch.device | None = None) -> Tensor:
    """Attention mask of shifted PSA on an (h, w) map (multiples of ``ws``): (nW, ws², (ws/2)²), 0 where a
    query and a permuted key share a region, -100 elsewhere.

    Queries are labelled as in Swin (shift ``ws/2``); permuted keys live on the (h/2, w/2) map in ``ws/2``
    windows, where the official labelling puts the whole last window row (and column) in region 2.
    Computed from ``arange`` comparisons so ``h`` / ``w`` may be symbolic.
    """
    p = shift = ws // 2
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    full = _region(rows, h, ws, shift)[:, None] * 3 + _region(cols, w, ws, shift)[None, :]
    hr, wr = torch.arange(h // 2, device=device), torch.arange(w // 2, device=device)
    half = _region(hr, h // 2, p, shift)[:, None] * 3 + 2 * (wr >= w // 2 - p).to(torch.int64)[None, :]
    q = window_partition(full[None, :, :, None], ws)[..., 0]  # (nW, ws²)
    k = window_partition(half[None, :, :, None], p)[..., 0]  # (nW, p²)
    return torch.where(q[:, :, None] != k[:, None, :], -100.0, 0.0).to(torch.float32)


class PSA(nn.Module):
    """Permuted self-attention in a ws window: (B·nW, ws², C) -> (B·nW, ws², C).

    ``q`` keeps C channels per token; ``kv`` projects to C/2 (k and v of C/4 each), and each 2×2 token
    group of the window becomes one key/value token of C channels (the group's four C/4 vectors in
    row-major order), giving ws²/4 keys.
    """

    aligned_relative_position_index: Tensor  # (ws², (ws/2)²) buffer

    def __init__(self, *, dim: int, window_size: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.permuted = window_size // 2
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * self.permuted - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("aligned_relative_position_index", aligned_relative_position_index(window_size))
        self.kv = nn.Linear(dim, dim // 2, bias=qkv_bias)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b_, n, c = x.shape
        p, heads = self.permuted, self.num_heads
        d = c // heads
        # (B·nW, ws², C/2) -> (B·nW·p², 2 [k, v], 4 [2×2 group], C/4), in ranks of at most 5 (CoreML's limit)
        kv = self.kv(x).reshape(b_ * p, 2, p, 2, c // 2).permute(0, 2, 1, 3, 4)
        kv = kv.reshape(b_ * p * p, 4, 2, c // 4).permute(0, 2, 1, 3)
        kv = kv.reshape(b_, p * p, 2, heads, d).permute(2, 0, 3, 1, 4)  # (2, B·nW, heads, p², d)
        k, v = kv[0], kv[1]
        q = self.q(x).reshape(b_, n, heads, d).transpose(1, 2) * self.scale  # (B·nW, heads, ws², d)
        attn = q @ k.transpose(-2, -1)  # (B·nW, heads, ws², p²)
        index = self.aligned_relative_position_index.reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(n, p * p, heads).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:  # (B·nW, ws², p²), repeated per image (windows are image-major)
            attn = attn + mask[:, None].to(attn.dtype)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class DWConv(nn.Module):
    """5×5 depthwise conv + GELU on the token map (key ``depthwise_conv.0``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(nn.Conv2d(hidden, hidden, 5, 1, 2, groups=hidden), nn.GELU())

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        y = self.depthwise_conv(x.transpose(1, 2).reshape(b, c, hw[0], hw[1]))
        return y.flatten(2).transpose(1, 2)


class ConvFFN(nn.Module):
    """fc1 -> GELU -> (+ depthwise conv branch) -> fc2 (keys ``fc1``, ``dwconv``, ``fc2``)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x, hw))


class PSABlock(nn.Module):
    """PSA transformer block: (B, H·W, C) -> (B, H·W, C), windows shifted by ws/2 when ``shift``."""

    attn_mask: Tensor  # only for shifted blocks: the official training-size mask (checkpoint compatibility)

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        resolution: int,
    ) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PSA(dim=dim, window_size=window_size, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim=dim, hidden=int(dim * mlp_ratio))
        if shift:
            self.register_buffer("attn_mask", permuted_window_mask(resolution, resolution, window_size))

    def forward(self, x: Tensor, hw: tuple[int, int], mask: Tensor | None) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).reshape(b, h, w, c)
        if self.shift:
            y = cyclic_shift(y, -self.shift)
        y = self.attn(window_partition(y, self.window_size), mask=mask if self.shift else None)
        y = window_reverse(y, self.window_size, b, h, w)
        if self.shift:
            y = cyclic_shift(y, self.shift)
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x), hw)


class SRFormer(nn.Module):
    """SRFormer for SR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4); the official ``upscale``.
        img_size: training patch size; rounded up to the window multiple, it sizes the stored ``attn_mask``
            buffers (and, as officially, a patch no larger than one window disables the shift).
        embed_dim: transformer width (a multiple of 4: keys and values are folded in quarters).
        depths: PSA blocks per residual group.
        num_heads: attention heads per residual group.
        window_size: query window (even; 24 in the paper, 22 in the DF2K releases, 16 for SRFormer-light);
            tiles must be at least this size.
        mlp_ratio: ConvFFN hidden width over ``embed_dim``.
        qkv_bias: bias on the q and kv projections.
        img_range: the network's internal value range (1.0 for the released models).
        upsampler: ``pixelshuffle`` (classical), ``pixelshuffledirect`` (lightweight) or ``nearest+conv``
            (real-world SR, ×4 only as officially).
        resi_connection: ``1conv`` or ``3conv``.
        num_feat: channels of the classical / real-world reconstruction head.
        patch_norm: LayerNorm after the patch embedding.

    Raises:
        ConfigError: an unsupported scale or upsampler, an odd window, a width not divisible by 4 or by the
            heads, or ``depths`` and ``num_heads`` of different lengths.
    """

    mean: Tensor  # (1, 3, 1, 1) buffer

    def __init__(
        self,
        *,
        scale: int = 4,
        img_size: int = 48,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 24,
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
        if embed_dim % 4 or any(h < 1 or embed_dim % h for h in num_heads):
            raise ConfigError(
                None, f"embed_dim {embed_dim} must be a multiple of 4 and of num_heads {list(num_heads)}"
            )
        if window_size < 2 or window_size % 2:
            raise ConfigError(None, f"window_size {window_size} must be even: PSA halves it")
        if img_size < 1:
            raise ConfigError(None, f"img_size {img_size} must be positive")
        self.scale, self.img_range, self.upsampler = scale, img_range, upsampler
        self.window_size = window_size
        self.depths, self.num_heads = tuple(depths), tuple(num_heads)
        # Official rule: the patch resolution is img_size rounded up to the window; one window: no shift.
        resolution = -(-img_size // window_size) * window_size
        self.shifted = resolution > window_size
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim=embed_dim, norm=patch_norm)

        def blocks(depth: int, heads: int) -> list[PSABlock]:
            return [
                PSABlock(
                    dim=embed_dim,
                    num_heads=heads,
                    window_size=window_size,
                    shift=self.shifted and i % 2 == 1,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    resolution=resolution,
                )
                for i in range(depth)
            ]

        self.layers = nn.ModuleList(
            RSTB(dim=embed_dim, blocks=blocks(d, h), resi_connection=resi_connection)  # official PSA_Group
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
            if scale != 4:
                raise ConfigError(
                    None, f"the nearest+conv upsampler is x4 only (as officially), not x{scale}"
                )
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
        if self.shifted:  # (B·nW, ws², ws²/4), computed once per forward from the runtime size
            mask = permuted_window_mask(h, w, self.window_size, x.device).repeat(b, 1, 1)
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
            x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            x = self.upsample(x)
        return crop(x, h * self.scale, w * self.scale) / self.img_range + mean

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """As ``nn.Module.load_state_dict``; an SRFormer state dict of another window size, depths or
        heads is refused first with a ``CheckpointError`` saying which."""
        check_config(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_config(model: SRFormer, state: Mapping[str, Any]) -> None:
    """Raise ``CheckpointError`` when ``state`` is an SRFormer state dict whose window size, depths or heads
    differ from ``model``'s, naming them (other mismatches are left to the strict load)."""
    found = _body(dict(state))
    if found is None:
        return
    have = {"window_size": model.window_size, "depths": model.depths, "num_heads": model.num_heads}
    diff = [f"{k} {found[k]} (model {have[k]})" for k in have if found[k] != have[k]]
    if diff:
        raise CheckpointError(
            None, f"the SRFormer checkpoint does not match the model: it has {'; '.join(diff)}"
        )


@register_model(family="srformer", kind="heavy")
def srformer(**overrides: Any) -> SRFormer:
    """SRFormer classical SR: 180 wide, 6 groups of 6 PSA blocks, 24×24 windows (10.40 M at ×2/×4)."""
    return SRFormer(
        **{
            "embed_dim": 180,
            "depths": (6,) * 6,
            "num_heads": (6,) * 6,
            "window_size": 24,
            "img_size": 48,
            "upsampler": "pixelshuffle",
            **overrides,
        }
    )


@register_model(family="srformer", kind="heavy")
def srformer_light(**overrides: Any) -> SRFormer:
    """SRFormer-light: 60 wide, 4 groups of 6 PSA blocks, 16×16 windows, one-step pixel-shuffle tail."""
    return SRFormer(
        **{
            "embed_dim": 60,
            "depths": (6,) * 4,
            "num_heads": (6,) * 4,
            "window_size": 16,
            "img_size": 64,
            "upsampler": "pixelshuffledirect",
            **overrides,
        }
    )


# ---- detection

_PSA = "layers.{i}.residual_group.blocks.{j}.attn"


def _body(state: StateDict) -> dict[str, Any] | None:
    """The shared Swin-body arguments of an SRFormer state dict (window doubled: the tables are the
    permuted window's), or None when its blocks are not PSA blocks."""
    first = _PSA.format(i=0, j=0)
    if f"{first}.kv.weight" not in state or f"{first}.q.weight" not in state:
        return None
    body = swin_body_args(state)
    if body is None:
        return None
    body["window_size"] *= 2
    body["qkv_bias"] = f"{first}.q.bias" in state
    fc1 = shape(state, "layers.0.residual_group.blocks.0.mlp.fc1.weight")
    if fc1 is None or "layers.0.residual_group.blocks.0.mlp.dwconv.depthwise_conv.0.weight" not in state:
        return None
    body["mlp_ratio"] = ratio_of(fc1[0], body["embed_dim"])
    return body


def _resolution(state: StateDict, depths: tuple[int, ...], ws: int) -> int | None:
    """The patch resolution a stored ``attn_mask`` ((res / ws)² windows) was built for, or None."""
    for i, depth in enumerate(depths):
        for j in range(1, depth, 2):
            mask = shape(state, f"layers.{i}.residual_group.blocks.{j}.attn_mask")
            if mask is not None:
                return math.isqrt(mask[0]) * ws
    return None


def _fill_buffers(depths: tuple[int, ...], ws: int, resolution: int) -> Callable[[StateDict], StateDict]:
    """Adds the index and mask buffers a file lacks (forks that keep them out of the state dict); the
    model recomputes the mask and the index is fixed, so the official values complete the file."""

    def adapt(state: StateDict) -> StateDict:
        out = dict(state)
        index = aligned_relative_position_index(ws)
        mask = permuted_window_mask(resolution, resolution, ws)
        for i, depth in enumerate(depths):
            for j in range(depth):
                p = f"layers.{i}.residual_group.blocks.{j}"
                out.setdefault(f"{p}.attn.aligned_relative_position_index", index)
                if j % 2 == 1:
                    out.setdefault(f"{p}.attn_mask", mask)
        return out

    return adapt


@register_detector("srformer")
def _detect(state: StateDict) -> Detection | None:
    """SRFormer (classical, real-world) or SRFormer-light from the official key layout."""
    body = _body(state)
    if body is None:
        return None
    body.pop("colors")  # the zoo's SRFormer is RGB; the skeleton check reports a file that is not
    ws, depths = body["window_size"], body["depths"]
    args: dict[str, Any] = {"scale": 0, "img_size": 0, **body}
    if "conv_up1.weight" in state:
        before = shape(state, "conv_before_upsample.0.weight")
        if before is None or "conv_up2.weight" not in state:
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
        return None  # denoising / JPEG models (no upsampler): not an SR model
    args["img_range"] = 1.0
    assumed = {"img_range": "not stored; 1.0, the value of every SRFormer SR release"}
    has_index = f"{_PSA.format(i=0, j=0)}.aligned_relative_position_index" in state
    resolution = _resolution(state, depths, ws)
    shifted = any(d > 1 for d in depths)
    adapt = None
    if resolution is not None:
        args["img_size"] = resolution
    elif has_index or not shifted:
        # an official file without masks: the training patch fit in one window, so no block is shifted
        args["img_size"] = ws
    else:
        args["img_size"] = ws * max(2, -(-64 // ws))
        assumed["img_size"] = (
            f"no attn_mask stored; {args['img_size']}, which only sizes that buffer (windows shifted as in "
            "every release)"
        )
        adapt = _fill_buffers(depths, ws, args["img_size"])
    if resolution is not None and not has_index:
        adapt = _fill_buffers(depths, ws, resolution)
    arch = "srformer_light" if args["upsampler"] == "pixelshuffledirect" else "srformer"
    return Detection(
        arch,
        args,
        mean=RGB_MEAN,
        layout="official" if adapt is None else "official-nobuffers",
        assumed=assumed,
        adapt=adapt,
    )
