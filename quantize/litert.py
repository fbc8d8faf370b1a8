"""TFLite target: litert-torch's PT2E quantizer (per-channel int8 weights, static int8 activations).

``litert_torch.convert(gm, quant_config=QuantConfig(pt2e_quantizer=q))`` turns the quantize at the graph input
into an int8 input tensor. edge-sr gives float32 I/O by default: the model is wrapped in
:class:`edge_sr.quantize.pt2e.ClampInput`, whose clamp is not annotated, so the input stays float and the
quantize moves inside. ``int8_io=True`` skips the wrapper: the input is int8 and the manifest carries its scale
and zero point (``edge_sr.runtime`` quantizes with them); the output's dtype is whatever the converter gives
(float32 after the pixel shuffle for the zoo's models; int8 with scale / zero point when it is quantized).
"""

from __future__ import annotations

from typing import Any

TARGET = "tflite"
SCHEME = "litert-pt2e: int8 per-channel symmetric weights, int8 per-tensor activations (static)"


def quantizer(*, qat: bool = False) -> Any:
    """litert-torch's ``PT2EQuantizer`` with the per-channel static configuration."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    q = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=qat, is_dynamic=False)
    )
    if qat:
        # Its QAT-only annotators match conv + BatchNorm patterns by tracing pattern functions, which
        # torch.export (2.13) refuses ("Expected `mod` to be an instance of `torch.nn.Module`"). edge-sr runs
        # QAT on the fused deploy graph, which has no BatchNorm left, so those patterns could not match:
        # convs are annotated by the regular static annotators, exactly as in PTQ.
        q.STATIC_QAT_ONLY_OPS = []
    return q


def export_options(q: Any) -> dict[str, Any]:
    """``options`` for ``edge_sr.convert.export``: the quant config that tells litert-torch how to lower."""
    from litert_torch.quantize.quant_config import QuantConfig

    return {"quant_config": QuantConfig(pt2e_quantizer=q)}
