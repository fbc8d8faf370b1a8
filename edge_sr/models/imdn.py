"""IMDN: Lightweight Image Super-Resolution with Information Multi-distillation Network (Hui et al.,
ACM MM 2019), and IMDN-RTC, the real-time variant that won the AIM 2019 RTC image SR challenge.

IMDN: a 3x3 head conv, ``num_modules`` information multi-distillation blocks (IMDB), a 1x1 conv +
LeakyReLU(0.05) over all blocks' outputs concatenated, a 3x3 conv with a long skip, and a 3x3 conv + pixel
shuffle. An IMDB runs four 3x3 convs in a chain; after each of the first three (LeakyReLU 0.05) a quarter
of the channels is kept ("distilled") and the rest goes on; the kept parts and the last conv's output are
concatenated, weighted by contrast-aware channel attention (CCA: per-channel standard deviation plus mean,
a 1x1 squeeze (1/16), ReLU, a 1x1 expand, sigmoid), merged by a 1x1 conv and added to the block's input.
IMDN-RTC: 12 features, 5 blocks without CCA (the 1x1 merge takes the kept parts directly), a 1x1 conv
and a skip around the blocks, and a 3x3 conv + pixel shuffle.

Key names are the official ``model/architecture.py`` / ``block.py`` ones: IMDN ``fea_conv``,
``IMDB{i}.c1`` .. ``c5``, ``IMDB{i}.cca.conv_du.{0,2}``, ``c.0``, ``LR_conv``, ``upsampler.0``; IMDN-RTC
``model.0`` (head), ``model.1.sub.{i}.c1`` .. ``c5`` (blocks), ``model.1.sub.{n}`` (the 1x1 conv),
``model.2`` (upsampler conv); here without the shared ``model.`` prefix, which checkpoint reading removes. The official networks compute on [0, 1]; so do these.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape, strip_prefix
from edge_sr.models.registry import register_model

_SLOPE = 0.05  # LeakyReLU slope of the official blocks
_REDUCTION = 16  # CCA squeeze


def _check_nf(nf: int, what: str) -> None:
    if nf % 4:
        raise ConfigError(None, f"{what} nf {nf} must be a multiple of 4 (a block keeps a quarter per step)")


class CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(up(relu(down(std(x) + mean(x)))))`` (per channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // _REDUCTION, 1),
            nn.ReLU(),
            nn.Conv2d(channels // _REDUCTION, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDModule(nn.Module):
    """Information multi-distillation block: (N, nf, H, W) -> (N, nf, H, W).

    Args:
        nf: channels (a multiple of 4).
        attention: the contrast-aware channel attention before the 1x1 merge (IMDN); without it the merge
            takes the distilled channels (IMDN-RTC's ``IMDModule_speed``).
    """

    def __init__(self, nf: int, *, attention: bool = True) -> None:
        super().__init__()
        self.distilled = d = nf // 4
        self.remaining = r = nf - d
        self.c1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.c2 = nn.Conv2d(r, nf, 3, padding=1)
        self.c3 = nn.Conv2d(r, nf, 3, padding=1)
        self.c4 = nn.Conv2d(r, d, 3, padding=1)
        self.act = nn.LeakyReLU(_SLOPE)
        self.c5 = nn.Conv2d(4 * d, nf, 1)
        self.cca: nn.Module = CCALayer(4 * d) if attention else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        kept = []
        out = x
        for conv in (self.c1, self.c2, self.c3):
            d, out = torch.split(self.act(conv(out)), [self.distilled, self.remaining], dim=1)
            kept.append(d)
        kept.append(self.c4(out))
        return self.c5(self.cca(torch.cat(kept, dim=1))) + x


class IMDN(nn.Module):
    """IMDN. (N, C, H, W) in [0, 1] -> (N, C, H·scale, W·scale).

    Args:
        scale: upscaling factor.
        colors: colour channels in and out (3 RGB, 1 Y).
        nf: feature channels (a multiple of 4; at least 16 for the channel attention's squeeze).
        num_modules: IMDB blocks.

    Raises:
        ConfigError: ``nf`` not a multiple of 4 or below 16, or no blocks.
    """

    def __init__(self, *, scale: int = 4, colors: int = 3, nf: int = 64, num_modules: int = 6) -> None:
        super().__init__()
        _check_nf(nf, "IMDN")
        if nf < _REDUCTION:
            raise ConfigError(
                None, f"IMDN nf {nf} must be at least {_REDUCTION} (the attention squeezes by 16)"
            )
        if num_modules < 1:
            raise ConfigError(None, f"IMDN num_modules {num_modules} must be at least 1")
        self.scale = scale
        self.fea_conv = nn.Conv2d(colors, nf, 3, padding=1)
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", IMDModule(nf))
        self.num_modules = num_modules
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(_SLOPE))
        self.LR_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upsampler = nn.Sequential(
            nn.Conv2d(nf, colors * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        fea = self.fea_conv(x)
        outs = []
        out = fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        merged = self.c(torch.cat(outs, dim=1))  # (N, nf·num_modules, H, W) -> (N, nf, H, W)
        return self.upsampler(self.LR_conv(merged) + fea)


class _Shortcut(nn.Module):
    """``x + sub(x)`` (official ``ShortcutBlock``; key ``sub``)."""

    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sub(x)


class IMDN_RTC(nn.Sequential):
    """IMDN-RTC. (N, C, H, W) in [0, 1] -> (N, C, H·scale, W·scale).

    The official module wraps this sequence in an attribute ``model``; a key prefix every key shares is
    removed when a checkpoint is read, so the sequence is the module itself here (keys ``0``, ``1.sub``,
    ``2``) and the official ``model.``-prefixed files load unchanged.

    Args:
        scale: upscaling factor.
        colors: colour channels in and out (3 RGB, 1 Y).
        nf: feature channels (a multiple of 4).
        num_modules: blocks.

    Raises:
        ConfigError: ``nf`` not a multiple of 4, or no blocks.
    """

    def __init__(self, *, scale: int = 2, colors: int = 3, nf: int = 12, num_modules: int = 5) -> None:
        _check_nf(nf, "IMDN-RTC")
        if num_modules < 1:
            raise ConfigError(None, f"IMDN-RTC num_modules {num_modules} must be at least 1")
        body = [IMDModule(nf, attention=False) for _ in range(num_modules)]
        super().__init__(
            nn.Conv2d(colors, nf, 3, padding=1),
            _Shortcut(nn.Sequential(*body, nn.Conv2d(nf, nf, 1))),
            nn.Conv2d(nf, colors * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        self.scale = scale


@register_model(family="imdn")
def imdn(**overrides) -> IMDN:
    """IMDN: 64 features, 6 blocks (715K parameters at x4, 694K at x2)."""
    return IMDN(**{"nf": 64, "num_modules": 6, **overrides})


@register_model(family="imdn")
def imdn_rtc(**overrides) -> IMDN_RTC:
    """IMDN-RTC: 12 features, 5 blocks without channel attention."""
    return IMDN_RTC(**{"nf": 12, "num_modules": 5, **overrides})


_IMDB = re.compile(r"IMDB(\d+)\.")


def _scale(up_channels: int, colors: int) -> int | None:
    s = round((up_channels / colors) ** 0.5)
    return s if s >= 1 and s * s * colors == up_channels else None


@register_detector("imdn")
def _detect(state: StateDict) -> Detection | None:
    if has(state, "fea_conv.weight", "IMDB1.c1.weight", "c.0.weight", "LR_conv.weight", "upsampler.0.weight"):
        nf, colors = shape(state, "fea_conv.weight")[:2]  # type: ignore[index]
        num_modules = len({int(m.group(1)) for k in state if (m := _IMDB.match(k))})
        scale = _scale(shape(state, "upsampler.0.weight")[0], colors)  # type: ignore[index]
        if scale is None:
            return None
        return Detection("imdn", {"scale": scale, "colors": colors, "nf": nf, "num_modules": num_modules})
    rtc = strip_prefix(state, "model.") if all(k.startswith("model.") for k in state) else state
    if has(rtc, "0.weight", "1.sub.0.c1.weight", "1.sub.0.c5.weight", "2.weight"):
        if any(".cca." in k for k in rtc):
            return None
        nf, colors = shape(rtc, "0.weight")[:2]  # type: ignore[index]
        num_modules = len(indices(rtc, "1.sub.")) - 1  # the last one is the 1x1 conv
        scale = _scale(shape(rtc, "2.weight")[0], colors)  # type: ignore[index]
        if scale is None or num_modules < 1:
            return None
        args = {"scale": scale, "colors": colors, "nf": nf, "num_modules": num_modules}
        if rtc is state:
            return Detection("imdn_rtc", args)
        return Detection("imdn_rtc", args, adapt=lambda sd: strip_prefix(sd, "model."))
    return None
