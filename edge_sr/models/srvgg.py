"""SRVGGNetCompact: the compact VGG-style net of Real-ESRGAN (Wang et al., ICCVW 2021), as used by the
``realesr-animevideov3`` (16 convs) and ``realesr-general-x4v3`` (32 convs) releases.

A plain stack of 3x3 convs with an activation after each, all at LR resolution; the last conv emits
C·s² channels, pixel shuffle, plus the nearest-upsampled input (the net learns the residual). Key names
are the official ones (``body.N``: convs at even N, activations at odd N), so official checkpoints load
unchanged with the official ``num_feat`` / ``num_conv``.

Detection: ``colors`` and ``num_feat`` from ``body.0``, ``num_conv`` from the number of convs, the scale
from the last conv's C·s² outputs; ``act_type`` is ``prelu`` when the odd ``body`` entries hold weights.
ReLU and LeakyReLU store nothing, so a net without PReLU weights is reported as ``relu`` under
``assumed["act_type"]``. The weights compute on [0, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import conv_shape, keys_match, pixel_shuffle_scale
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
from edge_sr.models.registry import register_model

_ACTS = ("prelu", "relu", "leakyrelu")


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU()
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.1)
    raise ValueError(f"unknown act_type {kind!r}; choose from {', '.join(_ACTS)}")


class SRVGGNetCompact(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(
        self,
        *,
        scale: int = 4,
        colors: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(colors, num_feat, 3, padding=1), _act(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), _act(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, colors * scale * scale, 3, padding=1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for layer in self.body:
            y = layer(y)
        # (N, C·s², H, W) -> (N, C, sH, sW), plus the nearest-upsampled input
        return self.upsampler(y) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


@register_model(family="srvgg")
def srvgg_compact(**overrides) -> SRVGGNetCompact:
    return SRVGGNetCompact(**{"num_feat": 64, "num_conv": 16, **overrides})


@register_model(family="srvgg")
def srvgg_compact_c32(**overrides) -> SRVGGNetCompact:
    return SRVGGNetCompact(**{"num_feat": 64, "num_conv": 32, **overrides})


@register_detector("srvgg")
def _detect(state: StateDict) -> Detection | None:
    """``body.N.weight`` / ``body.N.bias`` only: convs (with a bias) at even N, PReLUs (weight only) at odd N."""
    if not keys_match(state, r"body\.\d+\.(weight|bias)"):
        return None
    found = indices(state, "body.")
    convs = [i for i in found if f"body.{i}.bias" in state]
    acts = [i for i in found if f"body.{i}.bias" not in state]
    if not convs or convs != list(range(0, 2 * len(convs), 2)) or len(convs) < 2:
        return None
    if acts and acts != list(range(1, convs[-1], 2)):
        return None
    num_feat, colors, _, _ = conv_shape(state, "body.0.weight")
    out, _, _, _ = conv_shape(state, f"body.{convs[-1]}.weight")
    num_conv = len(convs) - 2
    args = {
        "scale": pixel_shuffle_scale(out, colors),
        "colors": colors,
        "num_feat": num_feat,
        "num_conv": num_conv,
        "act_type": "prelu" if acts else "relu",
    }
    assumed: dict[str, str] = {}
    if not acts:
        assumed["act_type"] = (
            "relu: the activations hold no weights (ReLU or LeakyReLU); pass --model-arg "
            "act_type=leakyrelu for a LeakyReLU net"
        )
    # the two releases: realesr-animevideov3 (16 convs), realesr-general-x4v3 (32)
    name = "srvgg_compact_c32" if num_conv >= 24 else "srvgg_compact"
    return Detection(name, args, form="deploy", assumed=assumed)
