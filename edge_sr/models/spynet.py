"""SPyNet: Optical Flow Estimation using a Spatial Pyramid Network (Ranjan, Black, CVPR 2017).

The flow estimator of BasicVSR, IconVSR and BasicVSR++, in the BasicSR / mmagic form: six levels, each a
five-conv ``basic_module`` (7x7 kernels, 8 -> 32 -> 64 -> 32 -> 16 -> 2, ReLU between) that refines the
upsampled flow of the level below from (reference, warped support, flow). Inputs are normalised with the
ImageNet mean and std (buffers ``mean`` / ``std``, saved in both published layouts), resized bilinearly
(``align_corners=False``) to a multiple of 32, pooled five times (2x2 average), and the flow is doubled
and upsampled with ``align_corners=True`` between levels. The result is resized back and its x / y
components scaled by ``w / w_up`` / ``h / h_up``.

Key names are BasicSR's (``basic_module.<level>.basic_module.<0|2|4|6|8>.weight``); mmagic wraps each
conv in a ``ConvModule`` (``basic_module.<level>.basic_module.<0..4>.conv.weight``), which
:func:`from_mmagic_keys` maps back.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SpyNet", "flow_warp", "from_mmagic_keys", "spynet_constants"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def spynet_constants() -> dict[str, Tensor]:
    """The ``mean`` / ``std`` buffers (ImageNet statistics, (1, 3, 1, 1)) by name."""
    return {"mean": torch.tensor(_MEAN).view(1, 3, 1, 1), "std": torch.tensor(_STD).view(1, 3, 1, 1)}


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Warp (N, C, H, W) by a (N, 2, H, W) flow in pixels, (x, y) order, as BasicSR's / mmagic's
    ``flow_warp``: bilinear ``grid_sample`` with ``align_corners=True`` and the grid normalised by
    ``max(size - 1, 1)``."""
    _, _, h, w = x.shape
    gy = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    gx = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    vx = 2.0 * (gx + flow[:, 0]) / max(w - 1, 1) - 1.0  # (N, H, W)
    vy = 2.0 * (gy + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((vx, vy), dim=3)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


class SpyNetBasicModule(nn.Module):
    """One pyramid level: (ref, warped supp, flow) (N, 8, h, w) -> flow residual (N, 2, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        chans = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 7, 1, 3))
            if i < len(chans) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """``forward(ref, supp)``: two (N, 3, H, W) frames in [0, 1] -> the (N, 2, H, W) flow, in pixels and
    (x, y) order, such that ``flow_warp(supp, flow)`` lines ``supp`` up with ``ref``."""

    LEVELS = 6
    mean: Tensor
    std: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetBasicModule() for _ in range(self.LEVELS))
        for name, value in spynet_constants().items():
            self.register_buffer(name, value)

    def process(self, ref: Tensor, supp: Tensor) -> Tensor:
        """The flow of two frames whose sides are multiples of 32 (the pyramid's coarsest level is 1/32)."""
        refs, supps = [(ref - self.mean) / self.std], [(supp - self.mean) / self.std]
        for _ in range(self.LEVELS - 1):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2, count_include_pad=False))
        n, _, h, w = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h, w)  # the coarsest level starts from no motion
        for level in range(self.LEVELS):
            if level > 0:  # the flow of the level below, at this level's size and magnitude
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat([refs[level], warped, flow], dim=1))
        return flow

    def forward(self, ref: Tensor, supp: Tensor) -> Tensor:
        h, w = ref.shape[-2:]
        h_up, w_up = -(-h // 32) * 32, -(-w // 32) * 32
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.process(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        ratio = torch.tensor([w / w_up, h / h_up], dtype=flow.dtype, device=flow.device)
        return flow * ratio.view(1, 2, 1, 1)


_MM_SPY = re.compile(r"(^|\.)basic_module\.(\d+)\.basic_module\.(\d)\.conv\.")


def from_mmagic_keys(key: str) -> str:
    """An mmagic SPyNet key (ConvModule ``.conv.``, convs numbered 0..4) as BasicSR's (0, 2, 4, 6, 8)."""
    return _MM_SPY.sub(
        lambda m: f"{m.group(1)}basic_module.{m.group(2)}.basic_module.{2 * int(m.group(3))}.", key
    )
