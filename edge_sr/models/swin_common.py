"""Window-attention pieces shared by SwinIR and HAT, written so ``torch.export`` keeps H and W dynamic.

The official implementations build the shifted-window mask with Python slice loops at a fixed size, keep it
in a buffer, and pick it with ``if input_resolution == x_size``; exported graphs then bake in the traced
size. Here every size-dependent tensor is computed inside ``forward`` from the runtime (possibly symbolic)
height and width, with tensor ops only:

- padding to the window multiple: ``pad = ceil(h / ws) * ws - h`` (a symbolic expression, reflect pad);
- the cyclic shift is two slices and a concat (no ``torch.roll``, which some targets lack);
- the shifted-window mask labels each row/column with its region via ``arange`` comparisons;
- the relative position bias depends on the window only: a gather from a constant index buffer.

Shapes use ``(B, H, W, C)`` for token maps and ``(B·nW, ws·ws, C)`` for windows, as the official code.

:func:`swin_body_args` reads the arguments SwinIR and HAT share from a state dict's shapes (width,
blocks and heads per group, window, MLP ratio, biases, norms, residual connection, reconstruction head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.card import card_of, has_card
from edge_sr.models.detect import has, indices, shape
from edge_sr.models.edsr import pixelshuffle_scale

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean used by SwinIR and HAT for 3-channel input


def pad_to_window(x: Tensor, ws: int) -> Tensor:
    """Reflect-pad (N, C, H, W) at the bottom/right to multiples of ``ws`` (the official test-time padding)."""
    h, w = x.shape[-2], x.shape[-1]
    # ceil(h / ws) * ws - h: written with floor division so the padded size is symbolically ws * k,
    # which lets the window reshapes below be proven exact for every h in a dynamic range.
    pad_h = ((h + ws - 1) // ws) * ws - h
    pad_w = ((w + ws - 1) // ws) * ws - w
    # Reflect padding needs pad < size; true for every size >= ws (checked at the model's entry). Stating
    # it keeps export from guarding on it.
    torch._check(pad_h < h)
    torch._check(pad_w < w)
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def crop(x: Tensor, h: Any, w: Any) -> Tensor:
    """The top-left (h, w) of (N, C, H', W') as a new tensor.

    A gather rather than a slice: a slice view keeps the padded row stride, and export then guards on its
    memory layout (which differs between padded and unpadded sizes), tying the graph to one of them.
    """
    return gather_hw(x, torch.arange(h, device=x.device), torch.arange(w, device=x.device))


def gather_hw(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[:, :, rows][:, :, :, cols]`` of (N, C, H, W) as two ``index_select``, on a contiguous copy.

    A (B, C, H, W) view of a (B, H·W, C) token map has channels-last strides, and so does every conv after
    it. ExecuTorch's portable ``index_select`` needs its input and output in one dim order (the output is
    planned contiguous), so the input is made contiguous first.
    """
    return x.contiguous().index_select(2, rows).index_select(3, cols)


def window_partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B·nW, ws·ws, C), windows in row-major order per image (H, W multiples of ws)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: Tensor, ws: int, b: Any, h: Any, w: Any) -> Tensor:
    """(B·nW, ws·ws, C) -> (B, H, W, C); the inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    # explicit sizes, no -1: inferring a dimension from a symbolic numel makes export guard on divisibility
    x = windows.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def cyclic_shift(x: Tensor, shift: int) -> Tensor:
    """``torch.roll(x, (shift, shift), dims=(1, 2))`` on (B, H, W, C) as slices + concat (shift may be < 0)."""
    s = shift
    x = torch.cat([x[:, -s:], x[:, :-s]], dim=1)
    return torch.cat([x[:, :, -s:], x[:, :, :-s]], dim=2)


def shifted_window_mask(h: Any, w: Any, ws: int, shift: int, device: torch.device | None = None) -> Tensor:
    """Attention mask for shifted windows on an (h, w) map: (nW, ws·ws, ws·ws), 0 inside a region, -100 across.

    Attention takes it repeated per image, ``mask.repeat(B, 1, 1)``: (B·nW, N, N).

    Equal to the official ``calculate_mask``: rows [0, h-ws), [h-ws, h-shift), [h-shift, h) form regions
    0, 1, 2 (columns alike), the label is 3·row_region + col_region, and tokens of one window may attend to
    each other only when their labels match. Built from ``arange`` comparisons so ``h``/``w`` can be symbolic.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_region = (rows >= h - ws).to(torch.int64) + (rows >= h - shift).to(torch.int64)  # (h,)
    col_region = (cols >= w - ws).to(torch.int64) + (cols >= w - shift).to(torch.int64)  # (w,)
    label = row_region[:, None] * 3 + col_region[None, :]  # (h, w)
    win = window_partition(label[None, :, :, None], ws)[..., 0]  # (nW, ws·ws)
    diff = win[:, None, :] - win[:, :, None]  # (nW, N, N): [w, i, j] = label_j - label_i
    return torch.where(diff != 0, -100.0, 0.0).to(torch.float32)


def relative_position_index(ws: int) -> Tensor:
    """(ws², ws²) int64 index into the (2ws-1)² bias table, as Swin computes it."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(
        1
    )  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2), each in [-(ws-1), ws-1]
    return (rel[..., 0] + ws - 1) * (2 * ws - 1) + (rel[..., 1] + ws - 1)


def relative_position_index_overlap(ws: int, ows: int) -> Tensor:
    """(ws², ows²) index into the (ws+ows-1)² table of HAT's overlapping cross-attention (query ws, key ows)."""
    ori = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(
        1
    )  # (2, ws²)
    ext = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")).flatten(1)
    rel = (ext[:, None, :] - ori[:, :, None]).permute(1, 2, 0)  # (ws², ows², 2), each in [-(ws-1), ows-1]
    off = ws - ows + 1  # the official shift, then the official row stride ws + ows - 1
    return (rel[..., 0] + off) * (ws + ows - 1) + (rel[..., 1] + off)


class Mlp(nn.Module):
    """Token MLP: Linear -> GELU -> Linear (keys ``fc1``, ``fc2``)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    (B·nW, N, C) -> (B·nW, N, C) with N = ws². ``own_index`` registers the persistent
    ``relative_position_index`` buffer (SwinIR checkpoints carry one per block; HAT keeps one at model level
    and passes it in).
    """

    relative_position_index: Tensor  # (ws², ws²) buffer, when the attention owns it

    def __init__(
        self, *, dim: int, window_size: int, num_heads: int, qkv_bias: bool, own_index: bool
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        if own_index:
            self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, rpi: Tensor | None = None) -> Tensor:
        b_, n, c = x.shape
        # (B·nW, N, 3C) -> (3, B·nW, heads, N, d)
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)  # (B·nW, heads, N, N)
        index = self.relative_position_index if rpi is None else rpi
        bias = self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            # mask: (B·nW, N, N), already repeated per image (windows are image-major)
            attn = attn + mask[:, None].to(attn.dtype)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Upsample(nn.Sequential):
    """conv + PixelShuffle(2) per factor 2, or one conv + PixelShuffle(3) (keys ``0``, ``2`` ...)."""

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ConfigError(None, f"scale {scale} is not supported; choose 2, 3 or 4")
        super().__init__(*layers)


class UpsampleOneStep(nn.Sequential):
    """Lightweight tail: one conv to out·s² channels, then PixelShuffle(s) (key ``0``)."""

    def __init__(self, scale: int, num_feat: int, num_out: int) -> None:
        super().__init__(nn.Conv2d(num_feat, scale * scale * num_out, 3, 1, 1), nn.PixelShuffle(scale))


def check_scale(scale: int) -> None:
    if scale not in (2, 3, 4):
        raise ConfigError(None, f"scale {scale} is not supported; choose 2, 3 or 4")


def min_tile_size(model: nn.Module) -> int:
    """The smallest tile (LR pixels per side) a window-attention model accepts: its window size; 1 otherwise."""
    return int(getattr(model, "window_size", 1))


def check_tile(model: nn.Module, h: int, w: int) -> None:
    """Raise ``ConfigError`` when an (h, w) input is smaller than the model's window."""
    ws = min_tile_size(model)
    if h < ws or w < ws:
        name = card_of(model).arch if has_card(model) else type(model).__name__
        raise ConfigError(
            None,
            f"{name}: tile {h}x{w} is smaller than the attention window {ws}; use tiles of at least {ws} px",
        )


# ---- detection helpers (shapes only)


def window_from_table(rows: int) -> int | None:
    """The window ``ws`` of a ``(2ws - 1)²``-row relative position bias table, or None."""
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        return None
    return (side + 1) // 2


def ratio_of(hidden: int, dim: int) -> float:
    """An MLP ratio ``r`` with ``int(dim · r) == hidden`` (the constructors' rounding)."""
    r = hidden / dim
    for cand in (r, round(r, 6), r + 1e-9):
        if int(dim * cand) == hidden:
            return float(cand)
    return r


def swin_body_args(state: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Shared SwinIR / HAT arguments read from shapes, or None when the keys are not of that layout.

    Returns ``embed_dim``, ``depths`` and ``num_heads`` (tuples, one entry per residual group; heads from
    each group's first ``relative_position_bias_table``), ``window_size`` (from that table's rows),
    ``mlp_ratio`` (``fc1`` width), ``qkv_bias``, ``patch_norm``, ``resi_connection`` (``1conv`` /
    ``3conv``) and ``colors`` (the first conv's input channels, for the caller to check).
    """
    first = shape(state, "conv_first.weight")
    groups = indices(state, "layers.")
    if first is None or len(first) != 4 or not groups or groups != list(range(len(groups))):
        return None
    dim = first[0]
    depths, heads = [], []
    for i in groups:
        blocks = indices(state, f"layers.{i}.residual_group.blocks.")
        table = shape(state, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")
        if not blocks or table is None or len(table) != 2:
            return None
        depths.append(len(blocks))
        heads.append(table[1])
    table = shape(state, "layers.0.residual_group.blocks.0.attn.relative_position_bias_table")
    fc1 = shape(state, "layers.0.residual_group.blocks.0.mlp.fc1.weight")
    assert table is not None
    ws = window_from_table(table[0])
    if ws is None or fc1 is None:
        return None
    if has(state, "conv_after_body.weight"):
        resi = "1conv"
    elif has(state, "conv_after_body.0.weight", "conv_after_body.2.weight", "conv_after_body.4.weight"):
        resi = "3conv"
    else:
        return None
    return {
        "embed_dim": dim,
        "depths": tuple(depths),
        "num_heads": tuple(heads),
        "window_size": ws,
        "mlp_ratio": ratio_of(fc1[0], dim),
        "qkv_bias": "layers.0.residual_group.blocks.0.attn.qkv.bias" in state,
        "patch_norm": "patch_embed.norm.weight" in state,
        "resi_connection": resi,
        "colors": first[1],
    }


def classical_head(state: Mapping[str, Tensor]) -> tuple[int, int] | None:
    """(scale, num_feat) of the classical reconstruction head: ``conv_before_upsample.0``, a pixel-shuffle
    ``upsample``, ``conv_last``; None when absent."""
    before = shape(state, "conv_before_upsample.0.weight")
    if before is None or "conv_last.weight" not in state:
        return None
    ups = pixelshuffle_scale(state, "upsample")
    if ups is None or ups[1] != before[0]:
        return None
    return ups[0], before[0]
