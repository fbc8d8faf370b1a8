"""EDVR: Video Restoration with Enhanced Deformable Convolutional Networks (Wang, Chan, Yu, Dong, Loy,
CVPRW 2019).

A sliding-window model: every frame of a window of ``num_frame`` goes through a shared feature extractor
(conv + residual blocks, then two stride-2 levels: a 3-level pyramid), the **PCD** module aligns each
frame's pyramid to the centre frame's with deformable convolutions (coarse to fine, offsets upsampled x2
and doubled between levels, then one cascading DCN at full resolution), **TSA** fuses the aligned frames
(temporal attention: sigmoid of the embedding correlation with the centre frame; spatial attention: a
max / avg pooled pyramid), and residual blocks plus two pixel-shuffle stages reconstruct the centre frame
on top of its bilinear upsampling.

Contract: ``forward(x)`` with x (N, T, 3, H, W) in [0, 1], T = ``num_frame``, H and W multiples of 4 ->
the centre frame (N, 3, H·scale, W·scale).

Keys are BasicSR's (``conv_first``, ``feature_extraction``, ``conv_l2_1`` ..., ``pcd_align.offset_conv1.l3``,
``pcd_align.dcn_pack.l3.conv_offset``, ``pcd_align.cas_dcnpack``, ``fusion.temporal_attn1`` ...,
``reconstruction``, ``upconv1``); mmagic's ``EDVRNet`` (``feat_l2_conv1.conv``, ``pcd_alignment``, the
``.conv.`` of ConvModules, ``upsample1.upsample_conv``) is detected and renamed
(:func:`edge_sr.models.vsr_common.to_basicsr`). The deformable convolution is the plain-PyTorch
:class:`~edge_sr.models.deform.DCNv2Pack`.

Published configurations: EDVR-M (64 channels, 5 + 10 blocks, 3.30 M parameters) and EDVR-L (128
channels, 5 + 40 blocks, 20.63 M), both with TSA, 5 frames, 8 deformable groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError, InputError
from edge_sr.models.deform import DCNv2Pack
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.models.rrn import ResidualBlockNoBN
from edge_sr.models.vsr_common import UpsampleTail, check_clip, layout_of, lrelu, to_basicsr


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _blocks(num_feat: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(n)))


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment of a neighbour's 3-level features to the reference's."""

    def __init__(self, num_feat: int, deformable_groups: int) -> None:
        super().__init__()
        self.offset_conv1, self.offset_conv2 = nn.ModuleDict(), nn.ModuleDict()
        self.offset_conv3, self.dcn_pack, self.feat_conv = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for i in (3, 2, 1):
            lv = f"l{i}"
            self.offset_conv1[lv] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
            self.offset_conv2[lv] = nn.Conv2d(num_feat * (1 if i == 3 else 2), num_feat, 3, 1, 1)
            if i < 3:
                self.offset_conv3[lv] = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
                self.feat_conv[lv] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
            self.dcn_pack[lv] = DCNv2Pack(num_feat, num_feat, 3, padding=1, deform_groups=deformable_groups)
        self.cas_offset_conv1 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.cas_dcnpack = DCNv2Pack(num_feat, num_feat, 3, padding=1, deform_groups=deformable_groups)

    def forward(self, nbr: list[Tensor], ref: list[Tensor]) -> Tensor:
        """nbr, ref: [L1 (N, F, h, w), L2 (h/2), L3 (h/4)] -> the aligned L1 (N, F, h, w)."""
        up_offset = up_feat = nbr[0]  # placeholders; level 3 reads neither
        for i in (3, 2, 1):
            lv = f"l{i}"
            offset = lrelu(self.offset_conv1[lv](torch.cat([nbr[i - 1], ref[i - 1]], dim=1)))
            if i == 3:
                offset = lrelu(self.offset_conv2[lv](offset))
            else:
                offset = lrelu(self.offset_conv2[lv](torch.cat([offset, up_offset], dim=1)))
                offset = lrelu(self.offset_conv3[lv](offset))
            feat = self.dcn_pack[lv](nbr[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[lv](torch.cat([feat, up_feat], dim=1))
            if i > 1:
                feat = lrelu(feat)
                # the offsets double with the resolution
                up_offset, up_feat = _up2(offset) * 2, _up2(feat)
        offset = lrelu(self.cas_offset_conv2(lrelu(self.cas_offset_conv1(torch.cat([feat, ref[0]], dim=1)))))
        return lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and spatial attention fusion: (N, T, F, h, w) aligned features -> (N, F, h, w)."""

    def __init__(self, num_feat: int, num_frame: int, center_frame_idx: int) -> None:
        super().__init__()
        self.center_frame_idx = center_frame_idx
        c = num_feat
        self.temporal_attn1 = nn.Conv2d(c, c, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(c, c, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(num_frame * c, c, 1, 1)
        self.spatial_attn1 = nn.Conv2d(num_frame * c, c, 1)
        self.spatial_attn2 = nn.Conv2d(c * 2, c, 1)
        self.spatial_attn3 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(c, c, 1)
        self.spatial_attn5 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(c, c, 1)
        self.spatial_attn_l2 = nn.Conv2d(c * 2, c, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(c, c, 1)
        self.spatial_attn_add2 = nn.Conv2d(c, c, 1)

    @staticmethod
    def _pool(x: Tensor) -> Tensor:
        # max and average 3x3 / stride 2 (the average counts the zero padding, as nn.AvgPool2d does)
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], dim=1)

    def forward(self, aligned: Tensor) -> Tensor:
        n, t, c, h, w = aligned.shape
        emb_ref = self.temporal_attn1(aligned[:, self.center_frame_idx])
        emb = self.temporal_attn2(aligned.reshape(-1, c, h, w)).reshape(n, t, c, h, w)
        corr = torch.sigmoid((emb * emb_ref.unsqueeze(1)).sum(dim=2))  # (N, T, h, w)
        aligned = (aligned * corr.unsqueeze(2)).reshape(n, t * c, h, w)
        feat = lrelu(self.feat_fusion(aligned))
        attn = lrelu(self.spatial_attn1(aligned))
        attn = lrelu(self.spatial_attn2(self._pool(attn)))
        level = lrelu(self.spatial_attn_l1(attn))
        level = lrelu(self.spatial_attn_l2(self._pool(level)))
        level = _up2(lrelu(self.spatial_attn_l3(level)))
        attn = lrelu(self.spatial_attn3(attn)) + level
        attn = self.spatial_attn5(_up2(lrelu(self.spatial_attn4(attn))))
        attn_add = self.spatial_attn_add2(lrelu(self.spatial_attn_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class PredeblurModule(nn.Module):
    """EDVR's pre-deblurring front: (N, 3, h, w) -> (N, F, h, w), or (N, F, h/4, w/4) with ``hr_in``."""

    def __init__(self, num_feat: int, hr_in: bool) -> None:
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        if hr_in:  # two stride-2 convs down to the working resolution
            self.stride_conv_hr1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
            self.stride_conv_hr2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l2 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.stride_conv_l3 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.resblock_l3 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_1 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_2 = ResidualBlockNoBN(num_feat)
        self.resblock_l1 = nn.ModuleList(ResidualBlockNoBN(num_feat) for _ in range(5))

    def forward(self, x: Tensor) -> Tensor:
        l1 = lrelu(self.conv_first(x))
        if self.hr_in:
            l1 = lrelu(self.stride_conv_hr2(lrelu(self.stride_conv_hr1(l1))))
        l2 = lrelu(self.stride_conv_l2(l1))
        l3 = _up2(self.resblock_l3(lrelu(self.stride_conv_l3(l2))))
        l2 = _up2(self.resblock_l2_2(self.resblock_l2_1(l2) + l3))
        for blk in self.resblock_l1[:2]:
            l1 = blk(l1)
        l1 = l1 + l2
        for blk in self.resblock_l1[2:]:
            l1 = blk(l1)
        return l1


class EDVRFeatureExtractor(nn.Module):
    """Features, PCD alignment and fusion: (N, T, 3, H, W), H and W multiples of 4 -> (N, F, H, W).

    IconVSR's information-refill branch is exactly this (EDVR-M without its reconstruction).
    """

    def __init__(
        self,
        *,
        num_feat: int = 64,
        num_frame: int = 5,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
        center_frame_idx: int | None = None,
        with_predeblur: bool = False,
        with_tsa: bool = True,
        hr_in: bool = False,
    ) -> None:
        super().__init__()
        if hr_in and not with_predeblur:
            raise ConfigError(
                None, "EDVR takes full-resolution input (scale 1) only with its predeblur module"
            )
        center = num_frame // 2 if center_frame_idx is None else center_frame_idx
        if not 0 <= center < num_frame:
            raise ConfigError(None, f"center_frame_idx {center} is not a frame of a {num_frame}-frame window")
        self.num_frame, self.center_frame_idx, self.with_tsa = num_frame, center, with_tsa
        self.with_predeblur = with_predeblur
        if with_predeblur:
            self.predeblur = PredeblurModule(num_feat, hr_in)
            self.conv_1x1 = nn.Conv2d(num_feat, num_feat, 1, 1)
        else:
            self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.feature_extraction = _blocks(num_feat, num_extract_block)
        self.conv_l2_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l2_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_l3_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l3_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.pcd_align = PCDAlignment(num_feat, deformable_groups)
        self.fusion: nn.Module = (
            TSAFusion(num_feat, num_frame, center)
            if with_tsa
            else nn.Conv2d(num_frame * num_feat, num_feat, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        n, t, c, h, w = x.shape
        frames = x.reshape(-1, c, h, w)
        l1 = self.conv_1x1(self.predeblur(frames)) if self.with_predeblur else lrelu(self.conv_first(frames))
        l1 = self.feature_extraction(l1)
        h, w = l1.shape[-2:]  # a quarter of the input's with hr_in
        l2 = lrelu(self.conv_l2_2(lrelu(self.conv_l2_1(l1))))
        l3 = lrelu(self.conv_l3_2(lrelu(self.conv_l3_1(l2))))
        pyr = [f.reshape(n, t, *f.shape[1:]) for f in (l1, l2, l3)]
        ref = [p[:, self.center_frame_idx] for p in pyr]
        aligned = torch.stack([self.pcd_align([p[:, i] for p in pyr], ref) for i in range(t)], dim=1)
        if self.with_tsa:
            return self.fusion(aligned)
        return self.fusion(aligned.reshape(n, -1, h, w))


class EDVR(EDVRFeatureExtractor, UpsampleTail):
    """(N, T, 3, H, W) window in [0, 1], T = ``num_frame``, H and W multiples of 4 -> the centre frame
    (N, 3, H·scale, W·scale).

    ``scale=1`` is the official deblurring form (``hr_in``, with the predeblur module): full-resolution
    frames, H and W multiples of 16, processed at 1/4 resolution, the centre frame restored at its size.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        num_feat: int = 64,
        num_frame: int = 5,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
        num_reconstruct_block: int = 10,
        center_frame_idx: int | None = None,
        with_predeblur: bool = False,
        with_tsa: bool = True,
    ) -> None:
        super().__init__(
            num_feat=num_feat,
            num_frame=num_frame,
            deformable_groups=deformable_groups,
            num_extract_block=num_extract_block,
            center_frame_idx=center_frame_idx,
            with_predeblur=with_predeblur,
            with_tsa=with_tsa,
            hr_in=scale == 1,
        )
        self.reconstruction = _blocks(num_feat, num_reconstruct_block)
        self._build_tail(num_feat, scale, scales=(1, 2, 4))

    def forward(self, x: Tensor) -> Tensor:
        check_clip(x, "EDVR", min_frames=self.num_frame, multiple=16 if self.scale == 1 else 4)
        if x.shape[1] != self.num_frame:
            raise InputError(
                None, f"EDVR takes a window of exactly {self.num_frame} frames, not {x.shape[1]}"
            )
        feat = self.reconstruction(super().forward(x))
        return self._tail(feat, x[:, self.center_frame_idx])


@register_model(family="edvr", kind="video")
def edvr_m(**overrides) -> EDVR:
    """EDVR-M: 64 channels, 5 extraction and 10 reconstruction blocks, TSA, 5 frames (3.30 M)."""
    return EDVR(**{"num_feat": 64, "num_reconstruct_block": 10, **overrides})


@register_model(family="edvr", kind="video")
def edvr_l(**overrides) -> EDVR:
    """EDVR-L: 128 channels, 5 extraction and 40 reconstruction blocks, TSA, 5 frames (20.63 M)."""
    return EDVR(**{"num_feat": 128, "num_reconstruct_block": 40, **overrides})


# ---- detection


def detect_edvr_front(state: StateDict, prefix: str = "") -> dict[str, object] | None:
    """The feature extractor's arguments read from BasicSR keys under ``prefix``, or None."""
    p = prefix
    if not has(state, f"{p}pcd_align.cas_dcnpack.conv_offset.weight", f"{p}conv_l2_1.weight"):
        return None
    num_feat = shape(state, f"{p}conv_l2_1.weight")[0]  # type: ignore[index]
    offset_out = shape(state, f"{p}pcd_align.cas_dcnpack.conv_offset.weight")[0]  # type: ignore[index]
    with_tsa = f"{p}fusion.feat_fusion.weight" in state
    fusion = shape(state, f"{p}fusion.feat_fusion.weight" if with_tsa else f"{p}fusion.weight")
    if fusion is None or offset_out % 27:
        return None
    return {
        "num_feat": num_feat,
        "num_frame": fusion[1] // num_feat,
        "deformable_groups": offset_out // 27,
        "num_extract_block": len(indices(state, f"{p}feature_extraction.")),
        "with_predeblur": f"{p}predeblur.conv_first.weight" in state,
        "with_tsa": with_tsa,
    }


@register_detector("edvr")
def _detect(state: StateDict) -> Detection | None:
    sd = to_basicsr(state)
    if "reconstruction.0.conv1.weight" not in sd or "edvr.conv_l2_1.weight" in sd:
        return None
    args = detect_edvr_front(sd)
    if args is None:
        return None
    scale = 1 if "predeblur.stride_conv_hr1.weight" in sd else 4 if "upconv2.weight" in sd else 2
    blocks = len(indices(sd, "reconstruction."))
    frames = int(args["num_frame"])  # type: ignore[call-overload]
    args.update(scale=scale, num_reconstruct_block=blocks, center_frame_idx=frames // 2)
    arch = "edvr_l" if args["num_feat"] == 128 else "edvr_m"
    return Detection(
        arch,
        args,
        layout=layout_of(state),
        assumed={
            "center_frame_idx": f"the weights do not store it; the window's middle frame ({frames // 2})"
        },
        adapt=to_basicsr,
    )
