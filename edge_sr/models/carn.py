"""CARN-M: Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual Network
(Ahn, Kang, Sohn, ECCV 2018), the mobile variant.

Cascading: every block's output is concatenated with all earlier ones and squeezed by a 1x1 conv, both
inside a block (local) and across blocks (global). CARN-M makes it light with efficient residual blocks
(two grouped 3x3 convs + a 1x1 conv, residual add) whose weights are shared by the three cascade steps of
a block, and a grouped-conv pixel-shuffle upsampler. Input mean shift as the official code (1x1 convs with
fixed weights). Key names are the official ones (``entry``, ``b1.b1.body.0``, ``c1.body.0``,
``upsample.up.body.0``, ``exit``, ``sub_mean.shifter``). Value range [0, 1] with the DIV2K mean.

Detection (:func:`_detect`) reads the width from ``entry``, the group count from the grouped convs'
input width, and the scale from the upsampler (one 4C conv per factor 2, or one 9C conv for ×3). The
released ``carn_m.pth`` was trained multi-scale: it holds ``upsample.up2`` / ``up3`` / ``up4``, one
upsampler per scale, around one shared body. That layout (``official-multiscale``) is read as the ×4
model; :func:`select_scale` picks another scale's upsampler from such a file.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from edge_sr.errors import CheckpointError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Subtract (or add) the RGB mean with a fixed 1x1 conv (its weights are stored, not trained)."""

    def __init__(self, *, mean: tuple[float, float, float] = _RGB_MEAN, sub: bool = True) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        self.shifter.weight.data.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        self.shifter.bias.data.copy_(torch.tensor(mean) * (-1.0 if sub else 1.0))  # type: ignore[union-attr]
        for p in self.shifter.parameters():
            p.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        return self.shifter(x)


class BasicBlock(nn.Module):
    """Conv + ReLU (CARN's 1x1 cascade squeeze)."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class EResidualBlock(nn.Module):
    """Efficient residual block: grouped 3x3, ReLU, grouped 3x3, ReLU, 1x1; add input; ReLU."""

    def __init__(self, *, channels: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=group),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=group),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + x)


class CascadingBlock(nn.Module):
    """Local cascade: one shared EResidualBlock applied three times, concatenations squeezed by 1x1 convs."""

    def __init__(self, *, channels: int, group: int) -> None:
        super().__init__()
        self.b1 = EResidualBlock(channels=channels, group=group)  # shared by the three steps (CARN-M)
        self.c1 = BasicBlock(in_channels=channels * 2, out_channels=channels)
        self.c2 = BasicBlock(in_channels=channels * 3, out_channels=channels)
        self.c3 = BasicBlock(in_channels=channels * 4, out_channels=channels)

    def forward(self, x: Tensor) -> Tensor:
        c, o = x, x
        for squeeze in (self.c1, self.c2, self.c3):
            c = torch.cat([c, self.b1(o)], dim=1)  # (N, k·C, H, W), growing
            o = squeeze(c)
        return o


class UpsampleBlock(nn.Module):
    """Grouped conv to 4C (or 9C) + ReLU + pixel shuffle(2 or 3), repeated log2(s) times for s = 2, 4."""

    def __init__(self, *, channels: int, scale: int, group: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if scale in (2, 4, 8):
            for _ in range(int(math.log2(scale))):
                layers += [
                    nn.Conv2d(channels, 4 * channels, 3, padding=1, groups=group),
                    nn.ReLU(),
                    nn.PixelShuffle(2),
                ]
        elif scale == 3:
            layers += [
                nn.Conv2d(channels, 9 * channels, 3, padding=1, groups=group),
                nn.ReLU(),
                nn.PixelShuffle(3),
            ]
        else:
            raise ValueError(f"CARN supports scales 2, 3, 4 and 8, not {scale}")
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Upsample(nn.Module):
    # Holds ``up`` so the keys read ``upsample.up.body.N`` as in the official single-scale model.
    def __init__(self, *, channels: int, scale: int, group: int) -> None:
        super().__init__()
        self.up = UpsampleBlock(channels=channels, scale=scale, group=group)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class CARNM(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(self, *, scale: int = 4, channels: int = 64, group: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(sub=True)
        self.add_mean = MeanShift(sub=False)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.b1 = CascadingBlock(channels=channels, group=group)
        self.b2 = CascadingBlock(channels=channels, group=group)
        self.b3 = CascadingBlock(channels=channels, group=group)
        self.c1 = BasicBlock(in_channels=channels * 2, out_channels=channels)
        self.c2 = BasicBlock(in_channels=channels * 3, out_channels=channels)
        self.c3 = BasicBlock(in_channels=channels * 4, out_channels=channels)
        self.upsample = _Upsample(channels=channels, scale=scale, group=group)
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.entry(self.sub_mean(x))
        c, o = f, f
        for block, squeeze in ((self.b1, self.c1), (self.b2, self.c2), (self.b3, self.c3)):
            c = torch.cat([c, block(o)], dim=1)  # global cascade
            o = squeeze(c)
        return self.add_mean(self.exit(self.upsample(o)))


@register_model(family="carn")
def carn_m(**overrides) -> CARNM:
    return CARNM(**{"channels": 64, "group": 4, **overrides})


# ---- detection


def select_scale(state: StateDict, scale: int) -> StateDict:
    """A multi-scale CARN-M state dict (``upsample.up2`` / ``up3`` / ``up4``) as the single-scale ×``scale``
    model's: that scale's upsampler becomes ``upsample.up``, the others are dropped.

    Raises:
        KeyError: The file has no upsampler for ``scale``.
    """
    own = f"upsample.up{scale}."
    if not any(k.startswith(own) for k in state):
        raise KeyError(f"no {own[:-1]} in this multi-scale file")
    other = re.compile(r"upsample\.up\d+\.")
    out: StateDict = {}
    for k, v in state.items():
        if k.startswith(own):
            out["upsample.up." + k[len(own) :]] = v
        elif not other.match(k):
            out[k] = v
    return out


def _upsampler_scale(state: StateDict, prefix: str, channels: int) -> int | None:
    """The scale of a CARN upsampler (conv, ReLU, shuffle per stage: convs at ``body.0``, ``body.3`` ...)."""
    outs = [
        s[0] for i in indices(state, f"{prefix}.body.") if (s := shape(state, f"{prefix}.body.{i}.weight"))
    ]
    if len(outs) == 1 and outs[0] == 9 * channels:
        return 3
    if outs and all(o == 4 * channels for o in outs):
        return 2 ** len(outs)
    return None


@register_detector("carn")
def _detect(state: StateDict) -> Detection | None:
    """CARN-M, single-scale or the multi-scale release (read as ×4)."""
    if not has(state, "entry.weight", "b1.b1.body.0.weight", "c1.body.0.weight", "exit.weight"):
        return None
    if "b1.b2.body.0.weight" in state:  # full CARN: three distinct residual blocks per cascade
        return None
    channels = state["entry.weight"].shape[0]
    group_width = state["b1.b1.body.0.weight"].shape[1]  # grouped 3x3: (C, C / group, 3, 3)
    if group_width <= 0 or channels % group_width:
        return None
    group = channels // group_width
    args = {"channels": channels, "group": group}
    if "upsample.up.body.0.weight" in state:
        scale = _upsampler_scale(state, "upsample.up", channels)
        if scale is None:
            return None
        return Detection("carn_m", {"scale": scale, **args}, mean=_RGB_MEAN)
    if "upsample.up4.body.0.weight" in state:
        if _upsampler_scale(state, "upsample.up4", channels) != 4:
            return None
        scales = [s for s in (2, 3, 4) if f"upsample.up{s}.body.0.weight" in state]

        def at(s: int) -> Detection:
            if s not in scales:
                raise CheckpointError(
                    None, f"the multi-scale CARN-M file holds x{', x'.join(map(str, scales))}, not x{s}"
                )
            return Detection(
                "carn_m",
                {"scale": s, **args},
                mean=_RGB_MEAN,
                layout="official-multiscale",
                assumed={}
                if s != 4
                else {
                    "scale": "the file holds one upsampler per scale (multi-scale training); x4 is used, "
                    "--scale 2 or 3 picks another"
                },
                adapt=lambda st: select_scale(st, s),
                rescale=at,
            )

        return at(4)
    return None
