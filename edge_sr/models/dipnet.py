"""DIPNet: Efficiency Distillation and Iterative Pruning for Image SR (Yu et al., CVPRW 2023), the fastest
entry of the NTIRE 2023 efficient SR challenge.

An RLFN-style network: ``conv_1`` (3x3), ``block_1`` .. ``block_4`` (reparameterized residual feature blocks,
RRFB), ``conv_2`` (3x3) plus the head's features, and ``upsampler.0`` (3x3 conv to colors·scale²) with a
pixel shuffle. An RRFB is three 3x3 convs with LeakyReLU(0.05) (``c1_r``: 44 -> 38 pruned channels,
``c2_r``: 38 -> 38, ``c3_r``: 38 -> 44), the block input added, a 1x1 conv ``c5`` and enhanced spatial
attention (``esa``: 1x1 ``conv1``, strided 3x3 ``conv2``, 7/3 max pool, 3x3 ``conv3``, bilinear back to the
input size, plus 1x1 ``conv_f``, then 1x1 ``conv4`` and a sigmoid gate). Only the ESA convs have biases.

Forms. The released ``DIPNet.pth`` is the deploy form and loads unchanged: keys ``conv_1.weight``,
``block_{i}.c{1,2,3}_r.weight``, ``block_{i}.c5.weight``, ``block_{i}.esa.{conv1,conv_f,conv2,conv3,conv4}``,
``conv_2.weight``, ``upsampler.0.weight``. The training form (what ``create_model`` builds) gives each of
``c1_r`` / ``c2_r`` / ``c3_r`` the re-parameterizable branches the authors fuse in their challenge code
(``team34_EDIPV1.py``): ``c{k}_r`` is a bias-free 3x3 conv to ``rep_channels`` (256) squeezed by the 1x1
``c{k}_r_11_m``, plus a parallel 1x1 ``c{k}_r_11_a``, plus the identity (output channel o copies input
channel o mod C_in). All branches are linear and bias-free, so ``RepRRFB.fuse()`` returns the deploy
block with one bias-free 3x3 conv each, exact at the borders.

Value range [0, 1], no mean shift (the official test script feeds [0, 1]).

Small inputs: the ESA max pool needs a 7x7 map, i.e. an input of at least 15 pixels per side, below which
the official network fails. Here the strided map is replicate-padded to 7 first, so the pool covers the
whole map (a no-op at 15 pixels and more; a dynamic-size export whose range starts below 15 fails its
shape proof, naming the range that works).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.models.detect import Detection, StateDict, has, indices, register_detector, shape
from edge_sr.models.registry import register_model
from edge_sr.reparam.rules import conv_from, merge_kxk_1x1, pad_kernel

_POOL = 7  # ESA max-pool kernel (stride 3)


def conv_nb(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    """A bias-free ``k`` x ``k`` conv with same padding (the official ``conv_layer``)."""
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)


class ESA(nn.Module):
    """Enhanced spatial attention (RLFN's form). (N, C, H, W) -> (N, C, H, W), H and W at least 3."""

    def __init__(self, *, channels: int, esa_channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)  # (N, f, (H-3)//2+1, (W-3)//2+1)
        ph, pw = max(0, _POOL - c1.shape[-2]), max(0, _POOL - c1.shape[-1])
        if ph or pw:  # inputs under 15 px, where the official pool fails: pool over the whole map
            c1 = F.pad(c1, (0, pw, 0, ph), mode="replicate")
        c3 = self.conv3(F.max_pool2d(c1, kernel_size=_POOL, stride=3))
        c3 = F.interpolate(c3, size=(x.shape[-2], x.shape[-1]), mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RRFB(nn.Module):
    """Deploy-form block: three bias-free 3x3 convs with LeakyReLU, the input added, ``c5`` and ESA."""

    def __init__(self, *, channels: int, mid_channels: int, esa_channels: int) -> None:
        super().__init__()
        self.c1_r = conv_nb(channels, mid_channels, 3)
        self.c2_r = conv_nb(mid_channels, mid_channels, 3)
        self.c3_r = conv_nb(mid_channels, channels, 3)
        self.c5 = conv_nb(channels, channels, 1)
        self.esa = ESA(channels=channels, esa_channels=esa_channels)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


def mod_identity(c_out: int, c_in: int) -> Tensor:
    """(O, C, 1, 1) kernel copying input channel ``o mod C`` to output o (the identity branch; O may differ
    from C)."""
    k = torch.zeros(c_out, c_in, 1, 1)
    o = torch.arange(c_out)
    k[o, o % c_in] = 1.0
    return k


class RepRRFB(nn.Module):
    """Training-form block: each 3x3 conv is ``c{k}_r`` (3x3 to ``rep_channels``) -> ``c{k}_r_11_m`` (1x1),
    plus ``c{k}_r_11_a`` (1x1), plus the identity; ``fuse()`` returns the :class:`RRFB` it equals."""

    idt1: Tensor
    idt2: Tensor
    idt3: Tensor

    def __init__(self, *, channels: int, mid_channels: int, esa_channels: int, rep_channels: int) -> None:
        super().__init__()
        self.channels, self.mid_channels, self.esa_channels = channels, mid_channels, esa_channels
        dims = [(channels, mid_channels), (mid_channels, mid_channels), (mid_channels, channels)]
        for k, (c_in, c_out) in enumerate(dims, start=1):
            self.add_module(f"c{k}_r", conv_nb(c_in, rep_channels, 3))
            self.add_module(f"c{k}_r_11_m", conv_nb(rep_channels, c_out, 1))
            self.add_module(f"c{k}_r_11_a", conv_nb(c_in, c_out, 1))
            self.register_buffer(f"idt{k}", mod_identity(c_out, c_in), persistent=False)
        self.c5 = conv_nb(channels, channels, 1)
        self.esa = ESA(channels=channels, esa_channels=esa_channels)
        self.act = nn.LeakyReLU(0.05)

    def _branches(self, k: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d, Tensor]:
        return (
            getattr(self, f"c{k}_r"),
            getattr(self, f"c{k}_r_11_m"),
            getattr(self, f"c{k}_r_11_a"),
            getattr(self, f"idt{k}"),
        )

    def _rep_conv(self, k: int, x: Tensor) -> Tensor:
        c3, m, a, idt = self._branches(k)
        return m(c3(x)) + F.conv2d(x, a.weight + idt.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self._rep_conv(1, x))
        out = self.act(self._rep_conv(2, out))
        out = self.act(self._rep_conv(3, out))
        return self.esa(self.c5(out + x))

    def rep_kernel(self, k: int) -> Tensor:
        """The bias-free (O, C, 3, 3) kernel equal to conv ``k``'s branches."""
        c3, m, a, idt = self._branches(k)
        zeros_mid = c3.weight.new_zeros(c3.weight.shape[0])
        zeros_out = m.weight.new_zeros(m.weight.shape[0])
        w, _ = merge_kxk_1x1(c3.weight, zeros_mid, m.weight, zeros_out)  # no biases anywhere
        return w + pad_kernel(a.weight + idt.to(a.weight), 3)

    @torch.no_grad()
    def fuse(self) -> RRFB:
        block = RRFB(channels=self.channels, mid_channels=self.mid_channels, esa_channels=self.esa_channels)
        block = block.to(device=self.c5.weight.device, dtype=self.c5.weight.dtype)
        for k in (1, 2, 3):
            setattr(block, f"c{k}_r", conv_from(self.rep_kernel(k), None))
        block.c5, block.esa = self.c5, self.esa
        return block


class DIPNet(nn.Module):
    """DIPNet. (N, colors, H, W) in [0, 1] -> (N, colors, H·scale, W·scale).

    Args:
        scale: Upscaling factor.
        feature_channels: Trunk width (44).
        mid_channels: Pruned width inside each block (38).
        esa_channels: ESA width (16).
        blocks: Number of blocks (4), named ``block_1`` ...
        rep_channels: Width of the training form's 3x3 branch (256); not stored in deploy weights.
        colors: Image channels.

    Raises:
        ConfigError: A scale or a size below 1.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        feature_channels: int = 44,
        mid_channels: int = 38,
        esa_channels: int = 16,
        blocks: int = 4,
        rep_channels: int = 256,
        colors: int = 3,
    ) -> None:
        super().__init__()
        if min(scale, feature_channels, mid_channels, esa_channels, blocks, rep_channels, colors) < 1:
            raise ConfigError(None, "DIPNet scale, sizes and block count must be at least 1")
        self.scale, self.blocks = scale, blocks
        c = feature_channels
        self.conv_1 = conv_nb(colors, c, 3)
        for i in range(1, blocks + 1):
            blk = RepRRFB(
                channels=c, mid_channels=mid_channels, esa_channels=esa_channels, rep_channels=rep_channels
            )
            self.add_module(f"block_{i}", blk)
        self.conv_2 = conv_nb(c, c, 3)
        self.upsampler = nn.Sequential(conv_nb(c, colors * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv_1(x)
        out = f
        for i in range(1, self.blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + f)


@register_model(family="dipnet", reparameterizable=True)
def dipnet(**overrides) -> DIPNet:
    """DIPNet as released for NTIRE 2023 (x4, 243K parameters in the deploy form)."""
    return DIPNet(**overrides)


@register_detector("dipnet")
def _detect(state: StateDict) -> Detection | None:
    head = shape(state, "conv_1.weight")
    up = shape(state, "upsampler.0.weight")
    if head is None or up is None or not has(state, "block_1.c5.weight", "block_1.esa.conv1.weight"):
        return None
    if "conv_1.bias" in state or "block_1.c1_r.bias" in state:  # RLFN's biased convs
        return None
    feature_channels, colors = head[0], head[1]
    scale = math.isqrt(up[0] // colors)
    if scale * scale * colors != up[0]:
        return None
    nums = indices(state, "block_")
    if nums != list(range(1, len(nums) + 1)):
        return None
    args = {
        "scale": scale,
        "feature_channels": feature_channels,
        "esa_channels": state["block_1.esa.conv1.weight"].shape[0],
        "blocks": len(nums),
        "colors": colors,
    }
    m = shape(state, "block_1.c1_r_11_m.weight")
    if m is not None:  # training form: the 3x3 branch's width is stored
        rep = state["block_1.c1_r.weight"].shape[0]
        return Detection("dipnet", {**args, "mid_channels": m[0], "rep_channels": rep}, form="train")
    mid = state["block_1.c1_r.weight"].shape[0]
    return Detection(
        "dipnet",
        {**args, "mid_channels": mid, "rep_channels": 256},
        form="deploy",
        layout="deploy",
        assumed={"rep_channels": "fused weights do not store the training branch width; the authors' 256"},
    )
