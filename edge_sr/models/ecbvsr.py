"""ECB-VSR: a streaming video step built on the ECBSR image network, so that it starts as good as the image model.

The bundled RRN-edge step learns single-image SR and the use of the other frames at once, from the same
small data, and as a single-image net (16 channels, 3 blocks) it stays under ECBSR-M4C16 (docs/MODEL_ZOO.md).
This step is ECBSR-M4C16 with a recurrent input: the head ECB sees the current frame as in ECBSR, a plain
3x3 conv (``state_in``) sees the previous LR frame and the hidden features, and their sum goes through the
head's activation; ``conv_h`` (3x3, ReLU) emits the next hidden features from the last body block. With
``state_in`` at zero the step *is* the image model, so a run started from an ECBSR checkpoint
(``--init``, names and shapes match: ``backbone.N.*``) starts at the image model's quality and trains only
what the other frames add. No previous SR output is fed back (RRN's ``prev_sr``): it would cost a
high-resolution state and 48 more input channels at x4.

The step (:mod:`edge_sr.models.stream`)::

    forward(cur, prev, hidden) -> (sr, hidden_out)
    cur        (N, C, h, w)          the current LR frame, RGB in [0, 1]
    prev       (N, C, h, w)          state: the previous LR frame          (initially: the first frame itself)
    hidden     (N, channels, h, w)   state: the previous ``hidden_out``    (initially: zeros)
    sr         (N, C, h·s, w·s)      nearest(cur) + pixel_shuffle(tail), like ECBSR, not clamped in the graph
    hidden_out (N, channels, h, w)   ReLU features, >= 0

Deploy form (``fuse()``, :class:`ECBVSRPlain`): the head ECB and ``state_in`` become one 3x3 conv over
``[cur, prev, hidden]`` (in this channel order), each ECB one 3x3 conv; MACs per LR pixel at M4C16 x4:
head 22·16·9, body 4·16·16·9, tail 16·48·9, ``conv_h`` 16·16·9 = 21.6 K (1.24 GMAC per 180x320 frame;
ECBSR-M4C16 x4 alone: 16.7 K, RRN-edge: 33.1 K).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import conv_shape, keys_match, make_act, nearest_name, pixel_shuffle_scale
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
from edge_sr.models.ecbsr import ECB, NearestResidual
from edge_sr.models.registry import register_model
from edge_sr.models.stream import StateTensor, StreamSpec
from edge_sr.reparam.rules import conv_from

_SPEC = StreamSpec(
    frames=("cur",),
    state=(
        StateTensor("prev", next="cur", channels="colors", resolution="lr", init="frame"),
        StateTensor("hidden", next="hidden_out", channels=0, resolution="lr", init="zeros"),
    ),
    output="sr",
    state_outputs=("hidden_out",),
)


class _Stream:
    """The step contract with the hidden state's channel count filled in (``self.channels``)."""

    STREAM = _SPEC
    channels: int

    @property
    def stream(self) -> StreamSpec:
        return _SPEC.with_channels("hidden", self.channels)


class ECBVSR(_Stream, nn.Module):
    """Training form: ECBs (``backbone.0`` head without its activation, ``backbone.1..blocks`` body,
    ``backbone.blocks+1`` linear tail), ``state_in``, ``head_act``, ``conv_h``."""

    def __init__(
        self,
        *,
        scale: int = 4,
        blocks: int = 4,
        channels: int = 16,
        colors: int = 3,
        act: str = "relu",
        depth_multiplier: float = 2.0,
        collapsed: bool = False,
    ) -> None:
        super().__init__()
        self.scale, self.colors, self.channels, self.act_name = scale, colors, channels, act
        kw: dict[str, Any] = {"depth_multiplier": depth_multiplier, "collapsed": collapsed}
        layers: list[nn.Module] = [ECB(in_channels=colors, out_channels=channels, act="linear", **kw)]
        layers += [ECB(in_channels=channels, out_channels=channels, act=act, **kw) for _ in range(blocks)]
        layers.append(ECB(in_channels=channels, out_channels=colors * scale * scale, act="linear", **kw))
        self.backbone = nn.Sequential(*layers)
        self.state_in = nn.Conv2d(colors + channels, channels, 3, padding=1)
        self.head_act = make_act(act, channels)
        self.conv_h = nn.Conv2d(channels, channels, 3, padding=1)
        self.residual = NearestResidual(colors=colors, scale=scale)
        self.upsampler = nn.PixelShuffle(scale)
        # state_in at zero: the step equals the image network until training finds a use for the state.
        # conv_h as RRN's initialisation (Kaiming x 0.1), so hidden_out is not zero and state_in gets gradients.
        nn.init.zeros_(self.state_in.weight)
        nn.init.zeros_(self.state_in.bias)  # type: ignore[arg-type]
        nn.init.kaiming_normal_(self.conv_h.weight, a=0, mode="fan_in")
        self.conv_h.weight.data.mul_(0.1)
        nn.init.zeros_(self.conv_h.bias)  # type: ignore[arg-type]

    def forward(self, cur: Tensor, prev: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        head, *body, tail = self.backbone
        x = self.head_act(head(cur) + self.state_in(torch.cat((prev, hidden), dim=1)))
        for blk in body:
            x = blk(x)
        # (N, C·s², h, w) -> pixel_shuffle -> (N, C, h·s, w·s)
        sr = self.upsampler(tail(x) + self.residual(cur))
        return sr, F.relu(self.conv_h(x))

    @torch.no_grad()
    def fuse(self) -> ECBVSRPlain:
        head, *body, tail = self.backbone
        w_head, b_head = head.rep_params()  # type: ignore[operator]
        net = ECBVSRPlain(
            scale=self.scale, blocks=len(body), channels=self.channels, colors=self.colors, act=self.act_name
        ).to(w_head.device, w_head.dtype)
        # one conv over [cur, prev, hidden]: the head ECB's fused kernel beside state_in's, biases summed
        w = torch.cat((w_head, self.state_in.weight), dim=1)
        b = b_head + self.state_in.bias  # type: ignore[operator]
        net.head.load_state_dict(conv_from(w, b).state_dict())
        net.head_act.load_state_dict(self.head_act.state_dict())
        for dst, blk in zip(net.body, body, strict=True):
            fused = blk.fuse()  # type: ignore[operator]
            dst.load_state_dict(fused.state_dict())
        tail_conv = conv_from(*tail.rep_params())  # type: ignore[operator]
        net.tail.load_state_dict(tail_conv.state_dict())
        net.conv_h.load_state_dict(self.conv_h.state_dict())
        return net.eval()


class ECBVSRPlain(_Stream, nn.Module):
    """Deploy form: ``head`` (3x3 over [cur, prev, hidden]) + ``head_act``, ``body.N`` (conv, activation),
    ``tail`` (linear, to C·s²), ``conv_h``; the same step as :class:`ECBVSR`."""

    def __init__(
        self, *, scale: int = 4, blocks: int = 4, channels: int = 16, colors: int = 3, act: str = "relu"
    ) -> None:
        super().__init__()
        self.scale, self.colors, self.channels = scale, colors, channels
        self.head = nn.Conv2d(2 * colors + channels, channels, 3, padding=1)
        self.head_act = make_act(act, channels)
        self.body = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), make_act(act, channels))
                for _ in range(blocks)
            )
        )
        self.tail = nn.Conv2d(channels, colors * scale * scale, 3, padding=1)
        self.conv_h = nn.Conv2d(channels, channels, 3, padding=1)
        self.residual = NearestResidual(colors=colors, scale=scale)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, cur: Tensor, prev: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(self.head_act(self.head(torch.cat((cur, prev, hidden), dim=1))))
        sr = self.upsampler(self.tail(x) + self.residual(cur))
        return sr, F.relu(self.conv_h(x))


@register_model(family="ecbvsr", kind="video", reparameterizable=True)
def ecbvsr_m4c16(**overrides) -> ECBVSR:
    """ECBSR-M4C16 with a recurrent head: 1.24 GMAC per 180x320 frame at x4 (the phone configuration)."""
    return ECBVSR(**{"blocks": 4, "channels": 16, **overrides})


_ECB = r"(conv3x3\.(weight|bias)|conv1x1_3x3\.(k0|b0|k1|b1)|conv1x1_(sbx|sby|lpl)\.(k0|b0|scale|bias|mask)|act\.weight)"
_TRAIN_KEY = rf"backbone\.\d+\.{_ECB}|(state_in|conv_h)\.(weight|bias)|head_act\.weight"
_DEPLOY_KEY = r"(head|tail|conv_h)\.(weight|bias)|head_act\.weight|body\.\d+\.(0\.(weight|bias)|1\.weight)"
_NAMES: dict[tuple[int, ...], str] = {(4, 16): "ecbvsr_m4c16"}


@register_detector("ecbvsr")
def _detect(state: StateDict) -> Detection | None:
    """The train form (``backbone.N`` ECBs beside ``state_in`` / ``conv_h``) or the deploy form
    (``head`` / ``body.N`` / ``tail`` / ``conv_h``): channels from ``conv_h``, colours from the hidden
    input's share of the recurrent inputs, blocks from the body's count, scale from the tail's C·s²."""
    act: dict[str, Any]
    if keys_match(state, _TRAIN_KEY) and all(k in state for k in ("state_in.weight", "conv_h.weight")):
        channels, c_state, _, _ = conv_shape(state, "state_in.weight")
        colors = c_state - channels
        n = indices(state, "backbone.")
        if colors <= 0 or len(n) < 3 or n != list(range(len(n))):
            return None
        out = conv_shape(state, f"backbone.{n[-1]}.conv3x3.weight")[0]
        act = {"act": "prelu"} if "head_act.weight" in state else {"act": "relu"}
        args = {
            "scale": pixel_shuffle_scale(out, colors),
            "colors": colors,
            "blocks": len(n) - 2,
            "channels": channels,
        }
        return Detection(_name(args), {**args, **act}, assumed=_assumed(act))
    if keys_match(state, _DEPLOY_KEY) and all(
        k in state for k in ("head.weight", "tail.weight", "conv_h.weight")
    ):
        channels, c_in, _, _ = conv_shape(state, "head.weight")
        colors = (c_in - channels) // 2
        if colors <= 0 or 2 * colors + channels != c_in:
            return None
        out = conv_shape(state, "tail.weight")[0]
        act = {"act": "prelu"} if "head_act.weight" in state else {"act": "relu"}
        blocks = len(indices(state, "body."))
        args = {
            "scale": pixel_shuffle_scale(out, colors),
            "colors": colors,
            "blocks": blocks,
            "channels": channels,
        }
        return Detection(_name(args), {**args, **act}, form="deploy", assumed=_assumed(act))
    return None


def _assumed(act: dict[str, Any]) -> dict[str, str]:
    return {} if act["act"] == "prelu" else {"act": "relu: the activations hold no weights"}


def _name(args: dict[str, Any]) -> str:
    return nearest_name(_NAMES, (int(args["blocks"]), int(args["channels"])))
