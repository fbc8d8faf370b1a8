"""Parts the whole-clip video families share (BasicVSR, IconVSR, BasicVSR++, EDVR).

- :class:`ConvResidualBlocks`: conv + LeakyReLU + plain residual blocks (BasicSR's ``ConvResidualBlocks``,
  mmagic's ``ResidualBlocksWithInputConv``; the same keys ``main.0``, ``main.2.<i>.conv1/conv2``).
- :class:`UpsampleTail`: the reconstruction every family ends with, under BasicSR's names ``upconv1``,
  ``upconv2``, ``conv_hr``, ``conv_last`` (mmagic: ``upsample1.upsample_conv``, ``upsample2.upsample_conv``),
  plus the bilinear upsampling of the LR frame. The papers' models are x4 (two pixel-shuffle x2 stages); x2
  keeps one stage (``upconv1`` then straight to 64 channels).
- :func:`to_basicsr`: the mmagic / mmedit layout renamed to BasicSR's, for the detectors' ``adapt``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError, InputError
from edge_sr.models.rrn import ResidualBlockNoBN
from edge_sr.models.spynet import from_mmagic_keys, spynet_constants

__all__ = [
    "ConvResidualBlocks",
    "UpsampleTail",
    "basicsr_key",
    "check_clip",
    "layout_of",
    "lrelu",
    "to_basicsr",
]


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.1), the activation of every family here."""
    return F.leaky_relu(x, 0.1)


class ConvResidualBlocks(nn.Module):
    """(N, in, h, w) -> (N, out, h, w): conv 3x3, LeakyReLU(0.1), ``num_block`` residual blocks."""

    def __init__(self, num_in_ch: int, num_out_ch: int, num_block: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Sequential(*(ResidualBlockNoBN(num_out_ch) for _ in range(num_block))),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class UpsampleTail(nn.Module):
    """A base class whose model owns ``upconv1`` (``upconv2`` at x4 and x1), ``conv_hr`` and ``conv_last``.

    Scale 1 is the official same-size form (EDVR's ``hr_in`` deblurring models, BasicVSR++ with
    ``is_low_res_input=False``): the front works at 1/4 resolution, the tail is the x4 one, and the input
    frame itself is the base.
    """

    scale: int

    def _build_tail(self, num_feat: int, scale: int, *, scales: tuple[int, ...] = (2, 4)) -> None:
        if scale not in scales:
            raise ConfigError(None, f"scale {scale} is not supported; choose {' or '.join(map(str, scales))}")
        self.scale = scale
        two = scale != 2
        # (N, F, h, w) -> conv -> (N, 4F, h, w) -> pixel_shuffle -> (N, F, 2h, 2w), twice at x4 (and x1)
        self.upconv1 = nn.Conv2d(num_feat, (num_feat if two else 64) * 4, 3, 1, 1)
        if two:
            self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)

    def _tail(self, feat: Tensor, frame: Tensor) -> Tensor:
        """(N, F, h, w) features and their (N, 3, H, W) input frame -> (N, 3, H·s, W·s)."""
        out = lrelu(F.pixel_shuffle(self.upconv1(feat), 2))
        if self.scale != 2:
            out = lrelu(F.pixel_shuffle(self.upconv2(out), 2))
        out = self.conv_last(lrelu(self.conv_hr(out)))
        if self.scale == 1:
            return out + frame
        return out + F.interpolate(frame, scale_factor=self.scale, mode="bilinear", align_corners=False)


def check_clip(x: Tensor, name: str, *, min_frames: int = 1, multiple: int = 1) -> None:
    """A (N, T, 3, H, W) clip with at least ``min_frames`` frames (and sides a multiple of ``multiple``).

    Raises:
        InputError: One line saying what the model needs.
    """
    if x.dim() != 5 or x.shape[2] != 3:
        raise InputError(None, f"{name} takes a (N, T, 3, H, W) clip, not {tuple(x.shape)}")
    if x.shape[1] < min_frames:
        raise InputError(None, f"{name} needs at least {min_frames} frames; the clip has {x.shape[1]}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise InputError(
            None, f"{name} needs frame sides that are multiples of {multiple}, not {tuple(x.shape[-2:])}"
        )


# mmagic module names -> BasicSR's, matched as whole dotted components anywhere in a key
_MMAGIC_NAMES = (
    ("backward_resblocks", "backward_trunk"),
    ("forward_resblocks", "forward_trunk"),
    ("upsample1.upsample_conv", "upconv1"),
    ("upsample2.upsample_conv", "upconv2"),
    ("pcd_alignment", "pcd_align"),
    ("feat_l2_conv1", "conv_l2_1"),
    ("feat_l2_conv2", "conv_l2_2"),
    ("feat_l3_conv1", "conv_l3_1"),
    ("feat_l3_conv2", "conv_l3_2"),
)
_RENAMES = [(re.compile(r"(^|\.)" + re.escape(old) + r"\."), new) for old, new in _MMAGIC_NAMES]
_CONV_MODULE = re.compile(r"\.conv\.(weight|bias)$")  # mmcv ConvModule wraps its nn.Conv2d as ``.conv``


def basicsr_key(key: str) -> str:
    """One mmagic / mmedit key under BasicSR's name (a BasicSR key is returned unchanged).

    Drops the ``generator.`` prefix, unwraps the ``.conv.`` of ConvModules (SPyNet's are renumbered
    0..4 -> 0, 2, 4, 6, 8) and renames the modules of :data:`_MMAGIC_NAMES`.
    """
    k = from_mmagic_keys(key.removeprefix("generator."))
    k = _CONV_MODULE.sub(r".\1", k)
    for pat, new in _RENAMES:
        k = pat.sub(rf"\g<1>{new}.", k)
    return k


def layout_of(state: Mapping[str, Tensor]) -> str:
    """``"basicsr"`` when every key is already BasicSR's, else ``"mmagic"``."""
    same = "step_counter" not in state and all(basicsr_key(k) == k for k in state)
    return "basicsr" if same else "mmagic"


def to_basicsr(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A BasicSR or mmagic / mmedit state dict of these families under BasicSR's key names.

    Every key through :func:`basicsr_key`; the mmagic restorer's ``step_counter`` buffer (beside the
    generator, which is why the loader keeps the ``generator.`` prefix) is dropped. SPyNet's ``mean`` /
    ``std`` constants are added where a file lacks them: they are saved with a whole model but not where
    SPyNet was saved alone (both codebases load its weights before registering the buffers).
    """
    out = {basicsr_key(k): v for k, v in state.items() if k != "step_counter"}
    for k in [k for k in out if k.endswith("spynet.basic_module.0.basic_module.0.weight")]:
        prefix = k.removesuffix("basic_module.0.basic_module.0.weight")
        for name, value in spynet_constants().items():
            out.setdefault(prefix + name, value)
    return out
