"""ExecuTorch target: ``.pte`` lowered with the XNNPACK partitioner (or the CoreML delegate).

torch.export -> ``to_edge_transform_and_lower(partitioner=[...])`` -> ``to_executorch()``. A dynamic H / W
range goes through :mod:`.dynamic` (window attention's shape assumptions proven for every size). FP16 artifacts
compute in float16 inside and keep float32 I/O. The CoreML delegate lowers on Linux but runs only on Apple
hardware. ExecuTorch has no free-form metadata section: the manifest beside the file is the only record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.onnx import dynamic_hw
from edge_sr.convert.spec import ExportSpec
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

SUFFIX = ".pte"
FP16_BY_CAST = True


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what ExecuTorch export does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "executorch has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.sizes:
        raise ConversionError(
            None, "executorch has no enumerated shapes; use a bounded dynamic range (--dynamic MIN:MAX)"
        )


def partitioners(spec: ExportSpec) -> list[Any]:
    """The partitioner list of ``spec.delegate``."""
    if spec.delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        precision = ct.precision.FLOAT16 if spec.precision == "fp16" else ct.precision.FLOAT32
        specs = CoreMLBackend.generate_compile_specs(compute_precision=precision)
        return [CoreMLPartitioner(compile_specs=specs)]
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def write(
    model: nn.Module,
    example: Tensor,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Export, lower and serialize ``model`` to ``path``; returns the manifest's I/O entries."""
    import contextlib

    from edge_sr.convert.dynamic import export_proven, lowering_without_asserts
    from executorch.exir import to_edge_transform_and_lower

    if spec.dynamic is None:
        ep = torch.export.export(model, (example,), dynamic_shapes=None)
        lowering: Any = contextlib.nullcontext()
    else:  # shape assumptions (window padding) proven for the whole range, then dropped: see .dynamic
        ep = export_proven(model, example, dynamic_hw(spec), axes=(1, 2) if spec.layout == "NHWC" else (2, 3))
        lowering = lowering_without_asserts()
    parts = options.get("partitioners") or partitioners(spec)
    with lowering:
        edge = to_edge_transform_and_lower(ep, partitioner=parts)
    delegated = sum(
        1
        for n in edge.exported_program().graph.nodes
        if n.op == "call_function" and "delegate" in str(n.target)
    )
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    dtype = str(example.dtype).replace("torch.", "")
    with torch.no_grad():
        out_dtype = str(model(example).dtype).replace("torch.", "")
    return {
        "inputs": [{"name": "input", "dtype": dtype, "layout": spec.layout, "value_range": [0.0, 1.0]}],
        "outputs": [{"name": "output", "dtype": out_dtype, "layout": spec.layout, "value_range": [0.0, 1.0]}],
        "target_info": {"delegate": spec.delegate, "delegate_calls": delegated},
    }


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """ExecuTorch programs carry no free-form metadata: always empty."""
    return {}


class Runner:
    """``executorch.runtime`` over one ``.pte``; ``forward`` takes arrays in the model's own layout.

    ``threads`` sizes the CPU threadpool XNNPACK runs on. That pool is one per process, so the last runner
    created sets it for all.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        from executorch.runtime import Runtime

        if threads is not None:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))
        self.path = Path(path)
        try:
            self.method = Runtime.get().load_program(os.fspath(path)).load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError with a code
            raise RuntimeBackendError(path, f"executorch cannot load it ({str(e).splitlines()[0]})") from None
        self.input_names = ["input"]
        self.output_names = ["output"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])
        return out[0].numpy()
