"""Latency profiling of an artifact or checkpoint: min / median / p90, peak memory, size, per-operator
breakdown, and achieved GMAC/s against this CPU's theoretical and measured peak of the program's precision.

Each target's own profiler (``edge_sr.convert.target_module(t).profile``) times the artifact with the one
timer (``edge_sr.convert.target.time_calls``) and reads its runtime's operator profile; a checkpoint runs in
eager PyTorch (:mod:`edge_sr.profile.checkpoint`). The phone path (:func:`profile_adb`) returns the same
:class:`ProfileReport`.

    report = profile("out/model.pte", runs=50, threads=1)
    report.median_ms, report.percent_of_theoretical_peak, report.ops

A video step artifact (its manifest has a ``stream`` entry) is timed per frame with its state fed back
between calls, as an app runs it (:mod:`edge_sr.profile.stream`); ``fps`` is 1000 / median.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edge_sr.convert import read_manifest, target_for_path, target_module
from edge_sr.convert.manifest import check_artifact_sha256, size_bytes
from edge_sr.convert.target import DEFAULT_INPUT, Timed, time_calls
from edge_sr.errors import ConfigError, InputError
from edge_sr.models.checkpoint import CHECKPOINT_SUFFIXES
from edge_sr.profile import checkpoint as _checkpoint
from edge_sr.profile.adb import profile_adb
from edge_sr.profile.compute import count_macs, model_gmacs
from edge_sr.profile.memory import PeakRSS
from edge_sr.profile.peak import (
    PeakWarning,
    cpu_info,
    cpu_name,
    fp16_arithmetic,
    measure_peak,
    percent_of,
    theoretical_peak,
)
from edge_sr.profile.report import ProfileReport, latency_stats

__all__ = [
    "PeakWarning",
    "ProfileReport",
    "artifact_kind",
    "count_macs",
    "cpu_name",
    "latency_stats",
    "measure_peak",
    "profile",
    "profile_adb",
    "theoretical_peak",
]

log = logging.getLogger(__name__)


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """The target whose artifact ``path`` is (``executorch``, ``onnx``, ...), or ``checkpoint``."""
    kind = target_for_path(path)
    if kind is not None:
        return kind
    if Path(path).suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    from edge_sr.convert import TARGETS

    known = sorted([target_module(t).SUFFIX for t in TARGETS] + list(CHECKPOINT_SUFFIXES))
    raise InputError(path, f"unknown artifact type; expected one of {', '.join(known)}")


def profile(
    path: str | os.PathLike[str],
    *,
    input_size: tuple[int, int] | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    ops: bool = True,
    peak: bool = True,
    check_sha256: bool = True,
    model: nn.Module | None = None,
) -> ProfileReport:
    """Time an artifact of any target in ``edge_sr.convert.TARGETS`` or a checkpoint.

    Args:
        path: the artifact; its manifest (``<artifact>.json``) gives the layout, precision and architecture.
        input_size: (height, width) for dynamic-shape artifacts and checkpoints; fixed-shape artifacts
            run at their own size. Default: the manifest's, else ``DEFAULT_INPUT``.
        runs: timed runs after ``warmup`` untimed ones.
        warmup: untimed runs first.
        threads: CPU threads (default: all cores).
        ops: also collect the per-operator breakdown.
        peak: compare the achieved GMAC/s with this CPU's peaks of the program's precision.
        check_sha256: refuse an artifact whose bytes differ from its manifest's ``artifact_sha256``.
        model: for a checkpoint, the model already loaded from it (built with overrides, or a custom
            module); default: ``load_checkpoint(path)``.

    Returns:
        The report.

    Raises:
        InputError: no such file, not an artifact, or an invalid manifest. ConfigError: bad runs / warm-up.
        RuntimeBackendError: the artifact was modified after export, or the runtime cannot load or run it
        here. CheckpointError: an invalid checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such artifact")
    if runs < 1 or warmup < 0:
        raise ConfigError(None, f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    kind = artifact_kind(p)
    manifest = read_manifest(p, required=False) if kind != "checkpoint" else None
    if check_sha256 and kind != "checkpoint":
        check_artifact_sha256(p, manifest)
    threads = int(threads or os.cpu_count() or 1)
    layout = (manifest or {}).get("layout")
    if input_size is None and manifest:
        input_size = _manifest_size(manifest)
    if kind == "checkpoint":
        from edge_sr.models import load_checkpoint

        model = model if model is not None else load_checkpoint(p)
        run: Any = functools.partial(_checkpoint.profile, model=model)
    elif manifest and manifest.get("stream"):  # a video step: per frame, the state fed back
        from edge_sr.profile.stream import profile_stream

        def run(path: Path, *, runs: int, warmup: int, threads: int, timer: Any, **_: Any) -> Timed:
            assert manifest is not None
            return profile_stream(
                path, kind, manifest, runs=runs, warmup=warmup, threads=threads, timer=timer
            )

    else:
        run = target_module(kind).profile
    with PeakRSS() as mem:
        timed: Timed = run(
            p, size=input_size, runs=runs, warmup=warmup, threads=threads, want_ops=ops, layout=layout,
            timer=time_calls,
        )  # fmt: skip
    mn, med, p90 = latency_stats(timed.times_ms)
    shape = timed.input_shape
    nhwc = shape[-1] == 3 and shape[1] != 3
    h, w = shape[1:3] if nhwc else shape[2:4]
    report = ProfileReport(
        artifact=str(p),
        kind=kind,
        device=f"{cpu_name()} (this machine)",
        input_shape=shape,
        threads=threads,
        runs=runs,
        warmup=warmup,
        min_ms=mn,
        median_ms=med,
        p90_ms=p90,
        mean_ms=float(np.mean(timed.times_ms)),
        precision=str((manifest or {}).get("precision") or "fp32"),
        peak_rss_mb=mem.peak_mb,
        model_rss_mb=mem.model_mb,
        size_bytes=size_bytes(p),
        ops=timed.ops,
        ops_note=timed.ops_note,
        fps=1e3 / med if med else None,
        stream=bool(manifest and manifest.get("stream")),
    )
    report.gmacs = model_gmacs(p, manifest, h, w, model=model)
    if report.gmacs is not None:
        report.gmacs_per_s = report.gmacs / (med / 1e3)
        if peak:
            compare_with_peaks(report)
    return report


def compare_with_peaks(report: ProfileReport) -> None:
    """Fill the peak fields of ``report`` from its precision, GMAC/s and threads (``edge_sr.profile.peak``).

    INT8 programs meet the INT8 peak; FP16 programs the FP16 peak where the vector unit does FP16
    arithmetic, else the FP32 peak. Only FP32 (and FP16 computed in FP32) has a measured peak.
    """
    precision = report.precision or "fp32"
    info = cpu_info()
    theory = theoretical_peak(info, report.threads, precision)
    report.peak_precision = precision
    report.theoretical_peak_gmacs_per_s = theory.gmacs_per_s
    notes = [f"theoretical: {theory.note}"]
    if precision == "fp32" or (precision == "fp16" and not fp16_arithmetic(info)):
        m = measure_peak(report.threads)
        report.measured_peak_gmacs_per_s = m.gmacs_per_s
        state = "cached" if m.cached else ("busy machine" if m.busy else f"{m.rounds} rounds")
        notes.append(f"measured: FP32 matrix product ({state})")
    else:
        notes.append(f"measured: none for {precision} (no {precision} matrix product to time)")
    for what, peak_value, field in (
        ("theoretical", theory.gmacs_per_s, "percent_of_theoretical_peak"),
        ("measured", report.measured_peak_gmacs_per_s, "percent_of_measured_peak"),
    ):
        pct = percent_of(report.gmacs_per_s, peak_value, f"{what} {precision} peak")
        setattr(report, field, pct)
        if pct is None and peak_value and report.gmacs_per_s and report.gmacs_per_s > peak_value:
            notes.append(f"{what} share above 100 %, not reported (the MAC count or the peak is wrong)")
    report.peak_note = "; ".join(notes)


def _manifest_size(manifest: dict[str, Any]) -> tuple[int, int] | None:
    """The (height, width) a manifest's ``input_shape`` fixes (fixed, or the first enumerated size); for a
    dynamic range, ``DEFAULT_INPUT`` clamped into it."""
    spec = manifest.get("input_shape")
    if not isinstance(spec, dict):
        return None
    if spec.get("mode") == "fixed" and len(spec.get("size") or ()) == 2:
        return int(spec["size"][0]), int(spec["size"][1])
    if spec.get("mode") == "enumerated" and spec.get("sizes"):
        return int(spec["sizes"][0][0]), int(spec["sizes"][0][1])
    if spec.get("mode") == "dynamic" and "min" in spec and "max" in spec:
        lo, hi = spec["min"], spec["max"]
        return max(lo, min(DEFAULT_INPUT[0], hi)), max(lo, min(DEFAULT_INPUT[1], hi))
    return None
