"""BasicVSR++: Improving Video Super-Resolution with Enhanced Propagation and Alignment (Chan, Zhou, Xu,
Loy, CVPR 2022).

Features of every frame (conv + 5 residual blocks) are refined by four propagation passes over the whole
clip (backward, forward, backward, forward: *grid propagation*); each pass sees the features of the passes
before it. A pass aligns the running features to the current frame with **flow-guided deformable
alignment** of second order: the features one and two frames back are pre-warped by the SPyNet flow
(the two-step flow composed by warping), and a deformable convolution refines the alignment with offsets
``max_residue_magnitude · tanh(·)`` added to the flow and a sigmoid mask, predicted from both warped
features, the current frame's and the flows. A reconstruction trunk on all five feature sets and two
pixel-shuffle stages give each frame.

Contract: a whole-clip model, ``forward(x)`` with x (N, T, 3, H, W) in [0, 1] -> (N, T, 3, H·scale,
W·scale). (The official code asserts H, W >= 64 for SPyNet's pyramid; this one runs any size, SPyNet
resizes to multiples of 32.)

The deformable aligners are always built, in plain PyTorch (:mod:`edge_sr.models.deform`): BasicSR's copy
builds them only when CUDA is present, so its checkpoint does not even load strictly on a CPU machine.
Keys are BasicSR's (``spynet``, ``feat_extract.main``, ``deform_align.<pass>.conv_offset.<0..6>`` /
``.weight`` / ``.bias``, ``backbone.<pass>.main``, ``reconstruction.main``, ``upconv1``, ``upconv2``,
``conv_hr``, ``conv_last``); mmagic's ``BasicVSRPlusPlusNet`` (``upsample1.upsample_conv``, SPyNet's
ConvModule ``.conv.``) is detected and renamed. Published: 64 channels, 7 blocks per pass, 16 deformable
groups (7.32 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.basicvsr import clip_flows
from edge_sr.models.deform import ModulatedDeformConv2d, zero_init
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.spynet import SpyNet, flow_warp
from edge_sr.models.vsr_common import ConvResidualBlocks, UpsampleTail, check_clip, layout_of, to_basicsr

PASSES = ("backward_1", "forward_1", "backward_2", "forward_2")


class SecondOrderDeformableAlignment(ModulatedDeformConv2d):
    """DCN over the (N, 2C, h, w) features of frames i-1 and i-2, guided by their flows to frame i.

    ``forward(x, cond, flow_1, flow_2)``: ``cond`` (N, 3C, h, w) is (warped i-1, current, warped i-2);
    ``conv_offset`` predicts 27·G channels: two offset halves (each added to its flow, in the DCN's (y, x)
    order, so ``flow.flip(1)``) and the mask.
    """

    def __init__(self, channels: int, *, deform_groups: int, max_residue_magnitude: float) -> None:
        super().__init__(2 * channels, channels, 3, padding=1, deform_groups=deform_groups)
        self.max_residue_magnitude = max_residue_magnitude
        # no deformation beyond the flow at the start, as the official init
        last = zero_init(nn.Conv2d(channels, 27 * deform_groups, 3, 1, 1))
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            last,
        )

    def forward(self, x: Tensor, cond: Tensor, flow_1: Tensor, flow_2: Tensor) -> Tensor:  # type: ignore[override]
        o1, o2, mask = torch.chunk(self.conv_offset(torch.cat([cond, flow_1, flow_2], dim=1)), 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        off_1, off_2 = torch.chunk(offset, 2, dim=1)
        # each half covers G/2 groups x 9 taps of (dy, dx): the flow, (x, y) -> (y, x), repeated per tap
        off_1 = off_1 + flow_1.flip(1).repeat(1, off_1.shape[1] // 2, 1, 1)
        off_2 = off_2 + flow_2.flip(1).repeat(1, off_2.shape[1] // 2, 1, 1)
        return self.deform(x, torch.cat([off_1, off_2], dim=1), torch.sigmoid(mask))


class BasicVSRPlusPlus(UpsampleTail):
    """(N, T, 3, H, W) clip in [0, 1] -> (N, T, 3, H·scale, W·scale).

    ``scale=1`` is the official same-size form (``is_low_res_input=False``, the deblurring and
    decompression models): H and W multiples of 4, features and flows at 1/4 resolution.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        mid_channels: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = 10.0,
        deform_groups: int = 16,
    ) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.spynet = SpyNet()
        self.feat_extract: nn.Module
        if scale == 1:  # full-resolution input: two stride-2 convs down to the working resolution
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, mid_channels, 3, 2, 1),
                nn.LeakyReLU(0.1),
                nn.Conv2d(mid_channels, mid_channels, 3, 2, 1),
                nn.LeakyReLU(0.1),
                ConvResidualBlocks(mid_channels, mid_channels, 5),
            )
        else:
            self.feat_extract = ConvResidualBlocks(3, mid_channels, 5)
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, name in enumerate(PASSES):
            self.deform_align[name] = SecondOrderDeformableAlignment(
                mid_channels, deform_groups=deform_groups, max_residue_magnitude=max_residue_magnitude
            )
            self.backbone[name] = ConvResidualBlocks((2 + i) * mid_channels, mid_channels, num_blocks)
        self.reconstruction = ConvResidualBlocks(5 * mid_channels, mid_channels, 5)
        self._build_tail(mid_channels, scale, scales=(1, 2, 4))

    def propagate(self, feats: dict[str, list[Tensor]], flows: Tensor, name: str) -> list[Tensor]:
        """One pass over the clip: the features of pass ``name`` in time order.

        ``flows`` (N, T-1, 2, h, w) are :func:`~edge_sr.models.basicvsr.clip_flows`' backward flows for a
        backward pass (``flows[:, j]`` brings frame j+1 to frame j), its forward flows for a forward pass
        (``flows[:, j]`` brings frame j to frame j+1). ``feats`` holds the spatial features and the passes
        before this one, each a list over time.
        """
        t = len(feats["spatial"])
        backward = name.startswith("backward")
        order = list(range(t - 1, -1, -1)) if backward else list(range(t))
        flow_idx = order if backward else list(range(-1, t - 1))
        earlier = [k for k in feats if k not in ("spatial", name)]
        out: list[Tensor] = []
        prop = feats["spatial"][0].new_zeros(feats["spatial"][0].shape)
        for i, idx in enumerate(order):
            current = feats["spatial"][idx]
            if i > 0:
                flow_1 = flows[:, flow_idx[i]]
                cond_1 = flow_warp(prop, flow_1)
                feat_2, flow_2, cond_2 = (
                    torch.zeros_like(prop),
                    torch.zeros_like(flow_1),
                    torch.zeros_like(cond_1),
                )
                if i > 1:  # second order: the frame two steps back, by the composed flow
                    feat_2 = out[-2]
                    flow_2 = flow_1 + flow_warp(flows[:, flow_idx[i - 1]], flow_1)
                    cond_2 = flow_warp(feat_2, flow_2)
                cond = torch.cat([cond_1, current, cond_2], dim=1)
                prop = self.deform_align[name](torch.cat([prop, feat_2], dim=1), cond, flow_1, flow_2)
            feat = torch.cat([current, *(feats[k][idx] for k in earlier), prop], dim=1)
            prop = prop + self.backbone[name](feat)
            out.append(prop)
        return out[::-1] if backward else out

    def forward(self, x: Tensor) -> Tensor:
        check_clip(x, "BasicVSR++", multiple=4 if self.scale == 1 else 1)
        n, t, c, h, w = x.shape
        spatial = self.feat_extract(x.reshape(-1, c, h, w))
        h, w = spatial.shape[-2:]  # a quarter of the input's at scale 1
        spatial = spatial.reshape(n, t, -1, h, w)
        feats: dict[str, list[Tensor]] = {"spatial": [spatial[:, i] for i in range(t)]}
        # the flows at the working resolution: at scale 1 from the input shrunk x4 (bicubic, as official)
        lr = x
        if self.scale == 1:
            lr = F.interpolate(x.reshape(-1, *x.shape[2:]), scale_factor=0.25, mode="bicubic")
            lr = lr.reshape(n, t, c, h, w)
        if t > 1:
            flows_fwd, flows_bwd = clip_flows(self.spynet, lr)
        else:  # one frame: nothing to align
            flows_fwd = flows_bwd = x.new_zeros(n, 0, 2, h, w)
        for name in PASSES:
            feats[name] = []  # the pass sees the passes before it, not itself
            feats[name] = self.propagate(feats, flows_bwd if name.startswith("backward") else flows_fwd, name)
        out = []
        for i in range(t):
            hr = self.reconstruction(torch.cat([feats[k][i] for k in ("spatial", *PASSES)], dim=1))
            out.append(self._tail(hr, x[:, i]))
        return torch.stack(out, dim=1)


@register_model(family="basicvsrpp", kind="video")
def basicvsrpp(**overrides) -> BasicVSRPlusPlus:
    """The paper's BasicVSR++: 64 channels, 7 blocks per pass, 16 deformable groups (7.32 M)."""
    return BasicVSRPlusPlus(**{"mid_channels": 64, "num_blocks": 7, **overrides})


@register_detector("basicvsrpp")
def _detect(state: StateDict) -> Detection | None:
    sd = to_basicsr(state)
    head = "deform_align.backward_1.conv_offset.6.weight"
    if not has(sd, "spynet.basic_module.0.basic_module.0.weight", head):
        return None
    full_res = "feat_extract.0.weight" in sd
    mid = shape(sd, "feat_extract.0.weight" if full_res else "feat_extract.main.0.weight")[0]  # type: ignore[index]
    offsets = shape(sd, head)[0]  # type: ignore[index]
    if offsets % 27:
        return None
    return Detection(
        "basicvsrpp",
        {
            "scale": 1 if full_res else 4 if "upconv2.weight" in sd else 2,
            "mid_channels": mid,
            "num_blocks": len(indices(sd, "backbone.backward_1.main.2.")),
            "deform_groups": offsets // 27,
            "max_residue_magnitude": 10.0,
        },
        layout=layout_of(state),
        assumed={"max_residue_magnitude": "the weights do not store it; the paper's 10"},
        adapt=to_basicsr,
    )
