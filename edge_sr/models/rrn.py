"""RRN: Revisiting Temporal Modeling for Video Super-resolution (Isobe, Zhu, Jia, Wang, BMVC 2020).

A recurrent residual network: each step concatenates the previous and the current LR frame, the hidden
features and the previous SR output folded back to LR resolution (space-to-depth), runs a stack of plain
residual blocks, and emits the next hidden features (``conv_h``, ReLU) and the SR residual (``conv_o``,
pixel-shuffled and added to the bilinear upsampling of the current frame).

The step follows :mod:`edge_sr.models.stream`: ``forward(cur, prev, hidden, prev_sr) -> (sr, hidden_out)``.
At the first frame ``prev`` is the frame itself and ``hidden`` / ``prev_sr`` are zeros.

Key names are the official ones (``neuro.conv_1``, ``neuro.recon_trunk.<i>.conv1/conv2``, ``neuro.conv_h``,
``neuro.conv_o``); RRN's released files carry DataParallel's ``module.`` prefix, which the loader strips.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

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

    @property
    def stream(self) -> StreamSpec:
        """The step contract with the hidden state's channel count filled in."""
        import dataclasses

        spec = type(self).STREAM
        state = tuple(
            dataclasses.replace(s, channels=self.n_c) if s.name == "hidden" else s for s in spec.state
        )
        return dataclasses.replace(spec, state=state)

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
    """The phone configuration: 16 channels, 3 blocks (about 2 GMAC per 180x320 frame at x4)."""
    return RRN(**{"n_c": 16, "n_b": 3, **overrides})
