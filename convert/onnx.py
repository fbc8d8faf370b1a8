"""ONNX target: the torch.export-based exporter (``torch.onnx.export(dynamo=True)``), run by onnxruntime.

FP16 artifacts compute in float16 inside and keep float32 I/O (``Cast`` at both ends). The manifest fields
are also stored in the model's ``metadata_props``. Pixel shuffle as ``depth_to_space`` becomes one
``DepthToSpace`` (mode CRD) node.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.spec import ExportSpec
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

SUFFIX = ".onnx"
FP16_BY_CAST = True  # the exported graph itself is float16, wrapped in float32 casts
logger = logging.getLogger(__name__)


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what ONNX export does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "onnx has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.sizes:
        raise ConversionError(None, "onnx has no enumerated shapes; use a dynamic range (--dynamic MIN:MAX)")


def dynamic_hw(spec: ExportSpec) -> tuple[dict[int, Any], ...] | None:
    """torch.export ``dynamic_shapes`` for H and W within ``spec.dynamic`` (None for fixed shapes)."""
    if spec.dynamic is None:
        return None
    lo, hi = spec.dynamic
    h = torch.export.Dim("height", min=lo, max=hi)
    w = torch.export.Dim("width", min=lo, max=hi)
    axes = (1, 2) if spec.layout == "NHWC" else (2, 3)
    return ({axes[0]: h, axes[1]: w},)


def write(
    model: nn.Module,
    example: Tensor,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Export ``model`` traced on ``example`` to ``path``; returns the manifest's I/O entries."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=spec.opset,
        dynamic_shapes=dynamic_hw(spec),
        input_names=["input"],
        output_names=["output"],
        verbose=False,
        report=False,
        optimize=True,
    )
    proto = program.model_proto
    for key, value in metadata.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, os.fspath(path))
    dtype = _ONNX_DTYPES.get(proto.graph.input[0].type.tensor_type.elem_type, "float32")
    out_dtype = _ONNX_DTYPES.get(proto.graph.output[0].type.tensor_type.elem_type, "float32")
    ops = sorted({n.op_type for n in proto.graph.node})
    return {
        "inputs": [{"name": "input", "dtype": dtype, "layout": spec.layout, "value_range": [0.0, 1.0]}],
        "outputs": [{"name": "output", "dtype": out_dtype, "layout": spec.layout, "value_range": [0.0, 1.0]}],
        "target_info": {"opset": spec.opset, "ops": ops},
    }


_ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8"}


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


class Runner:
    """onnxruntime CPU session over one ``.onnx`` file; ``forward`` takes arrays in the model's own layout."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own error types
            raise RuntimeBackendError(
                path, f"onnxruntime cannot load it ({str(e).splitlines()[0]})"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_names[0]: x})[0]
