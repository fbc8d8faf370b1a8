"""EDSR: Enhanced Deep Residual Networks for Single Image SR (Lim et al., CVPRW 2017), baseline and full.

Parameter names follow the official EDSR-PyTorch ``src/model/edsr.py`` so its released ``.pt`` files load
unchanged with strict key checking: ``sub_mean`` / ``add_mean`` (1x1 ``MeanShift`` convs, stored in the
state dict), ``head.0``, ``body.{i}.body.{0,2}`` (residual blocks), ``body.{n_resblocks}`` (the closing conv),
``tail.0.{0,2,...}`` (upsampler convs) and ``tail.1`` (the output conv).

Value range: the official network works on [0, 255] (``rgb_range`` 255) with the DIV2K mean subtracted by
``sub_mean``; our contract is [0, 1] in and out, so ``forward`` multiplies by ``rgb_range`` on entry and
divides on exit, and official weights give official outputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.registry import register_model

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv adding ``sign · rgb_range · mean / std`` (official ``MeanShift``; frozen parameters)."""

    def __init__(
        self,
        rgb_range: float,
        rgb_mean: tuple[float, float, float] = DIV2K_MEAN,
        rgb_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        sign: int = -1,
    ) -> None:
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean) / std)  # type: ignore[union-attr]
        for p in self.parameters():
            p.requires_grad = False


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """conv -> ReLU -> conv, scaled by ``res_scale``, plus the input (key ``body.{0,2}``)."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) * self.res_scale + x


class Upsampler(nn.Sequential):
    """(conv to 4C, PixelShuffle(2)) per factor 2, or (conv to 9C, PixelShuffle(3)): keys ``0``, ``2``."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        super().__init__(*layers)


def check_scale(scale: int) -> None:
    if scale not in (2, 3, 4):
        raise ConfigError(None, f"scale {scale} is not supported; choose 2, 3 or 4")


class EDSR(nn.Module):
    """EDSR. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_resblocks: residual blocks (16 baseline, 32 full).
        n_feats: feature channels (64 baseline, 256 full).
        res_scale: residual scaling (1 baseline, 0.1 full).
        rgb_range: the value range the weights were trained on (255 for the official releases).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        check_scale(scale)
        self.scale, self.rgb_range = scale, rgb_range
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], conv3x3(n_feats, n_feats)
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x * self.rgb_range))  # [0, 1] -> [0, 255] - mean
        x = self.body(x) + x
        return self.add_mean(self.tail(x)) / self.rgb_range


@register_model(family="edsr", kind="heavy")
def edsr_baseline(**overrides) -> EDSR:
    """EDSR baseline: 16 blocks, 64 features, residual scale 1."""
    return EDSR(**{"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, **overrides})


@register_model(family="edsr", kind="heavy")
def edsr(**overrides) -> EDSR:
    """EDSR: 32 blocks, 256 features, residual scale 0.1."""
    return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **overrides})
