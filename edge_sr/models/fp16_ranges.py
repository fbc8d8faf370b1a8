"""Per-layer activation ranges, and which layers FP16 cannot hold.

FP16 represents magnitudes up to 65504; larger activations become inf (an image turns black or
colour-shifted). Below 2**-24 a value flushes to zero, and under 2**-14 it is subnormal. Transformers for SR
are known for a few layers (attention logits, MLP outputs of late blocks) whose range explodes, so FP16
fallback keeps exactly those layers in FP32: this module finds them by running the FP32 model once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # smallest positive subnormal: anything smaller becomes 0


class ActivationRange(NamedTuple):
    """Range of one layer's output; ``r[0], r[1]`` are (min, max)."""

    min: float
    max: float
    overflow: bool  # some |value| > 65504, or already inf/nan in FP32
    underflow: bool  # more than ``underflow_share`` of the nonzero values would flush to zero
    flush_share: float  # share of nonzero values with |value| < 2**-24


@torch.no_grad()
def activation_ranges(
    model: nn.Module, x: Tensor, *, underflow_share: float = 0.01
) -> dict[str, ActivationRange]:
    """Run ``model(x)`` in FP32 and return every submodule's output range, flagged for FP16.

    Args:
        model: any module; each named submodule (``""`` is the whole model) that returns a floating tensor
            gets an entry.
        x: a representative input (a real image tile gives realistic ranges).
        underflow_share: the share of flushed-to-zero values that flags a layer.

    Returns:
        ``{module name: ActivationRange}`` in execution order.
    """
    out: dict[str, ActivationRange] = {}

    def hook(name: str):
        def fn(_m: nn.Module, _inp: object, y: object) -> None:
            if not (isinstance(y, Tensor) and y.is_floating_point()) or y.numel() == 0:
                return
            y = y.detach().float()
            finite = torch.isfinite(y)
            lo = float(y[finite].min()) if bool(finite.any()) else float("nan")
            hi = float(y[finite].max()) if bool(finite.any()) else float("nan")
            mag = y.abs()
            nonzero = mag > 0
            n_nonzero = int(nonzero.sum())
            flush = float(((mag < FP16_TINY) & nonzero).sum()) / max(n_nonzero, 1)
            overflow = (not bool(finite.all())) or max(abs(lo), abs(hi)) > FP16_MAX
            out[name] = ActivationRange(lo, hi, overflow, flush > underflow_share, flush)

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    try:
        was_training = model.training
        model.eval()
        model(x.float())
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return out


def fp16_unsafe_layers(ranges: dict[str, ActivationRange]) -> list[str]:
    """Names of the layers that overflow or underflow in FP16 (the ones to keep in FP32)."""
    return [name for name, r in ranges.items() if r.overflow or r.underflow]
