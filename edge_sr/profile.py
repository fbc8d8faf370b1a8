"""Latency profiling of an artifact or checkpoint: min / median / p90, peak memory, per-operator breakdown,
and achieved GMAC/s against this CPU's measured FP32 peak.

Each backend is opened directly (not through ``edge_sr.runtime``) because the per-operator profilers are
session options: ExecuTorch's ETDump (read back with ``executorch.devtools.Inspector``), onnxruntime's
``SessionOptions.enable_profiling`` JSON, and ``torch.profiler`` for checkpoints. TFLite's Python
interpreter gives no operator timings, so its operators are listed with their delegation but no time.
Latency is timed on a plain session first; the profiled session runs a few extra passes afterwards so its
overhead never enters the latency numbers.

The phone path (``adb``) lives in ``edge_sr.profile_adb`` and returns the same ``ProfileReport``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.errors import ConfigError, InputError

log = logging.getLogger(__name__)

KINDS = {
    ".pte": "executorch",
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".mlpackage": "coreml",
    ".mlmodel": "coreml",
}
KINDS.update({".safetensors": "checkpoint", ".pth": "checkpoint", ".pt": "checkpoint"})
DEFAULT_INPUT = (180, 320)
OPS_RUNS = 10  # profiled passes for the per-operator breakdown


@dataclasses.dataclass
class OpTime:
    """One operator: its name, median time per run in ms (None where the runtime gives none), and
    whether a delegate (XNNPACK, CoreML, ...) ran it rather than the portable / CPU kernels."""

    name: str
    ms: float | None
    delegated: bool | None


@dataclasses.dataclass
class ProfileReport:
    """What ``edge-sr profile`` prints; ``to_dict()`` is its ``--json`` object."""

    artifact: str
    kind: str
    device: str
    input_shape: list[int]
    threads: int
    runs: int
    warmup: int
    min_ms: float
    median_ms: float | None
    p90_ms: float | None
    mean_ms: float | None = None
    peak_rss_mb: float | None = None
    model_rss_mb: float | None = None
    size_bytes: int = 0
    ops: list[OpTime] = dataclasses.field(default_factory=list)
    ops_note: str | None = None
    gmacs: float | None = None
    gmacs_per_s: float | None = None
    peak_gmacs_per_s: float | None = None
    percent_of_peak: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_text(self, top: int = 12) -> str:
        """A human summary: one latency line, memory and size, throughput, the slowest operators."""
        med = "n/a" if self.median_ms is None else f"{self.median_ms:.2f}"
        p90 = "n/a" if self.p90_ms is None else f"{self.p90_ms:.2f}"
        lines = [
            f"{self.artifact} ({self.kind}, {self.device}, input {'x'.join(map(str, self.input_shape))}, "
            f"{self.threads} threads)",
            f"latency  min {self.min_ms:.2f} ms  median {med} ms  p90 {p90} ms  ({self.runs} runs after "
            f"{self.warmup} warm-up)",
            f"size     {self.size_bytes / 1e6:.3f} MB"
            + (f"   peak RSS {self.peak_rss_mb:.0f} MB" if self.peak_rss_mb is not None else "")
            + (f" (+{self.model_rss_mb:.0f} MB for the model)" if self.model_rss_mb is not None else ""),
        ]
        if self.gmacs is not None:
            s = f"compute  {self.gmacs:.3f} GMAC"
            if self.gmacs_per_s is not None:
                s += f" -> {self.gmacs_per_s:.1f} GMAC/s"
            if self.percent_of_peak is not None:
                s += f" = {self.percent_of_peak:.1f}% of this CPU's FP32 peak"
                s += f" ({self.peak_gmacs_per_s:.1f} GMAC/s)"
            lines.append(s)
        if self.ops:
            n_del = sum(1 for o in self.ops if o.delegated)
            lines.append(f"operators ({n_del} of {len(self.ops)} delegated):")
            timed = sorted(self.ops, key=lambda o: -(o.ms or 0.0))
            for o in timed[:top]:
                where = "delegate" if o.delegated else ("cpu" if o.delegated is False else "?")
                ms = "     n/a" if o.ms is None else f"{o.ms:8.3f}"
                lines.append(f"  {ms} ms  {where:8s}  {o.name}")
            if len(timed) > top:
                lines.append(f"  ... {len(timed) - top} more (--json lists all)")
        if self.ops_note:
            lines.append(f"note: {self.ops_note}")
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """``executorch`` | ``onnx`` | ``tflite`` | ``coreml`` | ``checkpoint``, from the file name."""
    kind = KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise InputError(path, f"unknown artifact type; expected one of {', '.join(sorted(KINDS))}")
    return kind


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON manifest beside an artifact (``model.pte.json`` or ``model.json``), or None."""
    p = Path(path)
    for cand in (p.with_name(p.name + ".json"), p.with_suffix(".json")):
        if cand.is_file() and cand != p:
            try:
                return json.loads(cand.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(cand, f"unreadable manifest ({e}); re-export the artifact") from None
    return None


def artifact_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk: a folder artifact (``.mlpackage``) summed, an ONNX file with its external data."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size
    if p.suffix == ".onnx":
        import onnx

        locations = set()
        for t in onnx.load(str(p), load_external_data=False).graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    locations.add(e.value)
        size += sum((p.parent / loc).stat().st_size for loc in locations if (p.parent / loc).is_file())
    return size


def latency_stats(times_ms: list[float]) -> tuple[float, float, float]:
    """(min, median, p90) of per-run times; p90 by linear interpolation between ranks."""
    if not times_ms:
        raise ValueError("no timed runs")
    a = np.asarray(times_ms, dtype=np.float64)
    return float(a.min()), float(np.median(a)), float(np.percentile(a, 90))


def parse_size(text: str) -> tuple[int, int]:
    """``"180x320"`` -> (180, 320) as (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(None, f"bad input size {text!r}; write HEIGHTxWIDTH, e.g. 180x320") from None
    if h <= 0 or w <= 0:
        raise ConfigError(None, f"bad input size {text!r}; both sides must be positive")
    return h, w


class _PeakRSS:
    """Peak resident memory of this process over a block. On Linux the high-water mark is reset first
    (``/proc/self/clear_refs``), so the peak is that of the block, not of earlier work."""

    def __enter__(self) -> _PeakRSS:
        self.linux = Path("/proc/self/clear_refs").exists()
        if self.linux:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.linux = False
        self.base_mb = self._status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.linux:
            self.peak_mb = self._status("VmHWM")
        else:  # ru_maxrss: kB on Linux, bytes on macOS; a process-lifetime peak
            import resource

            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_mb = r / (1 << 20) if sys.platform == "darwin" else r / 1024

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None


def _time(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _fill_shape(shape: list[int | None], size: tuple[int, int] | None, layout: str | None) -> list[int]:
    """Concrete 4-D input shape: dynamic dims (None / -1) become ``size``; layout NCHW unless NHWC."""
    hw = size or DEFAULT_INPUT
    nhwc = (layout or "").upper() == "NHWC" or (layout is None and len(shape) == 4 and shape[-1] == 3)
    h_i, w_i = (1, 2) if nhwc else (2, 3)
    fixed = [None if (d is None or d < 0) else int(d) for d in shape]
    if size is not None and fixed[h_i] is not None and (fixed[h_i], fixed[w_i]) != tuple(size):
        log.warning(
            "the artifact has a fixed %sx%s input; --input-size %sx%s ignored", fixed[h_i], fixed[w_i], *size
        )
    fixed[0] = fixed[0] or 1
    fixed[h_i] = fixed[h_i] or hw[0]
    fixed[w_i] = fixed[w_i] or hw[1]
    return [int(d or 3) for d in fixed]


def _random_input(shape: list[int], dtype: Any) -> np.ndarray:
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
    return rng.random(shape, dtype=np.float32).astype(dt)


# ---------------------------------------------------------------- compute: MACs and the CPU's peak


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-sr" / "peak.json"


def measure_peak_gmacs(threads: int, *, n: int = 2048, repeats: int = 5, use_cache: bool = True) -> float:
    """This CPU's FP32 peak in GMAC/s at ``threads``: the best of ``repeats`` (n x n) @ (n x n) torch
    matrix products (n³ MACs each). Measured once, then cached in ``~/.cache/edge-sr/peak.json`` keyed
    by CPU model and thread count."""
    import torch

    key = f"{cpu_model()}|threads={threads}"
    cache = _cache_file()
    data: dict[str, Any] = {}
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if key in data:
                return float(data[key]["gmacs_per_s"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            data = {}
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.rand(n, n), torch.rand(n, n)
        torch.mm(a, b)  # warm-up: thread pool and packing buffers
        best = min(_time(lambda: torch.mm(a, b), repeats, 0))
    finally:
        torch.set_num_threads(old)
    peak = n**3 / (best / 1e3) / 1e9
    if use_cache:
        data[key] = {"gmacs_per_s": peak, "n": n, "torch": torch.__version__, "measured": time.time()}
        try:
            from edge_sr.io_utils import atomic_path

            with atomic_path(cache) as tmp:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        except Exception as e:  # a read-only home must not fail a profile
            log.warning("cannot cache the peak in %s (%s)", cache, e)
    return peak


def count_macs(model: Any, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass at an (height, width) input: every Conv2d /
    ConvTranspose2d / Linear counted from its weight and output shape (activations and pixel shuffle are
    free by this convention). Runs the model once on a (1, 3, height, width) input with forward hooks."""
    import torch
    from torch import nn

    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            # (N, Cout, Ho, Wo) outputs, each Cin/groups * kh * kw MACs
            total += out.numel() * m.weight[0].numel()
        elif isinstance(m, nn.ConvTranspose2d):
            # each input pixel scatters Cout/groups * kh * kw MACs per input channel
            total += inp[0].numel() * m.weight[0].numel()
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def model_gmacs(path: Path, manifest: dict[str, Any] | None, height: int, width: int) -> float | None:
    """GMACs of the deploy-form model behind an artifact (from its manifest's arch / args) or a
    checkpoint (from its metadata), at (height, width). None when the architecture is unknown."""
    from edge_sr.models import create_model
    from edge_sr.reparam import has_fusable, reparameterize

    if path.suffix == ".safetensors":
        from edge_sr.models.checkpoint import read_metadata

        manifest = read_metadata(path)
    if not manifest or not manifest.get("arch"):
        return None
    args = dict(manifest.get("args") or manifest.get("config") or {})
    if "scale" in manifest:
        args.setdefault("scale", int(manifest["scale"]))
    try:
        model = create_model(manifest["arch"], **args).eval()
    except Exception as e:  # an unknown arch from a foreign manifest: say so, profile the rest
        log.warning("cannot rebuild %s to count MACs (%s)", manifest.get("arch"), e)
        return None
    if has_fusable(model):
        model = reparameterize(model)
    try:
        from edge_sr.models.stats import macs_per_lr_pixel

        return macs_per_lr_pixel(model, args.get("scale", 4)) * height * width / 1e9
    except ImportError:
        return count_macs(model, height, width) / 1e9


# ---------------------------------------------------------------- the entry point


def profile(
    path: str | os.PathLike[str],
    *,
    input_size: tuple[int, int] | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    ops: bool = True,
    peak: bool = True,
) -> ProfileReport:
    """Time an artifact (``.pte``, ``.onnx``, ``.tflite``, ``.mlpackage`` on macOS) or a checkpoint.

    Args:
        path: the artifact; its manifest (``<artifact>.json``) gives the layout and the architecture.
        input_size: (height, width) for dynamic-shape artifacts and checkpoints; fixed-shape artifacts
            run at their own size. Default 180x320.
        runs: timed runs after ``warmup`` untimed ones.
        threads: CPU threads (default: all cores).
        ops: also collect the per-operator breakdown.
        peak: compare the achieved GMAC/s with this CPU's measured FP32 peak.
    """
    from edge_sr.profile_backends import BACKENDS

    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such artifact")
    if runs < 1 or warmup < 0:
        raise ConfigError(None, f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    kind = artifact_kind(p)
    manifest = read_manifest(p) if kind != "checkpoint" else None
    threads = int(threads or os.cpu_count() or 1)
    layout = (manifest or {}).get("layout")
    if input_size is None and manifest:
        input_size = _manifest_size(manifest)
        spec = manifest.get("input_shape") or {}
        if input_size is None and spec.get("mode") == "dynamic":  # the default size, inside the range
            input_size = (
                max(spec["min"], min(DEFAULT_INPUT[0], spec["max"])),
                max(spec["min"], min(DEFAULT_INPUT[1], spec["max"])),
            )
    with _PeakRSS() as mem:
        timed = BACKENDS[kind](p, input_size, runs, warmup, threads, ops, layout)
    mn, med, p90 = latency_stats(timed.times_ms)
    nhwc = timed.input_shape[-1] == 3 and timed.input_shape[1] != 3
    h, w = timed.input_shape[1:3] if nhwc else timed.input_shape[2:4]
    report = ProfileReport(
        artifact=str(p),
        kind=kind,
        device=f"{cpu_model()} (this machine)",
        input_shape=timed.input_shape,
        threads=threads,
        runs=runs,
        warmup=warmup,
        min_ms=mn,
        median_ms=med,
        p90_ms=p90,
        mean_ms=float(np.mean(timed.times_ms)),
        peak_rss_mb=mem.peak_mb,
        model_rss_mb=None
        if mem.base_mb is None or mem.peak_mb is None
        else max(0.0, mem.peak_mb - mem.base_mb),
        size_bytes=artifact_size(p),
        ops=timed.ops,
        ops_note=timed.ops_note,
    )
    report.gmacs = model_gmacs(p, manifest, h, w)
    if report.gmacs is not None:
        report.gmacs_per_s = report.gmacs / (med / 1e3)
        if peak:
            report.peak_gmacs_per_s = measure_peak_gmacs(threads)
            report.percent_of_peak = 100.0 * report.gmacs_per_s / report.peak_gmacs_per_s
    return report


def _manifest_size(manifest: dict[str, Any]) -> tuple[int, int] | None:
    """The (height, width) a manifest fixes: ``input_shape`` ``{"mode": "fixed", "size": [h, w]}``, or the
    first of ``enumerated`` sizes; None for a dynamic range (the caller's size, or the default, is used)."""
    spec = manifest.get("input_shape")
    if not isinstance(spec, dict):
        return None
    if spec.get("mode") == "fixed" and len(spec.get("size") or ()) == 2:
        return int(spec["size"][0]), int(spec["size"][1])
    if spec.get("mode") == "enumerated" and spec.get("sizes"):
        return int(spec["sizes"][0][0]), int(spec["sizes"][0][1])
    return None
