"""ESPCN: Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
Neural Network (Shi et al., CVPR 2016).

All convolutions run at the LR resolution; the last one emits C·s² channels that the sub-pixel layer
(pixel shuffle) rearranges into the HR image. The paper's network: 5x5/64, 3x3/32, 3x3/C·s², tanh.
Key names follow the common PyTorch port (``first_part.N``, ``last_part.0``).

Detection: ``colors`` (1 for the paper's Y-channel models), ``features`` and ``mid_features`` from the
first two convs, the scale from the last conv's C·s² outputs; the weights compute on [0, 1].
"""

from __future__ import annotations

from torch import Tensor, nn

from edge_sr.models.common import conv_shape, pixel_shuffle_scale
from edge_sr.models.detect import Detection, StateDict, register_detector
from edge_sr.models.registry import register_model


class ESPCN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale)."""

    def __init__(
        self, *, scale: int = 4, colors: int = 3, features: int = 64, mid_features: int = 32
    ) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(
            nn.Conv2d(colors, features, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(features, mid_features, 3, padding=1),
            nn.Tanh(),
        )
        # (N, 32, H, W) -> (N, C·s², H, W) -> pixel_shuffle -> (N, C, sH, sW)
        self.last_part = nn.Sequential(
            nn.Conv2d(mid_features, colors * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.last_part(self.first_part(x))


@register_model(family="espcn")
def espcn(**overrides) -> ESPCN:
    return ESPCN(**overrides)


_KEYS = frozenset(
    f"{m}.{p}" for m in ("first_part.0", "first_part.2", "last_part.0") for p in ("weight", "bias")
)


@register_detector("espcn")
def _detect(state: StateDict) -> Detection | None:
    """``first_part.0`` / ``first_part.2`` / ``last_part.0`` and nothing else."""
    if set(state) != _KEYS:
        return None
    features, colors, _, _ = conv_shape(state, "first_part.0.weight")
    mid, _, _, _ = conv_shape(state, "first_part.2.weight")
    out, _, _, _ = conv_shape(state, "last_part.0.weight")
    args = {
        "scale": pixel_shuffle_scale(out, colors),
        "colors": colors,
        "features": features,
        "mid_features": mid,
    }
    return Detection("espcn", args, form="deploy")
