"""Local attribution maps (LAM, Gu & Dong, "Interpreting Super-Resolution Networks with Local Attribution
Maps", CVPR 2021): path-integrated gradients along a blur path, and the diffusion index.

    path  x(α) = blur(image, (1 − α)·sigma_max),  α: 0 -> 1   (x(0) the blurred baseline, x(1) the image)
    F(x)  = sum of the SR output inside the box (all output channels)
    A     = ∫ ∇F(x(α)) ⊙ x'(α) dα   ≈ Σ_k ½(∇F(x_k) + ∇F(x_{k+1})) ⊙ (x_{k+1} − x_k)   (trapezoidal rule)
    map   = Σ_channels |A|          DI = (1 − Gini(map))·100

Completeness: Σ A = F(image) − F(baseline) up to the quadrature error, which falls as ``steps`` grows (and is
exactly zero for a network linear in its input). A network whose function is piecewise constant (fake
quantization, with straight-through-estimator gradients) has no such identity: there the gap measures how far
the STE gradient is from the int8 function's change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Box = tuple[int, int, int, int]  # (x, y, w, h)


def gaussian_kernel1d(sigma: float) -> Tensor:
    """The normalized 1-D Gaussian of ``sigma`` over ±ceil(3·sigma) taps (float64)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) ``x`` with reflect padding; ``sigma <= 0`` returns ``x``.

    The kernel is cut to the image where the image is smaller than it (reflect padding needs pad < size).
    """
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma)
    r = (k.numel() - 1) // 2
    c = x.shape[1]
    for dim, size in ((3, x.shape[3]), (2, x.shape[2])):  # along W, then along H
        rr = min(r, size - 1)
        kk = k[r - rr : r + rr + 1]
        kk = (kk / kk.sum()).to(x.dtype)
        if rr == 0:
            continue
        if dim == 3:
            w, pad = kk.view(1, 1, 1, -1), (rr, rr, 0, 0)
        else:
            w, pad = kk.view(1, 1, -1, 1), (0, 0, rr, rr)
        x = F.conv2d(F.pad(x, pad, mode="reflect"), w.expand(c, 1, *w.shape[2:]).contiguous(), groups=c)
    return x


def blur_path(image: Tensor, sigma_max: float, steps: int) -> Tensor:
    """The ``steps + 1`` path points (steps+1, C, H, W): blur sigma (1 − k/steps)·sigma_max, k = 0 .. steps."""
    img = image[None] if image.ndim == 3 else image
    return torch.cat([gaussian_blur(img, (1.0 - k / steps) * sigma_max) for k in range(steps + 1)])


def window_sum(out: Tensor, box: Box) -> Tensor:
    """Per-sample sum of (N, C, H, W) ``out`` inside ``box`` (output pixels): (N,)."""
    x, y, w, h = box
    return out[:, :, y : y + h, x : x + w].sum(dim=(1, 2, 3))


@dataclass(frozen=True)
class Attribution:
    """One LAM: ``signed`` (C, H, W) attributions, their channel-summed absolute ``map`` (H, W), the box output
    at the image and at the baseline, and the diffusion index."""

    signed: np.ndarray
    map: np.ndarray
    f_image: float
    f_baseline: float
    di: float

    @property
    def completeness_gap(self) -> float:
        """|Σ attributions − (F(image) − F(baseline))| relative to |F(image) − F(baseline)|."""
        delta = self.f_image - self.f_baseline
        return abs(float(self.signed.sum()) - delta) / max(abs(delta), 1e-12)


def path_gradients(
    fn: Callable[[Tensor], Tensor], points: Tensor, box: Box, *, batch: int = 16
) -> tuple[Tensor, Tensor]:
    """∇F and F at every path point: ((K, C, H, W) float32 gradients, (K,) float64 box sums).

    ``fn`` maps a float32 batch to the SR output; the batch runs in chunks of ``batch`` samples (each sample's
    box sum depends on that sample only: models in eval mode, fixed quantization parameters).
    """
    grads, values = [], []
    for chunk in points.split(batch):
        xi = chunk.detach().clone().float().requires_grad_(True)
        f = window_sum(fn(xi).float(), box)
        (g,) = torch.autograd.grad(f.sum(), xi)
        grads.append(g.detach())
        values.append(f.detach().double())
    return torch.cat(grads), torch.cat(values)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values`` (0: all equal, → 1: all mass on one entry)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n, total = v.size, v.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * v).sum() / (n * total))


def diffusion_index(attr_map: np.ndarray) -> float:
    """DI = (1 − Gini(|map|))·100: higher when the output window draws on a wider area of the input."""
    return (1.0 - gini(np.abs(attr_map))) * 100.0


def lam(
    fn: Callable[[Tensor], Tensor],
    image: Tensor,
    box: Box,
    *,
    steps: int = 50,
    sigma_max: float = 1.2,
    batch: int = 16,
) -> Attribution:
    """The LAM of the output window ``box`` of ``fn`` at ``image`` (C, H, W) along the blur path.

    Args:
        fn: (N, C, H, W) float32 -> (N, C', H·s, W·s); differentiable in its input.
        image: the LR input (C, H, W) in [0, 1].
        box: (x, y, w, h) in output pixels.
        steps: quadrature intervals of the path integral.
        sigma_max: blur of the baseline, in input pixels.
        batch: path points per forward / backward.
    """
    points = blur_path(image.float(), sigma_max, steps)  # (steps+1, C, H, W)
    grads, values = path_gradients(fn, points, box, batch=batch)
    deriv = points[1:] - points[:-1]  # (steps, C, H, W): x_{k+1} − x_k
    signed = (0.5 * (grads[1:] + grads[:-1]) * deriv).sum(0).double().numpy()
    amap = np.abs(signed).sum(0)
    return Attribution(signed, amap, float(values[-1]), float(values[0]), diffusion_index(amap))
