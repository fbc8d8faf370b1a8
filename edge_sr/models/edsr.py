"""EDSR: Enhanced Deep Residual Networks for Single Image SR (Lim et al., CVPRW 2017), baseline and full.

Parameter names follow the official EDSR-PyTorch ``src/model/edsr.py`` so its released ``.pt`` files load
unchanged with strict key checking: ``sub_mean`` / ``add_mean`` (1x1 ``MeanShift`` convs, stored in the
state dict), ``head.0``, ``body.{i}.body.{0,2}`` (residual blocks), ``body.{n_resblocks}`` (the closing conv),
``tail.0.{0,2,...}`` (upsampler convs) and ``tail.1`` (the output conv).

Value range: the official network works on [0, 255] (``rgb_range`` 255) with the DIV2K mean subtracted by
``sub_mean``; our contract is [0, 1] in and out, so ``forward`` multiplies by ``rgb_range`` on entry and
divides on exit, and official weights give official outputs.

Detection (:func:`_detect`) recognises two layouts:

- ``official`` (EDSR-PyTorch): the names above;
- ``basicsr`` (BasicSR's ``edsr_arch.py``, also used by traiNNer and neosr): ``conv_first``,
  ``body.{i}.conv1`` / ``body.{i}.conv2``, ``conv_after_body``, ``upsample.{0,2,...}``, ``conv_last``.
  BasicSR computes ``(x - mean) · img_range`` with the mean and ``img_range`` held outside the state dict
  (DIV2K mean and 255 by default), which is what ``sub_mean`` / ``add_mean`` do at ``rgb_range`` 255; the
  renaming fills them with those values, so a BasicSR run gives the BasicSR network's output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
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


# ---- detection


def pixelshuffle_scale(state: Mapping[str, Tensor], prefix: str) -> tuple[int, int] | None:
    """(scale, features) of an official-style pixel-shuffle upsampler under ``prefix``.

    The upsampler holds one 3x3 conv to 4F channels per factor 2 (keys ``{prefix}.0``, ``{prefix}.2``, ...)
    or a single conv to 9F channels for ×3. None when the convs under ``prefix`` are not of that form.
    """
    convs = []
    i = 0
    while (s := shape(state, f"{prefix}.{i}.weight")) is not None:
        convs.append(s)
        i += 2
    if not convs or any(len(s) != 4 for s in convs):
        return None
    feats = convs[0][1]
    if len(convs) == 1 and convs[0][0] == 9 * feats:
        return 3, feats
    if all(s[0] == 4 * feats and s[1] == feats for s in convs):
        return 2 ** len(convs), feats
    return None


def mean_shift_state(rgb_range: float, like: Tensor) -> StateDict:
    """The official ``sub_mean`` / ``add_mean`` tensors at ``rgb_range`` with the DIV2K mean, as ``like``'s
    dtype (for layouts that keep the mean outside the state dict)."""
    out: StateDict = {}
    for key, sign in (("sub_mean", -1), ("add_mean", 1)):
        shift = MeanShift(rgb_range, sign=sign)
        out[f"{key}.weight"] = shift.weight.detach().to(like.dtype)
        out[f"{key}.bias"] = shift.bias.detach().to(like.dtype)  # type: ignore[union-attr]
    return out


def rename(state: Mapping[str, Tensor], rules: list[tuple[str, str]]) -> StateDict:
    """``state`` with each key rewritten by the first matching ``(pattern, replacement)`` rule (a full
    match); keys no rule matches are kept, so an unknown key still shows as unexpected."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for k, v in state.items():
        for pat, rep in compiled:
            if (m := pat.fullmatch(k)) is not None:
                k = m.expand(rep)
                break
        out[k] = v
    return out


def inverse_floor_div(a: int, c: int) -> int | None:
    """An integer ``b`` with ``a // b == c``: ``a / c`` when exact, else the smallest such ``b``, or None.

    Channel reductions are stored only as the reduced width ``a // b``.
    """
    if c <= 0 or c > a:
        return None
    if a % c == 0:
        return a // c
    return next((b for b in range(1, a + 1) if a // b == c), None)


_BASICSR_ASSUMED = {
    "rgb_range": "BasicSR keeps img_range outside the state dict; 255, its default and the value of its "
    "EDSR / RCAN option files, is assumed",
    "mean": "BasicSR keeps rgb_mean outside the state dict; its default, the DIV2K mean "
    "(0.4488, 0.4371, 0.4040), fills sub_mean / add_mean",
}


def _edsr_from_basicsr(n_resblocks: int) -> Callable[[StateDict], StateDict]:
    rules = [
        (r"conv_first\.(weight|bias)", r"head.0.\1"),
        (r"body\.(\d+)\.conv1\.(weight|bias)", r"body.\1.body.0.\2"),
        (r"body\.(\d+)\.conv2\.(weight|bias)", r"body.\1.body.2.\2"),
        (r"conv_after_body\.(weight|bias)", rf"body.{n_resblocks}.\1"),
        (r"upsample\.(\d+)\.(weight|bias)", r"tail.0.\1.\2"),
        (r"conv_last\.(weight|bias)", r"tail.1.\1"),
    ]

    def adapt(state: StateDict) -> StateDict:
        return {**rename(state, rules), **mean_shift_state(255.0, state["conv_first.weight"])}

    return adapt


@register_detector("edsr")
def _detect(state: StateDict) -> Detection | None:
    """EDSR from the official (EDSR-PyTorch) or the BasicSR key layout."""
    if has(state, "head.0.weight", "body.0.body.0.weight", "tail.1.weight"):
        if any(k.startswith("body.0.body.0.body.") for k in state):  # RCAN's nesting
            return None
        layout, up = "official", "tail.0"
        n_resblocks = len(indices(state, "body.")) - 1  # the blocks and the closing conv
    elif has(state, "conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "conv_last.weight"):
        layout, up = "basicsr", "upsample"
        n_resblocks = len(indices(state, "body."))
    else:
        return None
    ups = pixelshuffle_scale(state, up)
    if ups is None:
        return None
    scale, n_feats = ups
    full = n_feats > 64  # EDSR (256 wide) rather than the 64-wide baseline
    res_scale = 0.1 if full else 1.0
    assumed = {
        "res_scale": f"not stored; {res_scale}, the official value for the "
        + ("full EDSR (wider than 64)" if full else "baseline (64 wide or less)"),
    }
    if layout == "official":
        assumed["rgb_range"] = (
            "not stored; 255, the EDSR-PyTorch default and its releases' (sub_mean / add_mean hold it too)"
        )
    else:
        assumed.update(_BASICSR_ASSUMED)
    return Detection(
        "edsr" if full else "edsr_baseline",
        {
            "scale": scale,
            "n_resblocks": n_resblocks,
            "n_feats": n_feats,
            "res_scale": res_scale,
            "rgb_range": 255.0,
        },
        value_range=255.0,
        mean=DIV2K_MEAN,
        layout=layout,
        assumed=assumed,
        adapt=_edsr_from_basicsr(n_resblocks) if layout == "basicsr" else None,
    )
