"""LIIF: Local Implicit Image Function (Chen et al., CVPR 2021), with UltraSR's spatial encoding as an option
(Xu et al., "UltraSR: Spatial Encoding is a Missing Key for Implicit Image Function-based Arbitrary-Scale SR",
2021). One network upscales by any factor.

An encoder maps the LR image to a feature map of its size; every output pixel is then decoded by an MLP
(``imnet``) from the features around it. For an output pixel whose centre lies at ``u`` (in LR pixel units,
LR pixel centres at integers):

- *local ensemble*: the four LR cells nearest ``u`` (one step of half a pixel up / down and left / right
  from ``u``, then the nearest centre, clamped to the image) each predict the pixel; the predictions are
  blended with the area of the rectangle between ``u`` and the diagonally opposite cell's centre;
- *feature unfolding*: each cell's feature is the 3x3 neighbourhood of the map, stacked (C·9 channels,
  zero beyond the border, channel-major as ``F.unfold`` orders it);
- *cell decoding*: the MLP also sees the output pixel's size ``2·h / H`` (LIIF's units: the image spans 2).

The MLP input is ``[feature (C·9), rel_y, rel_x, cell_y, cell_x]`` with ``rel = 2·(u - centre)``, exactly
the official ``models/liif.py`` (``yinboc/liif``): its ``edsr-baseline`` encoder with ``no_upsampling``
(keys ``encoder.sub_mean`` / ``add_mean``, stored but unused, ``encoder.head.0``,
``encoder.body.{i}.body.{0,2}``, ``encoder.body.16``) and ``imnet.layers.{0,2,4,6,8}`` (Linear layers of
``hidden_list [256] * 4``), with inputs normalized to [-1, 1] and outputs mapped back (its ``data_norm``
``sub 0.5, div 0.5``). A released checkpoint (``{'model': {'name', 'args', 'sd'}}``) loads strictly.
LIIF with EDSR-baseline: encoder 1.22 M parameters (1,220,440 with the two frozen 3x3 mean shifts) and
MLP 0.35 M (346,883), 1.57 M in all.

UltraSR (``spatial_freqs=L``) feeds the MLP a periodic encoding of the relative coordinate and cell,
``g(p) = [p, sin(2^k·π·p), cos(2^k·π·p) for k < L]`` per component, instead of the raw values. UltraSR
has released no code (its repository holds a README and figures), so there are no official keys to follow:
the MLP keeps LIIF's names, its input grows to ``C·9 + 4·(2L + 1)``, and ``L`` is ours to choose (UltraSR's
deeper integration of the encoding into later MLP layers is not reproduced).

The edge encoder (``liif_edge``) is ECBSR's body without its tail: ECBs that fuse into plain 3x3 convs.

How the decoder computes (the same code runs on the host, in tiles and in exported artifacts): the MLP's
first layer is linear, so its feature part is applied once per LR cell (a 1x1 conv to ``hidden[0]``
channels) and its coordinate part once per output row and once per output column (the coordinates of a
grid are separable); output pixels then gather their cells' projected features by index. Equal to the
official per-query concatenation up to float rounding; memory goes with the output rows decoded at once
(``query_batch``), not with C·9·H·W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError, InputError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.ecbsr import ECB
from edge_sr.models.edsr import MeanShift, ResBlock, conv3x3
from edge_sr.models.registry import register_model

EncoderName = Literal["edsr", "ecb"]
_EPS_PIXEL = (
    5e-7  # tie-break of the nearest cell (the official adds 1e-6 in [-1, 1] units): ties go down-right
)
_AREA_EPS = 1e-9  # the official's guard against an empty blend area


class EDSREncoder(nn.Module):
    """LIIF's ``edsr-baseline`` with ``no_upsampling``: (N, 3, h, w) in [-1, 1] -> (N, n_feats, h, w).

    ``sub_mean`` / ``add_mean`` are in the state dict (official keys) but, as in LIIF, never applied.
    """

    def __init__(self, *, n_resblocks: int, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.sub_mean = MeanShift(1.0)
        self.add_mean = MeanShift(1.0, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], conv3x3(n_feats, n_feats)
        )
        self.out_dim = n_feats
        self.radius = 2 * n_resblocks + 2  # 3x3 convs in a chain: the receptive field's reach in pixels

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        return self.body(x) + x


class ECBEncoder(nn.Module):
    """ECBSR's body without the tail: ``blocks + 1`` ECBs (PReLU), (N, 3, h, w) -> (N, channels, h, w)."""

    def __init__(self, *, blocks: int, channels: int, act: str = "prelu") -> None:
        super().__init__()
        layers = [ECB(in_channels=3, out_channels=channels, act=act)]
        layers += [ECB(in_channels=channels, out_channels=channels, act=act) for _ in range(blocks)]
        self.backbone = nn.Sequential(*layers)
        self.out_dim = channels
        self.radius = blocks + 1

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


class MLP(nn.Module):
    """LIIF's ``imnet``: Linear + ReLU per hidden width, then Linear to RGB (keys ``layers.{0,2,...}``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


# ---- query geometry: where each output row (or column) reads the feature map


@dataclass(frozen=True)
class AxisQuery:
    """The queries along one axis of an output grid (numpy: constants wherever the model is traced).

    Attributes:
        idx: (S, n) int64: the LR cell each output position reads for each ensemble step (S = 2 with the
            local ensemble: one step back, one forward; else 1).
        rel: (S, n) float64: ``2·(u - idx)``, the position relative to that cell's centre (LIIF's units).
        cell: ``2·lr / out``, the output pixel's size.
    """

    idx: np.ndarray
    rel: np.ndarray
    cell: float

    def part(self, a: int, b: int, origin: int = 0) -> AxisQuery:
        """Output positions ``a .. b``, reading a tile that starts at LR pixel ``origin``."""
        return AxisQuery(self.idx[:, a:b] - origin, self.rel[:, a:b], self.cell)


def axis_query(lr: int, out: int, *, ensemble: bool = True) -> AxisQuery:
    """The queries of the ``out`` output positions along an axis of ``lr`` LR pixels.

    Output pixel ``i``'s centre lies at ``u = (i + 0.5)·lr / out - 0.5`` LR pixels; a step of ``±0.5`` (the
    official ``±1 / lr`` in [-1, 1] units) then the nearest centre, clamped to ``[0, lr - 1]``, is its cell.
    """
    u = (np.arange(out, dtype=np.float64) + 0.5) * lr / out - 0.5
    steps = (-0.5, 0.5) if ensemble else (0.0,)
    idx = np.stack([np.clip(np.floor(u + v + _EPS_PIXEL + 0.5), 0, lr - 1) for v in steps])
    return AxisQuery(idx.astype(np.int64), 2 * (u[None] - idx), 2.0 * lr / out)


def blend_weights(rows: AxisQuery, cols: AxisQuery) -> np.ndarray:
    """(S·S, n_rows, n_cols) float64: each ensemble member's weight, the area opposite it over the total."""
    areas = [np.abs(ry[:, None] * rx[None, :]) + _AREA_EPS for ry in rows.rel for rx in cols.rel]
    return np.stack(areas[::-1]) / np.sum(areas, 0)  # member k is weighted by the diagonally opposite area


class Grid(NamedTuple):
    """What :meth:`LIIF.decode` reads for one block of output pixels (all tensors; buffers in an export).

    Attributes:
        row_idx, col_idx: (S, n) / (S, m) long: the LR row / column of each ensemble step.
        row_term, col_term: (S, n, hid) / (S, m, hid): the first MLP layer's coordinate part for each output
            row / column (the cell's part folded into ``row_term``).
        weights: (S·S, n, m): the ensemble's blend weights.
    """

    row_idx: Tensor
    col_idx: Tensor
    row_term: Tensor
    col_term: Tensor
    weights: Tensor


def _encode(p: Any, freqs: int | None) -> Any:
    """(...) -> (..., 1 + 2L): UltraSR's ``[p, sin(2^k π p), cos(2^k π p)]`` (``p`` alone without ``freqs``),
    on numpy arrays (constant grids) or tensors (training's sampled points)."""
    xp: Any = np if isinstance(p, np.ndarray) else torch
    if not freqs:
        return p[..., None]
    a = p[..., None] * (2.0 ** xp.arange(freqs)) * math.pi
    return xp.concatenate([p[..., None], xp.sin(a), xp.cos(a)], -1)


def unfold3x3(feat: Tensor) -> Tensor:
    """(N, C, h, w) -> (N, C·9, h, w): each pixel's 3x3 neighbourhood, zero padded, ``F.unfold``'s order
    (channel-major), as shifted slices (an op every target has)."""
    n, c, h, w = feat.shape
    p = torch.nn.functional.pad(feat, (1, 1, 1, 1))
    return torch.stack([p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)], 2).reshape(
        n, c * 9, h, w
    )


class LIIF(nn.Module):
    """LIIF / UltraSR. (N, 3, h, w) in [0, 1] -> (N, 3, H, W) for any H, W (default ``h·scale``, ``w·scale``).

    Args:
        scale: the factor of a plain ``model(x)`` call (the card's; any other goes through ``scale=`` / ``size=``).
        encoder: ``"edsr"`` (LIIF's EDSR-baseline without upsampler) or ``"ecb"`` (ECBSR's body).
        depth: residual blocks (edsr) or inner ECBs (ecb).
        feats: the encoder's feature channels.
        hidden: the MLP's hidden widths.
        local_ensemble, feat_unfold, cell_decode: LIIF's three components (its ablations turn them off).
        spatial_freqs: UltraSR's spatial encoding with this many frequencies (None: LIIF's raw coordinates).

    ``query_batch`` (an attribute, not an argument: it changes memory, not the function) is how many output
    pixels are decoded at once (whole rows; bounds memory as LIIF's ``batched_predict``).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        encoder: EncoderName = "edsr",
        depth: int = 16,
        feats: int = 64,
        hidden: Sequence[int] = (256, 256, 256, 256),
        local_ensemble: bool = True,
        feat_unfold: bool = True,
        cell_decode: bool = True,
        spatial_freqs: int | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= scale <= 8:
            raise ConfigError(None, f"scale {scale} is not supported; choose 1-8 (any factor via scale=)")
        if encoder == "edsr":
            self.encoder: nn.Module = EDSREncoder(n_resblocks=depth, n_feats=feats)
        elif encoder == "ecb":
            self.encoder = ECBEncoder(blocks=depth, channels=feats)
        else:
            raise ConfigError(None, f"unknown LIIF encoder {encoder!r}; choose edsr or ecb")
        self.encoder_radius: int = self.encoder.radius
        self.scale = scale
        self.arbitrary_scale = True  # upscale / eval read this: any factor through scale= or size=
        self.local_ensemble, self.feat_unfold, self.cell_decode = local_ensemble, feat_unfold, cell_decode
        self.spatial_freqs = spatial_freqs
        self.query_batch = 65536
        self.feat_dim = feats * (9 if feat_unfold else 1)
        self.coord_dim = 2 * (1 + 2 * (spatial_freqs or 0))  # one axis: its relative position, encoded
        self.imnet = MLP(self.feat_dim + (4 if cell_decode else 2) * self.coord_dim // 2, 3, hidden)

    @property
    def radius(self) -> int:
        """How far (LR pixels) an output pixel's value reaches: the encoder's field, the unfold, the ensemble."""
        return self.encoder_radius + int(self.feat_unfold) + int(self.local_ensemble)

    # ---- the two halves

    def features(self, x: Tensor) -> Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, hidden[0], h, w): the encoder, the unfold and the first MLP layer's
        feature part (its bias included), per LR cell."""
        feat = self.encoder((x - 0.5) / 0.5)  # LIIF's data_norm: inputs in [-1, 1]
        if self.feat_unfold:
            feat = unfold3x3(feat)
        first = self._first()
        w = first.weight[:, : self.feat_dim]
        return torch.nn.functional.conv2d(feat, w[:, :, None, None], first.bias)

    def _first(self) -> nn.Linear:
        """The MLP's first layer (features and coordinates in, ``hidden[0]`` out)."""
        first = self.imnet.layers[0]
        assert isinstance(first, nn.Linear)
        return first

    def _coord_weight(self, k: int) -> Tensor:
        """(hidden[0], 1 + 2L): the first layer's columns for coordinate input ``k`` (rel_y, rel_x, cell_y,
        cell_x in that order, each encoded)."""
        d = self.coord_dim // 2
        start = self.feat_dim + k * d
        return self._first().weight[:, start : start + d]

    def _term(self, values: np.ndarray, k: int, like: Tensor) -> Tensor:
        """(...) coordinates -> (..., hidden[0]): their encoding through the first layer's columns ``k``."""
        enc = torch.as_tensor(_encode(values, self.spatial_freqs), dtype=like.dtype, device=like.device)
        return enc @ self._coord_weight(k).T

    def grid(self, rows: AxisQuery, cols: AxisQuery, like: Tensor) -> Grid:
        """The :class:`Grid` of ``rows`` x ``cols`` (the dtype and device of ``like``)."""
        row_term = self._term(rows.rel, 0, like)
        if self.cell_decode:
            row_term = (
                row_term + self._term(np.array(rows.cell), 2, like) + self._term(np.array(cols.cell), 3, like)
            )
        return Grid(
            torch.as_tensor(rows.idx, device=like.device),
            torch.as_tensor(cols.idx, device=like.device),
            row_term,
            self._term(cols.rel, 1, like),
            torch.as_tensor(blend_weights(rows, cols), dtype=like.dtype, device=like.device),
        )

    def decode(self, proj: Tensor, grid: Grid) -> Tensor:
        """(N, hidden[0], h, w) projected features -> (N, 3, n, m) in [0, 1] (not clamped)."""
        out: Any = 0
        s = grid.col_idx.shape[0]
        for a in range(grid.row_idx.shape[0]):
            # (N, hid, h, w) -> rows -> (N, hid, n, w) -> cols -> (N, hid, n, m)
            band = proj.index_select(2, grid.row_idx[a])
            for b in range(s):
                x = band.index_select(3, grid.col_idx[b])
                x = x + grid.row_term[a].T[None, :, :, None] + grid.col_term[b].T[None, :, None, :]
                for layer in list(self.imnet.layers)[1:]:  # Linear layers as 1x1 convs, NCHW throughout
                    x = _conv1x1(layer, x) if isinstance(layer, nn.Linear) else layer(x)
                out = out + x * grid.weights[a * s + b][None, None]
        assert isinstance(out, Tensor)
        return out * 0.5 + 0.5  # LIIF's data_norm: outputs from [-1, 1]

    # ---- inference

    def output_size(
        self, h: int, w: int, scale: float | None = None, size: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """The output size for an ``h`` x ``w`` input: ``size``, else ``round(h·scale)`` x ``round(w·scale)``."""
        if size is not None:
            hh, ww = int(size[0]), int(size[1])
        else:
            s = float(self.scale if scale is None else scale)
            if not (math.isfinite(s) and s > 0):
                raise ConfigError(None, f"scale {scale} is not a positive factor")
            hh, ww = round(h * s), round(w * s)
        if hh < 1 or ww < 1:
            raise ConfigError(None, f"output size {hh}x{ww} is empty; give a larger scale or size")
        return hh, ww

    def forward(
        self,
        x: Tensor,
        scale: float | None = None,
        size: tuple[int, int] | None = None,
        *,
        coord: Tensor | None = None,
        cell: Tensor | None = None,
    ) -> Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, 3, H, W): ``size`` = (H, W), else the factor ``scale`` (default the
        card's); decoded ``query_batch`` output pixels (whole rows) at a time. With ``coord`` / ``cell``
        (training's sampled points, :meth:`query_points`): (N, Q, 3)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(None, f"LIIF takes (N, 3, H, W) images, got shape {tuple(x.shape)}")
        if coord is not None and cell is not None:
            return self.query_points(self.features(x), coord, cell)
        h, w = x.shape[-2:]
        hh, ww = self.output_size(h, w, scale, size)
        return self.decode_grid(self.features(x), hh, ww)

    def decode_grid(self, proj: Tensor, out_h: int, out_w: int) -> Tensor:
        """The whole (out_h, out_w) output of projected features."""
        h, w = proj.shape[-2:]
        rows = axis_query(h, out_h, ensemble=self.local_ensemble)
        cols = axis_query(w, out_w, ensemble=self.local_ensemble)
        return self._decode_bands(proj, rows, cols)

    def _decode_bands(self, proj: Tensor, rows: AxisQuery, cols: AxisQuery) -> Tensor:
        """:meth:`decode` in bands of whole output rows, ``query_batch`` output pixels each."""
        n, m = rows.idx.shape[1], cols.idx.shape[1]
        step = max(1, self.query_batch // m)
        if step >= n:  # one band (a traced model holds one decode, no concatenation)
            return self.decode(proj, self.grid(rows, cols, proj))
        return torch.cat(
            [self.decode(proj, self.grid(rows.part(r, r + step), cols, proj)) for r in range(0, n, step)], 2
        )

    def upscale(
        self,
        x: Tensor,
        scale: float | None = None,
        size: tuple[int, int] | None = None,
        *,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """:meth:`forward` over LR tiles of ``tile`` pixels (None: whole), equal to the untiled output.

        Each tile runs the encoder with ``overlap`` pixels of context (default and minimum :attr:`radius`,
        the reach of one output pixel, which makes the result exact) and decodes the output pixels whose
        nearest LR centre lies in the tile's kept part (``edge_sr.tiling.plan_axis`` splits the LR axes).
        """
        from edge_sr.tiling import plan_axis

        h, w = x.shape[-2:]
        hh, ww = self.output_size(h, w, scale, size)
        if tile is None or (h <= tile and w <= tile):
            return self.decode_grid(self.features(x), hh, ww)
        ov = self.radius if overlap is None else overlap
        if ov < self.radius or tile <= 2 * ov:
            raise ConfigError(
                None,
                f"tile {tile} / overlap {ov}: this model needs overlap >= {self.radius} and tile > 2·overlap",
            )
        rows = axis_query(h, hh, ensemble=self.local_ensemble)
        cols = axis_query(w, ww, ensemble=self.local_ensemble)
        owner_r, owner_c = _nearest(h, hh), _nearest(w, ww)
        out = x.new_zeros(x.shape[0], 3, hh, ww)
        for sy in plan_axis(h, tile, ov):
            r0, r1 = _owned(owner_r, sy.keep0, sy.keep1)
            for sx in plan_axis(w, tile, ov):
                c0, c1 = _owned(owner_c, sx.keep0, sx.keep1)
                if r1 <= r0 or c1 <= c0:
                    continue
                proj = self.features(x[..., sy.start : sy.start + sy.size, sx.start : sx.start + sx.size])
                part_r, part_c = rows.part(r0, r1, sy.start), cols.part(c0, c1, sx.start)
                out[..., r0:r1, c0:c1] = self._decode_bands(proj, part_r, part_c)
        return out

    def query_points(self, proj: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """Any query points, as training samples them. (N, hid, h, w), (N, Q, 2) centres and (N, Q, 2) cell
        sizes in LIIF's [-1, 1] units (row, column) -> (N, Q, 3) in [0, 1]."""
        n, _, h, w = proj.shape
        lr = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
        u = (coord + 1) * lr / 2 - 0.5  # LR pixel units
        steps = (-0.5, 0.5) if self.local_ensemble else (0.0,)
        flat = proj.flatten(2).transpose(1, 2)  # (N, h·w, hid)
        members, areas = [], []
        for vy in steps:
            for vx in steps:
                v = torch.tensor([vy, vx], dtype=coord.dtype, device=coord.device)
                idx = torch.minimum(torch.floor(u + v + _EPS_PIXEL + 0.5).clamp(min=0), lr - 1)
                rel = 2 * (u - idx)
                x = flat.gather(
                    1, (idx[..., 0] * w + idx[..., 1]).long()[..., None].expand(-1, -1, flat.shape[-1])
                )
                x = (
                    x
                    + _encode(rel[..., 0], self.spatial_freqs) @ self._coord_weight(0).T
                    + _encode(rel[..., 1], self.spatial_freqs) @ self._coord_weight(1).T
                )
                if self.cell_decode:
                    rc = cell * lr
                    x = (
                        x
                        + _encode(rc[..., 0], self.spatial_freqs) @ self._coord_weight(2).T
                        + _encode(rc[..., 1], self.spatial_freqs) @ self._coord_weight(3).T
                    )
                for layer in list(self.imnet.layers)[1:]:
                    x = layer(x)
                members.append(x)
                areas.append((rel[..., 0] * rel[..., 1]).abs() + _AREA_EPS)
        total = torch.stack(areas).sum(0)
        out = sum(m * (a / total)[..., None] for m, a in zip(members, areas[::-1], strict=True))
        assert isinstance(out, Tensor)
        return out * 0.5 + 0.5


def _conv1x1(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer`` on the channels of (N, C, H, W)."""
    return torch.nn.functional.conv2d(x, layer.weight[:, :, None, None], layer.bias)


def _nearest(lr: int, out: int) -> np.ndarray:
    """(out,) the LR pixel nearest each output pixel's centre: which tile decodes it."""
    u = (np.arange(out, dtype=np.float64) + 0.5) * lr / out - 0.5
    return np.clip(np.floor(u + 0.5), 0, lr - 1).astype(np.int64)


def _owned(owner: np.ndarray, keep0: int, keep1: int) -> tuple[int, int]:
    """The output range whose nearest LR pixel lies in ``[keep0, keep1)`` (``owner`` is sorted)."""
    return int(np.searchsorted(owner, keep0)), int(np.searchsorted(owner, keep1))


class FixedSizeLIIF(nn.Module):
    """The encoder and a decoder for one input and one output size, for export: (N, 3, h, w) -> (N, 3, H, W).

    The query grid is baked in as buffers (:class:`Grid`: the gather indices of each output row and column,
    their first-layer coordinate terms and the blend weights, computed from ``model``'s weights when this is
    built), so the graph holds the encoder, a 1x1 conv, gathers (``index_select``), broadcast adds, the
    remaining Linear layers and a weighted sum, and nothing that depends on the scale at run time. Carries
    the model's card.
    """

    def __init__(self, model: LIIF, in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        (h, w), (hh, ww) = in_size, out_size
        self.in_size, self.out_size = (int(h), int(w)), (int(hh), int(ww))
        rows = axis_query(h, hh, ensemble=model.local_ensemble)
        cols = axis_query(w, ww, ensemble=model.local_ensemble)
        ref = next(model.parameters())
        with torch.no_grad():
            for name, t in model.grid(rows, cols, ref)._asdict().items():
                self.register_buffer(name, t.detach().clone())
        from edge_sr.models.card import carry_card

        carry_card(model, self)

    def forward(self, x: Tensor) -> Tensor:
        grid = Grid(self.row_idx, self.col_idx, self.row_term, self.col_term, self.weights)  # type: ignore[arg-type]
        return self.model.decode(self.model.features(x), grid)


# ---- registered models


def _liif(defaults: dict[str, Any], overrides: dict[str, Any]) -> LIIF:
    return LIIF(**{**defaults, **overrides})


@register_model(family="liif", kind="heavy")
def liif_edsr(**overrides) -> LIIF:
    """LIIF on EDSR-baseline (16 blocks, 64 features), MLP 256 x 4: the released ``edsr-baseline-liif``."""
    return _liif({"encoder": "edsr", "depth": 16, "feats": 64}, overrides)


@register_model(family="liif", kind="heavy")
def ultrasr_edsr(**overrides) -> LIIF:
    """UltraSR's spatial encoding (6 frequencies, our choice) on the same EDSR-baseline encoder and MLP."""
    return _liif({"encoder": "edsr", "depth": 16, "feats": 64, "spatial_freqs": 6}, overrides)


@register_model(family="liif", kind="edge", reparameterizable=True)
def liif_edge(**overrides) -> LIIF:
    """LIIF on an edge encoder (ECBSR's body: 4 + 1 ECBs, 16 channels) with a 64 x 2 MLP, UltraSR-encoded
    coordinates (4 frequencies)."""
    return _liif(
        {"encoder": "ecb", "depth": 4, "feats": 16, "hidden": (64, 64), "spatial_freqs": 4}, overrides
    )


# ---- detection


@register_detector("liif")
def _detect(state: StateDict) -> Detection | None:
    """LIIF / UltraSR from ``encoder.*`` and ``imnet.layers.*`` (the official names)."""
    if "imnet.layers.0.weight" not in state:
        return None
    lin = indices(state, "imnet.layers.")
    if not lin or lin != list(range(0, 2 * len(lin), 2)):
        return None
    hidden = tuple(int(state[f"imnet.layers.{i}.weight"].shape[0]) for i in lin[:-1])
    in_dim = int(state["imnet.layers.0.weight"].shape[1])
    if has(state, "encoder.head.0.weight", "encoder.body.0.body.0.weight"):
        enc, feats = "edsr", int(state["encoder.head.0.weight"].shape[0])
        depth = len(indices(state, "encoder.body.")) - 1
    elif has(state, "encoder.backbone.0.conv3x3.weight"):
        enc, feats = "ecb", int(state["encoder.backbone.0.conv3x3.weight"].shape[0])
        depth = len(indices(state, "encoder.backbone.")) - 1
    else:
        return None
    # in_dim = feats·9 + 4·(2L + 1) with unfolding and cell decoding (the released configuration)
    rest = in_dim - feats * 9
    if rest < 4 or (rest - 4) % 8:
        return None
    freqs = (rest - 4) // 8
    args: dict[str, Any] = {
        "scale": 4,
        "encoder": enc,
        "depth": depth,
        "feats": feats,
        "hidden": list(hidden),
    }
    if freqs:
        args["spatial_freqs"] = freqs
    arch = "liif_edge" if enc == "ecb" else ("ultrasr_edsr" if freqs else "liif_edsr")
    assumed = {
        "scale": "not stored (one network for every factor); 4 is the factor of a plain call, any other "
        "through --scale",
        "flags": "local ensemble, feature unfolding and cell decoding on, as released (the input width says so)",
    }
    if shape(state, "encoder.sub_mean.weight") is None and enc == "edsr":
        return None
    return Detection(arch, args, value_range=1.0, layout="official", assumed=assumed)
