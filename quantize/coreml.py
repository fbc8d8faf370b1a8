"""CoreML target: W8A8 through the CoreML PT2E quantizer, and weight-only int8 / palettization.

What works off macOS (coremltools 9, ExecuTorch 1.5):

- **W8A8** (``mode="w8a8"``): ExecuTorch's ``CoreMLQuantizer`` (coremltools' ``LinearQuantizerConfig``:
  symmetric per-channel int8 weights, uint8 activations) annotates the graph; calibration and
  ``convert_pt2e`` run in torch, and ``ct.convert`` turns the quantize / dequantize pairs into
  ``quantize`` / ``dequantize`` ops and int8 weight constants. Activation calibration happens in torch, so it
  needs no CoreML predictions (``coremltools.optimize.coreml.linear_quantize_activations`` does, and is
  macOS only).
- **Weight-only** (``mode="weights"`` int8 linear, ``mode="palettize"`` k-means LUT of ``nbits``): applied
  with ``coremltools.optimize.coreml`` to the converted float program. Its default ``weight_threshold`` of
  2048 elements leaves small SR convs (the 3x3x3x16 head has 432 weights) in float silently; edge-sr sets it
  to 0 so every conv is compressed, and :func:`compressed_convs` reads back which ones were.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

TARGET = "coreml"
Mode = Literal["w8a8", "weights", "palettize"]
SCHEMES = {
    "w8a8": "coreml-pt2e: int8 per-channel affine weights, uint8 per-tensor affine activations (static)",
    "weights": "coremltools.optimize: int8 per-channel symmetric weights, float activations",
    "palettize": "coremltools.optimize: k-means palettized weights (per tensor LUT), float activations",
}


def quantizer(*, qat: bool = False) -> Any:
    """ExecuTorch's ``CoreMLQuantizer`` for W8A8 (per-channel int8 weights, uint8 activations), affine.

    Affine, not symmetric: with ``symmetric`` the uint8 activations get a fixed zero point of 128, so the
    mostly non-negative SR feature maps use half the range; on the bundled x4 model that cost 0.23 dB of Set5
    Y-PSNR against 0.07 dB affine (PTQ, 32 calibration patches).
    The same annotations serve PTQ and QAT (``prepare_qat_pt2e`` inserts fake-quant instead of observers).
    """
    import torch
    from coremltools.optimize.torch.quantization.quantization_config import (
        LinearQuantizerConfig,
        QuantizationScheme,
    )
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    cfg = LinearQuantizerConfig.from_dict(
        {
            "global_config": {
                "quantization_scheme": QuantizationScheme.affine,
                "activation_dtype": torch.quint8,
                "weight_dtype": torch.qint8,
                "weight_per_channel": True,
            }
        }
    )
    return CoreMLQuantizer(cfg)


def weight_transform(
    mode: Literal["weights", "palettize"] = "weights", *, nbits: int = 8, keep_float: tuple[str, ...] = ()
) -> Callable[[Any], Any]:
    """A ``transform`` for ``edge_sr.convert.export(..., options={"transform": ...})`` compressing every conv.

    ``keep_float``: MIL op names (``conv2d_0_cast_fp16`` ...) or weight names to leave uncompressed.
    """

    def apply(mlmodel: Any) -> Any:
        import coremltools.optimize.coreml as cto

        if mode == "weights":
            op_cfg = cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
            )
        else:
            op_cfg = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", weight_threshold=0)
        per_op: dict[str, Any] = {}
        if mode == "palettize":
            # a weight with at most 2^nbits distinct values (fixed 0/1 kernels such as a residual copy) gets
            # its exact values as the LUT: k-means on so few points is not reliable (newer scikit-learn
            # versions merge or move centres)
            exact = cto.OpPalettizerConfig(mode="unique", weight_threshold=0)
            per_op = dict.fromkeys(_few_valued_convs(mlmodel, 2**nbits), exact)
        per_op.update(dict.fromkeys(keep_float))
        cfg = cto.OptimizationConfig(global_config=op_cfg, op_name_configs=per_op)
        if mode == "weights":
            return cto.linear_quantize_weights(mlmodel, cfg)
        return cto.palettize_weights(mlmodel, cfg)

    return apply


def _few_valued_convs(mlmodel: Any, limit: int) -> list[str]:
    """Names of the conv ops of ``mlmodel`` whose weight is a constant with at most ``limit`` values."""
    import numpy as np

    prog = getattr(mlmodel, "_mil_program", None)
    if prog is None:
        return []
    names = []
    for fn in prog.functions.values():
        for op in fn.operations:
            w = op.inputs.get("weight") if op.op_type == "conv" else None
            val = getattr(w, "val", None) if w is not None else None
            if val is not None and np.unique(np.asarray(val)).size <= limit:
                names.append(op.name)
    return names


def load_program(path: str | os.PathLike[str]) -> Any:
    """The MIL program of a saved ``.mlpackage`` (no prediction needed, works on Linux)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = ct.utils.load_spec(os.fspath(path))
    weights = os.path.join(os.fspath(path), "Data", "com.apple.CoreML", "weights")
    return load(spec, specification_version=spec.specificationVersion, file_weights_dir=weights)


def compressed_convs(path: str | os.PathLike[str]) -> dict[str, str]:
    """Every ``conv`` op of the saved model -> how its weight is stored.

    ``"int8"`` / ``"lut"`` (``constexpr_affine_dequantize`` / ``constexpr_blockwise_shift_scale`` /
    ``constexpr_lut_to_dense``), ``"quantized"`` (a ``dequantize`` op: W8A8), or ``"float"``.
    """
    prog = load_program(path)
    producers: dict[str, Any] = {}
    out: dict[str, str] = {}
    for fn in prog.functions.values():
        for op in fn.operations:
            for v in op.outputs:
                producers[v.name] = op
        for op in fn.operations:
            if op.op_type != "conv":
                continue
            w = op.inputs.get("weight")
            src = producers.get(w.name) if w is not None else None
            kind = src.op_type if src is not None else "const"
            if kind in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
                out[op.name] = "int8"
            elif kind == "constexpr_lut_to_dense":
                out[op.name] = "lut"
            elif kind == "dequantize":
                out[op.name] = "quantized"
            else:
                out[op.name] = "float"
    return out
