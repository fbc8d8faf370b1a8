"""ONNX target: the torch.export-based exporter (``torch.onnx.export(dynamo=True)``), run by onnxruntime.

FP16 artifacts compute in float16 inside and keep float32 I/O (``Cast`` at both ends). The manifest fields
are also stored in the model's ``metadata_props``. Pixel shuffle as ``depth_to_space`` becomes one
``DepthToSpace`` (mode CRD) node.

INT8 is onnxruntime's static QDQ quantization of the float export (:func:`quantize_artifact`): the float
model is exported at the calibration shape; ``onnxruntime.quantization.quantize_static`` runs the
calibration patches through it, fixes activation ranges and writes QuantizeLinear / DequantizeLinear pairs
around every conv: int8 per-channel symmetric weights, uint8 activations (the combination onnxruntime's
x86 / ARM kernels run fastest). I/O stays float32. The convs that read a graph input (the image, a video
step's frames and state) get 7-bit weights (``reduce_range``, |q| <= 64): their uint8 inputs fill the whole
0..255 grid, and on an x86 CPU without a dot-product instruction (AVX2, AVX-512 without VNNI) onnxruntime's
u8 x s8 kernel adds two such products into a saturating int16 (``VPMADDUBSW``): 255 x 127 x 2 overflows it,
255 x 64 x 2 does not. Measured on an AVX2 host: ECBSR-M4C16 x4 with its input convs in int8 lost 1.36 dB of
Set5 PSNR to the float model with 8-bit weights, 0.055 dB with 7-bit ones (docs/NOTES.md). Activation
ranges come from the 99.999th percentile of each tensor's values over the calibration set, not its min / max:
a handful of extreme feature values otherwise stretch the uint8 grid for every pixel (docs/NOTES.md has the
comparison). Layers kept in float are passed as ``nodes_to_exclude``; ONNX node names are matched to torch module paths through the
exporter's name scopes. onnxruntime's quantization is post-training only: QAT runs through PT2E targets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.clip import deform_convs_as
from edge_sr.convert.spec import ExportSpec
from edge_sr.convert.target import (
    OPS_RUNS,
    GraphIO,
    OpTime,
    Size,
    Timed,
    Timer,
    fill_shape,
    io_entries,
    random_input,
    time_calls,
)
from torch import nn

from edge_sr.errors import ConfigError, ConversionError, RuntimeBackendError

NAME = "onnx"
SUFFIX = ".onnx"
FP16_BY_CAST = True  # the exported graph itself is float16, wrapped in float32 casts
QUANT_MODES: tuple[str, ...] = ("qdq",)
PT2E_MODES: tuple[str, ...] = ()
INT8_IO = False
FLOAT_IO_CLAMP = False
FOLD_QUANTIZE = True
SCHEME = (
    "onnxruntime-qdq: int8 per-channel symmetric weights (7-bit on the convs that read a graph input), "
    "uint8 per-tensor activations (static, percentile 99.999)"
)
CALIB_PERCENTILE = 99.999
MIN_OPSET = 18
logger = logging.getLogger(__name__)


DEFORM_OPSET = 19  # the first opset with DeformConv
DEFORM_MODES = ("native", "decomposed")


@dataclass(frozen=True)
class Options:
    """ONNX export options.

    Attributes:
        opset: the ONNX opset (18 or newer: the torch.export exporter's floor).
        deform_conv: how a modulated deformable convolution (``edge_sr.models.deform``) is exported:
            ``native``, one ``DeformConv`` node (opset 19 or newer: the export's opset is raised to 19 for a
            model that has one; onnxruntime 1.32 runs it on the CPU in float32 and float16), or
            ``decomposed``, the model's own ``GridSample`` + ``Conv`` form (any runtime).
    """

    opset: int = MIN_OPSET
    deform_conv: str = "native"

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ConfigError(
                None, f"opset {self.opset} is too old; the torch.export exporter needs {MIN_OPSET} or newer"
            )
        if self.deform_conv not in DEFORM_MODES:
            raise ConfigError(
                None, f"unknown deform_conv {self.deform_conv!r}; choose from {', '.join(DEFORM_MODES)}"
            )


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what ONNX export does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "onnx has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.sizes:
        raise ConversionError(None, "onnx has no enumerated shapes; use a dynamic range (--dynamic MIN:MAX)")


def export(
    model: nn.Module,
    io: GraphIO,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """Export ``model`` traced on ``io.examples`` to ``path``, its inputs and outputs named as ``io`` names
    them; returns the manifest's I/O entries."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    opset, table = options.opset, None
    native = _native_deform_conv if options.deform_conv == "native" else None
    with deform_convs_as(model, native) as n_deform:
        if n_deform:
            opset, table = max(opset, DEFORM_OPSET), {_deform_op(): _deform_conv_onnx}
        program = torch.onnx.export(
            model,
            io.examples,
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=io.dynamic_shapes,
            input_names=list(io.input_names),
            output_names=list(io.output_names),
            custom_translation_table=table,
            verbose=False,
            report=False,
            optimize=True,
        )
    if program is None:
        raise ConversionError(path, "the ONNX exporter returned no program")
    proto = program.model_proto
    for key, value in metadata.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, os.fspath(path))
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    if got_in != list(io.input_names) or got_out != list(io.output_names):
        raise ConversionError(path, f"the ONNX graph's I/O is {got_in} -> {got_out}, not the names given")
    in_dtypes = [_ONNX_DTYPES.get(i.type.tensor_type.elem_type, "float32") for i in proto.graph.input]
    out_dtypes = [_ONNX_DTYPES.get(o.type.tensor_type.elem_type, "float32") for o in proto.graph.output]
    with torch.no_grad():
        outs = model(*io.examples)
    outs = outs if isinstance(outs, tuple | list) else (outs,)
    ops = sorted({n.op_type for n in proto.graph.node})
    info: dict[str, Any] = {"opset": opset, "ops": ops}
    if n_deform or options.deform_conv != "native":
        info["deform_conv"] = options.deform_conv if n_deform else "decomposed"
    return {
        "inputs": io_entries(io.input_names, io.examples, spec, in_dtypes),
        "outputs": io_entries(io.output_names, outs, spec, out_dtypes),
        "target_info": info,
    }


# ---------------------------------------------------------------- the native DeformConv

_DEFORM_SCHEMA = (
    "(Tensor x, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
    "int[] dilation, int groups, int deform_groups) -> Tensor"
)


def _deform_op() -> Any:
    """``edge_sr::deform_conv2d``: :func:`edge_sr.models.deform.modulated_deform_conv2d` as one opaque
    torch op (registered once per process), so the exporter sees one node it can translate."""
    if not hasattr(torch.ops.edge_sr, "deform_conv2d"):
        from edge_sr.models.deform import modulated_deform_conv2d

        lib = torch.library.Library("edge_sr", "FRAGMENT")  # kept alive in _LIBS
        lib.define("deform_conv2d" + _DEFORM_SCHEMA)

        def impl(x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):  # type: ignore[no-untyped-def]
            return modulated_deform_conv2d(
                x, offset, mask, weight, bias, tuple(stride), tuple(padding), tuple(dilation),
                groups, deform_groups,
            )  # fmt: skip

        def fake(x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):  # type: ignore[no-untyped-def]
            return x.new_empty(x.shape[0], weight.shape[0], *offset.shape[-2:])

        lib.impl("deform_conv2d", impl, "CompositeExplicitAutograd")
        torch.library.register_fake("edge_sr::deform_conv2d", fake, lib=lib)
        _LIBS.append(lib)
    return torch.ops.edge_sr.deform_conv2d.default


_LIBS: list[Any] = []  # the registered library fragments live as long as the process


def _native_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):  # type: ignore[no-untyped-def]
    """The deformable convolution as one ``edge_sr::deform_conv2d`` node (translated to ``DeformConv``)."""
    return _deform_op()(
        x, offset, mask, weight, bias, list(stride), list(padding), list(dilation), groups, deform_groups
    )


def _deform_conv_onnx(x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups):  # type: ignore[no-untyped-def]
    """The ONNX translation of ``edge_sr::deform_conv2d``: one opset-19 ``DeformConv`` (inputs X, W,
    offset, B, mask; the offset layout, (dy, dx) interleaved per tap, is ONNX's and torchvision's)."""
    from onnxscript import opset19 as op

    return op.DeformConv(
        x, weight, offset, bias, mask,
        strides=list(stride), pads=[*padding, *padding], dilations=list(dilation),
        group=groups, offset_group=deform_groups,
    )  # fmt: skip


_ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8"}


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


class Runner:
    """onnxruntime CPU session over one ``.onnx`` file; ``forward`` takes arrays in the model's own layout."""

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, optimize: bool = True
    ) -> None:
        """``optimize=False``: onnxruntime's graph optimizations off (``ORT_DISABLE_ALL``); on, its default
        (``ORT_ENABLE_ALL``: constant folding, node fusions, layout transforms)."""
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for inputs by name."""
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


# ---------------------------------------------------------------- quantization


def quantizer(*, qat: bool = False, mode: str | None = None) -> Any:
    """The PT2E quantizer that simulates this target's scheme in torch (for sensitivity ranking only).

    onnxruntime's own INT8 is QDQ post-training quantization of the float file, not PT2E; XNNPACK's quantizer
    uses the same scheme (per-channel int8 weights, per-tensor affine 8-bit activations).
    """
    from edge_sr.convert import executorch

    return executorch.quantizer(qat=qat)


def quant_scheme(mode: str | None = None) -> str:
    """The manifest's description of the INT8 scheme."""
    return SCHEME


def quant_options(quantizer: Any, mode: str | None = None) -> Options:
    """Export options for a quantized export (none beyond the defaults)."""
    return Options()


def quantize_artifact(
    model: nn.Module,
    calib: Any,
    *,
    mode: str,
    keep_float: Sequence[str],
    out: str | os.PathLike[str],
    quantization: dict[str, Any],
    source: str | os.PathLike[str] | None,
    **_: Any,
) -> Any:
    """Float export at the calibration size, then static QDQ quantization; artifact + manifest, atomically.

    Args:
        model: the deploy-form float model.
        calib: the calibration set (``patches``: (N, C, H, W) tensor with the model's C, ``input_size``).
        mode: ``qdq``.
        keep_float: torch module paths left in float (``nodes_to_exclude``).
        out: artifact path or folder.
        quantization: the manifest's quantization entry (filled with onnxruntime's facts).
        source: the checkpoint (its sha256 goes into the manifest).
    """
    import shutil

    from edge_sr.convert import Artifact, ExportSpec
    from edge_sr.convert import export as export_artifact
    from edge_sr.convert.manifest import (
        embedded_metadata,
        manifest_path,
        sha256_path,
        size_bytes,
        write_manifest,
    )

    from edge_sr.io_utils import atomic_path
    from edge_sr.models import card_of, has_card

    if has_card(model) and calib.patches.shape[1] != card_of(model).colors:
        raise ConversionError(
            None,
            f"the calibration patches have {calib.patches.shape[1]} channels but the model takes "
            f"{card_of(model).colors}; calibrate a Y-channel model on Y (load_calibration(..., colors=1))",
        )
    out = Path(out)
    scratch = _float_export_dir(out if out.suffix else out / "model.onnx")
    try:
        spec = ExportSpec(input_size=calib.input_size, precision="fp32")
        float_art = export_artifact(model, NAME, scratch, spec, source=source)
        path = out if out.suffix else out / float_art.path.name.replace("_fp32", "_int8")
        manifest = {**float_art.manifest, "artifact": path.name, "precision": "int8"}
        manifest["quantization"] = quantization
        with atomic_path(manifest_path(path)) as tmp_m, atomic_path(path) as tmp:
            facts = quantize_file(
                float_art.path,
                tmp,
                calib.patches.numpy(),
                keep_float=keep_float,
                metadata=embedded_metadata(manifest),
            )
            quantization["onnxruntime"] = facts
            manifest.update(artifact_sha256=sha256_path(tmp), size_bytes=size_bytes(tmp))
            write_manifest(tmp_m, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Artifact(path, manifest_path(path), manifest)


def _reader(feeds: Callable[[], Iterator[dict[str, np.ndarray]]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        """Feeds one calibration sample at a time; ``rewind`` starts the feeds again."""

        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = feeds()

    return FeedReader()


def node_scopes(model_path: str | os.PathLike[str]) -> dict[str, str]:
    """ONNX node name -> the innermost torch module path it came from (exporter metadata), where recorded."""
    import ast

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


# ops a graph input passes through to reach the convs that read it with its full-range values
_INPUT_PATH_OPS = (
    "Concat",
    "Reshape",
    "Transpose",
    "SpaceToDepth",
    "DepthToSpace",
    "Identity",
    "Pad",
    "Slice",
)


def input_conv_weights(model_path: str | os.PathLike[str], exclude: Sequence[str] = ()) -> list[str]:
    """Weight initializers of the Conv nodes that read a graph input directly or through layout / concat ops
    (not ``exclude``d nodes): the convs whose uint8 input spans the full grid, given 7-bit weights."""
    import onnx

    graph = onnx.load(os.fspath(model_path), load_external_data=False).graph
    reach = {i.name for i in graph.input}
    for n in graph.node:  # topological order
        if n.op_type in _INPUT_PATH_OPS and any(i in reach for i in n.input):
            reach.update(n.output)
    inits = {i.name for i in graph.initializer}
    return [
        n.input[1]
        for n in graph.node
        if n.op_type == "Conv" and n.name not in exclude and n.input[0] in reach and n.input[1] in inits
    ]


def reduce_range_overrides(weights: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` giving ``weights`` 7-bit per-channel quantization."""
    return {w: [{"axis": 0, "reduce_range": True}] for w in weights}


def quantize_file(
    float_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calib: np.ndarray | Callable[[], Iterator[dict[str, np.ndarray]]],
    *,
    keep_float: Sequence[str] = (),
    input_name: str = "input",
    overrides: dict[str, list[dict[str, Any]]] | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Static QDQ quantization of ``float_path`` into ``out_path``; returns facts for the manifest.

    ``calib``: (N, C, H, W) patches fed to ``input_name`` one at a time, or a function returning a fresh
    iterator of feeds (a video step's inputs by name). ``overrides``: ``TensorQuantOverrides`` (a step's
    shared state parameters), beside the 7-bit weights of the input convs. ``metadata`` replaces the embedded
    ``metadata_props`` the float export carried (precision, scheme).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    excluded = exclude_nodes(float_path, keep_float)
    reduced = input_conv_weights(float_path, excluded)
    if isinstance(calib, np.ndarray):
        patches = np.ascontiguousarray(calib, dtype=np.float32)

        def feeds() -> Iterator[dict[str, np.ndarray]]:
            return ({input_name: patches[i : i + 1]} for i in range(len(patches)))

    else:
        feeds = calib

    quantize_static(
        os.fspath(float_path),
        os.fspath(out_path),
        _reader(feeds),
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
            "TensorQuantOverrides": {**(overrides or {}), **reduce_range_overrides(reduced)},
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
        "reduced_range_weights": reduced,
        "convs": len(convs),
        "quantized_convs": len(_conv_weight_inputs(graph)),
        "ops": sorted({n.op_type for n in graph.node}),
    }


def _conv_weight_inputs(graph: Any) -> set[str]:
    """Names of the tensors that feed a Conv weight through a DequantizeLinear (quantized weights)."""
    deq = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {deq[n.input[1]] for n in graph.node if n.op_type == "Conv" and n.input[1] in deq}


def _float_export_dir(out: Path) -> Path:
    """A scratch folder beside ``out`` for the float export that is quantized."""
    return out.parent / f".{out.stem}-float-export"  # no suffix: convert.export treats it as a folder


# ---------------------------------------------------------------- profiling

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def ort_profile_ops(profile_json: str | os.PathLike[str]) -> list[OpTime]:
    """Operators from an onnxruntime profile: the median ``*_kernel_time`` per node, in run order."""
    import json
    import statistics
    from collections import defaultdict

    events = json.loads(Path(profile_json).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        per_node[node].append(float(e["dur"]) / 1e3)  # us -> ms
        args = e.get("args", {})
        meta[node] = (args.get("op_name", "?"), args.get("provider", "CPUExecutionProvider"))
    return [
        OpTime(f"{meta[n][0]} {n}", statistics.median(v), meta[n][1] != "CPUExecutionProvider")
        for n, v in per_node.items()
    ]


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
    """Latency on a plain CPU session; operators from a second session with onnxruntime's profiler."""
    import tempfile

    import onnxruntime as ort

    def session(profile_prefix: str | None = None) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise RuntimeBackendError(path, f"onnxruntime cannot load it ({e})") from None

    sess = session()
    inp = sess.get_inputs()[0]
    dims = [d if isinstance(d, int) else None for d in inp.shape]
    shape = fill_shape(dims, size, layout)
    x = random_input(shape, _ORT_DTYPES.get(inp.type, np.float32))
    feed = {inp.name: x}
    times = timer(lambda: sess.run(None, feed), runs, warmup)
    ops: list[OpTime] = []
    note = None
    if want_ops:
        with tempfile.TemporaryDirectory() as d:
            prof = session(str(Path(d) / "ort"))
            for _ in range(OPS_RUNS):
                prof.run(None, feed)
            ops = ort_profile_ops(prof.end_profiling())
        note = f"operator times: onnxruntime profiler median over {OPS_RUNS} runs (CPU execution provider)"
    return Timed(times, shape, ops, note)
