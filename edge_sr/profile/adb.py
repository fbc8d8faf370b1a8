"""Profile an artifact on an Android device over ``adb`` with the platform's own benchmark binary, and
parse its output into the same ``ProfileReport`` as ``edge_sr.profile.profile``.

- ``.tflite``: TFLite's ``benchmark_model`` (``--graph --num_runs --warmup_runs --num_threads
  --enable_op_profiling=true --report_peak_memory_footprint=true``). It prints per-run statistics as
  ``count=.. first=.. curr=.. min=.. max=.. avg=.. std=..`` (microseconds; no median), the peak memory
  footprint, and with op profiling a "Run Order" table per operator (XNNPACK's own operators appear as
  ``Delegate/<op>`` rows when the delegate reports them).
- ``.pte``: ExecuTorch's ``executor_runner`` (``--model_path --num_executions --cpu_threads``). Recent
  runners log ``Iteration i of N: t ms`` per run (min / median / p90 come from those, the warm-up runs
  dropped); older ones only ``Model executed successfully N time(s) in T ms.`` (the mean). A runner built
  with the event tracer writes an ETDump, pulled back and read with the Inspector for per-operator times.

Every ``adb`` call that fails raises ``RuntimeBackendError`` with one line naming the step.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edge_sr.convert import target_for_path
from edge_sr.convert.manifest import size_bytes
from edge_sr.convert.target import OpTime
from edge_sr.errors import ConfigError, InputError, RuntimeBackendError
from edge_sr.profile.report import ProfileReport, latency_stats

REMOTE_DIR = "/data/local/tmp/edge-sr"
_STAT = re.compile(
    r"count=(\d+)(?: first=(-?\d+))? curr=(-?\d+)(?: min=(-?\d+) max=(-?\d+) avg=([\d.eE+-]+) std=(\d+))?"
)
_ITER = re.compile(r"Iteration (\d+) of (\d+): ([\d.]+) ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([\d.]+) ms")


def adb_base(serial: str | None, adb: str = "adb") -> list[str]:
    """``adb`` with ``-s SERIAL`` when a device is named."""
    return [adb, *(["-s", serial] if serial else [])]


def build_commands(
    kind: str,
    artifact: str,
    binary: str,
    *,
    runs: int,
    warmup: int,
    threads: int,
    remote_dir: str = REMOTE_DIR,
) -> tuple[list[list[str]], list[str], str | None]:
    """The adb steps for one profile: (setup commands, the ``adb shell`` run command, the remote ETDump
    path to pull or None). Each command is the part after ``adb [-s SERIAL]``."""
    model = f"{remote_dir}/{Path(artifact).name}"
    tool = f"{remote_dir}/{Path(binary).name}"
    setup = [
        ["shell", "mkdir", "-p", remote_dir],
        ["push", artifact, model],
        ["push", binary, tool],
        ["shell", "chmod", "+x", tool],
    ]
    etdump = None
    if kind == "tflite":
        args = [
            tool,
            f"--graph={model}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            f"--num_threads={threads}",
            "--enable_op_profiling=true",
            "--report_peak_memory_footprint=true",
        ]
    elif kind == "executorch":
        etdump = f"{remote_dir}/{Path(artifact).stem}.etdump"
        # executor_runner has no warm-up flag: run warmup + runs executions and drop the first ones
        args = [
            tool,
            f"--model_path={model}",
            f"--num_executions={warmup + runs}",
            f"--cpu_threads={threads}",
            f"--etdump_path={etdump}",
        ]
    else:
        raise ConfigError(
            artifact, f"--adb profiles .tflite (benchmark_model) and .pte (executor_runner), not {kind}"
        )
    return setup, ["shell", " ".join(shlex.quote(a) for a in args)], etdump


def _run(cmd: list[str], step: str, artifact: str, timeout: float = 600) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise RuntimeBackendError(
            artifact, f"'{cmd[0]}' not found; install Android platform-tools or put adb on PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise RuntimeBackendError(artifact, f"adb {step} timed out after {timeout:.0f} s") from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {res.returncode}"
        raise RuntimeBackendError(artifact, f"adb {step} failed: {reason}")
    return res.stdout + res.stderr


def _stat_us(line: str) -> dict[str, float] | None:
    m = _STAT.search(line)
    if not m:
        return None
    count, first, curr, mn, mx, avg, std = m.groups()
    if mn is None:  # "count=N curr=X(all same)"
        return {"count": int(count), "min": float(curr), "max": float(curr), "avg": float(curr), "std": 0.0}
    return {"count": int(count), "min": float(mn), "max": float(mx), "avg": float(avg), "std": float(std)}


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Parse ``benchmark_model`` output: ``{min_ms, mean_ms, std_ms, count, peak_mb, ops}``."""
    lines = [re.sub(r"^(INFO|WARN|WARNING|ERROR): ", "", ln.rstrip("\n")) for ln in text.splitlines()]
    # statistics lines follow "Running benchmark for at least ..." : the first is warm-up, the second regular
    stats = []
    for i, ln in enumerate(lines):
        if ln.startswith("Running benchmark for at least"):
            for nxt in lines[i + 1 : i + 4]:
                s = _stat_us(nxt)
                if s:
                    stats.append(s)
                    break
    if not stats:
        raise RuntimeBackendError(None, "no timing statistics in the benchmark_model output (did it crash?)")
    reg = stats[-1]
    out: dict[str, Any] = {
        "count": reg["count"],
        "min_ms": reg["min"] / 1e3,
        "mean_ms": reg["avg"] / 1e3,
        "std_ms": reg["std"] / 1e3,
        "peak_mb": None,
        "ops": [],
    }
    for ln in lines:
        m = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.]+)", ln)
        if m:
            out["peak_mb"] = float(m.group(1))
    out["ops"] = _op_table(lines)
    return out


def _op_table(lines: list[str]) -> list[OpTime]:
    """Rows of the "Run Order" table of the regular runs' operator profile."""
    try:
        start = next(
            i for i, ln in enumerate(lines) if "Operator-wise Profiling Info for Regular Benchmark Runs" in ln
        )
    except StopIteration:
        return []
    rows: list[tuple[str, str, float]] = []
    in_table = False
    for ln in lines[start + 1 :]:
        if "==== Run Order ====" in ln:
            in_table = True
            continue
        if "====" in ln or ln.startswith("Timings (microseconds)"):
            if in_table:
                break
            continue
        if not in_table or not ln.strip() or "[node type]" in ln:
            continue
        cols = [c.strip() for c in re.split(r"\t|\s{2,}", ln.strip()) if c.strip()]
        pct = next((i for i, c in enumerate(cols) if c.endswith("%")), None)
        if pct is None or pct < 2:
            continue
        rows.append((cols[0], cols[-1], float(cols[pct - 1])))  # node type, name, avg ms
    internal = any(name.startswith("Delegate/") for _, name, _ in rows)
    ops = []
    for typ, name, ms in rows:
        outer_delegate = "Delegate" in typ and not name.startswith("Delegate/")
        if internal and outer_delegate:
            continue  # its time is the sum of the Delegate/<op> rows: do not count it twice
        ops.append(OpTime(f"{typ} {name}", ms, outer_delegate or name.startswith("Delegate/")))
    return ops


def parse_executor_runner(text: str, warmup: int) -> dict[str, Any]:
    """Parse ``executor_runner`` output: per-iteration times (warm-up dropped) or the mean."""
    iters = [(int(m.group(1)), float(m.group(3))) for m in _ITER.finditer(text)]
    times = [t for i, t in iters if i > warmup]
    total = _TOTAL.search(text)
    if not times and not total:
        raise RuntimeBackendError(None, "no timings in the executor_runner output (did it crash?)")
    if times:
        mn, med, p90 = latency_stats(times)
        return {
            "times_ms": times,
            "min_ms": mn,
            "median_ms": med,
            "p90_ms": p90,
            "mean_ms": sum(times) / len(times),
        }
    n, ms = int(total.group(1)), float(total.group(2))  # type: ignore[union-attr]
    return {"times_ms": [], "min_ms": ms / n, "median_ms": None, "p90_ms": None, "mean_ms": ms / n}


def profile_adb(
    artifact: str | os.PathLike[str],
    *,
    binary: str | os.PathLike[str] | None,
    serial: str | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    input_size: tuple[int, int] | None = None,
    ops: bool = True,
    adb: str = "adb",
) -> ProfileReport:
    """Push ``artifact`` and ``binary`` to the device, run the benchmark, parse it into a report."""
    path = Path(artifact)
    if not path.exists():
        raise InputError(path, "no such artifact")
    if not binary or not Path(binary).is_file():
        raise ConfigError(
            binary, "--adb needs --benchmark-binary PATH: executor_runner (.pte) or benchmark_model (.tflite)"
        )
    kind = target_for_path(path) or path.suffix
    threads = int(threads or 4)
    setup, run_cmd, etdump = build_commands(
        kind, str(path), str(binary), runs=runs, warmup=warmup, threads=threads
    )
    base = adb_base(serial, adb)
    for cmd in setup:
        _run(base + cmd, " ".join(cmd[:2]) if cmd[0] == "shell" else f"push {Path(cmd[1]).name}", str(path))
    text = _run(base + run_cmd, f"shell {Path(str(binary)).name}", str(path))
    device = _device_name(base) or (serial or "adb device")
    if input_size is not None:
        note_size = f"input size fixed by the artifact ({input_size[0]}x{input_size[1]} requested)"
    else:
        note_size = None
    try:
        parsed = parse_benchmark_model(text) if kind == "tflite" else parse_executor_runner(text, warmup)
    except RuntimeBackendError as e:
        raise RuntimeBackendError(path, e.problem) from None
    report = ProfileReport(
        artifact=str(path),
        kind=kind,
        device=device,
        input_shape=[],
        threads=threads,
        runs=runs,
        warmup=warmup,
        min_ms=parsed["min_ms"],
        median_ms=parsed.get("median_ms"),
        p90_ms=parsed.get("p90_ms"),
        mean_ms=parsed["mean_ms"],
        peak_rss_mb=parsed.get("peak_mb"),
        size_bytes=size_bytes(path),
    )
    if kind == "tflite":
        report.ops = parsed["ops"] if ops else []
        report.ops_note = "benchmark_model reports min / mean / std, not median or p90"
    elif ops and etdump:
        report.ops, report.ops_note = _pull_etdump(base, etdump, str(path))
    if note_size:
        report.ops_note = "; ".join(filter(None, [report.ops_note, note_size]))
    return report


def _pull_etdump(base: list[str], remote: str, artifact: str) -> tuple[list[OpTime], str]:
    from edge_sr.convert.executorch import etdump_ops

    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / "run.etdump"
        res = subprocess.run([*base, "pull", remote, str(local)], capture_output=True, text=True)
        if res.returncode != 0 or not local.is_file():
            return (
                [],
                "no ETDump from the device (build executor_runner with the event tracer for per-op times)",
            )
        return etdump_ops(local), "operator times: ETDump from the device, median over all executions"


def _device_name(base: list[str]) -> str | None:
    try:
        res = subprocess.run(
            [*base, "shell", "getprop", "ro.product.model"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = res.stdout.strip()
    return f"{name} (adb)" if res.returncode == 0 and name else None
