"""TFLite (LiteRT) target: ``litert_torch.convert`` to a ``.tflite`` flatbuffer, run by ai-edge-litert.

FP16 stores the weights as float16 (dequantized at load: the GPU delegate then computes in FP16, the CPU in
FP32). Several fixed sizes become several signatures (``h<H>w<W>``). The manifest fields are written into the
flatbuffer's metadata table under ``edge_sr`` (one JSON string). litert-torch lowers ``pixel_shuffle`` to
rank-4 reshapes and transposes itself; TFLite's ``DEPTH_TO_SPACE`` uses another channel order (DCR).
A graph with several inputs / outputs (a video step) gets them as the signature's names (the model is
traced with keyword inputs and a dict of outputs); a one-input graph keeps litert-torch's positional
signature (``args_0`` -> ``output_0``), as before.

INT8 goes through litert-torch's PT2E quantizer (per-channel int8 weights, static int8 activations):
``litert_torch.convert(gm, quant_config=QuantConfig(pt2e_quantizer=q))`` turns the quantize at the graph input
into an int8 input tensor. edge-sr gives float32 I/O by default: the model is wrapped in
``edge_sr.quantize.pt2e.ClampInput`` (:data:`FLOAT_IO_CLAMP`), whose clamp is not annotated, so the input stays
float and the quantize moves inside. ``int8_io`` skips the wrapper: the input is int8 and the manifest carries
its scale and zero point (``edge_sr.runtime`` quantizes with them); the output's dtype is whatever the
converter gives (float32 after the pixel shuffle for the zoo's models; int8 with scale / zero point when it
is quantized).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edge_sr.convert.spec import ExportSpec
from edge_sr.convert.target import (
    GraphIO,
    OpTime,
    Size,
    Timed,
    Timer,
    fill_shape,
    random_input,
    time_calls,
)
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

NAME = "tflite"
SUFFIX = ".tflite"
FP16_BY_CAST = False  # float16 weights through the converter's quantization recipe
QUANT_MODES: tuple[str, ...] = ("w8a8",)
PT2E_MODES: tuple[str, ...] = ("w8a8",)
INT8_IO = True  # an int8 input tensor (scale / zero point in the manifest) on request
FLOAT_IO_CLAMP = True  # float I/O: an unannotated clamp in front keeps the input float
FOLD_QUANTIZE = False  # litert-torch folds the quantized weights itself
SCHEME = "litert-pt2e: int8 per-channel symmetric weights, int8 per-tensor activations (static)"
METADATA_NAME = "edge_sr"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """TFLite export options.

    Attributes:
        quant_config: litert-torch's ``QuantConfig`` (set by ``edge_sr.quantize`` for INT8 graphs; the FP16
            recipe is chosen from the spec's precision).
    """

    quant_config: Any = None


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


class _Named(nn.Module):
    """Keyword inputs and a dict of outputs, so the signature's tensors carry the graph's names."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs, self.outputs = model, inputs, outputs

    def forward(self, **feeds: Tensor) -> dict[str, Tensor]:
        ys = self.model(*(feeds[n] for n in self.inputs))
        return dict(zip(self.outputs, ys if isinstance(ys, tuple | list) else (ys,), strict=True))


def export(
    model: nn.Module,
    io: GraphIO,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """Convert ``model`` to ``path``; returns the manifest's I/O entries (and signatures)."""
    import litert_torch
    import torch

    for name in ("litert_torch", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quant_config = options.quant_config
    if quant_config is None and spec.precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    signatures: list[str] = []
    example = io.example
    if spec.sizes:
        conv = None
        for h, w in spec.sizes:
            c = example.shape[-1] if spec.layout == "NHWC" else example.shape[1]  # the model's colours
            shape = (1, h, w, c) if spec.layout == "NHWC" else (1, c, h, w)
            ex = torch.rand(*shape)
            name = _signature_name(h, w)
            conv = (conv or litert_torch).signature(name, model, (ex,))
            signatures.append(name)
        edge = conv.convert(quant_config=quant_config)  # type: ignore[union-attr]
    elif len(io.examples) > 1 or len(io.output_names) > 1:
        named = _Named(model, io.input_names, io.output_names).eval()
        feeds = dict(zip(io.input_names, io.examples, strict=True))
        edge = litert_torch.convert(named, (), feeds, quant_config=quant_config)
        signatures.append("serving_default")
    else:
        edge = litert_torch.convert(
            model, (example,), dynamic_shapes=spec.dynamic_shapes(), quant_config=quant_config
        )
        signatures.append("serving_default")
    edge.export(os.fspath(path))
    add_metadata(path, {METADATA_NAME: json.dumps(metadata, sort_keys=True)})
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=os.fspath(path))
    runner = it.get_signature_runner(signatures[0])
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if len(io.examples) > 1 or len(io.output_names) > 1:
        if set(ins) != set(io.input_names) or set(outs) != set(io.output_names):
            raise ConversionError(
                path, f"the signature's I/O is {sorted(ins)} -> {sorted(outs)}, not the names given"
            )
        in_det, out_det = [ins[n] for n in io.input_names], [outs[n] for n in io.output_names]
    else:
        in_det, out_det = [it.get_input_details()[0]], [it.get_output_details()[0]]
    return {
        "inputs": [_io_entry(n, d, spec) for n, d in zip(io.input_names, in_det, strict=True)],
        "outputs": [_io_entry(n, d, spec) for n, d in zip(io.output_names, out_det, strict=True)],
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
    if spec.dynamic is None and not spec.sizes:
        entry["shape"] = [int(d) for d in details["shape"]]
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


# ---------------------------------------------------------------- quantization


def quantizer(*, qat: bool = False, mode: str | None = None) -> Any:
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


def quant_scheme(mode: str | None = None) -> str:
    """The manifest's description of the INT8 scheme."""
    return SCHEME


def quant_options(quantizer: Any, mode: str | None = None) -> Options:
    """The quant config that tells litert-torch how to lower a PT2E-quantized graph (none for FP16)."""
    if quantizer is None:
        return Options()
    from litert_torch.quantize.quant_config import QuantConfig

    return Options(quant_config=QuantConfig(pt2e_quantizer=quantizer))


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

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, xnnpack: bool = True
    ) -> None:
        """``xnnpack=False``: the interpreter's built-in kernels only, without the XNNPACK delegate LiteRT
        applies by default (what a runtime without it, or with it turned off, runs)."""
        self.path = Path(path)
        kwargs: dict[str, Any] = {}
        if not xnnpack:
            from ai_edge_litert.interpreter import OpResolverType

            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = _interpreter_class()(
                model_path=os.fspath(path), num_threads=threads or 2, **kwargs
            )
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for inputs by name (the first signature; a one-input graph's positional
        ``args_0`` / ``output_0`` answer to its only feed and give ``output``)."""
        runner = self._runner(next(iter(self.signatures)))
        names = list(runner.get_input_details())
        if set(names) == set(feeds):
            return dict(runner(**feeds))
        if len(names) == 1 and len(feeds) == 1:
            return {"output": next(iter(runner(**{names[0]: next(iter(feeds.values()))}).values()))}
        raise RuntimeBackendError(self.path, f"the signature takes {sorted(names)}, not {sorted(feeds)}")


def _quant(details: dict[str, Any]) -> tuple[float, int] | None:
    scale, zp = details.get("quantization", (0.0, 0))
    return (float(scale), int(zp)) if scale else None


# ---------------------------------------------------------------- profiling


def tflite_delegated(ops_details: list[dict[str, Any]]) -> list[OpTime]:
    """Which TFLite nodes a delegate took. The interpreter lists every original node plus one ``DELEGATE``
    node per partition, without saying which nodes it replaced. A node runs on the CPU iff something
    outside the partitions needs its output: a ``DELEGATE`` node's input, or an input of another CPU node
    (producers that are also ``DELEGATE`` outputs count as delegated). Walk that backwards from the uses."""
    delegates = [o for o in ops_details if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops_details if o["op_name"] != "DELEGATE"]
    if not delegates:
        return [OpTime(o["op_name"], None, False) for o in plain]
    from_delegate = {int(t) for d in delegates for t in d["outputs"]}
    producer = {int(t): o["index"] for o in plain for t in o["outputs"] if int(t) not in from_delegate}
    needed = [int(t) for d in delegates for t in d["inputs"]]
    cpu: set[int] = set()
    by_index = {o["index"]: o for o in plain}
    while needed:
        t = needed.pop()
        i = producer.get(t)
        if i is not None and i not in cpu:
            cpu.add(i)
            needed.extend(int(u) for u in by_index[i]["inputs"])
    # nodes after the partitions (consuming delegate outputs) also run on the CPU
    avail = set(from_delegate)
    for o in plain:
        if any(int(t) in avail for t in o["inputs"]) and not set(map(int, o["outputs"])) & from_delegate:
            cpu.add(o["index"])
            avail.update(int(t) for t in o["outputs"])
    return [OpTime(o["op_name"], None, o["index"] not in cpu) for o in plain]


def profile(
    path: Path,
    *,
    size: Size,
    runs: int,
    warmup: int,
    threads: int,
    want_ops: bool,
    layout: str | None,
    timer: Timer = time_calls,
) -> Timed:
    """Latency through the LiteRT interpreter; operators listed with their delegation (no per-op times)."""
    try:
        it = _interpreter_class()(model_path=str(path), num_threads=threads)
        det = it.get_input_details()[0]
        shape = fill_shape([int(d) for d in det["shape_signature"]], size, layout)
        if list(det["shape"]) != shape:
            it.resize_tensor_input(det["index"], shape)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RuntimeBackendError(path, f"the TFLite interpreter cannot load it ({e})") from None
    x = random_input(shape, det["dtype"])

    def call() -> None:
        it.set_tensor(det["index"], x)
        it.invoke()

    times = timer(call, runs, warmup)
    ops = tflite_delegated(it._get_ops_details()) if want_ops else []
    note = (
        "the TFLite Python interpreter gives no per-operator times (operators listed with their delegation); "
        "benchmark_model --enable_op_profiling=true gives them (edge-sr profile --adb)"
    )
    return Timed(times, shape, ops, note if want_ops else None)
