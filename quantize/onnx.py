"""ONNX target: onnxruntime static quantization (QDQ) of the float ONNX export.

The float model is exported by ``edge_sr.convert.export(..., "onnx")`` at the calibration shape; then
``onnxruntime.quantization.quantize_static`` runs the calibration patches through it (a
``CalibrationDataReader`` over the patches), fixes activation ranges and writes QuantizeLinear /
DequantizeLinear pairs around every conv: int8 per-channel symmetric weights, uint8 activations (the
combination onnxruntime's x86 / ARM kernels run fastest). I/O stays float32.

Activation ranges come from the 99.999th percentile of each tensor's values over the calibration set, not
its min / max: a handful of extreme feature values otherwise stretch the uint8 grid for every pixel. On the
bundled models (32 General100 patches) the Set5 / Set14 Y-PSNR loss against float went from 0.205 / 0.089 dB
(MinMax) to 0.171 / 0.076 at x2, and from 0.071 / 0.050 to 0.068 / 0.038 at x4; 99.99 clips too much
(x2 Set14 0.087), entropy calibration equals MinMax here.

Layers kept in float are passed as ``nodes_to_exclude``; ONNX node names are matched to torch module paths
through the exporter's name scopes.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.errors import ConversionError

TARGET = "onnx"
SCHEME = "onnxruntime-qdq: int8 per-channel symmetric weights, uint8 per-tensor activations (static, percentile 99.999)"
CALIB_PERCENTILE = 99.999
logger = logging.getLogger(__name__)


def _reader(patches: np.ndarray, input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class PatchReader(CalibrationDataReader):
        """Feeds (1, 3, H, W) float32 patches one at a time."""

        def __init__(self) -> None:
            self._it = iter(range(len(patches)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self._it, None)
            return None if i is None else {input_name: patches[i : i + 1]}

        def rewind(self) -> None:
            self._it = iter(range(len(patches)))

    return PatchReader()


def node_scopes(model_path: str | os.PathLike[str]) -> dict[str, str]:
    """ONNX node name -> the innermost torch module path it came from (exporter metadata), where recorded."""
    import onnx

    out: dict[str, str] = {}
    for node in onnx.load(os.fspath(model_path), load_external_data=False).graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                # repr of a list: module paths outermost first, then the fx node name: ['', 'body.0.0', 'conv2d']
                try:
                    scopes = ast.literal_eval(prop.value)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(scopes, list) and len(scopes) >= 2 and scopes[-2]:
                    out[node.name] = str(scopes[-2])
    return out


def conv_nodes(model_path: str | os.PathLike[str]) -> list[str]:
    import onnx

    return [
        n.name
        for n in onnx.load(os.fspath(model_path), load_external_data=False).graph.node
        if n.op_type == "Conv"
    ]


def exclude_nodes(model_path: str | os.PathLike[str], keep_float: Sequence[str]) -> list[str]:
    """The ONNX nodes belonging to the torch modules ``keep_float`` (by the exporter's name scopes)."""
    if not keep_float:
        return []
    scopes = node_scopes(model_path)
    nodes = [n for n, s in scopes.items() if any(s == k or s.startswith(k + ".") for k in keep_float)]
    if not nodes:
        raise ConversionError(
            model_path,
            f"no ONNX node maps to {', '.join(keep_float)} (the exporter recorded no module scopes)",
        )
    return nodes


def quantize_file(
    float_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    patches: np.ndarray,
    *,
    keep_float: Sequence[str] = (),
    input_name: str = "input",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Static QDQ quantization of ``float_path`` into ``out_path``; returns facts for the manifest.

    ``metadata`` replaces the embedded ``metadata_props`` the float export carried (precision, scheme).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    excluded = exclude_nodes(float_path, keep_float)
    quantize_static(
        os.fspath(float_path),
        os.fspath(out_path),
        _reader(np.ascontiguousarray(patches, dtype=np.float32), input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Percentile,
        nodes_to_exclude=excluded,
        extra_options={
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "CalibPercentile": CALIB_PERCENTILE,
        },
    )
    import onnx

    proto = onnx.load(os.fspath(out_path))
    if metadata:
        props = {p.key: p.value for p in proto.metadata_props}
        props.update(metadata)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, os.fspath(out_path))
    graph = proto.graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    return {
        "excluded_nodes": excluded,
        "convs": len(convs),
        "quantized_convs": len(_conv_weight_inputs(graph)),
        "ops": sorted({n.op_type for n in graph.node}),
    }


def _conv_weight_inputs(graph: Any) -> set[str]:
    """Names of the tensors that feed a Conv weight through a DequantizeLinear (quantized weights)."""
    deq = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {deq[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in deq}


def float_export_dir(out: Path) -> Path:
    """A scratch folder beside ``out`` for the float export that is quantized."""
    return out.parent / f".{out.stem}-float-export"  # no suffix: convert.export treats it as a folder
