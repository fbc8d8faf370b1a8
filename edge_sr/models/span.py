"""SPAN: Swift Parameter-free Attention Network for Efficient Super-Resolution (Wan et al., CVPRW 2024),
winner of the NTIRE 2024 efficient SR challenge.

Six SPAB blocks: three re-parameterizable Conv3XC convs with SiLU between them, and a parameter-free
attention ``sigmoid(out) - 0.5`` that multiplies ``out + x``. Features of the head, the first block, the
first conv of the last block and the (conv-refined) last block are concatenated, squeezed by a 1x1 conv,
and a 3x3 conv + pixel shuffle upsamples. The input is mean-shifted and scaled by 255 as in the official
code; the output is used as it is. ``norm=False`` skips that shift (traiNNer-redux / spandrel's option,
marked in their files by a ``no_norm`` buffer, which this module then carries too).

Conv3XC (training form): on the zero-padded input, 1x1 (C -> gain·C), unpadded 3x3 (-> gain·O),
1x1 (-> O), plus a 1x1 skip; ``fuse()`` returns the single 3x3 conv (``edge_sr.reparam.rules.conv3xc``).
Key names are the official ones (``conv_1.sk``, ``conv_1.conv.0``, ``block_1.c1_r``, ``conv_cat``,
``upsampler.0``). The official module also stores its fused kernel as ``eval_conv``; here ``eval_conv``
holds buffers that every ``state_dict()`` refreshes from the branches, so official checkpoints load
unchanged and saved ones carry a consistent fused kernel. ``forward`` always runs the branches.

Detection (``_detect``) reads ``feature_channels`` from ``conv_1``, the scale from the upsampler's 3·s²
outputs and ``norm`` from ``no_norm``; ``img_range`` (255) is the official value, assumed. Layouts:

* the training form (official / spandrel names, with ``eval_conv``; a file without ``eval_conv`` gets
  it computed from the branches);
* the deploy form of the NTIRE 2024 efficient-SR challenge entries (``team38_SPAN``: a Conv3XC that keeps
  only ``eval_conv``): ``X.eval_conv.*`` is mapped onto the fused model's ``X.*``;
* the fused model's own names (``conv_1.weight``, ``block_1.c1_r.weight`` ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.card import Form
from edge_sr.models.common import conv_shape, keys_match, pixel_shuffle_scale
from edge_sr.models.detect import Detection, StateDict, register_detector
from edge_sr.models.registry import register_model
from edge_sr.reparam.rules import conv3xc, conv_from

_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _FusedKernel(nn.Module):
    """Buffers ``weight`` (O, C, 3, 3) and ``bias`` (O,): the official ``eval_conv`` keys."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(c_out, c_in, 3, 3))
        self.register_buffer("bias", torch.zeros(c_out))


class Conv3XC(nn.Module):
    """(N, C, H, W) -> (N, O, H, W); training-time branches of one 3x3 conv."""

    def __init__(self, *, c_in: int, c_out: int, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),  # unpadded: the input is padded before the first 1x1
            nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = _FusedKernel(c_in, c_out)
        self.register_state_dict_post_hook(_store_fused_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)

    def rep_params(self) -> tuple[Tensor, Tensor]:
        c0, c1, c2 = self.conv
        pairs = [(c.weight, c.bias) for c in (c0, c1, c2, self.sk)]
        return conv3xc(*pairs)  # type: ignore[arg-type]

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w, b = self.rep_params()
        return conv_from(w, b)


def _store_fused_kernel(module: Conv3XC, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    # Keep the official ``eval_conv`` entries equal to the current fused kernel.
    with torch.no_grad():
        w, b = module.rep_params()
    state[prefix + "eval_conv.weight"] = w.detach()
    state[prefix + "eval_conv.bias"] = b.detach()


class SPAB(nn.Module):
    """Swift parameter-free attention block. Returns (output, first conv output)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.c1_r = Conv3XC(c_in=channels, c_out=channels)
        self.c2_r = Conv3XC(c_in=channels, c_out=channels)
        self.c3_r = Conv3XC(c_in=channels, c_out=channels)
        self.act1 = nn.SiLU()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out1 = self.c1_r(x)
        out3 = self.c3_r(self.act1(self.c2_r(self.act1(out1))))
        att = torch.sigmoid(out3) - 0.5  # parameter-free attention, in (-0.5, 0.5)
        return (out3 + x) * att, out1


class SPAN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    mean: Tensor

    def __init__(
        self, *, scale: int = 4, feature_channels: int = 48, img_range: float = 255.0, norm: bool = True
    ) -> None:
        super().__init__()
        c = feature_channels
        self.scale = scale
        self.img_range = img_range
        self.norm = norm
        self.register_buffer("mean", torch.tensor(_RGB_MEAN).reshape(1, 3, 1, 1), persistent=False)
        if not norm:  # the marker traiNNer-redux / spandrel files carry
            self.register_buffer("no_norm", torch.zeros(1))
        self.conv_1 = Conv3XC(c_in=3, c_out=c)
        self.block_1, self.block_2, self.block_3 = (SPAB(channels=c) for _ in range(3))
        self.block_4, self.block_5, self.block_6 = (SPAB(channels=c) for _ in range(3))
        self.conv_cat = nn.Conv2d(c * 4, c, 1)
        self.conv_2 = Conv3XC(c_in=c, c_out=c)
        self.upsampler = nn.Sequential(nn.Conv2d(c, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        if self.norm:
            x = (x - self.mean.to(x.dtype)) * self.img_range
        f = self.conv_1(x)
        b1, _ = self.block_1(f)
        b = b1
        for block in (self.block_2, self.block_3, self.block_4, self.block_5):
            b, _ = block(b)
        b6, b6_first = self.block_6(b)
        out = self.conv_cat(
            torch.cat([f, self.conv_2(b6), b1, b6_first], dim=1)
        )  # (N, 4C, H, W) -> (N, C, H, W)
        return self.upsampler(out)


@register_model(family="span", reparameterizable=True)
def span_ch48(**overrides) -> SPAN:
    return SPAN(**{"feature_channels": 48, **overrides})


@register_model(family="span", reparameterizable=True)
def span_ch52(**overrides) -> SPAN:
    return SPAN(**{"feature_channels": 52, **overrides})


_CONV3XC = ["conv_1", "conv_2"] + [f"block_{b}.c{i}_r" for b in range(1, 7) for i in (1, 2, 3)]
_PLAIN = ["conv_cat", "upsampler.0"]
_TRAIN_KEY = (
    r"(conv_[12]|block_[1-6]\.c[123]_r)\.(sk|conv\.[012]|eval_conv)\.(weight|bias)"
    r"|(conv_cat|upsampler\.0)\.(weight|bias)|no_norm"
)
_CHALLENGE_KEY = r"(conv_[12]|block_[1-6]\.c[123]_r)\.eval_conv\.(weight|bias)|(conv_cat|upsampler\.0)\.(weight|bias)|no_norm"
_FUSED_KEY = r"(conv_[12]|block_[1-6]\.c[123]_r|conv_cat|upsampler\.0)\.(weight|bias)|no_norm"


def _add_fused_kernels(state: StateDict) -> StateDict:
    """The training form with each Conv3XC's ``eval_conv`` computed from its branches where it is absent."""
    out = dict(state)
    for m in _CONV3XC:
        if f"{m}.eval_conv.weight" not in out:
            pairs = [
                (state[f"{m}.{c}.weight"], state[f"{m}.{c}.bias"])
                for c in ("conv.0", "conv.1", "conv.2", "sk")
            ]
            with torch.no_grad():
                w, b = conv3xc(*pairs)
            out[f"{m}.eval_conv.weight"], out[f"{m}.eval_conv.bias"] = w, b
    return out


def _challenge_to_fused(state: StateDict) -> StateDict:
    """``X.eval_conv.*`` -> ``X.*``: the NTIRE 2024 deploy names onto the fused model's."""
    return {k.replace(".eval_conv.", "."): v for k, v in state.items()}


@register_detector("span")
def _detect(state: StateDict) -> Detection | None:
    """SPAN in its training form, the challenge's ``eval_conv``-only deploy form, or the fused names."""
    form: Form
    adapt: Callable[[StateDict], StateDict] | None
    if keys_match(state, _TRAIN_KEY) and "conv_1.sk.weight" in state:
        head, form, layout = "conv_1.sk.weight", "train", "official"
        adapt = None if all(f"{m}.eval_conv.weight" in state for m in _CONV3XC) else _add_fused_kernels
    elif keys_match(state, _CHALLENGE_KEY) and "conv_1.eval_conv.weight" in state:
        head, form, layout, adapt = "conv_1.eval_conv.weight", "deploy", "ntire2024", _challenge_to_fused
    elif keys_match(state, _FUSED_KEY) and "conv_1.weight" in state and "block_1.c1_r.weight" in state:
        head, form, layout, adapt = "conv_1.weight", "deploy", "deploy", None
    else:
        return None
    features, colors, _, _ = conv_shape(state, head)
    if colors != 3:
        raise ValueError(f"SPAN takes RGB; these weights take {colors} input channels")
    out, _, _, _ = conv_shape(state, "upsampler.0.weight")
    norm = "no_norm" not in state
    args = {
        "scale": pixel_shuffle_scale(out, colors),
        "feature_channels": features,
        "img_range": 255.0,
        "norm": norm,
    }
    return Detection(
        "span_ch52" if features == 52 else "span_ch48",
        args,
        form=form,
        value_range=255.0 if norm else 1.0,
        mean=_RGB_MEAN if norm else None,
        layout=layout,
        assumed={"img_range": "255: the official value (a range is not stored in the weights)"}
        if norm
        else {},
        adapt=adapt,
    )
