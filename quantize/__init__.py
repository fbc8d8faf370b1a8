"""INT8 and FP16 artifacts that still do SR: calibration, PTQ, QAT, FP16 range checks, sensitivity.

    calib = load_calibration("photos/", count=32, input_size=(64, 64), scale=4)
    art = ptq(model, "executorch", calib, QuantSpec(), out="out/")       # -> edge_sr.convert.Artifact
    art = qat(model, "tflite", ["train/T91"], calib=calib, iters=4000, lr=2e-4, out="out/")
    report = fp16_check(model, calib)                                    # overflow / underflow per layer
    ranks = sensitivity(model, "executorch", calib)                      # per-layer SQNR, most sensitive first

Every INT8 path is one PT2E flow (:mod:`edge_sr.quantize.pt2e`) with the quantizer its target owns
(:mod:`.xnnpack`, :mod:`.litert`, :mod:`.coreml`), lowered by ``edge_sr.convert.export``; ONNX uses onnxruntime's
static QDQ quantization of the float export (:mod:`.onnx`), and CoreML also offers weight-only int8 /
palettization. The manifest records the scheme, the calibration set (folder, count, seed, input size), the
layers kept in float, QAT settings, and int8 I/O scale / zero point.

Re-parameterization and QAT: quantization acts on the deploy (fused) graph, because that is what runs on the
device. QAT therefore fuses first, then inserts fake-quant into the plain convs and fine-tunes their fused
weights. Running QAT on the multi-branch train form and fusing afterwards does not compose: each branch
would carry its own fake-quant (its own scales), and a sum of separately quantized convs is not a quantized
fused conv, so the trained quantization parameters cannot be carried into the deploy graph.
``qat(..., form="train")`` measures that route anyway by converting the multi-branch graph as it is (an int8
network with one conv per branch, several times slower); docs/BENCHMARKS.md compares the two.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from edge_sr.quantize.calib import CalibrationSet, from_tensors, load_calibration
from edge_sr.quantize.fp16 import MIXED_PRECISION_TARGETS, FP16Report, fp16_ranges, fp32_spans, keep_fp32
from edge_sr.quantize.pt2e import (
    ClampInput,
    calibrate,
    check_layers,
    convert,
    fine_tune,
    prepare,
    quantize_model,
)
from edge_sr.quantize.sensitivity import SensitivityReport, most_sensitive, target_quantizer
from edge_sr.quantize.sensitivity import sensitivity as _sensitivity
from torch import nn

from edge_sr.errors import ConfigError

__all__ = [
    "TARGETS",
    "CalibrationSet",
    "FP16Report",
    "QuantSpec",
    "SensitivityReport",
    "deploy_form",
    "fp16_check",
    "fp16_export",
    "from_tensors",
    "load_calibration",
    "most_sensitive",
    "ptq",
    "qat",
    "sensitivity",
]

logger = logging.getLogger(__name__)
TARGETS = ("coreml", "executorch", "onnx", "tflite")
CoreMLMode = Literal["w8a8", "weights", "palettize"]


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize.

    Attributes:
        int8_io: TFLite only: int8 input (scale / zero point in the manifest) instead of float32 I/O.
        keep_float: layers (torch module paths, e.g. ``body.0.0``) left in float.
        float_input_layers: also leave in float the convs that read the image (:func:`.pt2e.input_layers`:
            the head conv, a conv-made residual). On by default for the activation-quantizing modes (PT2E
            and ONNX static): x2 PTQ on ExecuTorch loses 0.119 / 0.061 dB instead of 0.137 / 0.070 and runs
            faster (XNNPACK's 3-channel int8 path is slower than float; docs/BENCHMARKS.md). ``False``
            quantizes every conv, as do ``int8_io`` and ``qat(form="train")``.
        coreml_mode: ``w8a8`` (PT2E), ``weights`` (int8 weight-only) or ``palettize`` (k-means LUT).
        palettize_bits: LUT size for ``palettize`` (2^bits entries per tensor).
        batch_size: calibration batch size.
    """

    int8_io: bool = False
    keep_float: tuple[str, ...] = ()
    float_input_layers: bool = True
    coreml_mode: CoreMLMode = "w8a8"
    palettize_bits: int = 6
    batch_size: int = 8


def _check_target(target: str, spec: QuantSpec) -> None:
    if target not in TARGETS:
        raise ConfigError(None, f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if spec.int8_io and target != "tflite":
        raise ConfigError(None, f"int8 I/O is a tflite option; {target} artifacts keep float32 I/O")
    if spec.coreml_mode not in ("w8a8", "weights", "palettize"):
        raise ConfigError(
            None, f"unknown CoreML mode {spec.coreml_mode!r}; choose w8a8, weights or palettize"
        )


def deploy_form(model: nn.Module) -> nn.Module:
    """The fused (deploy) form of ``model`` in eval mode, keeping its registry name and args."""
    from edge_sr.reparam import has_fusable, reparameterize

    out = reparameterize(model) if has_fusable(model) else model.eval()
    for attr in ("edge_sr_arch", "edge_sr_args", "edge_sr_source"):
        if hasattr(model, attr):
            setattr(out, attr, getattr(model, attr))
    return out


def _carry(src: nn.Module, dst: nn.Module) -> nn.Module:
    for attr in ("edge_sr_arch", "edge_sr_args", "edge_sr_source"):
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))
    if not hasattr(dst, "scale") and hasattr(src, "scale"):
        dst.scale = src.scale  # type: ignore[assignment]
    return dst


def _export_spec(target: str, calib: CalibrationSet, precision: str) -> Any:
    from edge_sr.convert import ExportSpec

    # CoreML quantize / dequantize ops need iOS17; calibration shape = export shape
    extra = {"deployment_target": "iOS17"} if target == "coreml" else {}
    return ExportSpec(input_size=calib.input_size, precision=precision, **extra)  # type: ignore[arg-type]


def _scheme(target: str, spec: QuantSpec) -> str:
    from edge_sr.quantize import coreml, litert, onnx, xnnpack

    if target == "coreml":
        return coreml.SCHEMES[spec.coreml_mode]
    return {"executorch": xnnpack.SCHEME, "tflite": litert.SCHEME, "onnx": onnx.SCHEME}[target]


def _resolve_keep(
    target: str, net: nn.Module, calib: CalibrationSet, spec: QuantSpec
) -> tuple[QuantSpec, list[str]]:
    """``spec`` with the input layers added to ``keep_float`` when ``float_input_layers`` applies to ``target``,
    and the layers it added."""
    from edge_sr.quantize.pt2e import input_layers

    weight_only = target == "coreml" and spec.coreml_mode != "w8a8"
    # int8 I/O asks for the quantized image at the input: the layers that read it must be int8
    if not spec.float_input_layers or weight_only or spec.int8_io:
        return spec, []
    extra = [n for n in input_layers(net, calib.patches[:1]) if n not in spec.keep_float]
    if extra:
        logger.info("input layers kept in float: %s", ", ".join(extra))
    return dataclasses.replace(spec, keep_float=(*spec.keep_float, *extra)), extra


def _wrap_io(target: str, deploy: nn.Module, spec: QuantSpec) -> tuple[nn.Module, tuple[str, ...]]:
    """TFLite with float I/O: clamp in front (see :mod:`.litert`); module paths move under ``model.``."""
    if target == "tflite" and not spec.int8_io:
        return ClampInput(deploy), tuple(f"model.{n}" for n in spec.keep_float)
    return deploy, spec.keep_float


def _export_quantized(
    gm: nn.Module,
    deploy: nn.Module,
    target: str,
    calib: CalibrationSet,
    spec: QuantSpec,
    q: Any,
    out: Any,
    quantization: dict[str, Any],
    source: Any,
) -> Any:
    from edge_sr.convert import export
    from edge_sr.quantize import litert

    _carry(deploy, gm)
    options = litert.export_options(q) if target == "tflite" else {}
    return export(
        gm,
        target,
        out,
        _export_spec(target, calib, "int8"),
        source=source,
        quantization=quantization,
        options=options,
    )


def ptq(
    model: nn.Module,
    target: str,
    calib: CalibrationSet,
    spec: QuantSpec | None = None,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
) -> Any:
    """Post-training static INT8 quantization of ``model`` for ``target``; writes artifact + manifest.

    Args:
        model: train or deploy form (fused first).
        target: coreml, executorch, onnx or tflite.
        calib: calibration patches at the export input size (the artifact's fixed input size).
        spec: options (int8 I/O, layers kept float, CoreML mode).
        out: artifact path or folder.
        source: the checkpoint (its sha256 goes into the manifest).

    Returns:
        ``edge_sr.convert.Artifact``.
    """
    spec = spec or QuantSpec()
    _check_target(target, spec)
    deploy = deploy_form(model)
    if spec.keep_float:
        check_layers(deploy, spec.keep_float)
    spec, float_inputs = _resolve_keep(target, deploy, calib, spec)
    quantization = {
        "scheme": _scheme(target, spec),
        "method": "ptq",
        "calibration": calib.manifest_entry(),
        "keep_float": list(spec.keep_float),
        "float_input_layers": float_inputs,
        "int8_io": spec.int8_io,
    }
    if target == "onnx":
        return _onnx_ptq(deploy, calib, spec, out, quantization, source)
    if target == "coreml" and spec.coreml_mode != "w8a8":
        return _coreml_weights(deploy, calib, spec, out, quantization, source)
    q = target_quantizer(target)
    net, keep = _wrap_io(target, deploy, spec)
    gm = quantize_model(
        net,
        q,
        calib.batches(spec.batch_size),
        calib.patches[:2],
        keep_float=keep,
        fold_quantize=target != "tflite",  # litert-torch folds the weights itself
    )
    return _export_quantized(gm, deploy, target, calib, spec, q, out, quantization, source)


def qat(
    model: nn.Module,
    target: str,
    data: Sequence[str | os.PathLike[str]],
    *,
    calib: CalibrationSet,
    iters: int,
    lr: float = 2e-4,
    batch_size: int = 8,
    seed: int = 0,
    form: Literal["deploy", "train"] = "deploy",
    spec: QuantSpec | None = None,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
) -> Any:
    """Quantization-aware fine-tuning, then INT8 export (PT2E targets: executorch, tflite, coreml W8A8).

    Fuses first (``form="deploy"``), exports the training graph with a dynamic batch, calibrates the
    fake-quant observers on ``calib``, fine-tunes with L1 on ``HRFolderDataset(data)`` LR/HR patches at the
    export input size (sample ``i`` fixed by ``seed``), freezes the observers for the last steps, converts.
    ``form="train"`` quantizes the multi-branch graph instead (see the module docstring).
    """
    from torch.utils.data import DataLoader

    from edge_sr.data import HRFolderDataset, IndexRangeSampler

    spec = spec or QuantSpec()
    _check_target(target, spec)
    if target == "onnx" or (target == "coreml" and spec.coreml_mode != "w8a8"):
        raise ConfigError(
            None,
            f"QAT runs through PT2E: executorch, tflite or coreml w8a8, not {target} "
            f"{'' if target == 'onnx' else spec.coreml_mode}".strip(),
        )
    if iters < 1:
        raise ConfigError(None, f"QAT needs at least one iteration (got {iters})")
    base = deploy_form(model) if form == "deploy" else model.eval()
    if form == "train":
        # the multi-branch graph's input branches (1x1 convs feeding int8 3x3 / masked convs) with float
        # input layers lower to a program that crashes ExecuTorch's runtime (segfault in a copy): quantize all
        spec = dataclasses.replace(spec, float_input_layers=False)
    spec, float_inputs = _resolve_keep(target, base, calib, spec)
    scale = int(getattr(base, "scale", 0) or getattr(model, "scale", 0))
    h, w = calib.input_size
    ds = HRFolderDataset(list(data), scale=scale, patch_size=max(h, w), seed=seed, skip_small=True)
    loader = DataLoader(ds, batch_size=batch_size, sampler=IndexRangeSampler(0, iters * batch_size))
    # crop square patches to the export shape: (b, 3, p, p) -> (b, 3, h, w), HR alike
    batches = ((x[..., :h, :w], y[..., : h * scale, : w * scale]) for x, y in loader)
    q = target_quantizer(target, qat=True)
    net, keep = _wrap_io(target, base, spec)
    annotate = q
    if keep:
        from edge_sr.quantize.pt2e import make_keep_float_quantizer

        check_layers(net, keep)
        annotate = make_keep_float_quantizer(q, keep)
    prepared = prepare(net, annotate, calib.patches[:2], qat=True)
    calibrate(prepared, calib.batches(spec.batch_size))
    losses = fine_tune(prepared, batches, iters=iters, lr=lr)
    gm = convert(prepared, fold_quantize=target != "tflite")
    quantization = {
        "scheme": _scheme(target, spec),
        "method": "qat",
        "calibration": calib.manifest_entry(),
        "keep_float": list(spec.keep_float),
        "float_input_layers": float_inputs,
        "int8_io": spec.int8_io,
        "qat": {
            "form": form,
            "iters": iters,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "data": [str(d) for d in data],
            "loss_first": losses[0],
            "loss_last": losses[-1],
        },
    }
    return _export_quantized(gm, _carry(model, base), target, calib, spec, q, out, quantization, source)


def _onnx_ptq(
    deploy: nn.Module, calib: CalibrationSet, spec: QuantSpec, out: Any, quantization: dict, source: Any
) -> Any:
    import shutil

    from edge_sr.convert import Artifact, export
    from edge_sr.convert.manifest import (
        embedded_metadata,
        manifest_path,
        sha256_path,
        size_bytes,
        write_manifest,
    )
    from edge_sr.quantize import onnx as qonnx

    from edge_sr.io_utils import atomic_path

    float_art = None
    out = Path(out)
    scratch = qonnx.float_export_dir(out if out.suffix else out / "model.onnx")
    try:
        float_art = export(deploy, "onnx", scratch, _export_spec("onnx", calib, "fp32"), source=source)
        path = out if out.suffix else out / float_art.path.name.replace("_fp32", "_int8")
        manifest = {**float_art.manifest, "artifact": path.name, "precision": "int8"}
        manifest["quantization"] = quantization
        with atomic_path(manifest_path(path)) as tmp_m, atomic_path(path) as tmp:
            facts = qonnx.quantize_file(
                float_art.path,
                tmp,
                calib.patches.numpy(),
                keep_float=spec.keep_float,
                metadata=embedded_metadata(manifest),
            )
            quantization["onnxruntime"] = facts
            manifest.update(artifact_sha256=sha256_path(tmp), size_bytes=size_bytes(tmp))
            write_manifest(tmp_m, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Artifact(path, manifest_path(path), manifest)


def _coreml_weights(
    deploy: nn.Module, calib: CalibrationSet, spec: QuantSpec, out: Any, quantization: dict, source: Any
) -> Any:
    from edge_sr.convert import Artifact, export
    from edge_sr.convert.manifest import write_manifest
    from edge_sr.quantize import coreml

    mode = spec.coreml_mode
    transform = coreml.weight_transform(mode, nbits=spec.palettize_bits)  # type: ignore[arg-type]
    art = export(
        deploy,
        "coreml",
        out,
        _export_spec("coreml", calib, "int8"),
        source=source,
        quantization=quantization,
        options={"transform": transform},
    )
    convs = coreml.compressed_convs(art.path)
    quantization.update(
        weight_threshold=0, convs=convs, bits=spec.palettize_bits if mode == "palettize" else 8
    )
    manifest = {**art.manifest, "quantization": quantization}
    write_manifest(art.manifest_path, manifest)
    return Artifact(art.path, art.manifest_path, manifest)


def fp16_check(model: nn.Module, calib: CalibrationSet, *, underflow_share: float = 0.01) -> FP16Report:
    """Per-layer activation / weight ranges of the deploy form over ``calib`` against FP16's range."""
    return fp16_ranges(deploy_form(model), calib.batches(), underflow_share=underflow_share)


def fp16_export(
    model: nn.Module,
    target: str,
    calib: CalibrationSet,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    mixed: bool = True,
) -> Any:
    """FP16 artifact after the range check; offending layers stay FP32 where the target allows it."""
    from edge_sr.convert import export

    if target not in TARGETS:
        raise ConfigError(None, f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    deploy = deploy_form(model)
    report = fp16_ranges(deploy, calib.batches())
    fp32_layers: list[str] = []
    net = deploy
    if report.offenders:
        if mixed and target in MIXED_PRECISION_TARGETS:
            fp32_layers = fp32_spans(report)
            net = _carry(deploy, keep_fp32(deploy, fp32_layers))
        else:
            logger.warning(
                "FP16 cannot hold %s; %s has no per-layer precision here", report.offenders, target
            )
    quantization = {
        "scheme": "fp16" if not fp32_layers else "fp16 mixed (listed layers fp32)",
        "fp16_check": {"offenders": report.offenders, "calibration": calib.manifest_entry()},
        "fp32_layers": fp32_layers,
    }
    return export(
        net, target, out, _export_spec(target, calib, "fp16"), source=source, quantization=quantization
    )


def sensitivity(
    model: nn.Module, target: str, calib: CalibrationSet, *, layers: Sequence[str] | None = None
) -> SensitivityReport:
    """Per-layer SQNR ranking of the deploy form (see :mod:`edge_sr.quantize.sensitivity`)."""
    with torch.no_grad():
        return _sensitivity(deploy_form(model), target, calib.patches, layers=layers)
