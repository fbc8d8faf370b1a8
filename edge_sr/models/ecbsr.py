"""ECBSR: Edge-oriented Convolution Block for real-time SR on mobile devices (Zhang et al., ACM MM 2021).

Each ECB sums five linear branches (3x3 conv; 1x1 -> 3x3; 1x1 -> scaled Sobel-x; 1x1 -> scaled Sobel-y;
1x1 -> scaled Laplacian), optionally plus the identity, then an activation. All branches are linear, so
``ECB.fuse()`` collapses them into one 3x3 conv. Parameter names follow the official implementation
(``backbone.N.conv3x3``, ``backbone.N.conv1x1_3x3.k0`` ...), with RGB input (colors=3).

The network adds the input, nearest-upsampled, to the output (the official global residual, which the
official code writes as a broadcast add for one colour channel). For RGB it is a fixed 1x1 conv that repeats
each input channel scale² times before the pixel shuffle: one tiny conv every target supports, where
``repeat_interleave`` would lower to gathers or rank-5 reshapes.

Detection (``_detect``) reads three layouts:

* the training form, official names: ``colors`` (1 for ECBSR's own Y-channel recipe) and ``channels``
  from ``backbone.0.conv3x3``, ``blocks`` from the number of ECBs, the scale from the tail's C·s² outputs,
  ``depth_multiplier`` from ``conv1x1_3x3.k0``, ``act`` is ``prelu`` when ``backbone.N.act.weight``
  exists. ReLU stores nothing (reported as ``relu``, assumed) and the identity branch adds no key
  (``identity=False``, assumed, as in the official configs);
* the official deploy form, the ``PlainSR`` of the official conversion script: ``backbone.N.conv3x3``
  (one fused 3x3 conv per ECB) and ``backbone.N.act.weight``, mapped onto this module's ``PlainSR``
  (``body.N.0`` / ``body.N.1``, the linear tail ``body.N``);
* that ``PlainSR``'s own names (a ``reparameterize``-d model's ``state_dict()``).

A fused RepSR net is this same ``PlainSR`` (same convs, activations, residual and shuffle), so deploy-form
plain nets are reported as ECBSR: they load and compute identically.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import (
    conv_shape,
    keys_match,
    make_act,
    nearest_name,
    pixel_shuffle_scale,
)
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
from edge_sr.models.registry import register_model
from edge_sr.reparam.rules import (
    conv_from,
    depthwise_to_dense,
    identity_kernel,
    merge_1x1_kxk,
    pad_with_bias,
    repeat_identity_kernel,
    sum_branches,
)

SeqType = Literal["conv1x1-conv3x3", "conv1x1-sobelx", "conv1x1-sobely", "conv1x1-laplacian"]

_MASKS: dict[str, list[tuple[int, int, float]]] = {
    "conv1x1-sobelx": [(0, 0, 1.0), (1, 0, 2.0), (2, 0, 1.0), (0, 2, -1.0), (1, 2, -2.0), (2, 2, -1.0)],
    "conv1x1-sobely": [(0, 0, 1.0), (0, 1, 2.0), (0, 2, 1.0), (2, 0, -1.0), (2, 1, -2.0), (2, 2, -1.0)],
    "conv1x1-laplacian": [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0), (2, 1, 1.0), (1, 1, -4.0)],
}


class SeqConv3x3(nn.Module):
    """A 1x1 conv followed by a 3x3 conv (learned, or a fixed edge filter with learned per-channel scale)."""

    mask: Tensor  # buffer of the fixed-filter sequences

    def __init__(
        self, *, seq_type: SeqType, in_channels: int, out_channels: int, depth_multiplier: float = 2.0
    ) -> None:
        super().__init__()
        self.seq_type = seq_type
        if seq_type == "conv1x1-conv3x3":
            mid = int(out_channels * depth_multiplier)
            conv0 = nn.Conv2d(in_channels, mid, 1)
            conv1 = nn.Conv2d(mid, out_channels, 3)
            self.k0, self.b0 = nn.Parameter(conv0.weight.data), nn.Parameter(conv0.bias.data)  # type: ignore[union-attr]
            self.k1, self.b1 = nn.Parameter(conv1.weight.data), nn.Parameter(conv1.bias.data)  # type: ignore[union-attr]
        else:
            conv0 = nn.Conv2d(in_channels, out_channels, 1)
            self.k0, self.b0 = nn.Parameter(conv0.weight.data), nn.Parameter(conv0.bias.data)  # type: ignore[union-attr]
            self.scale = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 1e-3)
            self.bias = nn.Parameter(torch.randn(out_channels) * 1e-3)
            mask = torch.zeros(out_channels, 1, 3, 3)
            for r, c, v in _MASKS[seq_type]:
                mask[:, 0, r, c] = v
            self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -1x1-> (N, M, H, W) -pad with b0-> (N, M, H+2, W+2) -3x3 valid-> (N, O, H, W)
        y0 = pad_with_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        if self.seq_type == "conv1x1-conv3x3":
            return F.conv2d(y0, self.k1, self.b1)
        return F.conv2d(y0, self.scale * self.mask, self.bias, groups=self.k0.shape[0])

    def rep_params(self) -> tuple[Tensor, Tensor]:
        if self.seq_type == "conv1x1-conv3x3":
            return merge_1x1_kxk(self.k0, self.b0, self.k1, self.b1)
        k1 = depthwise_to_dense(self.scale * self.mask)
        return merge_1x1_kxk(self.k0, self.b0, k1, self.bias)


class ECB(nn.Module):
    """Edge-oriented Convolution Block. (N, in, H, W) -> (N, out, H, W).

    ``identity``: adds the input (needs in == out).
    ``collapsed``: compute the fused 3x3 kernel from the branch weights on every forward and run one
    conv (same function, the cost of the deploy net; gradients flow to every branch).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        depth_multiplier: float = 2.0,
        act: str = "prelu",
        identity: bool = False,
        collapsed: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.with_idt = identity and in_channels == out_channels
        self.collapsed = collapsed
        self.conv3x3 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        kw = {"in_channels": in_channels, "out_channels": out_channels}
        self.conv1x1_3x3 = SeqConv3x3(seq_type="conv1x1-conv3x3", depth_multiplier=depth_multiplier, **kw)
        self.conv1x1_sbx = SeqConv3x3(seq_type="conv1x1-sobelx", **kw)
        self.conv1x1_sby = SeqConv3x3(seq_type="conv1x1-sobely", **kw)
        self.conv1x1_lpl = SeqConv3x3(seq_type="conv1x1-laplacian", **kw)
        self.act = make_act(act, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.collapsed:
            w, b = self.rep_params()
            return self.act(F.conv2d(x, w, b, padding=1))
        y = (
            self.conv3x3(x)
            + self.conv1x1_3x3(x)
            + self.conv1x1_sbx(x)
            + self.conv1x1_sby(x)
            + self.conv1x1_lpl(x)
        )
        if self.with_idt:
            y = y + x
        return self.act(y)

    def rep_params(self) -> tuple[Tensor, Tensor]:
        """The single (out, in, 3, 3) kernel and bias equal to the sum of all branches."""
        branches = [
            (self.conv3x3.weight, self.conv3x3.bias),
            self.conv1x1_3x3.rep_params(),
            self.conv1x1_sbx.rep_params(),
            self.conv1x1_sby.rep_params(),
            self.conv1x1_lpl.rep_params(),
        ]
        w, b = sum_branches(*branches)  # type: ignore[arg-type]
        if self.with_idt:
            w = w + identity_kernel(self.out_channels, dtype=w.dtype).to(w.device)
        return w, b

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        w, b = self.rep_params()
        conv = conv_from(w, b)
        return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, self.act)


class ECBSR(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(
        self,
        *,
        scale: int = 4,
        blocks: int = 4,
        channels: int = 16,
        colors: int = 3,
        act: str = "prelu",
        identity: bool = False,
        depth_multiplier: float = 2.0,
        collapsed: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        kw = {"depth_multiplier": depth_multiplier, "identity": identity, "collapsed": collapsed}
        layers: list[nn.Module] = [ECB(in_channels=colors, out_channels=channels, act=act, **kw)]  # type: ignore[arg-type]
        layers += [ECB(in_channels=channels, out_channels=channels, act=act, **kw) for _ in range(blocks)]  # type: ignore[arg-type]
        # The tail ECB carries the global residual: input repeated scale² times, then pixel-shuffled.
        tail_kw = {**kw, "identity": False}
        layers.append(
            ECB(in_channels=channels, out_channels=colors * scale * scale, act="linear", **tail_kw)  # type: ignore[arg-type]
        )
        self.backbone = nn.Sequential(*layers)
        self.residual = NearestResidual(colors=colors, scale=scale)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        # (N, 3, H, W) -> (N, 3·s², H, W) -> pixel_shuffle -> (N, 3, H·s, W·s)
        return self.upsampler(self.backbone(x) + self.residual(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Deploy form: plain 3x3 convs + activations, the fixed residual conv, pixel shuffle."""
        body = nn.Sequential(*[blk.fuse() for blk in self.backbone])  # type: ignore[operator]
        return PlainSR(body=body, scale=self.scale, colors=self.residual.colors)


class NearestResidual(nn.Module):
    """(N, C, H, W) -> (N, C·s², H, W): each channel repeated s² times, by a fixed 1x1 conv (no parameters).

    After ``pixel_shuffle(s)`` this is nearest-neighbour upsampling of the input.
    """

    kernel: Tensor  # (C·s², C, 1, 1) buffer

    def __init__(self, *, colors: int, scale: int) -> None:
        super().__init__()
        self.colors = colors
        self.register_buffer(
            "kernel", repeat_identity_kernel(colors, scale * scale, size=1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype))


class PlainSR(nn.Module):
    """A deploy-form net: ``body`` (plain convs + activations) plus the nearest-upsampled input, then pixel
    shuffle. (N, C, H, W) -> (N, C, H·s, W·s)."""

    def __init__(self, *, body: nn.Sequential, scale: int, colors: int = 3) -> None:
        super().__init__()
        self.body = body
        self.scale = scale
        self.residual = NearestResidual(colors=colors, scale=scale)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsampler(self.body(x) + self.residual(x))


def _ecbsr(blocks: int, channels: int, overrides: dict) -> ECBSR:
    return ECBSR(**{"blocks": blocks, "channels": channels, **overrides})


@register_model(family="ecbsr", reparameterizable=True)
def ecbsr_m4c8(**overrides) -> ECBSR:
    return _ecbsr(4, 8, overrides)


@register_model(family="ecbsr", reparameterizable=True)
def ecbsr_m4c16(**overrides) -> ECBSR:
    return _ecbsr(4, 16, overrides)


@register_model(family="ecbsr", reparameterizable=True)
def ecbsr_m10c32(**overrides) -> ECBSR:
    return _ecbsr(10, 32, overrides)


@register_model(family="ecbsr", reparameterizable=True)
def ecbsr_m16c64(**overrides) -> ECBSR:
    return _ecbsr(16, 64, overrides)


_ECB_KEY = (
    r"backbone\.\d+\.(conv3x3\.(weight|bias)|conv1x1_3x3\.(k0|b0|k1|b1)"
    r"|conv1x1_(sbx|sby|lpl)\.(k0|b0|scale|bias|mask)|act\.weight)"
)
_OFFICIAL_PLAIN_KEY = r"backbone\.\d+\.(conv3x3\.(weight|bias)|act\.weight)"
_ZOO_PLAIN_KEY = r"body\.\d+\.((0\.)?(weight|bias)|1\.weight)"
_NAMES: dict[tuple[int, ...], str] = {
    (4, 8): "ecbsr_m4c8",
    (4, 16): "ecbsr_m4c16",
    (10, 32): "ecbsr_m10c32",
    (16, 64): "ecbsr_m16c64",
}
_RELU = "relu: the activations hold no weights (ReLU); pass --model-arg act=... for another one"


def plain_args(
    state: StateDict, prefix: str, head_key: str, tail_key: str, act_key: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Arguments of a plain VGG-style net numbered ``{prefix}0 .. {prefix}n-1`` (head, ``n - 2`` body blocks,
    tail to C·s²): the head conv is ``{prefix}0{head_key}``, the tail's ``{prefix}{n-1}{tail_key}``, PReLU
    weights ``{prefix}0{act_key}`` (or none); and what was assumed.

    Raises:
        ValueError: The blocks are not numbered 0 .. n-1, or the tail's channels are not C·s².
    """
    found = indices(state, prefix)
    if len(found) < 2 or found != list(range(len(found))):
        raise ValueError(f"{prefix}N is not numbered 0 .. n-1")
    last = found[-1]
    channels, colors, _, _ = conv_shape(state, f"{prefix}0{head_key}")
    out, _, _, _ = conv_shape(state, f"{prefix}{last}{tail_key}")
    prelu = f"{prefix}0{act_key}" in state
    args: dict[str, Any] = {
        "scale": pixel_shuffle_scale(out, colors),
        "colors": colors,
        "blocks": last - 1,
        "channels": channels,
        "act": "prelu" if prelu else "relu",
    }
    return args, ({} if prelu else {"act": _RELU})


def _official_plain_to_zoo(state: StateDict) -> StateDict:
    """``backbone.N.conv3x3.*`` / ``backbone.N.act.weight`` -> ``body.N.0.*`` / ``body.N.1.weight``
    (the linear tail, which has no activation: ``body.N.*``)."""
    last = max(indices(state, "backbone."))
    out: StateDict = {}
    for k, v in state.items():
        _, n, rest = k.split(".", 2)
        if rest.startswith("conv3x3."):
            leaf = rest[len("conv3x3.") :]
            out[f"body.{n}.{leaf}" if int(n) == last else f"body.{n}.0.{leaf}"] = v
        else:  # act.weight
            out[f"body.{n}.1.weight"] = v
    return out


@register_detector("ecbsr")
def _detect(state: StateDict) -> Detection | None:
    """ECBSR in its training form, or any plain deploy-form net of ECBSR / RepSR (see the module docstring)."""
    if keys_match(state, _ECB_KEY) and "backbone.0.conv1x1_3x3.k0" in state:
        args, assumed = plain_args(state, "backbone.", ".conv3x3.weight", ".conv3x3.weight", ".act.weight")
        mid = conv_shape(state, "backbone.0.conv1x1_3x3.k0")[0]
        full = {**args, "identity": False, "depth_multiplier": mid / int(args["channels"])}
        assumed["identity"] = "False: the identity branch adds no weight (off in the official configs)"
        return Detection(_name(full), full, assumed=assumed)
    if keys_match(state, _OFFICIAL_PLAIN_KEY) and "backbone.0.conv3x3.weight" in state:
        args, assumed = plain_args(state, "backbone.", ".conv3x3.weight", ".conv3x3.weight", ".act.weight")
        return Detection(
            _name(args), args, form="deploy", layout="plainsr", assumed=assumed, adapt=_official_plain_to_zoo
        )
    if keys_match(state, _ZOO_PLAIN_KEY) and "body.0.0.weight" in state:
        # (conv, activation) pairs, then the linear tail conv as body.N itself
        args, assumed = plain_args(state, "body.", ".0.weight", ".weight", ".1.weight")
        return Detection(_name(args), args, form="deploy", layout="deploy", assumed=assumed)
    return None


def _name(args: dict[str, Any]) -> str:
    return nearest_name(_NAMES, (int(args["blocks"]), int(args["channels"])))
