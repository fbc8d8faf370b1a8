"""EDSR: Enhanced Deep Residual Networks for Single Image SR (Lim et al., CVPRW 2017), baseline and full.

Parameter names follow the official EDSR-PyTorch ``src/model/edsr.py`` so its released ``.pt`` files load
unchanged with strict key checking: ``sub_mean`` / ``add_mean`` (1x1 ``MeanShift`` convs, stored in the
state dict), ``head.0``, ``body.{i}.body.{0,2}`` (residual blocks), ``body.{n_resblocks}`` (the closing conv),
``tail.0.{0,2,...}`` (upsampler convs) and ``tail.1`` (the output conv).

AdaDM (Liu et al., "AdaDM: Enabling Normalization for Image Super-Resolution", 2022) is the ``adadm=True``
option: each residual block normalizes its input and its middle activation with BatchNorm and multiplies
the residual by ``exp(phi(log s))``, where ``s`` is the standard deviation of the block input over
(C, H, W) and ``phi`` a learned 1x1 conv on that one value (weight 1, bias 0 at initialisation, so the
residual is first scaled by ``s`` itself). Normalization removes the pixel deviation the SR output needs;
the modulation hands it back. Key names follow the official ``njulj/AdaDM`` ``ResBlock_AdaDM``:
``body.{i}.conv1`` / ``conv2``, ``body.{i}.norm1`` / ``norm2`` (BatchNorm, running statistics stored) and
``body.{i}.phi``. The official AdaDM EDSR has no ``sub_mean`` / ``add_mean``: it works on the raw [0, 255]
pixels, so with ``adadm=True`` the model holds no mean shift either and the released
``EDSR_AdaDM_DIV2K_X{2,3,4}.pt`` files load strictly. BatchNorm runs with its running statistics in
``eval()`` (what exporters fold or run); the standard deviation is a reduction every target has.

Value range: the official network works on [0, 255] (``rgb_range`` 255) with the DIV2K mean subtracted by
``sub_mean``; our contract is [0, 1] in and out, so ``forward`` multiplies by ``rgb_range`` on entry and
divides on exit, and official weights give official outputs.

Detection (:func:`_detect`) recognises two layouts:

- ``official`` (EDSR-PyTorch): the names above;
- ``basicsr`` (BasicSR's ``edsr_arch.py``, also used by traiNNer and neosr): ``conv_first``,
  ``body.{i}.conv1`` / ``body.{i}.conv2``, ``conv_after_body``, ``upsample.{0,2,...}``, ``conv_last``.
  BasicSR computes ``(x - mean) · img_range`` with the mean and ``img_range`` held outside the state dict
  (DIV2K mean and 255 by default), which is what ``sub_mean`` / ``add_mean`` do at ``rgb_range`` 255; the
  renaming fills them with those values, so a BasicSR run gives the BasicSR network's output;
- ``adadm`` (``njulj/AdaDM``): the official names with AdaDM blocks and no mean shift (``adadm=True``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

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


class ResBlockAdaDM(nn.Module):
    """AdaDM residual block (official ``ResBlock_AdaDM`` keys ``conv1``, ``conv2``, ``norm1``, ``norm2``,
    ``phi``): ``x + res_scale · conv2(norm2(relu(conv1(norm1(x))))) · exp(phi(log std(x)))``.

    ``std`` is the (unbiased) standard deviation of each sample over channels and pixels; ``phi`` is a
    1x1 conv on that single value, initialised to the identity, so a fresh block rescales its normalized
    residual by the input's own deviation.
    """

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(n_feats, n_feats)
        self.conv2 = conv3x3(n_feats, n_feats)
        self.act = nn.ReLU()
        self.res_scale = res_scale
        self.phi = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.phi.weight.fill_(1.0)
            self.phi.bias.fill_(0.0)  # type: ignore[union-attr]
        self.norm1 = nn.BatchNorm2d(n_feats)
        self.norm2 = nn.BatchNorm2d(n_feats)

    def modulation(self, x: Tensor) -> Tensor:
        """The (N, 1, 1, 1) factor ``exp(phi(log std(x)))`` the residual is multiplied by."""
        s = torch.std(x, dim=(1, 2, 3), keepdim=True)
        return torch.exp(self.phi(torch.log(s)))

    def forward(self, x: Tensor) -> Tensor:
        res = self.conv2(self.norm2(self.act(self.conv1(self.norm1(x)))))
        return res * self.res_scale * self.modulation(x) + x


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
        adadm: AdaDM residual blocks (:class:`ResBlockAdaDM`) and, as in the official AdaDM EDSR, no
            ``sub_mean`` / ``add_mean``.
    """

    sub_mean: MeanShift | None
    add_mean: MeanShift | None

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        adadm: bool = False,
    ) -> None:
        super().__init__()
        check_scale(scale)
        self.scale, self.rgb_range, self.adadm = scale, rgb_range, adadm
        if adadm:
            self.sub_mean = self.add_mean = None
        else:
            self.sub_mean = MeanShift(rgb_range)
            self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        block = ResBlockAdaDM if adadm else ResBlock
        self.body = nn.Sequential(
            *[block(n_feats, res_scale) for _ in range(n_resblocks)], conv3x3(n_feats, n_feats)
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.rgb_range  # [0, 1] -> [0, 255]
        if self.sub_mean is not None:
            x = self.sub_mean(x)
        x = self.head(x)
        x = self.body(x) + x
        x = self.tail(x)
        if self.add_mean is not None:
            x = self.add_mean(x)
        return x / self.rgb_range


@register_model(family="edsr", kind="heavy")
def edsr_baseline(**overrides) -> EDSR:
    """EDSR baseline: 16 blocks, 64 features, residual scale 1."""
    return EDSR(**{"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, **overrides})


@register_model(family="edsr", kind="heavy")
def edsr(**overrides) -> EDSR:
    """EDSR: 32 blocks, 256 features, residual scale 0.1."""
    return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **overrides})


@register_model(family="edsr", kind="heavy")
def edsr_adadm(**overrides) -> EDSR:
    """EDSR with AdaDM blocks as released by the AdaDM authors: 32 blocks, 256 features, residual scale 0.1,
    no mean shift."""
    return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, "adadm": True, **overrides})


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


_ADADM_PARTS = ("conv1", "conv2", "norm1", "norm2", "phi")  # official ResBlock_AdaDM children with weights


@register_detector("edsr")
def _detect(state: StateDict) -> Detection | None:
    """EDSR from the official (EDSR-PyTorch), the AdaDM or the BasicSR key layout."""
    adadm = False
    if has(state, "head.0.weight", "tail.1.weight", *(f"body.0.{k}.weight" for k in _ADADM_PARTS)):
        if has(state, "sub_mean.weight") or has(state, "add_mean.weight"):
            return None  # the official AdaDM EDSR has no mean shift
        layout, up, adadm = "adadm", "tail.0", True
        n_resblocks = len(indices(state, "body.")) - 1
    elif has(state, "head.0.weight", "body.0.body.0.weight", "tail.1.weight"):
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
    elif layout == "adadm":
        assumed["rgb_range"] = (
            "not stored; 255, the AdaDM release's (its EDSR recipes train with --rgb_range 255)"
        )
    else:
        assumed.update(_BASICSR_ASSUMED)
    args: dict[str, Any] = {
        "scale": scale,
        "n_resblocks": n_resblocks,
        "n_feats": n_feats,
        "res_scale": res_scale,
        "rgb_range": 255.0,
    }
    if adadm:
        args["adadm"] = True
        arch = "edsr_adadm" if full else "edsr_baseline"
    else:
        arch = "edsr" if full else "edsr_baseline"
    return Detection(
        arch,
        args,
        value_range=255.0,
        mean=None if adadm else DIV2K_MEAN,
        layout=layout,
        assumed=assumed,
        adapt=_edsr_from_basicsr(n_resblocks) if layout == "basicsr" else None,
    )
