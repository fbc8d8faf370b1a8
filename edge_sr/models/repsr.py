"""RepSR: Training Efficient VGG-style Super-Resolution Networks with Structural Re-Parameterization and
Batch Normalization (Wang, Dong, Shan, ACM MM 2022).

A plain VGG-style net (head block, ``blocks`` body blocks, tail block to C·s², pixel shuffle, plus the
nearest-upsampled input) whose training-time blocks are RepSR blocks. A RepSR block sums

* a clean residual path (the identity, no BatchNorm; only where in == out channels),
* an expand-and-squeeze path: 3x3 conv expanding to ``expand``·C, BatchNorm, 1x1 conv squeezing back,
* a second expand-and-squeeze path with a 1x1 expand conv (a 1x1 kernel padded to 3x3 when fused, exact
  at borders since it has no spatial extent),

then applies the activation (PReLU). Every path is linear once BatchNorm uses population statistics, so
``RepSRBlock.fuse()`` returns one 3x3 conv (+ activation) and ``RepSR.fuse()`` the ``PlainSR`` deploy net
shared with ECBSR.

BatchNorm and the train / inference mismatch: train with mini-batch statistics, then call
``edge_sr.reparam.freeze_batchnorm(model)`` for the final stage, which makes every BN normalize with its
population (running) statistics even in train mode, so the net is fine-tuned in exactly the form that is
fused (see ``edge_sr.reparam.batchnorm`` for what precisely is frozen).

Key names: ``backbone.N.path3x3`` / ``path1x1`` (``expand``, ``bn``, ``squeeze``) and ``backbone.N.act``;
the authors published no code, so these are this module's. Detection reads the training form: ``colors``
from the head's expand conv, ``channels`` and ``expand`` from its squeeze and expand convs, ``blocks`` from
the number of blocks, the scale from the tail's C·s² outputs; ``act`` is ``prelu`` when PReLU weights
exist (else ``relu``, assumed). The fused net is ECBSR's ``PlainSR``, whose detector reports deploy-form
plain nets (they load and compute identically whichever family fused them). The weights compute on [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edge_sr.models.common import conv_shape, keys_match, make_act, nearest_name, pixel_shuffle_scale
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
from edge_sr.models.ecbsr import NearestResidual, PlainSR
from edge_sr.models.registry import register_model
from edge_sr.reparam.batchnorm import FreezableBatchNorm2d
from edge_sr.reparam.rules import conv_from, repsr_block


class ExpandSqueeze(nn.Module):
    """kxk conv (C -> M) -> BatchNorm(M) -> 1x1 conv (M -> O). (N, C, H, W) -> (N, O, H, W)."""

    def __init__(self, *, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(in_channels, mid_channels, kernel_size, padding=kernel_size // 2)
        self.bn = FreezableBatchNorm2d(mid_channels)
        self.squeeze = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.squeeze(self.bn(self.expand(x)))

    def parts(self) -> tuple[tuple[Tensor, Tensor], nn.BatchNorm2d, tuple[Tensor, Tensor]]:
        e, s = self.expand, self.squeeze
        return (e.weight, e.bias), self.bn, (s.weight, s.bias)  # type: ignore[return-value]


class RepSRBlock(nn.Module):
    """RepSR block: clean residual + two expand-BN-squeeze paths, then activation."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        expand: int = 2,
        act: str = "prelu",
        identity: bool = True,
    ) -> None:
        super().__init__()
        mid = out_channels * expand
        kw = {"in_channels": in_channels, "mid_channels": mid, "out_channels": out_channels}
        self.path3x3 = ExpandSqueeze(kernel_size=3, **kw)
        self.path1x1 = ExpandSqueeze(kernel_size=1, **kw)
        self.with_idt = identity and in_channels == out_channels
        self.act = make_act(act, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.path3x3(x) + self.path1x1(x)
        if self.with_idt:
            y = y + x
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """One 3x3 conv (+ activation), folding BN with its running statistics and its own eps."""
        idt = self.path3x3.squeeze.out_channels if self.with_idt else None
        w, b = repsr_block([self.path3x3.parts(), self.path1x1.parts()], idt)
        conv = conv_from(w, b)
        return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, self.act)


class RepSR(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(
        self,
        *,
        scale: int = 4,
        blocks: int = 4,
        channels: int = 16,
        colors: int = 3,
        expand: int = 2,
        act: str = "prelu",
    ) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [
            RepSRBlock(in_channels=colors, out_channels=channels, expand=expand, act=act)
        ]
        layers += [
            RepSRBlock(in_channels=channels, out_channels=channels, expand=expand, act=act)
            for _ in range(blocks)
        ]
        layers.append(
            RepSRBlock(in_channels=channels, out_channels=colors * scale * scale, expand=expand, act="linear")
        )
        self.backbone = nn.Sequential(*layers)
        self.residual = NearestResidual(colors=colors, scale=scale)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        # (N, 3, H, W) -> (N, 3·s², H, W) -> pixel_shuffle -> (N, 3, H·s, W·s)
        return self.upsampler(self.backbone(x) + self.residual(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        body = nn.Sequential(*[blk.fuse() for blk in self.backbone])  # type: ignore[operator]
        return PlainSR(body=body, scale=self.scale, colors=self.residual.colors)


@register_model(family="repsr", reparameterizable=True)
def repsr_m4c16(**overrides) -> RepSR:
    return RepSR(**{"blocks": 4, "channels": 16, **overrides})


@register_model(family="repsr", reparameterizable=True)
def repsr_m8c32(**overrides) -> RepSR:
    return RepSR(**{"blocks": 8, "channels": 32, **overrides})


@register_model(family="repsr", reparameterizable=True)
def repsr_m16c64(**overrides) -> RepSR:
    return RepSR(**{"blocks": 16, "channels": 64, **overrides})


_KEY = (
    r"backbone\.\d+\.(path(3x3|1x1)\.(expand|squeeze)\.(weight|bias)"
    r"|path(3x3|1x1)\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)|act\.weight)"
)
_NAMES: dict[tuple[int, ...], str] = {
    (4, 16): "repsr_m4c16",
    (8, 32): "repsr_m8c32",
    (16, 64): "repsr_m16c64",
}


@register_detector("repsr")
def _detect(state: StateDict) -> Detection | None:
    """RepSR's training form (``backbone.N.path3x3.expand`` ...); deploy forms are ECBSR's ``PlainSR``."""
    if not keys_match(state, _KEY) or "backbone.0.path3x3.expand.weight" not in state:
        return None
    found = indices(state, "backbone.")
    if len(found) < 2 or found != list(range(len(found))):
        return None
    last = found[-1]
    mid, colors, _, _ = conv_shape(state, "backbone.0.path3x3.expand.weight")
    channels, _, _, _ = conv_shape(state, "backbone.0.path3x3.squeeze.weight")
    out, _, _, _ = conv_shape(state, f"backbone.{last}.path3x3.squeeze.weight")
    prelu = "backbone.0.act.weight" in state
    args = {
        "scale": pixel_shuffle_scale(out, colors),
        "colors": colors,
        "blocks": last - 1,
        "channels": channels,
        "expand": mid // channels,
        "act": "prelu" if prelu else "relu",
    }
    assumed = {} if prelu else {"act": "relu: the activations hold no weights (ReLU)"}
    return Detection(nearest_name(_NAMES, (last - 1, channels)), args, assumed=assumed)
