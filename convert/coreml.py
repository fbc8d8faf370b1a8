"""CoreML target: an ML Program ``.mlpackage`` (iOS 16+ by default) from ``torch.export`` through coremltools.

Tensor I/O (float32 arrays; FP16 compute precision keeps float32 I/O) or image I/O (``ct.ImageType`` in
and out: RGB pixels 0-255, what an app feeds from a pixel buffer, or gray pixels for a 1-colour (Y) model;
the graph divides by 255 on the way in and multiplies by 255 on the way out). Shapes fixed, enumerated (``ct.EnumeratedShapes``) or ranged
(``ct.RangeDim``). With flexible shapes the rank-6 ``reshape`` pixel-shuffle lowering is exported in its
``rank4`` form, and the manifest says so: Core ML has no rank-6 tensors, and coremltools rewrites them into
lower ranks only when every size is known. The manifest fields also go into ``user_defined_metadata``.
Prediction needs macOS; elsewhere the runner executes the saved MIL program with the reference executor
of :mod:`.coreml_mil`. A graph with several inputs / outputs (a video step) has one feature per tensor,
named as the graph names them, all tensors (fixed shapes).

INT8, what works off macOS (coremltools 9, ExecuTorch 1.5):

- **W8A8** (mode ``w8a8``): ExecuTorch's ``CoreMLQuantizer`` (coremltools' ``LinearQuantizerConfig``:
  per-channel int8 weights, uint8 activations) annotates the graph; calibration and ``convert_pt2e`` run in
  torch, and ``ct.convert`` turns the quantize / dequantize pairs into ``quantize`` / ``dequantize`` ops and
  int8 weight constants (iOS17). Activation calibration happens in torch, so it needs no CoreML predictions
  (``coremltools.optimize.coreml.linear_quantize_activations`` does, and is macOS only).
- **Weight-only** (mode ``weights`` int8 linear, ``palettize`` k-means LUT of ``nbits``): applied with
  ``coremltools.optimize.coreml`` to the converted float program. Its default ``weight_threshold`` of 2048
  elements leaves small SR convs (the 3x3x3x16 head has 432 weights) in float silently; edge-sr sets it to 0
  so every conv is compressed, and :func:`compressed_convs` reads back which ones were.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.pixelshuffle import without_rank6
from edge_sr.convert.spec import ExportSpec
from edge_sr.convert.target import (
    GraphIO,
    Size,
    Timed,
    Timer,
    fill_shape,
    io_entries,
    random_input,
    time_calls,
)
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

DEBUG_MAP = "executorch_debug_handle_mapping.json"
NAME = "coreml"
SUFFIX = ".mlpackage"
FP16_BY_CAST = False  # compute_precision=FLOAT16 with float32 I/O
QUANT_MODES: tuple[str, ...] = ("w8a8", "weights", "palettize")
PT2E_MODES: tuple[str, ...] = ("w8a8",)
INT8_IO = False
FLOAT_IO_CLAMP = False
FOLD_QUANTIZE = True
SCHEMES = {
    "w8a8": "coreml-pt2e: int8 per-channel affine weights, uint8 per-tensor affine activations (static)",
    "weights": "coremltools.optimize: int8 per-channel symmetric weights, float activations",
    "palettize": "coremltools.optimize: k-means palettized weights (per tensor LUT), float activations",
}
QUANT_DEPLOYMENT_TARGET = "iOS17"  # quantize / dequantize ops need iOS17
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """CoreML export options.

    Attributes:
        deployment_target: minimum deployment target (``iOS16``, ``iOS17``, ``macOS13`` ...).
        transform: a function applied to the converted ``MLModel`` before saving (weight compression, see
            :func:`weight_transform`).
    """

    deployment_target: str = "iOS16"
    transform: Callable[[Any], Any] | None = None


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what the CoreML export does not offer."""
    if spec.io == "image" and spec.layout != "NCHW":
        raise ConversionError(None, "coreml image I/O takes pixel buffers; use layout NCHW with io='image'")


class _ImageOut(nn.Module):
    """[0, 1] model output -> 0-255 pixel values for an image output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) * 255.0).clamp(0.0, 255.0)


def _input_shape(spec: ExportSpec, example: Tensor) -> Any:
    import coremltools as ct

    n, a, b, c = example.shape
    if spec.dynamic is not None:
        lo, hi = spec.dynamic
        h, w = spec.example_size
        hdim, wdim = ct.RangeDim(lo, hi, default=h), ct.RangeDim(lo, hi, default=w)
        return ct.Shape((n, hdim, wdim, c) if spec.layout == "NHWC" else (n, a, hdim, wdim))
    if spec.sizes:
        shapes = [(n, h, w, c) if spec.layout == "NHWC" else (n, a, h, w) for h, w in spec.sizes]
        return ct.EnumeratedShapes(shapes=shapes, default=shapes[0])
    return tuple(example.shape)


def _dynamic(spec: ExportSpec) -> tuple[dict[int, Any], ...] | None:
    """Dynamic H / W for ranged shapes, and for enumerated ones (their bounding range), else None."""
    if spec.sizes and len(set(spec.sizes)) > 1:
        hs, ws = [h for h, _ in spec.sizes], [w for _, w in spec.sizes]
        dims: dict[int, Any] = {}
        axes = (1, 2) if spec.layout == "NHWC" else (2, 3)
        # each varying axis gets a Dim covering the enumerated values
        if len(set(hs)) > 1:
            dims[axes[0]] = torch.export.Dim("height", min=min(hs), max=max(hs))
        if len(set(ws)) > 1:
            dims[axes[1]] = torch.export.Dim("width", min=min(ws), max=max(ws))
        return (dims,)
    return spec.dynamic_shapes()


def export(
    model: nn.Module,
    io: GraphIO,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """Convert ``model`` to an ``.mlpackage`` at ``path``; returns the manifest's I/O entries."""
    import coremltools as ct

    example = io.example
    if len(io.examples) > 1 and (spec.dynamic is not None or spec.sizes):
        raise ConversionError(None, "coreml takes a video step at one fixed frame size; use --input-size HxW")

    if not hasattr(ct.target, options.deployment_target):
        raise ConversionError(
            None, f"unknown CoreML deployment target {options.deployment_target!r} (e.g. iOS16, iOS17)"
        )
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    image = spec.io == "image"
    dynamic = _dynamic(spec)
    info: dict[str, Any] = {}
    if dynamic is not None:
        # symbolic H / W: coremltools cannot bring a rank-6 reshape down to Core ML's rank 5
        model, n = without_rank6(model)
        if n:
            logger.info("coreml: %d rank-6 pixel shuffle(s) lowered as rank4 for flexible shapes", n)
            info["pixel_shuffle"] = "rank4"
            metadata = {**metadata, "edge_sr.pixel_shuffle": "rank4"}
    net = _ImageOut(model).eval() if image else model
    # (the deformable convolution is written with no tensor above rank 5, Core ML's limit: models.deform)
    ep = torch.export.export(net, io.examples, dynamic_shapes=dynamic).run_decompositions({})
    if len(io.examples) > 1 or len(io.output_names) > 1 or example.ndim != 4:
        # a video step or a clip window: fixed tensors, named
        inputs = [
            ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.float32)
            for n, t in zip(io.input_names, io.examples, strict=True)
        ]
        outputs = [ct.TensorType(name=n, dtype=np.float32) for n in io.output_names]
    elif image:  # a 1-colour (Y) model takes and gives a one-channel pixel buffer
        layout = ct.colorlayout.GRAYSCALE if example.shape[1] == 1 else ct.colorlayout.RGB
        shape = _input_shape(spec, example)
        inputs = [ct.ImageType(name="input", shape=shape, scale=1.0 / 255.0, color_layout=layout)]
        outputs = [ct.ImageType(name="output", color_layout=layout)]
    else:
        inputs = [ct.TensorType(name="input", shape=_input_shape(spec, example), dtype=np.float32)]
        outputs = [ct.TensorType(name="output", dtype=np.float32)]
    precision = ct.precision.FLOAT16 if spec.precision == "fp16" else ct.precision.FLOAT32
    _register_alias()
    mlmodel = ct.convert(
        ep,
        inputs=inputs,
        outputs=outputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, options.deployment_target),
        compute_precision=precision,
        skip_model_load=True,
    )
    if options.transform is not None:  # e.g. coremltools.optimize weight quantization
        mlmodel = options.transform(mlmodel)
    mlmodel.short_description = f"edge-sr {metadata.get('edge_sr.arch')} x{metadata.get('edge_sr.scale')}"
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.save(os.fspath(path))
    # coremltools adds ExecuTorch's op-to-debug-handle map for programs from torch.export (30 KB on a small
    # SR net, larger than its weights); the package manifest does not list it and CoreML never reads it
    (Path(path) / DEBUG_MAP).unlink(missing_ok=True)
    ops = sorted(
        {op.op_type for f in mlmodel._mil_program.functions.values() for op in f.operations} - {"const"}
    )
    with torch.no_grad():
        outs = net(*io.examples)
    outs = outs if isinstance(outs, tuple | list) else (outs,)
    entries = {
        "inputs": io_entries(io.input_names, io.examples, spec, ["float32"] * len(io.examples)),
        "outputs": io_entries(io.output_names, outs, spec, ["float32"] * len(outs)),
    }
    if image:
        for e in (*entries["inputs"], *entries["outputs"]):
            e.update(dtype="image", value_range=[0.0, 255.0])
    return {
        **info,
        **entries,
        "target_info": {"deployment_target": options.deployment_target, "ops": ops},
    }


def _register_alias() -> None:
    """Teach coremltools' torch frontend ``aten.alias`` as the no-op it is (once per process).

    ``torch.export`` leaves an ``alias`` where a slice keeps a whole tensor (IconVSR's crop of its padding when
    there is none); coremltools 9 knows ``alias_copy`` and ``clone`` as no-ops but not ``alias``.
    """
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    if getattr(_register_alias, "done", False):
        return

    def alias(context: Any, node: Any) -> None:
        ops.noop(context, node)

    try:
        register_torch_op(alias)
    except ValueError:  # a newer coremltools knows it already
        pass
    _register_alias.done = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------- quantization


def quantizer(*, qat: bool = False, mode: str | None = None) -> Any:
    """ExecuTorch's ``CoreMLQuantizer`` for W8A8 (per-channel int8 weights, uint8 activations), affine.

    Affine, not symmetric: with ``symmetric`` the uint8 activations get a fixed zero point of 128, so the
    mostly non-negative SR feature maps use half the range (docs/NOTES.md has the measured cost).
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
    _cache_pattern_graphs()
    return _present_patterns_only(CoreMLQuantizer)(cfg)


# An annotator of ``CoreMLQuantizer`` (its registry name) matches only subgraphs holding every one of these
# aten ops (a node's target name contains the word): the batch-norm patterns need a batch norm, and so on.
_ANCHORS: dict[str, tuple[str, ...]] = {
    "conv": ("conv",),
    "linear": ("linear",),
    "matmul": ("matmul",),
    "bn": ("batch_norm",),
    "add": ("add",),
    "mul": ("mul",),
}


def annotators_for(op_names: set[str], names: list[str]) -> list[str]:
    """Which of ``CoreMLQuantizer``'s annotators (registry names) can match a graph of these aten ops.

    A pattern is a small graph of aten ops; the matcher finds it only where the model's graph holds each of
    them, so an annotator whose anchor op is absent annotates nothing and is skipped. An annotator with no
    known anchor (the pools, flatten) always runs.
    """
    keep = []
    for name in names:
        words = [w for w in name.split("_") if w in _ANCHORS]
        if all(any(a in op for op in op_names for a in _ANCHORS[w]) for w in words):
            keep.append(name)
    return keep


def _activation_ops() -> dict[Any, list[set[str]]]:
    """Each activation function CoreMLQuantizer's patterns use -> the aten ops it exports to (plain, in-place).

    Built once per process by exporting the function alone (about 0.5 s); the pattern graphs hold the same ops.
    """
    import torch
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils

    if hasattr(_activation_ops, "table"):
        return _activation_ops.table  # type: ignore[attr-defined, no-any-return]

    class Act(torch.nn.Module):
        def __init__(self, fn: Any, inplace: bool) -> None:
            super().__init__()
            self.fn, self.inplace = fn, inplace

        def forward(self, x: Any) -> Any:
            y = x.clone()
            return self.fn(y, inplace=True) if self.inplace else self.fn(y)

    table: dict[Any, list[set[str]]] = {}
    for fn in (*utils._supported_activations, *utils._supported_activations_no_inplace):
        variants = (False, True) if fn in utils._supported_activations else (False,)
        table[fn] = []
        for inplace in variants:
            try:
                g = torch.export.export(Act(fn, inplace), (torch.rand(1, 4),)).graph
            except Exception:  # an activation this torch cannot export alone: its patterns always run
                table[fn].append(set())
                continue
            table[fn].append(
                {str(n.target) for n in g.nodes if n.op == "call_function"} - {"aten.clone.default"}
            )
    _activation_ops.table = table  # type: ignore[attr-defined]
    return table


def _present_patterns_only(base: Any) -> Any:
    """``CoreMLQuantizer`` that builds and matches only the patterns whose ops are all in the graph.

    Each annotator exports its patterns (conv 1d/2d/3d x batch norm x 15 activations x in-place ..., most of a
    minute of CPU on the first call of a process) although a pattern can match only where the model's graph
    holds each of its ops. Skipped: the annotators whose anchor op is absent (:func:`annotators_for`) and, in
    the others, the activations the graph does not use. The annotations are the same.
    """
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils
    from executorch.backends.apple.coreml.quantizer._coreml_quantizer import (
        _AnnotationConfig,
        _AnnotationPatternRegistry,
    )

    class Quantizer(base):  # type: ignore[misc, valid-type]
        def _annotate_all_patterns(self, model: Any, quantization_config: Any, filter_fn: Any = None) -> None:
            ops = {str(n.target) for n in model.graph.nodes if n.op == "call_function"}
            used = {fn for fn, variants in _activation_ops().items() if any(v <= ops for v in variants)}
            annotators = _AnnotationPatternRegistry.get_annotators()
            saved = utils._supported_activations, utils._supported_activations_no_inplace
            utils._supported_activations = tuple(f for f in saved[0] if f in used)
            utils._supported_activations_no_inplace = tuple(f for f in saved[1] if f in used)
            try:
                for name in annotators_for(ops, list(annotators)):
                    config = _AnnotationConfig.from_quantization_config(quantization_config)
                    annotators[name](model, config, filter_fn)
            finally:
                utils._supported_activations, utils._supported_activations_no_inplace = saved

    Quantizer.__name__ = Quantizer.__qualname__ = base.__name__
    return Quantizer


def _cache_pattern_graphs() -> None:
    """Build each of ``CoreMLQuantizer``'s pattern graphs once per process.

    Its ``annotate`` exports every pattern it knows (conv / linear x batch norm x activation x in-place, the
    binary ops: about 420 small ``torch.export`` calls, over a minute of CPU) on every call, although a
    pattern depends only on its functions and example shapes: each is exported once and every call gets a
    copy (the matcher rewrites the graph it is given).
    """
    import copy
    import functools

    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils

    build = utils._get_aten_graph_module
    if getattr(build, "_edge_sr_cached", False):
        return
    graphs: dict[Any, Any] = {}

    @functools.wraps(build)
    def cached(pattern: Any, example_inputs: Any, is_cuda: bool = False) -> Any:
        fwd = type(pattern).forward
        try:
            key = (
                fwd.__code__,
                tuple(c.cell_contents for c in fwd.__closure__ or ()),
                tuple((tuple(t.shape), t.dtype) for t in example_inputs),
                is_cuda,
            )
            hash(key)
        except (TypeError, ValueError, AttributeError):  # an unhashable closure: build it every time
            return build(pattern, example_inputs, is_cuda)
        if key not in graphs:
            graphs[key] = build(pattern, example_inputs, is_cuda)
        return copy.deepcopy(graphs[key])

    cached._edge_sr_cached = True  # type: ignore[attr-defined]
    utils._get_aten_graph_module = cached


def weight_transform(
    mode: str = "weights", *, nbits: int = 8, keep_float: tuple[str, ...] = ()
) -> Callable[[Any], Any]:
    """An ``Options.transform`` compressing every conv (``weights``: int8, ``palettize``: an nbits LUT).

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


def compressed_convs(path: str | os.PathLike[str]) -> dict[str, str]:
    """Every ``conv`` op of the saved model -> how its weight is stored.

    ``"int8"`` / ``"lut"`` (``constexpr_affine_dequantize`` / ``constexpr_blockwise_shift_scale`` /
    ``constexpr_lut_to_dense``), ``"quantized"`` (a ``dequantize`` op: W8A8), or ``"float"``.
    """
    from edge_sr.convert.coreml_mil import load_program

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


def quant_scheme(mode: str | None = None) -> str:
    """The manifest's description of the INT8 scheme of ``mode`` (default ``w8a8``)."""
    return SCHEMES[mode or "w8a8"]


def quant_options(quantizer: Any, mode: str | None = None) -> Options:
    """Export options for a PT2E-quantized graph: the quantize / dequantize ops need iOS17."""
    return Options(deployment_target=QUANT_DEPLOYMENT_TARGET)


def quantize_artifact(
    model: nn.Module,
    calib: Any,
    *,
    mode: str,
    keep_float: Sequence[str],
    out: str | os.PathLike[str],
    quantization: dict[str, Any],
    source: str | os.PathLike[str] | None,
    nbits: int = 6,
) -> Any:
    """Weight-only int8 (``weights``) or palettized (``palettize``, ``nbits``) ``.mlpackage`` + manifest.

    ``calib`` gives the export size (weight compression needs no calibration data).
    """
    from edge_sr.convert import Artifact, ExportSpec
    from edge_sr.convert import export as export_artifact
    from edge_sr.convert.manifest import write_manifest

    spec = ExportSpec(input_size=calib.input_size, precision="int8")
    transform = weight_transform(mode, nbits=nbits, keep_float=tuple(keep_float))
    art = export_artifact(
        model,
        NAME,
        out,
        spec,
        source=source,
        quantization=quantization,
        options=Options(deployment_target=QUANT_DEPLOYMENT_TARGET, transform=transform),
    )
    convs = compressed_convs(art.path)
    quantization.update(weight_threshold=0, convs=convs, bits=nbits if mode == "palettize" else 8)
    manifest = {**art.manifest, "quantization": quantization}
    write_manifest(art.manifest_path, manifest)
    return Artifact(art.path, art.manifest_path, manifest)


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``user_defined_metadata`` of a saved ``.mlpackage`` (read from its spec; no prediction needed)."""
    import coremltools as ct

    spec = ct.utils.load_spec(os.fspath(path))
    return dict(spec.description.metadata.userDefined)


def can_predict() -> bool:
    """CoreML prediction runs on macOS only."""
    return platform.system() == "Darwin"


class Runner:
    """CoreML prediction on macOS, the MIL reference executor elsewhere.

    ``forward`` takes (1, C, h, w) float32 in the model's layout; for image I/O the values are 0-255 pixels.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RuntimeBackendError(path, "not an .mlpackage folder")
        if can_predict():
            import coremltools as ct

            self.model: Any = ct.models.MLModel(os.fspath(path))
            desc = self.model.get_spec().description
            self.input_names = [d.name for d in desc.input]
            self.output_names = [d.name for d in desc.output]
            self._image = desc.input[0].type.WhichOneof("Type") == "imageType"
            self.mil = None
        else:
            from edge_sr.convert.coreml_mil import MILRunner

            self.mil = MILRunner(path)
            self.input_names = list(self.mil.input_names)
            self.output_names = list(self.mil.output_names)

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = self.input_names[0]
        if self.mil is not None:
            out = self.mil.run({name: x})[self.output_names[0]]
            return np.asarray(out)
        feed: Any = x
        if self._image:
            from PIL import Image

            pixels = np.clip(np.round(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            feed = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)  # gray: mode L
        out = self.model.predict({name: feed})[self.output_names[0]]
        if not isinstance(out, np.ndarray):  # an image output: (H, W, 3) RGB or (H, W) gray
            arr = np.asarray(out, dtype=np.float32)
            out = (arr[..., None] if arr.ndim == 2 else arr).transpose(2, 0, 1)[None]
        return np.asarray(out)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for tensor inputs by name."""
        outs = self.mil.run(feeds) if self.mil is not None else self.model.predict(feeds)
        return {n: np.asarray(outs[n]) for n in self.output_names}


# ---------------------------------------------------------------- profiling (macOS only)


def check_profilable(path: Path) -> None:
    """Refuse to time a program off macOS: the runner there is the MIL reference executor, whose speed says
    nothing about Core ML's (``RuntimeBackendError``)."""
    if not can_predict():
        raise RuntimeBackendError(
            path,
            "CoreML latency needs macOS (coremltools cannot run a model on this OS); profile it on a Mac, "
            "or profile the ExecuTorch / TFLite / ONNX artifact here",
        )


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
    """Latency of ``MLModel.predict`` on macOS; CoreML gives no per-operator times through coremltools."""
    check_profilable(path)
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    inp = model.get_spec().description.input[0]
    dims: list[int | None] = [int(d) for d in inp.type.multiArrayType.shape] or [1, 3, *(size or (180, 320))]
    shape = fill_shape(dims, size, layout)
    feed = {inp.name: random_input(shape, np.float32)}
    times = timer(lambda: model.predict(feed), runs, warmup)
    note = "CoreML gives no per-operator times through coremltools" if want_ops else None
    return Timed(times, shape, [], note)
