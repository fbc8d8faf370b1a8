"""TFLite (LiteRT) target: ``litert_torch.convert`` to a ``.tflite`` flatbuffer, run by ai-edge-litert.

FP16 stores the weights as float16 (dequantized at load: the GPU delegate then computes in FP16, the CPU in
FP32). Several fixed sizes become several signatures (``h<H>w<W>``). The manifest fields are written into the
flatbuffer's metadata table under ``edge_sr`` (one JSON string). litert-torch lowers ``pixel_shuffle`` to
rank-4 reshapes and transposes itself; TFLite's ``DEPTH_TO_SPACE`` uses another channel order (DCR).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from edge_sr.convert.onnx import dynamic_hw
from edge_sr.convert.spec import ExportSpec
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

SUFFIX = ".tflite"
FP16_BY_CAST = False  # float16 weights through the converter's quantization recipe
METADATA_NAME = "edge_sr"
logger = logging.getLogger(__name__)


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what the TFLite export does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "tflite has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.dynamic is not None:
        raise ConversionError(
            None,
            "tflite takes fixed shapes (reshapes with dynamic H/W do not lower); use --input-size or several sizes",
        )
    if spec.pixel_shuffle == "depth_to_space":
        raise ConversionError(
            None,
            "tflite cannot keep pixel_shuffle as depth_to_space (its DEPTH_TO_SPACE is DCR); use rank4 or conv_transpose",
        )


def _signature_name(h: int, w: int) -> str:
    return f"h{h}w{w}"


def write(
    model: nn.Module,
    example: Tensor,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Convert ``model`` to ``path``; returns the manifest's I/O entries (and signatures)."""
    import litert_torch
    import torch

    for name in ("litert_torch", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quant_config = options.get("quant_config")
    if quant_config is None and spec.precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    signatures: list[str] = []
    if spec.sizes:
        conv = None
        for h, w in spec.sizes:
            shape = (1, h, w, 3) if spec.layout == "NHWC" else (1, 3, h, w)
            ex = torch.rand(*shape)
            name = _signature_name(h, w)
            conv = (conv or litert_torch).signature(name, model, (ex,))
            signatures.append(name)
        edge = conv.convert(quant_config=quant_config)  # type: ignore[union-attr]
    else:
        edge = litert_torch.convert(
            model, (example,), dynamic_shapes=dynamic_hw(spec), quant_config=quant_config
        )
        signatures.append("serving_default")
    edge.export(os.fspath(path))
    add_metadata(path, {METADATA_NAME: json.dumps(metadata, sort_keys=True)})
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=os.fspath(path))
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    return {
        "inputs": [_io_entry("input", ind, spec)],
        "outputs": [_io_entry("output", outd, spec)],
        "target_info": {
            "signatures": signatures,
            "ops": sorted({d["op_name"] for d in it._get_ops_details()}),
        },
    }


def _io_entry(name: str, details: dict[str, Any], spec: ExportSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "dtype": np.dtype(details["dtype"]).name,
        "layout": spec.layout,
        "value_range": [0.0, 1.0],
    }
    scale, zp = details.get("quantization", (0.0, 0))
    if scale:
        entry["quant"] = {"dtype": entry["dtype"], "scale": float(scale), "zero_point": int(zp)}
    return entry


def add_metadata(path: Path, entries: dict[str, str]) -> None:
    """Append ``name -> bytes`` entries to the flatbuffer's ``metadata`` table (rewrites ``path``)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    model.metadata = list(model.metadata or [])
    for name, value in entries.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buf)
        md = schema.MetadataT()
        md.name = name
        md.buffer = len(model.buffers) - 1
        model.metadata.append(md)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``edge_sr`` metadata entry of a ``.tflite`` file, decoded (empty when absent)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() and md.Name().decode() == METADATA_NAME:
            return json.loads(model.Buffers(md.Buffer()).DataAsNumpy().tobytes().decode())
    return {}


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise RuntimeBackendError(None, "no TFLite interpreter: pip install ai-edge-litert") from None
    return Interpreter


class Runner:
    """A LiteRT interpreter over one ``.tflite``; ``forward`` picks the signature whose input shape matches."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        self.path = Path(path)
        try:
            self.interpreter = _interpreter_class()(model_path=os.fspath(path), num_threads=threads or 2)
        except (ValueError, RuntimeError) as e:
            raise RuntimeBackendError(
                path, f"the LiteRT interpreter cannot load it ({str(e).splitlines()[0]})"
            ) from None
        self.signatures = self.interpreter.get_signature_list()
        self._runners: dict[str, Any] = {}
        first = next(iter(self.signatures.values()))
        self.input_names = list(first["inputs"])
        self.output_names = list(first["outputs"])
        details = self.interpreter.get_input_details()[0]
        self.input_quant = _quant(details)
        self.output_quant = _quant(self.interpreter.get_output_details()[0])

    def signature_shapes(self) -> dict[str, tuple[int, ...]]:
        """signature name -> its input shape."""
        out = {}
        for name in self.signatures:
            r = self._runner(name)
            out[name] = tuple(int(n) for n in next(iter(r.get_input_details().values()))["shape"])
        return out

    def _runner(self, name: str) -> Any:
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name]

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = next(iter(self.signatures))
        if len(self.signatures) > 1:
            shapes = self.signature_shapes()
            matches = [n for n, s in shapes.items() if s == tuple(x.shape)]
            if not matches:
                raise RuntimeBackendError(
                    self.path, f"no signature takes shape {tuple(x.shape)}; signatures: {shapes}"
                )
            name = matches[0]
        runner = self._runner(name)
        inp = next(iter(runner.get_input_details()))
        outs = runner(**{inp: x})
        return next(iter(outs.values()))


def _quant(details: dict[str, Any]) -> tuple[float, int] | None:
    scale, zp = details.get("quantization", (0.0, 0))
    return (float(scale), int(zp)) if scale else None
