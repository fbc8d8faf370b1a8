"""INT8 and FP16 artifacts that still do SR: calibration, PTQ, QAT, FP16 range checks, sensitivity.

    calib = load_calibration("photos/", count=32, input_size=(64, 64), scale=4)
    art = ptq(model, "executorch", calib, QuantSpec(), out="out/")       # -> edge_sr.convert.Artifact
    art = qat(model, "tflite", ["train/T91"], calib=calib, iters=4000, lr=2e-4, out="out/")
    report = fp16_check(model, calib)                                    # overflow / underflow per layer
    ranks = sensitivity(model, "executorch", calib)                      # per-layer SQNR, most sensitive first

    seqs = load_sequences(".../Vid4", input_size=(180, 320), scale=4)    # a video model: clips, in order
    art = stream_ptq(model, "tflite", seqs, out="out/")                  # state pairs share scale / zero point

This package holds what every target shares; what a format wants is its target module's business
(``edge_sr.convert.<target>``: its quantizer, its modes, its export options). Every mode a target lists in
``PT2E_MODES`` is one PT2E flow (:mod:`edge_sr.quantize.pt2e`) with the quantizer the target owns, lowered by
``edge_sr.convert.export``; the other modes (ONNX's onnxruntime QDQ, CoreML's weight-only int8 /
palettization) are the target's own ``quantize_artifact``. The manifest records the scheme, the calibration
set (folder, count, seed, input size), the layers kept in float, QAT settings, and int8 I/O scale / zero point.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from edge_sr.quantize.calib import CalibrationSet, from_tensors, load_calibration, y_of
from edge_sr.quantize.fp16 import FP16Report, fp16_ranges, fp32_spans, keep_fp32
from edge_sr.quantize.pt2e import (
    ClampInput,
    calibrate,
    check_layers,
    convert,
    fine_tune,
    prepare,
    quantize_model,
)
from edge_sr.quantize.sensitivity import SensitivityReport, most_sensitive
from edge_sr.quantize.sensitivity import sensitivity as _sensitivity
from edge_sr.quantize.sequences import SequenceSet, load_sequences, synthetic_sequences
from edge_sr.quantize.stream import stream_fp16_check, stream_fp16_export, stream_ptq
from torch import nn

from edge_sr.errors import ConfigError

__all__ = [
    "CalibrationSet",
    "FP16Report",
    "QuantSpec",
    "SensitivityReport",
    "SequenceSet",
    "deploy_form",
    "fp16_check",
    "fp16_export",
    "from_tensors",
    "load_calibration",
    "load_sequences",
    "most_sensitive",
    "ptq",
    "qat",
    "sensitivity",
    "stream_fp16_check",
    "stream_fp16_export",
    "stream_ptq",
    "synthetic_sequences",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize.

    Attributes:
        int8_io: int8 input (scale / zero point in the manifest) instead of float32 I/O, where the target
            offers it (``INT8_IO``: tflite).
        keep_float: layers (torch module paths, e.g. ``body.0.0``) left in float.
        float_input_layers: also leave in float the convs that read the image (:func:`.pt2e.input_layers`:
            the head conv, a conv-made residual). On by default for the activation-quantizing modes (PT2E
            and ONNX static): more accurate, and faster on XNNPACK, whose 3-channel int8 path is slower than
            float (docs/NOTES.md has the measurements). ``False`` quantizes every conv, as do ``int8_io`` and
            ``qat(form="train")``.
        mode: one of the target's ``QUANT_MODES`` (default: its first, e.g. ``w8a8``; coreml also has
            ``weights`` (int8 weight-only) and ``palettize`` (k-means LUT); onnx has ``qdq``).
        palettize_bits: LUT size for ``palettize`` (2^bits entries per tensor).
        batch_size: calibration batch size.
    """

    int8_io: bool = False
    keep_float: tuple[str, ...] = ()
    float_input_layers: bool = True
    mode: str | None = None
    palettize_bits: int = 6
    batch_size: int = 8


def target_and_mode(target: str, spec: QuantSpec) -> tuple[Any, str]:
    """The target module and the quantization mode; ``ConfigError`` for what the target cannot take."""
    from edge_sr.convert import quantizable_targets, target_module

    mod = target_module(target)
    if not mod.QUANT_MODES:
        raise ConfigError(
            None, f"{target} has no INT8 artifacts; choose from {', '.join(quantizable_targets())}"
        )
    mode = spec.mode or mod.QUANT_MODES[0]
    if mode not in mod.QUANT_MODES:
        raise ConfigError(
            None, f"unknown {target} quantization mode {mode!r}; choose from {', '.join(mod.QUANT_MODES)}"
        )
    if spec.int8_io and not mod.INT8_IO:
        offered = [t for t in quantizable_targets() if target_module(t).INT8_IO]
        raise ConfigError(
            None, f"int8 I/O is a {', '.join(offered)} option; {target} artifacts keep float32 I/O"
        )
    return mod, mode


def deploy_form(model: nn.Module) -> nn.Module:
    """The fused (deploy) form of ``model`` in eval mode, keeping its model card."""
    from edge_sr.reparam import has_fusable, reparameterize

    return reparameterize(model) if has_fusable(model) else model.eval()


def _carry(src: nn.Module, dst: nn.Module) -> nn.Module:
    from edge_sr.models import carry_card

    return carry_card(src, dst)


def _resolve_keep(
    mod: Any, mode: str, net: nn.Module, calib: CalibrationSet, spec: QuantSpec
) -> tuple[QuantSpec, list[str]]:
    """``spec`` with the input layers added to ``keep_float`` when ``float_input_layers`` applies to the
    target's mode (activation-quantizing modes only), and the layers it added."""
    from edge_sr.quantize.pt2e import input_layers

    weight_only = mode not in mod.PT2E_MODES and mode != "qdq"
    # int8 I/O asks for the quantized image at the input: the layers that read it must be int8
    if not spec.float_input_layers or weight_only or spec.int8_io:
        return spec, []
    extra = [n for n in input_layers(net, calib.patches[:1]) if n not in spec.keep_float]
    if extra:
        logger.info("input layers kept in float: %s", ", ".join(extra))
    return dataclasses.replace(spec, keep_float=(*spec.keep_float, *extra)), extra


def _wrap_io(mod: Any, deploy: nn.Module, spec: QuantSpec) -> tuple[nn.Module, tuple[str, ...]]:
    """Float I/O on a target whose converter would quantize the input (``FLOAT_IO_CLAMP``: tflite): an
    unannotated clamp in front keeps it float; module paths move under ``model.``."""
    if mod.FLOAT_IO_CLAMP and not spec.int8_io:
        return ClampInput(deploy), tuple(f"model.{n}" for n in spec.keep_float)
    return deploy, spec.keep_float


def _export_quantized(
    gm: nn.Module,
    deploy: nn.Module,
    mod: Any,
    mode: str,
    calib: CalibrationSet,
    q: Any,
    out: Any,
    quantization: dict[str, Any],
    source: Any,
) -> Any:
    from edge_sr.convert import ExportSpec, export

    _carry(deploy, gm)
    spec = ExportSpec(input_size=calib.input_size, precision="int8")  # calibration shape = export shape
    return export(
        gm, mod.NAME, out, spec, source=source, quantization=quantization, options=mod.quant_options(q, mode)
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
        target: a target with INT8 modes (``edge_sr.convert.quantizable_targets()``).
        calib: calibration patches at the export input size (the artifact's fixed input size).
        spec: options (int8 I/O, layers kept float, the target's quantization mode).
        out: artifact path or folder.
        source: the checkpoint (its sha256 goes into the manifest).

    Returns:
        ``edge_sr.convert.Artifact``.
    """
    spec = spec or QuantSpec()
    calib = _for_model(calib, model)
    mod, mode = target_and_mode(target, spec)
    deploy = deploy_form(model)
    if spec.keep_float:
        check_layers(deploy, spec.keep_float)
    spec, float_inputs = _resolve_keep(mod, mode, deploy, calib, spec)
    quantization = _manifest_entry(mod, mode, "ptq", calib, spec, float_inputs)
    if mode not in mod.PT2E_MODES:  # the target's own quantization of its float artifact
        return mod.quantize_artifact(
            deploy,
            calib,
            mode=mode,
            keep_float=spec.keep_float,
            out=out,
            quantization=quantization,
            source=source,
            nbits=spec.palettize_bits,
        )
    q = mod.quantizer(mode=mode)
    net, keep = _wrap_io(mod, deploy, spec)
    gm = quantize_model(
        net,
        q,
        calib.batches(spec.batch_size),
        calib.patches[:2],
        keep_float=keep,
        fold_quantize=mod.FOLD_QUANTIZE,
    )
    return _export_quantized(gm, deploy, mod, mode, calib, q, out, quantization, source)


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
    """Quantization-aware fine-tuning, then INT8 export (the PT2E modes of a target: ``PT2E_MODES``).

    Fuses first (``form="deploy"``), exports the training graph with a dynamic batch, calibrates the
    fake-quant observers on ``calib``, fine-tunes with L1 on ``HRFolderDataset(data)`` LR/HR patches at the
    export input size (sample ``i`` fixed by ``seed``), freezes the observers for the last steps, converts.
    ``form="train"`` quantizes the multi-branch graph instead (see the module docstring).
    """
    spec = spec or QuantSpec()
    mod, mode = target_and_mode(target, spec)
    if mode not in mod.PT2E_MODES:
        raise ConfigError(
            None, f"{target} {mode} cannot take QAT (it runs through PT2E); use {qat_targets_text()}"
        )
    if iters < 1:
        raise ConfigError(None, f"QAT needs at least one iteration (got {iters})")
    calib = _for_model(calib, model)
    base = deploy_form(model) if form == "deploy" else model.eval()
    if form == "train":
        # the multi-branch graph's input branches (1x1 convs feeding int8 3x3 / masked convs) with float
        # input layers lower to a program that crashes ExecuTorch's runtime (segfault in a copy): quantize all
        spec = dataclasses.replace(spec, float_input_layers=False)
    spec, float_inputs = _resolve_keep(mod, mode, base, calib, spec)
    batches = _qat_batches(model, data, calib.input_size, iters=iters, batch_size=batch_size, seed=seed)
    q = mod.quantizer(qat=True, mode=mode)
    net, keep = _wrap_io(mod, base, spec)
    annotate = q
    if keep:
        from edge_sr.quantize.pt2e import make_keep_float_quantizer

        check_layers(net, keep)
        annotate = make_keep_float_quantizer(q, keep)
    prepared = prepare(net, annotate, calib.patches[:2], qat=True)
    calibrate(prepared, calib.batches(spec.batch_size))
    losses = fine_tune(prepared, batches, iters=iters, lr=lr)
    gm = convert(prepared, fold_quantize=mod.FOLD_QUANTIZE)
    quantization = _manifest_entry(mod, mode, "qat", calib, spec, float_inputs)
    quantization.update(
        qat={
            "form": form,
            "iters": iters,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "data": [str(d) for d in data],
            "loss_first": losses[0],
            "loss_last": losses[-1],
        }
    )
    return _export_quantized(gm, _carry(model, base), mod, mode, calib, q, out, quantization, source)


def _manifest_entry(
    mod: Any, mode: str, method: str, calib: CalibrationSet, spec: QuantSpec, float_inputs: list[str]
) -> dict[str, Any]:
    """The manifest's ``quantization`` record shared by PTQ and QAT."""
    return {
        "scheme": mod.quant_scheme(mode),
        "mode": mode,
        "method": method,
        "calibration": calib.manifest_entry(),
        "keep_float": list(spec.keep_float),
        "float_input_layers": float_inputs,
        "int8_io": spec.int8_io,
    }


def _qat_batches(
    model: nn.Module,
    data: Sequence[str | os.PathLike[str]],
    size: tuple[int, int],
    *,
    iters: int,
    batch_size: int,
    seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``iters`` LR / HR batches from ``HRFolderDataset(data)`` at the export size (sample i fixed by seed)."""
    from torch.utils.data import DataLoader

    from edge_sr.data import HRFolderDataset, IndexRangeSampler
    from edge_sr.models import card_of

    scale = card_of(model).scale
    h, w = size
    ds = HRFolderDataset(list(data), scale=scale, patch_size=max(h, w), seed=seed, skip_small=True)
    loader = DataLoader(ds, batch_size=batch_size, sampler=IndexRangeSampler(0, iters * batch_size))
    # crop square patches to the export shape: (b, 3, p, p) -> (b, 3, h, w), HR alike; a Y model trains on Y
    if card_of(model).colors == 1:
        return ((y_of(x[..., :h, :w]), y_of(y[..., : h * scale, : w * scale])) for x, y in loader)
    return ((x[..., :h, :w], y[..., : h * scale, : w * scale]) for x, y in loader)


def _for_model(calib: CalibrationSet, model: nn.Module) -> CalibrationSet:
    """``calib`` with the model's colour channels (the Y of RGB patches for a Y-channel model)."""
    from edge_sr.models import card_of, has_card

    return calib.with_colors(card_of(model).colors) if has_card(model) else calib


def qat_targets_text() -> str:
    """``executorch w8a8, tflite w8a8, coreml w8a8``: every target mode QAT can take."""
    from edge_sr.convert import TARGETS, target_module

    return ", ".join(f"{t} {m}" for t in TARGETS for m in target_module(t).PT2E_MODES)


def fp16_check(model: nn.Module, calib: CalibrationSet, *, underflow_share: float = 0.01) -> FP16Report:
    """Per-layer activation / weight ranges of the deploy form over ``calib`` against FP16's range."""
    calib = _for_model(calib, model)
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
    calib = _for_model(calib, model)
    deploy = deploy_form(model)
    report = fp16_ranges(deploy, calib.batches())
    return export_fp16_checked(
        deploy, target, report, calib.manifest_entry(), calib.input_size, out=out, source=source, mixed=mixed
    )


def export_fp16_checked(
    deploy: nn.Module,
    target: str,
    report: FP16Report,
    calibration: dict[str, Any],
    input_size: tuple[int, int],
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    mixed: bool = True,
) -> Any:
    """Export the deploy form in FP16 given its range check ``report`` (images or a stream): the offending
    layers stay FP32 where the target computes FP16 by casting (``FP16_BY_CAST``), else a warning."""
    from edge_sr.convert import ExportSpec, export, target_module

    mod = target_module(target)
    fp32_layers: list[str] = []
    net = deploy
    if report.offenders:
        # per-layer precision where FP16 is a float16 graph inside casts: FP32 spans are cast back
        if mixed and mod.FP16_BY_CAST:
            fp32_layers = fp32_spans(report)
            net = _carry(deploy, keep_fp32(deploy, fp32_layers))
        else:
            logger.warning(
                "FP16 cannot hold %s; %s has no per-layer precision here", report.offenders, target
            )
    quantization = {
        "scheme": "fp16" if not fp32_layers else "fp16 mixed (listed layers fp32)",
        "fp16_check": {"offenders": report.offenders, "calibration": calibration},
        "fp32_layers": fp32_layers,
    }
    spec = ExportSpec(input_size=input_size, precision="fp16")
    return export(
        net, target, out, spec, source=source, quantization=quantization, options=mod.quant_options(None)
    )


def sensitivity(
    model: nn.Module, target: str, calib: CalibrationSet, *, layers: Sequence[str] | None = None
) -> SensitivityReport:
    """Per-layer SQNR ranking of the deploy form (see :mod:`edge_sr.quantize.sensitivity`)."""
    calib = _for_model(calib, model)
    with torch.no_grad():
        return _sensitivity(deploy_form(model), target, calib.patches, layers=layers)
