"""RCAN: Residual Channel Attention Networks (Zhang et al., ECCV 2018).

Parameter names follow the official ``RCAN_TestCode/code/model/rcan.py`` so released ``.pt`` files load
unchanged with strict key checking: ``sub_mean`` / ``add_mean``, ``head.0``, residual groups
``body.{g}.body.{b}.body.{0,2}`` (RCAB convs) and ``body.{g}.body.{b}.body.3.conv_du.{0,2}`` (channel
attention), the group's closing conv ``body.{g}.body.{n_resblocks}``, the body's closing conv
``body.{n_resgroups}``, and ``tail.0.{0,2,...}`` / ``tail.1``.

The official network works on [0, 255] (``rgb_range`` 255) with the DIV2K mean; our contract is [0, 1]
in and out, so ``forward`` scales at the boundary.

AdaDM (Liu et al., "AdaDM: Enabling Normalization for Image Super-Resolution", 2022; see
:mod:`edge_sr.models.edsr`) is the ``adadm=True`` option. The AdaDM authors release EDSR, RDN and NLSN with
it, not RCAN, so the placement here is the EDSR block's carried over to the RCAB: BatchNorm ``norm1``
before the first conv and ``norm2`` before the second, channel attention as before, then the residual
multiplied by ``exp(phi(log std(x)))`` of the block input ``x`` before the skip. The RCAB keeps its official
``body.{0,2,3}`` names and gains ``norm1`` / ``norm2`` / ``phi`` (the official AdaDM block's names) beside
them, so plain RCAN weights initialise an AdaDM RCAN by name. The mean shift stays (RCAN's own).

Detection (:func:`_detect`) recognises the official layout and BasicSR's ``rcan_arch.py`` (also used by
traiNNer and neosr): ``conv_first``, ``body.{g}.residual_group.{b}.rcab.{0, 2, 3.attention.1,
3.attention.3}``, the group's closing ``body.{g}.conv``, ``conv_after_body``, ``upsample.{0,2,...}``,
``conv_last``. BasicSR's mean and ``img_range`` are constructor arguments kept outside the state dict
(DIV2K mean and 255 by default); the renaming fills ``sub_mean`` / ``add_mean`` with those values, which at
``rgb_range`` 255 compute the same ``(x - mean) · 255`` as BasicSR.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.edsr import (
    _BASICSR_ASSUMED,
    DIV2K_MEAN,
    MeanShift,
    Upsampler,
    check_scale,
    conv3x3,
    inverse_floor_div,
    mean_shift_state,
    pixelshuffle_scale,
    rename,
)
from edge_sr.models.registry import register_model


class CALayer(nn.Module):
    """Channel attention: global average -> 1x1 squeeze (C/r) -> ReLU -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) * (N, C, 1, 1)
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv -> ReLU -> conv -> CA, plus the input."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(n_feats, n_feats), nn.ReLU(), conv3x3(n_feats, n_feats), CALayer(n_feats, reduction)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class RCABAdaDM(RCAB):
    """RCAB with AdaDM: ``x + CA(conv(norm2(relu(conv(norm1(x)))))) · exp(phi(log std(x)))``.

    Keys: the RCAB's ``body.{0,2,3}`` plus ``norm1`` / ``norm2`` (BatchNorm) and ``phi`` (1x1 conv on the
    log deviation, initialised to the identity).
    """

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__(n_feats, reduction)
        self.norm1 = nn.BatchNorm2d(n_feats)
        self.norm2 = nn.BatchNorm2d(n_feats)
        self.phi = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.phi.weight.fill_(1.0)
            self.phi.bias.fill_(0.0)  # type: ignore[union-attr]

    def modulation(self, x: Tensor) -> Tensor:
        """The (N, 1, 1, 1) factor ``exp(phi(log std(x)))`` the residual is multiplied by."""
        s = torch.std(x, dim=(1, 2, 3), keepdim=True)
        return torch.exp(self.phi(torch.log(s)))

    def forward(self, x: Tensor) -> Tensor:
        conv1, act, conv2, attention = self.body
        res = attention(conv2(self.norm2(act(conv1(self.norm1(x))))))
        return res * self.modulation(x) + x


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs (AdaDM ones with ``adadm``) and a conv, plus the input."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int, adadm: bool = False) -> None:
        super().__init__()
        block = RCABAdaDM if adadm else RCAB
        self.body = nn.Sequential(
            *[block(n_feats, reduction) for _ in range(n_resblocks)], conv3x3(n_feats, n_feats)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class RCAN(nn.Module):
    """RCAN. (N, 3, H, W) in [0, 1] -> (N, 3, H·scale, W·scale).

    Args:
        scale: upscaling factor (2, 3 or 4).
        n_resgroups: residual groups (10).
        n_resblocks: RCABs per group (20).
        n_feats: feature channels (64).
        reduction: channel-attention squeeze ratio (16).
        rgb_range: the value range the weights were trained on (255 for the official releases).
        adadm: AdaDM blocks (:class:`RCABAdaDM`) instead of plain RCABs.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
        adadm: bool = False,
    ) -> None:
        super().__init__()
        check_scale(scale)
        self.scale, self.rgb_range, self.adadm = scale, rgb_range, adadm
        self.sub_mean = MeanShift(rgb_range, DIV2K_MEAN)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, reduction, n_resblocks, adadm) for _ in range(n_resgroups)],
            conv3x3(n_feats, n_feats),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(rgb_range, DIV2K_MEAN, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x * self.rgb_range))  # [0, 1] -> [0, 255] - mean
        x = self.body(x) + x
        return self.add_mean(self.tail(x)) / self.rgb_range


@register_model(family="rcan", kind="heavy")
def rcan(**overrides) -> RCAN:
    """RCAN: 10 groups of 20 RCABs, 64 features, channel attention reduction 16."""
    return RCAN(**{"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16, **overrides})


# ---- detection


def _rcan_from_basicsr(n_resgroups: int, n_resblocks: int) -> Callable[[StateDict], StateDict]:
    rcab = r"body\.(\d+)\.residual_group\.(\d+)\.rcab\."
    rules = [
        (r"conv_first\.(weight|bias)", r"head.0.\1"),
        (rcab + r"([02])\.(weight|bias)", r"body.\1.body.\2.body.\3.\4"),
        (rcab + r"3\.attention\.1\.(weight|bias)", r"body.\1.body.\2.body.3.conv_du.0.\3"),
        (rcab + r"3\.attention\.3\.(weight|bias)", r"body.\1.body.\2.body.3.conv_du.2.\3"),
        (r"body\.(\d+)\.conv\.(weight|bias)", rf"body.\1.body.{n_resblocks}.\2"),
        (r"conv_after_body\.(weight|bias)", rf"body.{n_resgroups}.\1"),
        (r"upsample\.(\d+)\.(weight|bias)", r"tail.0.\1.\2"),
        (r"conv_last\.(weight|bias)", r"tail.1.\1"),
    ]

    def adapt(state: StateDict) -> StateDict:
        return {**rename(state, rules), **mean_shift_state(255.0, state["conv_first.weight"])}

    return adapt


@register_detector("rcan")
def _detect(state: StateDict) -> Detection | None:
    """RCAN from the official (RCAN_TestCode / EDSR-PyTorch) or the BasicSR key layout."""
    adadm = False
    if has(state, "head.0.weight", "tail.1.weight", "body.0.body.0.body.3.conv_du.0.weight"):
        layout, up, du = "official", "tail.0", "body.0.body.0.body.3.conv_du.0.weight"
        adadm = has(state, *(f"body.0.body.0.{k}.weight" for k in ("norm1", "norm2", "phi")))
        n_resgroups = len(indices(state, "body.")) - 1  # groups and the closing conv
        n_resblocks = len(indices(state, "body.0.body.")) - 1
    elif has(state, "conv_first.weight", "body.0.residual_group.0.rcab.0.weight", "conv_after_body.weight"):
        layout, up, du = "basicsr", "upsample", "body.0.residual_group.0.rcab.3.attention.1.weight"
        n_resgroups = len(indices(state, "body."))
        n_resblocks = len(indices(state, "body.0.residual_group."))
    else:
        return None
    ups = pixelshuffle_scale(state, up)
    squeezed = shape(state, du)
    if ups is None or squeezed is None:
        return None
    scale, n_feats = ups
    reduction = inverse_floor_div(n_feats, squeezed[0])
    if reduction is None:
        return None
    assumed = {"res_scale": "the zoo's RCAB has no residual scale: 1, the official and BasicSR default"}
    if layout == "official":
        assumed["rgb_range"] = "not stored as an argument; 255, the RCAN release default"
    else:
        assumed.update(_BASICSR_ASSUMED)
    args = {
        "scale": scale,
        "n_resgroups": n_resgroups,
        "n_resblocks": n_resblocks,
        "n_feats": n_feats,
        "reduction": reduction,
        "rgb_range": 255.0,
    }
    if adadm:
        args["adadm"] = True
    return Detection(
        "rcan",
        args,
        value_range=255.0,
        mean=DIV2K_MEAN,
        layout=layout,
        assumed=assumed,
        adapt=_rcan_from_basicsr(n_resgroups, n_resblocks) if layout == "basicsr" else None,
    )
