"""Per-layer quantization sensitivity: how much each conv alone costs when quantized.

For every conv layer L the model is quantized with the target's PT2E quantizer with *only* L quantized (every
other conv kept float through ``keep_float``), calibrated on the calibration patches, and its output compared
with the float model's: the SQNR in dB (higher is better). The ranking, most sensitive (lowest SQNR) first,
drives ``keep_float``: :func:`most_sensitive` returns the k layers to keep in float when the target supports
partial quantization (ExecuTorch, TFLite and CoreML W8A8 through PT2E, ONNX through ``nodes_to_exclude``).
The simulation runs the converted PT2E graph in torch (the reference quantized kernels); ONNX, whose int8 comes
from onnxruntime, is ranked with the XNNPACK quantizer, which uses the same scheme (per-channel int8 weights,
per-tensor affine 8-bit activations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from edge_sr.quantize.pt2e import conv_layers, quantize_model, sqnr
from torch import Tensor, nn

from edge_sr.errors import ConfigError


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    sqnr_db: float  # output SQNR with only this layer quantized


@dataclass(frozen=True)
class SensitivityReport:
    """Layers sorted most sensitive first, and the SQNR of the fully quantized model."""

    target: str
    layers: list[LayerSensitivity] = field(default_factory=list)
    full_sqnr_db: float = float("nan")

    def ranking(self) -> list[str]:
        return [r.name for r in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "full_sqnr_db": self.full_sqnr_db,
            "layers": [{"name": r.name, "sqnr_db": r.sqnr_db} for r in self.layers],
        }


def target_quantizer(target: str, *, qat: bool = False) -> Any:
    """The PT2E quantizer a target owns (ONNX's simulates its QDQ scheme, see the module docstring)."""
    from edge_sr.convert import quantizable_targets, target_module

    q = target_module(target).quantizer(qat=qat)
    if q is None:
        raise ConfigError(
            None,
            f"{target} has no INT8 quantizer to rank layers with; choose from {', '.join(quantizable_targets())}",
        )
    return q


@torch.no_grad()
def output_sqnr(model: nn.Module, quantized: Any, patches: Tensor) -> float:
    """SQNR (dB) of the quantized graph's output against the float model's, over all patches."""
    return sqnr(model(patches), quantized(patches))


def sensitivity(
    model: nn.Module,
    target: str,
    patches: Tensor,
    *,
    layers: Sequence[str] | None = None,
) -> SensitivityReport:
    """Rank the conv layers of the deploy-form ``model`` by output SQNR when quantized alone.

    Args:
        model: a deploy-form (fused) float model.
        target: whose quantizer to simulate.
        patches: (N, 3, H, W) calibration patches (calibration and measurement).
        layers: the layers to rank (default: every ``nn.Conv2d``).
    """
    model = model.eval()
    names = list(layers) if layers is not None else conv_layers(model)
    example = patches[:2]

    def run(keep: Sequence[str]) -> float:
        gm = quantize_model(model, target_quantizer(target), [patches], example, keep_float=keep)
        return output_sqnr(model, gm, patches)

    rows = [LayerSensitivity(name, run([n for n in names if n != name])) for name in names]
    rows.sort(key=lambda r: r.sqnr_db)
    return SensitivityReport(target=target, layers=rows, full_sqnr_db=run([]))


def most_sensitive(report: SensitivityReport, k: int) -> list[str]:
    """The ``k`` layers with the lowest SQNR: the ones to keep in float under a budget of k float layers."""
    return report.ranking()[: max(0, k)]
