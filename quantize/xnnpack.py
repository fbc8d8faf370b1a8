"""ExecuTorch target: the XNNPACK quantizer (per-channel symmetric int8 weights, static int8 activations).

The converted PT2E graph is lowered by ``edge_sr.convert.export(..., "executorch")``: the XNNPACK partitioner
takes the quantize / dequantize pairs around each conv and runs the conv in int8. The ``.pte`` keeps float32
input and output (the first quantize and the last dequantize run inside the delegate).
"""

from __future__ import annotations

from typing import Any

TARGET = "executorch"
SCHEME = "xnnpack-pt2e: int8 per-channel symmetric weights, int8 per-tensor affine activations (static)"


def quantizer(*, qat: bool = False) -> Any:
    """The XNNPACK quantizer, per-channel symmetric, for PTQ (observers) or QAT (fake-quant)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def export_options(*, int8_io: bool = False) -> dict[str, Any]:
    """Options for ``edge_sr.convert.export`` (none needed: the default XNNPACK partitioner lowers int8)."""
    return {}
