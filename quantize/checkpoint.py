"""One call from a checkpoint to a quantized artifact: what ``edge-sr quantize`` runs.

Checks the option combination against what the target offers (before anything is loaded or written), loads
the model, cuts the calibration set, ranks layers by sensitivity when asked to keep the most sensitive ones
float, and runs PTQ, QAT or the FP16 export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from edge_sr.errors import ConfigError


def check_request(
    target: str,
    *,
    precision: str,
    qat: bool,
    data: Sequence[str | os.PathLike[str]] | None,
    int8_io: bool,
    keep_float: Sequence[str],
    keep_sensitive: int,
    mode: str | None,
) -> str | None:
    """Raise ``ConfigError`` (one line) for a combination the target cannot take; returns the INT8 mode."""
    from edge_sr.convert import target_module
    from edge_sr.quantize import QuantSpec, qat_targets_text, target_and_mode

    if precision not in ("int8", "fp16"):
        raise ConfigError(
            None, f"precision {precision!r}: quantize makes int8 or fp16 (fp32: `edge-sr convert`)"
        )
    if precision == "fp16":
        if qat or int8_io or keep_float or keep_sensitive or mode:
            raise ConfigError(
                None,
                "QAT, int8 I/O, kept-float layers and modes are int8 options; fp16 keeps offending layers itself",
            )
        target_module(target)  # an unknown target: the registry's one-line error
        return None
    # the target's INT8 modes and int8 I/O, checked where ptq / qat check them
    mod, mode = target_and_mode(target, QuantSpec(int8_io=int8_io, mode=mode))
    if qat and not data:
        raise ConfigError(None, "QAT needs training data (--data DIR: HR training images)")
    if qat and mode not in mod.PT2E_MODES:
        raise ConfigError(
            None, f"{target} {mode} cannot take QAT (it runs through PT2E); use {qat_targets_text()}"
        )
    if keep_sensitive and mode not in mod.PT2E_MODES and mode != "qdq":
        raise ConfigError(
            None, f"sensitivity ranks activation-quantized layers; use keep_float with {target} {mode}"
        )
    return mode


def quantize_checkpoint(
    checkpoint: str | os.PathLike[str] | nn.Module,
    target: str,
    *,
    calib: str | os.PathLike[str],
    out: str | os.PathLike[str],
    precision: Literal["int8", "fp16"] = "int8",
    input_size: tuple[int, int] = (64, 64),
    calib_count: int = 32,
    calib_lr: bool = False,
    seed: int = 0,
    qat: bool = False,
    data: Sequence[str | os.PathLike[str]] | None = None,
    iters: int = 4000,
    lr: float = 2e-4,
    batch_size: int = 8,
    keep_float: Sequence[str] = (),
    keep_sensitive: int = 0,
    int8_input_layers: bool = False,
    int8_io: bool = False,
    mode: str | None = None,
    calib_frames: int = 8,
) -> tuple[Any, nn.Module]:
    """Quantize the model of ``checkpoint`` for ``target``; returns (``edge_sr.convert.Artifact``, the model).

    Args:
        checkpoint: a checkpoint ``load_checkpoint`` reads (edge-sr, or foreign: detected), or a model that
            carries its card; train-form ones are fused first.
        target: a target with INT8 modes (int8), or any target (fp16).
        calib: image folder for calibration (HR, cut to LR patches, unless ``calib_lr``).
        out: artifact path or folder.
        precision: ``int8`` or ``fp16`` (range-checked, offending layers FP32 where the target allows).
        input_size: export and calibration size (H, W).
        calib_count: calibration images; ``seed`` fixes the crops and the QAT samples.
        qat: quantization-aware fine-tuning on ``data`` for ``iters`` steps at peak ``lr``, ``batch_size``.
        keep_float: layers left in float; ``keep_sensitive`` adds the k most sensitive ones.
        int8_input_layers: quantize the convs that read the image too (by default they stay float).
        int8_io: int8 input where the target offers it.
        mode: one of the target's quantization modes (default its first).
        calib_frames: a video (streaming) model calibrates on ``calib_count`` clips of this many consecutive
            frames of ``calib`` (a Vid4-layout root, a folder of LR clips, or a video file), streamed in
            order so the state inputs see real state (:mod:`edge_sr.quantize.stream`).
    """
    from edge_sr import quantize as q
    from edge_sr.models import card_of, load_checkpoint
    from edge_sr.models.stream import is_stream_model

    mode = check_request(
        target,
        precision=precision,
        qat=qat,
        data=data,
        int8_io=int8_io,
        keep_float=keep_float,
        keep_sensitive=keep_sensitive,
        mode=mode,
    )
    if isinstance(checkpoint, nn.Module):
        model, source = checkpoint.eval(), card_of(checkpoint).source
    else:
        model, source = load_checkpoint(checkpoint), str(checkpoint)
    if is_stream_model(model):
        return _quantize_stream(
            model, target, calib=calib, out=out, precision=precision, input_size=input_size,
            clips=calib_count, frames=calib_frames, seed=seed, qat=qat, keep_float=keep_float,
            keep_sensitive=keep_sensitive, int8_io=int8_io, mode=mode, source=source,
        ), model  # fmt: skip
    cal = q.load_calibration(
        calib,
        count=calib_count,
        input_size=input_size,
        scale=card_of(model).scale,
        seed=seed,
        lr_input=calib_lr,
    )
    if precision == "fp16":
        return q.fp16_export(model, target, cal, out=out, source=source), model
    keep = list(keep_float)
    if keep_sensitive:
        ranked = q.most_sensitive(q.sensitivity(model, target, cal), keep_sensitive)
        keep += [n for n in ranked if n not in keep]
    spec = q.QuantSpec(
        int8_io=int8_io, keep_float=tuple(keep), float_input_layers=not int8_input_layers, mode=mode
    )
    if qat:
        art = q.qat(
            model,
            target,
            list(data or ()),
            calib=cal,
            iters=iters,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            spec=spec,
            out=out,
            source=source,
        )
    else:
        art = q.ptq(model, target, cal, spec, out=out, source=source)
    return art, model


def _quantize_stream(
    model: nn.Module,
    target: str,
    *,
    calib: str | os.PathLike[str],
    out: str | os.PathLike[str],
    precision: str,
    input_size: tuple[int, int],
    clips: int,
    frames: int,
    seed: int,
    qat: bool,
    keep_float: Sequence[str],
    keep_sensitive: int,
    int8_io: bool,
    mode: str | None,
    source: Any,
) -> Any:
    """INT8 / FP16 of a video model's step, calibrated on sequences (see :mod:`edge_sr.quantize.stream`)."""
    from edge_sr.quantize import QuantSpec
    from edge_sr.quantize.sequences import load_sequences
    from edge_sr.quantize.stream import stream_fp16_export, stream_ptq

    from edge_sr.models import card_of

    if qat:
        raise ConfigError(
            None,
            "a video step is QAT-trained by the video training loop: `edge-sr train RECIPE --init CKPT` with a "
            "qat section (configs/rrn_edge_x4_qat.yaml); or drop --qat for PTQ",
        )
    if keep_sensitive:
        raise ConfigError(
            None, "--keep-sensitive ranks image layers; name video-step layers with --keep-float"
        )
    card = card_of(model)
    seqs = load_sequences(
        calib,
        input_size=input_size,
        scale=card.scale,
        clips=clips,
        frames=frames,
        seed=seed,
        colors=card.colors,
    )
    if precision == "fp16":
        return stream_fp16_export(model, target, seqs, out=out, source=source)
    spec = QuantSpec(int8_io=int8_io, keep_float=tuple(keep_float), mode=mode)
    return stream_ptq(model, target, seqs, spec, out=out, source=source)
