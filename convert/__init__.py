"""Export SR models to phone and server formats: ``export(model, target, out, spec) -> Artifact``.

One module per target owns everything about its format (export, its typed options, metadata embedding, the
quantizer it wants, its runner, its per-operator profiler): the contract is :class:`.target.Target`.
:data:`TARGETS` is the only place that lists them; every other list of targets (CLI choices, bench,
profile, sensitivity, the demo, ``edge_sr.runtime.load``) derives from it. Adding a target is one module
and one line here.

    artifact = export(model, "onnx", "out/", ExportSpec(input_size=(180, 320), precision="fp16"))
    artifact.path, artifact.manifest_path, artifact.manifest
    export(model, "onnx", "out/", options=target_module("onnx").Options(opset=20))

A video model (``edge_sr.models.stream``: ``forward(*frames, *state) -> (sr, *state_outputs)``) exports its
**step**: every frame and state tensor is an input and every output an output, named as its ``StreamSpec``
names them, at one fixed LR frame size (``ExportSpec.input_size``; the state shapes follow from it) or, on
ONNX, ExecuTorch and PT2, for every frame size of a ``dynamic`` range (the HR state's sizes are the scale
times the frame's), FP32 or FP16, NCHW or NHWC (every 4-D tensor). CoreML and TFLite take the step at one
fixed size. The manifest's ``stream`` entry says what feeds what, the initial
values and each tensor's name, dtype, layout and shape in the artifact (``edge_sr.convert.manifest``);
``edge_sr.runtime.load(path).stream()`` carries the state from frame to frame.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from edge_sr.convert.clip import INPUT as CLIP_INPUT
from edge_sr.convert.clip import OUTPUT as CLIP_OUTPUT
from edge_sr.convert.clip import check_window, clip_contract, clip_entry
from edge_sr.convert.manifest import (
    build_manifest,
    embedded_metadata,
    manifest_path,
    read_manifest,
    sha256_path,
    size_bytes,
    stream_entry,
    write_manifest,
)
from edge_sr.convert.spec import PRECISIONS, Artifact, ExportSpec
from edge_sr.convert.target import GraphIO, Target
from torch import Tensor, nn

from edge_sr.errors import ConfigError, ConversionError, EdgeSRError
from edge_sr.io_utils import atomic_path

if TYPE_CHECKING:
    from edge_sr.models.stream import StreamSpec

__all__ = [
    "PRECISIONS",
    "TARGETS",
    "Artifact",
    "ExportSpec",
    "GraphIO",
    "Target",
    "export",
    "manifest_path",
    "prepare_model",
    "read_manifest",
    "step_spec",
    "target_for_path",
    "target_module",
]

logger = logging.getLogger(__name__)

# target name -> module owning the format (a :class:`.target.Target`)
TARGETS: dict[str, str] = {
    "coreml": "edge_sr.convert.coreml",
    "executorch": "edge_sr.convert.executorch",
    "onnx": "edge_sr.convert.onnx",
    "tflite": "edge_sr.convert.tflite",
    "pt2": "edge_sr.convert.pt2",
}


def target_module(target: str) -> Target:
    """The module of ``target``; ``ConfigError`` naming the choices for an unknown one."""
    if target not in TARGETS:
        raise ConfigError(None, f"unknown target {target!r}; choose from {', '.join(sorted(TARGETS))}")
    module: ModuleType = importlib.import_module(TARGETS[target])
    return module  # type: ignore[return-value]  # a module satisfying the Target protocol


def suffixes() -> dict[str, str]:
    """Artifact suffix -> target (``.onnx`` -> ``onnx``) for every registered target."""
    return {target_module(name).SUFFIX: name for name in TARGETS}


def target_for_path(path: str | os.PathLike[str]) -> str | None:
    """The target whose artifact suffix ``path`` has (``.onnx`` -> ``onnx``), else None."""
    return suffixes().get(Path(path).suffix.lower())


def quantizable_targets() -> list[str]:
    """The targets with at least one INT8 mode."""
    return [name for name in TARGETS if target_module(name).QUANT_MODES]


class _IOWrapper(nn.Module):
    """Adapts a model's I/O: NHWC layout and/or float32 I/O around an fp16 model.

    (N, H, W, C) -> permute -> (N, C, H, W) -> model -> (N, C, sH, sW) -> permute -> (N, sH, sW, C); a clip's
    5-D tensors likewise: (N, T, H, W, C) <-> (N, T, C, H, W).
    """

    def __init__(self, model: nn.Module, *, nhwc: bool, half: bool) -> None:
        super().__init__()
        self.model = model
        self.nhwc = nhwc
        self.fp16 = half

    def forward(self, x: Tensor) -> Tensor:
        y = self._call(x)
        assert isinstance(y, Tensor)
        return y

    def _call(self, *xs: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Every 4-D input from the artifact's layout (and float32) to the model's, every output back."""
        ins = []
        for x in xs:
            if self.nhwc and x.ndim == 4:
                x = x.permute(0, 3, 1, 2)
            elif self.nhwc and x.ndim == 5:  # a clip: (N, T, H, W, C) -> (N, T, C, H, W)
                x = x.permute(0, 1, 4, 2, 3)
            ins.append(x.half() if self.fp16 else x)
        ys = self.model(*ins)
        outs = tuple(self._out(y) for y in (ys if isinstance(ys, tuple | list) else (ys,)))
        return outs if isinstance(ys, tuple | list) else outs[0]

    def _out(self, y: Tensor) -> Tensor:
        if self.fp16:
            y = y.float()
        if self.nhwc and y.ndim == 5:
            return y.permute(0, 1, 3, 4, 2)
        return y.permute(0, 2, 3, 1) if self.nhwc and y.ndim == 4 else y


class _StepIOWrapper(_IOWrapper):
    """:class:`_IOWrapper` for a model with several inputs and outputs (a video step): each 4-D tensor adapted.

    Its inputs are one ``*xs`` argument, so torch.export takes their dynamic shapes as one tuple.
    """

    def forward(self, *xs: Tensor) -> Tensor | tuple[Tensor, ...]:  # type: ignore[override]
        return self._call(*xs)


def _to_nhwc(t: Tensor) -> Tensor:
    """An NCHW (NTCHW) example in the NHWC (NTHWC) layout; other ranks as they are."""
    if t.ndim == 4:
        return t.permute(0, 2, 3, 1).contiguous()
    return t.permute(0, 1, 3, 4, 2).contiguous() if t.ndim == 5 else t


def step_spec(model: nn.Module) -> StreamSpec | None:
    """The streaming step contract of ``model`` (``edge_sr.models.stream``), or None for an image model.

    A module that is no longer the model's class (a PT2E-converted ``GraphModule``, a mixed-precision
    wrapper) but carries the card of a video architecture has that architecture's contract (built on the
    meta device, no weights).
    """
    from edge_sr.models import card_of, create_model, get_entry, has_card
    from edge_sr.models.stream import stream_spec

    spec = stream_spec(model)
    if spec is not None or not has_card(model):
        return spec
    card = card_of(model)
    try:
        if get_entry(card.arch).kind != "video":
            return None
    except EdgeSRError:  # not a zoo architecture
        return None
    with torch.device("meta"):
        return stream_spec(create_model(card.arch, **card.args))


def graph_io(
    model: nn.Module, spec: ExportSpec, *, colors: int, scale: int
) -> tuple[GraphIO, StreamSpec | None]:
    """The example inputs (NCHW, reproducible, in [0, 1]), names and dynamic shapes of the graph to export,
    and the model's step contract: ``input`` -> ``output`` for an image model, every frame and state tensor
    for a step (its HR states' sizes follow the frame's: ``scale`` times its H / W dims), ``frames`` -> ``sr``
    for a whole-clip / window model (one (1, T, C, H, W) window, ``edge_sr.convert.clip``)."""
    h, w = spec.example_size
    gen = torch.Generator().manual_seed(0)
    contract = clip_contract(model)
    if contract is not None:  # a whole-clip / window model: one fixed window of T frames
        if spec.dynamic is not None or spec.sizes:
            raise ConversionError(
                None, f"{contract.name} exports a fixed window at one frame size; use --input-size HxW"
            )
        if spec.io == "image":
            raise ConversionError(
                None, f"{contract.name} takes a tensor window, no image I/O; use io='tensor'"
            )
        frames = spec.frames or contract.frames
        check_window(contract, frames, (h, w))
        example = torch.rand(1, frames, colors, h, w, generator=gen)
        return GraphIO((example,), (CLIP_INPUT,), (CLIP_OUTPUT,)), None
    if spec.frames is not None:
        raise ConversionError(None, "--frames is for whole-clip / window video models (BasicVSR, EDVR ...)")
    sspec: StreamSpec | None = step_spec(model)
    if sspec is None:
        example = torch.rand(1, colors, h, w, generator=gen)
        return GraphIO.single(example, spec.dynamic_shapes()), None
    if spec.sizes:
        raise ConversionError(
            None, "a video step has no enumerated sizes; use --input-size HxW or --dynamic MIN:MAX"
        )
    if spec.io == "image":
        raise ConversionError(
            None, "a video step has tensor I/O only (its state is no image); use io='tensor'"
        )
    shapes = [(1, colors, h, w)] * len(sspec.frames) + [s.shape(colors, (h, w), scale) for s in sspec.state]
    examples = tuple(torch.rand(*shape, generator=gen) for shape in shapes)
    dynamic = None
    frame_dims = spec.dynamic_shapes()
    if frame_dims is not None:
        lr = frame_dims[0]
        hr = {axis: dim * scale for axis, dim in lr.items()}
        dynamic = (lr,) * len(sspec.frames) + tuple(hr if s.resolution == "hr" else lr for s in sspec.state)
    names = (tuple(sspec.input_names), tuple(sspec.output_names))
    return GraphIO(examples, *names, dynamic), sspec


def prepare_model(
    model: nn.Module, spec: ExportSpec, example: Tensor | tuple[Tensor, ...]
) -> tuple[nn.Module, dict[str, Any]]:
    """Deploy form + pixel-shuffle lowering of an eager model; a PT2E ``GraphModule`` passes through.

    Returns:
        (the model to export, facts for the manifest: ``form``, ``reparameterized``, shuffles replaced).
    """
    from edge_sr.convert.pixelshuffle import lower_pixel_shuffle

    from edge_sr.models import card_of, has_card
    from edge_sr.reparam import has_fusable, reparameterize

    if isinstance(model, torch.fx.GraphModule):
        # an already-converted (e.g. PT2E-quantized) graph: exported as it is
        return model, {"form": "deploy", "reparameterized": False, "pixel_shuffles": 0}
    facts: dict[str, Any] = {
        "form": card_of(model).form if has_card(model) else "deploy",
        "reparameterized": False,
    }
    if has_fusable(model):
        model = reparameterize(model)
        facts.update(form="deploy", reparameterized=True)
        logger.info("train-form model fused into its deploy form before export")
    model = model.eval()
    model, n = lower_pixel_shuffle(model, spec.pixel_shuffle, example)
    facts["pixel_shuffles"] = n
    return model, facts


def _resolve_out(
    out: str | os.PathLike[str], suffix: str, arch: str | None, scale: int, precision: str
) -> Path:
    p = Path(out)
    # a folder takes a named artifact, except a folder that is itself an artifact of this target (an existing
    # .mlpackage given again as -o is replaced, not written into)
    if not p.suffix or (p.is_dir() and p.suffix.lower() != suffix):
        return p / f"{arch or 'model'}_x{scale}_{precision}{suffix}"
    if p.suffix.lower() != suffix:
        raise ConfigError(p, f"the artifact of this target must end in {suffix}")
    return p


_OP_PATTERNS = (
    r"(aten[.:]{1,2}[A-Za-z_][\w.]*)",
    r"op(?:erator)? ['\"]([\w.:]+)['\"]",
    r"[Uu]nsupported (?:op|operator)[s]?:? ['\"]?([\w.:]+)",
)


def _conversion_error(path: Path, target: str, e: BaseException) -> ConversionError:
    """One line naming the target and, when the message names it, the offending op."""
    msg = str(e) or type(e).__name__
    for pat in _OP_PATTERNS:
        m = re.search(pat, msg)
        if m:
            return ConversionError(path, f"{target} cannot convert op '{m.group(1)}' ({type(e).__name__})")
    first = msg.strip().splitlines()[0][:200] if msg.strip() else type(e).__name__
    return ConversionError(path, f"{target} conversion failed: {first}")


def export(
    model: nn.Module,
    target: str,
    out: str | os.PathLike[str],
    spec: ExportSpec | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    quantization: dict[str, Any] | None = None,
    options: Any = None,
) -> Artifact:
    """Export ``model`` to ``target`` and write ``<artifact>.json`` beside it, both atomically.

    Args:
        model: an SR model (train form is fused first) or a PT2E-converted ``GraphModule``, carrying its
            card; a 1-colour (Y-channel) card gives a 1-channel artifact whose manifest's ``color`` says how
            an RGB image is fed (``edge_sr.convert.manifest.color_entry``).
        target: a name in :data:`TARGETS`.
        out: the artifact path, or a folder to name it in (``<arch>_x<s>_<precision><suffix>``).
        spec: shapes, precision, layout, I/O kind, pixel-shuffle lowering (default: fixed 64x64 FP32).
        source: the checkpoint the model came from (its sha256 goes into the manifest).
        quantization: the quantization scheme for the manifest (``{"scheme", "inputs", "outputs", ...}``),
            given by ``edge_sr.quantize`` together with ``precision="int8"``.
        options: the target's own ``Options`` (``target_module(target).Options(...)``; its defaults when
            None), e.g. the ONNX opset, the CoreML deployment target, the ExecuTorch delegate.

    Returns:
        ``Artifact(path, manifest_path, manifest)``.

    Raises:
        ConfigError: unknown target, bad output path, or a model without a model card. ConversionError: the target cannot take the spec or
        an op (named in the message). Nothing is left on disk after a failure.
    """
    spec = spec or ExportSpec()
    mod = target_module(target)
    mod.check_spec(spec)
    if options is None:
        options = mod.Options()
    elif not isinstance(options, mod.Options):
        raise ConfigError(
            None, f"{target} export takes {TARGETS[target]}.Options, not {type(options).__name__}"
        )
    if spec.precision == "int8" and quantization is None:
        raise ConversionError(None, f"int8 {target} artifacts need calibration: use `edge-sr quantize`")
    from edge_sr.models import card_of

    card = card_of(model)  # ConfigError for a module without a model card
    # a model with a target-specific form (SwinFIR's FFT as DFT matrix products) exports that form
    adapt = getattr(model, "for_target", None)
    if callable(adapt):
        model = adapt(target)
        card = card_of(model)
    arch, args, scale = card.arch, dict(card.args), card.scale
    path = _resolve_out(out, mod.SUFFIX, arch, scale, spec.precision)
    io, sspec = graph_io(model, spec, colors=card.colors, scale=scale)
    prepared, facts = prepare_model(model, spec, io.examples)
    half = spec.precision == "fp16" and mod.FP16_BY_CAST  # float16 graph inside float32 I/O
    net: nn.Module = prepared
    if spec.layout == "NHWC" or half:
        wrapper = _IOWrapper if sspec is None else _StepIOWrapper
        net = wrapper(prepared.half() if half else prepared, nhwc=spec.layout == "NHWC", half=half)
        examples = io.examples
        if spec.layout == "NHWC":  # every 4-D (5-D: a clip) tensor in the artifact's layout
            examples = tuple(_to_nhwc(t) for t in examples)
        dynamic = io.dynamic_shapes
        if sspec is not None and dynamic is not None:  # the step wrapper's inputs are one *xs argument
            dynamic = (dynamic,)
        io = GraphIO(examples, io.input_names, io.output_names, dynamic)
    src = source or card.source
    source_info = (
        {"checkpoint": str(src), "sha256": sha256_path(src)} if src and Path(src).is_file() else None
    )
    manifest = build_manifest(
        target=target,
        artifact=path.name,
        arch=arch,
        args=args,
        scale=scale,
        form=facts["form"],
        reparameterized=facts["reparameterized"],
        precision=spec.precision,
        input_shape=spec.input_shape(),
        layout=spec.layout,
        io=spec.io,
        pixel_shuffle=spec.pixel_shuffle,
        inputs=[],
        outputs=[],
        quantization=quantization,
        source=source_info,
        colors=card.colors,
    )
    if sspec is not None:
        manifest["stream"] = sspec.manifest_entry(card.colors, spec.example_size, scale)
    contract = clip_contract(model)
    if contract is not None:
        manifest["clip"] = clip_entry(contract, io.example.shape[1], spec.layout)
    mpath = manifest_path(path)
    with atomic_path(mpath) as tmp_manifest, atomic_path(path) as tmp:
        try:
            info = mod.export(net.eval(), io, spec, tmp, embedded_metadata(manifest), options)
        except EdgeSRError:
            raise
        except Exception as e:  # converters raise anything; report one line naming the op
            raise _conversion_error(path, target, e) from e
        manifest.update(info)
        if sspec is not None:
            manifest["stream"] = stream_entry(manifest["stream"], manifest, spec.example_size)
        manifest["artifact_sha256"] = sha256_path(tmp)
        manifest["size_bytes"] = size_bytes(tmp)
        write_manifest(tmp_manifest, manifest)
    logger.info("wrote %s (%d bytes) and its manifest", path, manifest["size_bytes"])
    return Artifact(path, mpath, manifest)
