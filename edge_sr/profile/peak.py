"""This CPU's compute peak, two ways: theoretical (vector width × FMA ports × clock) and measured (a matrix
product timed until stable).

Theoretical, per core and cycle: ``lanes × ports`` multiply-accumulates, where ``lanes`` is the vector width
over the element width (AVX-512: 16 FP32 lanes, AVX2: 8, NEON: 4). The port count is an upper bound (2 on
x86 with FMA, 4 on ARM): a core with narrower datapaths (AMD Zen 4 splits AVX-512 in two 256-bit halves)
reaches less, never more. INT8 counts 4 int8 MACs per 32-bit lane per port where the CPU has a dot-product
instruction (VNNI, AVX-VNNI, ARM ``sdot``); without one, int8 kernels widen to int16 and multiply-add pairs
(x86 ``vpmaddwd``, ARM ``smlal``): 2 MACs per 32-bit lane. FP16 has twice the FP32 lanes only where the vector unit does FP16 arithmetic
(``avx512_fp16``, ARM ``asimdhp``); elsewhere FP16 programs compute in FP32 and meet the FP32 peak.

Measured: the best GMAC/s of an (n × n) @ (n × n) ``torch.mm``, repeated in rounds until the best of the
last ``k`` rounds is within ``tol`` of the best of the rounds before them. It is cached (``~/.cache/edge-sr/peak.json``) only
when the rounds settled and the machine was idle; a busy machine gets a fresh, uncached measurement.

A program above 100 % of either peak means the MAC count or the peak is wrong: :func:`percent_of` refuses
to report it (None, with a :class:`PeakWarning`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

PeakPrecision = Literal["fp32", "fp16", "int8"]
_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "avx512vnni", "asimddp", "dotprod")
_FP16_FLAGS = ("avx512_fp16", "asimdhp", "fphp")


class PeakWarning(UserWarning):
    """A throughput above 100 % of a peak: not reported."""


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` and cpufreq say about this CPU."""

    name: str
    arch: Literal["x86", "arm", "other"]
    flags: frozenset[str]
    max_mhz: float | None
    logical_cpus: int


@dataclass(frozen=True)
class Peak:
    """A peak in GMAC/s (None where it cannot be known) and how it was obtained."""

    precision: str
    gmacs_per_s: float | None
    note: str


@dataclass(frozen=True)
class MeasuredPeak:
    """A measured matrix-product peak: rounds run, whether they settled, whether the machine was busy."""

    gmacs_per_s: float
    rounds: int
    stable: bool
    busy: bool
    cached: bool


def parse_cpuinfo(text: str, *, max_khz: float | None = None, machine: str = "") -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo``.

    Args:
        text: the file's content.
        max_khz: the cpufreq maximum (``cpuinfo_max_freq``), preferred over the ``cpu MHz`` lines.
        machine: ``platform.machine()``, used when the flags do not tell the architecture.
    """
    name, flags, mhz, cpus = "", set(), [], 0
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            cpus += 1
        elif key in ("model name", "Model", "Hardware") and not name:
            name = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
        elif key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
    arch: Literal["x86", "arm", "other"] = "other"
    if "asimd" in flags or machine.lower().startswith(("aarch64", "arm")):
        arch = "arm"
    elif "sse2" in flags or machine.lower() in ("x86_64", "amd64", "i686"):
        arch = "x86"
    max_mhz = max_khz / 1e3 if max_khz else (max(mhz) if mhz else None)
    return CpuInfo(name or "unknown CPU", arch, frozenset(flags), max_mhz, max(cpus, 1))


def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (Linux files; elsewhere what ``platform`` knows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    khz = []
    for f in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            khz.append(float(f.read_text().strip()))
        except (OSError, ValueError):
            continue
    info = parse_cpuinfo(text, max_khz=max(khz) if khz else None, machine=platform.machine())
    if info.name == "unknown CPU":
        name = platform.processor() or platform.machine() or "unknown CPU"
        info = CpuInfo(name, info.arch, info.flags, info.max_mhz, max(info.logical_cpus, os.cpu_count() or 1))
    return info


def cpu_name() -> str:
    """This CPU's model name."""
    return cpu_info().name


def fp16_arithmetic(info: CpuInfo) -> bool:
    """Whether the vector unit computes in FP16 (else FP16 programs compute in FP32)."""
    return any(f in info.flags for f in _FP16_FLAGS)


def _vector_unit(info: CpuInfo) -> tuple[int, int, str] | None:
    """(vector bits, FMA ports, ISA name) of the widest unit the flags announce."""
    f = info.flags
    if info.arch == "arm":
        return 128, 4, "NEON"
    if "avx512f" in f:
        return 512, 2, "AVX-512"
    if "avx2" in f or "avx" in f:
        return 256, 2 if "fma" in f else 1, "AVX2" if "avx2" in f else "AVX"
    if "sse2" in f:
        return 128, 1, "SSE2"
    return None


def theoretical_peak(info: CpuInfo, threads: int, precision: str = "fp32") -> Peak:
    """The upper bound of ``precision`` MACs per second on ``threads`` cores (module docstring)."""
    unit = _vector_unit(info)
    if unit is None:
        return Peak(precision, None, "no known vector unit in the CPU flags")
    if not info.max_mhz:
        return Peak(precision, None, "the clock is unknown (no cpufreq maximum, no cpu MHz)")
    bits, ports, isa = unit
    lanes = bits // 32
    if precision == "int8":
        dot = next((d for d in _DOT_FLAGS if d in info.flags), None)
        per_cycle = lanes * (4 if dot else 2) * ports
        how = (
            f"4 int8 MACs per 32-bit lane ({dot})"
            if dot
            else "2 int8 MACs per 32-bit lane (no dot product: int16 multiply-add)"
        )
    elif precision == "fp16" and fp16_arithmetic(info):
        per_cycle, how = lanes * 2 * ports, "FP16 arithmetic: 2 lanes per 32 bits"
    else:
        per_cycle = lanes * ports
        how = "FP32 lanes" if precision != "fp16" else "FP32 lanes (no FP16 arithmetic in the vector unit)"
    cores = max(1, min(threads, info.logical_cpus))
    gmacs = per_cycle * cores * info.max_mhz / 1e3
    note = f"{isa} {bits}-bit, {how}, {ports} FMA ports (upper bound), {info.max_mhz:.0f} MHz, {cores} cores"
    return Peak(precision, gmacs, note)


def machine_busy(
    threads: int,
    *,
    loadavg: str | None = None,
    cpus: int | None = None,
    cpu_s: float | None = None,
    wall_s: float | None = None,
) -> bool:
    """Whether other work shares the CPUs a measurement on ``threads`` threads needs.

    Before a measurement: the 1-minute load (``/proc/loadavg``) leaves fewer than ``threads`` idle CPUs.
    After one (``cpu_s`` and ``wall_s`` given): this process got less than 80 % of ``threads`` × the wall
    time in CPU time, so something else ran on its cores.
    """
    if cpu_s is not None and wall_s is not None:
        return cpu_s < 0.8 * threads * wall_s
    if loadavg is None:
        try:
            loadavg = Path("/proc/loadavg").read_text()
        except OSError:
            return False
    cpus = cpus or os.cpu_count() or 1
    return float(loadavg.split()[0]) > max(0, cpus - threads) + 0.5


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-sr" / "peak.json"


def measure_peak(
    threads: int,
    *,
    n: int = 1024,
    k: int = 3,
    tol: float = 0.02,
    max_rounds: int = 30,
    use_cache: bool = True,
) -> MeasuredPeak:
    """This CPU's FP32 matrix-product peak in GMAC/s at ``threads`` (module docstring).

    Args:
        threads: torch intra-op threads for the measurement.
        n: the matrix side; one product is n³ MACs.
        k: rounds whose best must be within ``tol`` of the best of the earlier rounds.
        tol: relative tolerance of that agreement.
        max_rounds: give up settling after this many rounds (the result is then not cached).
        use_cache: read and write the cache.
    """
    import torch

    key = f"{cpu_name()}|threads={threads}|n={n}|torch={torch.__version__}"
    cache = _cache_file()
    data: dict = {}
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if key in data:
                e = data[key]
                return MeasuredPeak(float(e["gmacs_per_s"]), int(e["rounds"]), True, False, True)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            data = {}
    busy = machine_busy(threads)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    best: list[float] = []  # best ms of each round
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        a, b = torch.rand(n, n), torch.rand(n, n)
        torch.mm(a, b)  # warm-up: thread pool and packing buffers
        while len(best) < max_rounds:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                torch.mm(a, b)
                times.append(time.perf_counter() - t0)
            best.append(min(times))
            if len(best) > k and abs(min(best[-k:]) - min(best[:-k])) <= tol * min(best[:-k]):
                break  # the last k rounds neither beat nor miss the earlier best by more than tol
    finally:
        torch.set_num_threads(old)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    busy = busy or machine_busy(threads, cpu_s=cpu_s, wall_s=wall_s)
    stable = len(best) < max_rounds
    peak = MeasuredPeak(n**3 / min(best) / 1e9, len(best), stable, busy, False)
    if use_cache and stable and not busy:
        data[key] = {"gmacs_per_s": peak.gmacs_per_s, "rounds": peak.rounds, "measured": time.time()}
        try:
            from edge_sr.io_utils import atomic_path

            with atomic_path(cache) as tmp:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        except OSError as e:  # a read-only home must not fail a profile
            log.warning("cannot cache the peak in %s (%s)", cache, e)
    elif not stable or busy:
        log.info(
            "peak not cached: %s", "the machine is busy" if busy else f"unsettled after {len(best)} rounds"
        )
    return peak


def percent_of(gmacs_per_s: float | None, peak: float | None, what: str) -> float | None:
    """``gmacs_per_s`` as a percentage of ``peak``; None (with a :class:`PeakWarning`) above 100 %."""
    if gmacs_per_s is None or not peak:
        return None
    pct = 100.0 * gmacs_per_s / peak
    if pct > 100.0:
        warnings.warn(
            f"{pct:.0f} % of the {what} ({gmacs_per_s:.1f} of {peak:.1f} GMAC/s) is impossible: the MAC count "
            "or the peak is wrong; not reported",
            PeakWarning,
            stacklevel=2,
        )
        return None
    return pct
