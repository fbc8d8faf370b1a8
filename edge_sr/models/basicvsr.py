"""BasicVSR and IconVSR: The Search for Essential Components in Video Super-Resolution and Beyond (Chan,
Wang, Yu, Dong, Loy, CVPR 2021).

BasicVSR propagates features bidirectionally over the whole clip: SPyNet estimates the flow between
neighbours, a backward pass (last frame to first) and a forward pass each warp the running features to the
current frame (``flow_warp``, bilinear, zeros outside), concatenate the LR frame and run a conv + residual
trunk; the two directions are fused (1x1 conv) and upsampled per frame. IconVSR adds *information refill*:
at keyframes (every ``keyframe_stride`` frames, and the last) the propagated features are fused with the
features of an EDVR-M front (PCD + TSA) over a window of ``2·temporal_padding + 1`` frames, and its forward
trunk also sees the backward features (coupled propagation). IconVSR pads H and W to multiples of 4 by
reflection and crops the output.

Contract: these are whole-clip models, ``forward(x)`` with x (N, T, 3, H, W) in [0, 1] -> (N, T, 3, H·scale,
W·scale) (IconVSR needs T >= 2·temporal_padding + 1 for its refill window, as the official code).

Keys are BasicSR's (``spynet.basic_module``, ``backward_trunk.main``, ``forward_trunk``, ``fusion``,
``upconv1``, ``upconv2``, ``conv_hr``, ``conv_last``; IconVSR ``edvr.*``, ``backward_fusion``,
``forward_fusion``). mmagic / mmedit's ``BasicVSRNet`` / ``IconVSRNet`` (``generator.`` prefix,
``backward_resblocks``, ``upsample1.upsample_conv``, SPyNet's and EDVR's ConvModule ``.conv.``) are detected
and renamed. Published: BasicVSR 64 channels x 30 blocks (6.29 M parameters), IconVSR the same plus the
EDVR-M refill (8.69 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.edvr import EDVRFeatureExtractor, detect_edvr_front
from edge_sr.models.registry import register_model
from edge_sr.models.spynet import SpyNet, flow_warp
from edge_sr.models.vsr_common import (
    ConvResidualBlocks,
    UpsampleTail,
    check_clip,
    layout_of,
    lrelu,
    to_basicsr,
)


def clip_flows(spynet: SpyNet, x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, T, 3, h, w) -> (forward, backward) flows, each (N, T-1, 2, h, w): ``forward[:, i]`` warps frame i's
    features to frame i+1, ``backward[:, i]`` frame i+1's to frame i."""
    n, t, c, h, w = x.shape
    x1, x2 = x[:, :-1].reshape(-1, c, h, w), x[:, 1:].reshape(-1, c, h, w)
    backward = spynet(x1, x2).reshape(n, t - 1, 2, h, w)
    forward = spynet(x2, x1).reshape(n, t - 1, 2, h, w)
    return forward, backward


class BasicVSR(UpsampleTail):
    """(N, T, 3, H, W) clip in [0, 1] -> (N, T, 3, H·scale, W·scale)."""

    def __init__(self, *, scale: int = 4, num_feat: int = 64, num_block: int = 30) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
        self._build_tail(num_feat, scale)

    def forward(self, x: Tensor) -> Tensor:
        check_clip(x, "BasicVSR")
        n, t, _, h, w = x.shape
        if t > 1:
            flows_fwd, flows_bwd = clip_flows(self.spynet, x)
        backward: list[Tensor] = []
        prop = x.new_zeros(n, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                prop = flow_warp(prop, flows_bwd[:, i])
            prop = self.backward_trunk(torch.cat([x[:, i], prop], dim=1))
            backward.insert(0, prop)
        out = []
        prop = torch.zeros_like(prop)
        for i in range(t):
            if i > 0:
                prop = flow_warp(prop, flows_fwd[:, i - 1])
            prop = self.forward_trunk(torch.cat([x[:, i], prop], dim=1))
            feat = lrelu(self.fusion(torch.cat([backward[i], prop], dim=1)))
            out.append(self._tail(feat, x[:, i]))
        return torch.stack(out, dim=1)


class IconVSR(UpsampleTail):
    """(N, T, 3, H, W) clip in [0, 1], T >= 2·temporal_padding + 1 -> (N, T, 3, H·scale, W·scale)."""

    def __init__(
        self,
        *,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 30,
        keyframe_stride: int = 5,
        temporal_padding: int = 2,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
    ) -> None:
        super().__init__()
        if keyframe_stride < 1 or temporal_padding < 1:
            raise ConfigError(None, "keyframe_stride and temporal_padding must be at least 1")
        self.num_feat, self.keyframe_stride, self.temporal_padding = (
            num_feat,
            keyframe_stride,
            temporal_padding,
        )
        self.edvr = EDVRFeatureExtractor(
            num_feat=num_feat,
            num_frame=2 * temporal_padding + 1,
            deformable_groups=deformable_groups,
            num_extract_block=num_extract_block,
        )
        self.spynet = SpyNet()
        self.backward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.forward_trunk = ConvResidualBlocks(2 * num_feat + 3, num_feat, num_block)
        self._build_tail(num_feat, scale)

    def keyframes(self, t: int) -> list[int]:
        """Every ``keyframe_stride``-th frame, and the last."""
        idx = list(range(0, t, self.keyframe_stride))
        return idx if idx[-1] == t - 1 else [*idx, t - 1]

    def refill(self, x: Tensor, keyframes: list[int]) -> dict[int, Tensor]:
        """The EDVR features of each keyframe's window. The clip is extended at both ends by the official
        frames (padding 2: 4, 3 before and -4, -5 after; padding 3: 6, 5, 4 and -5, -6, -7)."""
        p = self.temporal_padding
        head = [2 * p - j for j in range(p)]
        tail = [-(p + 2) - j for j in range(p)]
        x = torch.cat([x[:, head], x, x[:, tail]], dim=1)
        return {i: self.edvr(x[:, i : i + 2 * p + 1]) for i in keyframes}

    def forward(self, x: Tensor) -> Tensor:
        check_clip(x, "IconVSR", min_frames=2 * self.temporal_padding + 1)
        n, t, c, h_in, w_in = x.shape
        # the PCD pyramid needs multiples of 4: reflect-pad H and W, crop the output
        pad_h, pad_w = (4 - h_in % 4) % 4, (4 - w_in % 4) % 4
        x = F.pad(x.reshape(-1, c, h_in, w_in), [0, pad_w, 0, pad_h], mode="reflect")
        h, w = h_in + pad_h, w_in + pad_w
        x = x.reshape(n, t, c, h, w)
        keys = self.keyframes(t)
        flows_fwd, flows_bwd = clip_flows(self.spynet, x)
        refill = self.refill(x, keys)
        backward: list[Tensor] = []
        prop = x.new_zeros(n, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                prop = flow_warp(prop, flows_bwd[:, i])
            if i in refill:
                prop = self.backward_fusion(torch.cat([prop, refill[i]], dim=1))
            prop = self.backward_trunk(torch.cat([x[:, i], prop], dim=1))
            backward.insert(0, prop)
        out = []
        prop = torch.zeros_like(prop)
        for i in range(t):
            if i > 0:
                prop = flow_warp(prop, flows_fwd[:, i - 1])
            if i in refill:
                prop = self.forward_fusion(torch.cat([prop, refill[i]], dim=1))
            prop = self.forward_trunk(torch.cat([x[:, i], backward[i], prop], dim=1))
            out.append(self._tail(prop, x[:, i]))
        s = self.scale
        return torch.stack(out, dim=1)[..., : s * h_in, : s * w_in]


@register_model(family="basicvsr", kind="video")
def basicvsr(**overrides) -> BasicVSR:
    """The paper's BasicVSR: 64 channels, 30 residual blocks per direction (6.29 M)."""
    return BasicVSR(**{"num_feat": 64, "num_block": 30, **overrides})


@register_model(family="basicvsr", kind="video")
def iconvsr(**overrides) -> IconVSR:
    """The paper's IconVSR: BasicVSR's trunks, EDVR-M refill every 5 frames over 5-frame windows (8.69 M)."""
    return IconVSR(**{"num_feat": 64, "num_block": 30, **overrides})


@register_detector("basicvsr")
def _detect(state: StateDict) -> Detection | None:
    sd = to_basicsr(state)
    if not has(sd, "spynet.basic_module.0.basic_module.0.weight", "backward_trunk.main.0.weight"):
        return None
    num_feat = shape(sd, "backward_trunk.main.0.weight")[0]  # type: ignore[index]
    args: dict[str, object] = {
        "scale": 4 if "upconv2.weight" in sd else 2,
        "num_feat": num_feat,
        "num_block": len(indices(sd, "backward_trunk.main.2.")),
    }
    assumed: dict[str, str] = {}
    if "edvr.conv_l2_1.weight" in sd:
        front = detect_edvr_front(sd, "edvr.")
        if front is None:
            return None
        args.update(
            temporal_padding=int(front["num_frame"]) // 2,  # type: ignore[call-overload]
            deformable_groups=front["deformable_groups"],
            num_extract_block=front["num_extract_block"],
            keyframe_stride=5,
        )
        assumed["keyframe_stride"] = "the weights do not store it; the paper's 5"
        arch = "iconvsr"
    else:
        arch = "basicvsr"
    return Detection(
        arch,
        args,
        layout=layout_of(state),
        assumed=assumed,
        adapt=to_basicsr,
    )
