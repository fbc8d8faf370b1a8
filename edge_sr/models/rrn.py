"""RRN: Revisiting Temporal Modeling for Video Super-resolution (Isobe, Zhu, Jia, Wang, BMVC 2020).

A recurrent residual network: each step concatenates the previous and the current LR frame, the hidden
features and the previous SR output folded back to LR resolution (space-to-depth), runs a stack of plain
residual blocks (conv-ReLU-conv plus identity, no BN), and emits the next hidden features (``conv_h``,
ReLU) and the SR residual (``conv_o``, pixel-shuffled and added to the bilinear upsampling of the current
frame). No flow, no alignment: the residual blocks see both frames and learn the motion compensation.

The step (:mod:`edge_sr.models.stream`)::

    forward(cur, prev, hidden, prev_sr) -> (sr, hidden_out)
    cur        (N, C, h, w)          the current LR frame, RGB in [0, 1]
    prev       (N, C, h, w)          state: the previous LR frame          (initially: the first frame itself)
    hidden     (N, n_c, h, w)        state: the previous ``hidden_out``    (initially: zeros)
    prev_sr    (N, C, h·s, w·s)      state: the previous ``sr``, unclamped (initially: zeros)
    sr         (N, C, h·s, w·s)      bilinear(cur, x s, align_corners=False) + pixel_shuffle(conv_o(...)),
                                     in [0, 1] up to the network's overshoot (clamp it for display only)
    hidden_out (N, n_c, h, w)        ReLU features, >= 0

    conv_1 input, in this channel order: [prev (C), cur (C), hidden (n_c), pixel_unshuffle(prev_sr) (C·s²)]

Checked against the official code (junpan19/RRN ``RRN/arch.py``, ``RRN/test.py``, ``RRN/load_test.py``):
the same concatenation order (``torch.cat((f1, f2))`` with f1 the earlier frame, then h, then o), the same
space-to-depth order (channel ``c·s² + i·s + j``, which is ``F.pixel_unshuffle``), the same bilinear base,
the output fed back unclamped, zeros for the first hidden state and the first output. One difference: the
official test loader prepends LR frame **1** as the "previous" frame of frame 0 (``cat(LR[:, 1:2], LR)``),
a look-ahead a stream cannot make; here the first frame is its own predecessor. Only frame 0 differs.
Also note the official Vid4 evaluation: the GT is reflect-padded by 2·s pixels before the BD degradation
and cropped by the same 8 pixels after, so its "crop 8" scores the whole original frame.

Configurations (parameters; GMAC per 180x320 LR frame at x4, counted per conv as
:func:`edge_sr.profile.compute.count_macs` does): RRN-L ``rrn`` (n_c 128, n_b 10) 3,364,400, the official
log's 12.834 MB of float32; RRN-S ``rrn_s`` (n_c 128, n_b 5) 1,888,560; ``rrn_edge`` (n_c 16, n_b 3) 33,296,
1.91 GMAC, the phone configuration, measured beside n_b 2 (1.64), n_b 4 (2.17) and n_c 20 / n_b 2 (2.30)
against MobileRRN's 16-channel baseline (35.7 K parameters, 2.05 GMAC).

Key names are the official ones (``neuro.conv_1``, ``neuro.recon_trunk.<i>.conv1/conv2``, ``neuro.conv_h``,
``neuro.conv_o``); RRN's released files carry DataParallel's ``module.`` prefix, which the loader strips.
Detection reads ``n_c`` from ``conv_1``'s outputs, ``n_b`` from the trunk's block count, and colours and
scale from ``conv_o`` (C·s² outputs) and ``conv_1``'s inputs (C·s² + n_c + 2·C).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.common import conv_shape, keys_match, nearest_name
from edge_sr.models.detect import Detection, StateDict, indices, register_detector
from edge_sr.models.registry import register_model
from edge_sr.models.stream import StateTensor, StreamSpec


class ResidualBlockNoBN(nn.Module):
    """conv - ReLU - conv, plus the input."""

    def __init__(self, n_c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_c, n_c, 3, 1, 1)
        self.conv2 = nn.Conv2d(n_c, n_c, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class RRNCell(nn.Module):
    """The official ``neuro`` module: (frames, hidden, folded output) -> (hidden, output residual)."""

    def __init__(self, *, n_c: int, n_b: int, scale: int, colors: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(colors * scale * scale + n_c + colors * 2, n_c, 3, 1, 1)
        self.recon_trunk = nn.Sequential(*(ResidualBlockNoBN(n_c) for _ in range(n_b)))
        self.conv_h = nn.Conv2d(n_c, n_c, 3, 1, 1)
        self.conv_o = nn.Conv2d(n_c, colors * scale * scale, 3, 1, 1)

    def forward(self, x: Tensor, h: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.conv_1(torch_cat(x, h, o)))
        x = self.recon_trunk(x)
        return F.relu(self.conv_h(x)), self.conv_o(x)


def init_weights(model: nn.Module, scale: float = 0.1) -> None:
    """The official initialisation: every conv Kaiming-normal (fan in) times ``scale``, biases zero.

    Not cosmetic: from PyTorch's default initialisation, Adam at lr 2e-3 drove ``conv_1``'s biases negative
    within a few hundred steps of a short run here, its ReLU went dead (0.4 % of outputs positive) and the
    network output only the bilinear base."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def torch_cat(*ts: Tensor) -> Tensor:
    import torch

    return torch.cat(ts, dim=1)


class RRN(nn.Module):
    """One step: (N, C, h, w) frame + state -> (N, C, h·scale, w·scale) SR frame + next hidden."""

    STREAM = StreamSpec(
        frames=("cur",),
        state=(
            StateTensor("prev", next="cur", channels="colors", resolution="lr", init="frame"),
            StateTensor("hidden", next="hidden_out", channels=0, resolution="lr", init="zeros"),
            StateTensor("prev_sr", next="sr", channels="colors", resolution="hr", init="zeros"),
        ),
        output="sr",
        state_outputs=("hidden_out",),
    )

    def __init__(self, *, scale: int = 4, colors: int = 3, n_c: int = 128, n_b: int = 10) -> None:
        super().__init__()
        self.scale, self.colors, self.n_c = scale, colors, n_c
        self.neuro = RRNCell(n_c=n_c, n_b=n_b, scale=scale, colors=colors)
        init_weights(self)

    @property
    def stream(self) -> StreamSpec:
        """The step contract with the hidden state's channel count filled in."""
        return type(self).STREAM.with_channels("hidden", self.n_c)

    def forward(self, cur: Tensor, prev: Tensor, hidden: Tensor, prev_sr: Tensor) -> tuple[Tensor, Tensor]:
        # (N, C, h·s, w·s) -> (N, C·s², h, w): the previous output at LR resolution
        folded = F.pixel_unshuffle(prev_sr, self.scale)
        hidden_out, res = self.neuro(torch_cat(prev, cur), hidden, folded)
        base = F.interpolate(cur, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.pixel_shuffle(res, self.scale) + base, hidden_out


@register_model(family="rrn", kind="video")
def rrn(**overrides) -> RRN:
    """The paper's RRN-L (10 residual blocks, 128 channels)."""
    return RRN(**{"n_c": 128, "n_b": 10, **overrides})


@register_model(family="rrn", kind="video")
def rrn_s(**overrides) -> RRN:
    """The paper's RRN-S (5 residual blocks, 128 channels)."""
    return RRN(**{"n_c": 128, "n_b": 5, **overrides})


@register_model(family="rrn", kind="video")
def rrn_edge(**overrides) -> RRN:
    """The phone configuration: 16 channels, 3 blocks (33,296 parameters, 1.91 GMAC per 180x320 frame at x4)."""
    return RRN(**{"n_c": 16, "n_b": 3, **overrides})


_KEY = r"neuro\.(conv_1|conv_h|conv_o|recon_trunk\.\d+\.conv[12])\.(weight|bias)"
_NAMES: dict[tuple[int, ...], str] = {(128, 10): "rrn", (128, 5): "rrn_s", (16, 3): "rrn_edge"}


@register_detector("rrn")
def _detect(state: StateDict) -> Detection | None:
    """The official ``neuro.*`` keys: n_c, n_b, colours and scale from the shapes (see the module docstring)."""
    if not keys_match(state, _KEY) or not all(
        f"neuro.{k}.weight" in state for k in ("conv_1", "conv_h", "conv_o")
    ):
        return None
    n_c, c_in, _, _ = conv_shape(state, "neuro.conv_1.weight")
    c_out = conv_shape(state, "neuro.conv_o.weight")[0]
    two_colors = c_in - n_c - c_out  # conv_1 takes C·s² + n_c + 2·C, conv_o gives C·s²
    if two_colors <= 0 or two_colors % 2 or c_out % (two_colors // 2):
        return None
    colors = two_colors // 2
    scale = round((c_out // colors) ** 0.5)
    if scale * scale * colors != c_out:
        return None
    n_b = len(indices(state, "neuro.recon_trunk."))
    args = {"scale": scale, "colors": colors, "n_c": n_c, "n_b": n_b}
    return Detection(nearest_name(_NAMES, (n_c, n_b)), args, form="deploy")
