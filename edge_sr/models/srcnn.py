"""SRCNN: Image Super-Resolution Using Deep Convolutional Networks (Dong et al., ECCV 2014 / TPAMI 2016).

Three convolutions (patch extraction 9x9, non-linear mapping, reconstruction) on the bicubic-upsampled
image. The paper's best setting is 9-5-5 with 64 and 32 filters. Here the bicubic upsampling happens inside
the model (``F.interpolate``, PyTorch's bicubic, a = -0.75, no antialiasing, which is what upsampling needs),
so SRCNN honours the zoo contract: (N, 3, H, W) -> (N, 3, sH, sW). Convs are zero-padded ("same") so the
output keeps its size, where the paper trained on valid convolutions. Key names follow the common PyTorch
port (``conv1``, ``conv2``, ``conv3``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models.registry import register_model


class SRCNN(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 3, H*scale, W*scale). All convs run at the output resolution."""

    def __init__(
        self,
        *,
        scale: int = 4,
        colors: int = 3,
        features: int = 64,
        mid_features: int = 32,
        kernel_sizes: tuple[int, int, int] | list[int] = (9, 5, 5),
    ) -> None:
        super().__init__()
        k1, k2, k3 = (int(k) for k in kernel_sizes)
        self.scale = scale
        self.conv1 = nn.Conv2d(colors, features, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(features, mid_features, k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(mid_features, colors, k3, padding=k3 // 2)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -bicubic-> (N, C, sH, sW) -> three convs at sH x sW
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        y = self.relu(self.conv1(up))
        y = self.relu(self.conv2(y))
        return self.conv3(y)


@register_model(family="srcnn")
def srcnn_955(**overrides) -> SRCNN:
    return SRCNN(**{"kernel_sizes": (9, 5, 5), **overrides})


@register_model(family="srcnn")
def srcnn_915(**overrides) -> SRCNN:
    return SRCNN(**{"kernel_sizes": (9, 1, 5), **overrides})
