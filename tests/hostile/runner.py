"""Run one (case, verb) of the corpus and judge it.

In-process through ``edge_sr.cli.main`` with file descriptors 1 and 2 captured and an interval timer as the
watchdog (a hang raises in the main thread); cases marked ``isolate`` run in a subprocess under a 4 GB
address-space limit and a wall-clock timeout instead. The case folder is snapshotted before and after: any
file added, removed or changed is a half-written output (for ``refuse``) or must be the expected output only
(for ``accept``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hostile.corpus import MARKER, Base, Case, argv, payload

# Lines on stderr that are third-party chatter, not edge-sr's message: warnings and C++ / absl log prefixes.
_NOISE = re.compile(r"(^\s*(WARNING|INFO|W\d{4}|I\d{4})\b)|Warning:")
# What an `accept` run may write into the case folder, per verb.
_OUTPUTS = {"upscale": {"out.png"}, "eval": set()}


class _Hang(BaseException):
    """Raised by the watchdog in the main thread; a BaseException so no ``except Exception`` swallows it."""


@dataclass
class Outcome:
    """What one run did."""

    case: str
    verb: str
    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    hang: bool = False
    traceback: bool = False
    changed: list[str] = field(default_factory=list)
    code_ran: bool = False

    def error_lines(self) -> list[str]:
        """edge-sr's error lines: its own lines on stderr, and upscale's per-file ``failed:`` lines."""
        err: list[str] = []
        in_warning = False
        for ln in self.stderr.splitlines():
            if _NOISE.search(ln):
                in_warning = True  # a warning, and the indented source line Python prints under it
            elif ln.strip() and not (in_warning and ln.startswith(" ")):
                err.append(ln)
                in_warning = False
        failed = [ln for ln in self.stdout.splitlines() if ln.startswith("failed: ")]
        return err + failed


def problems(case: Case, out: Outcome, d: Path) -> dict[str, str]:
    """The ways ``out`` misses the case's expectation, keyed by category (empty: as expected)."""
    p: dict[str, str] = {}
    if out.hang:
        p["hang"] = f"no answer within {case.timeout:.0f} s"
    if out.traceback:
        tb = [ln for ln in out.stderr.splitlines() if ln.strip()]
        p["traceback"] = tb[-1] if tb else "Traceback"
    if out.code_ran:
        p["code ran"] = f"{MARKER} was created"
    want = 2 if case.expect == "refuse" else 0
    if not out.hang and not out.traceback and out.rc != want:
        p["exit code"] = f"exit {out.rc}, expected {want}"
    allowed = set() if case.expect == "refuse" else _OUTPUTS.get(out.verb, set())
    written = [c for c in out.changed if c.split(" ", 1)[1] not in allowed]
    if written:
        p["written"] = ", ".join(written[:4]) + (f" (+{len(written) - 4})" if len(written) > 4 else "")
    if case.expect == "accept" and out.rc == 0 and out.verb in _OUTPUTS and not out.changed and allowed:
        p["no output"] = "accepted but wrote nothing"
    if case.expect == "refuse" and not out.hang and not out.traceback:
        lines = out.error_lines()
        if len(lines) != 1:
            shown = f": {' | '.join(lines[:3])[:200]}" if lines else ""
            p["message"] = f"{len(lines)} error lines{shown}"
        elif payload(case) not in lines[0] and str(d) not in lines[0]:
            p["message"] = f"does not name {payload(case)}: {lines[0][:200]}"
    return p


# ------------------------------------------------------------------------------------------------ snapshots


def snapshot(d: Path) -> dict[str, str]:
    """Every entry under ``d`` (not following links) with its type and, for regular files, its content hash."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            st = os.lstat(p)
            rel = p.relative_to(d).as_posix()
            if stat.S_ISREG(st.st_mode):
                out[rel] = "file " + hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = "fifo"
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = f"chr {os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            else:
                out[rel] = f"mode {st.st_mode:o}"
    return out


def diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """``added X`` / ``removed X`` / ``changed X`` lines."""
    lines = [f"added {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"removed {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"changed {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


# ------------------------------------------------------------------------------------------------ running


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """File descriptors 1 and 2 (and ``sys.stdout`` / ``sys.stderr`` on top of them) into two strings."""
    out_s, err_s = io.StringIO(), io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    py = sys.stdout, sys.stderr
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        os.dup2(fo.fileno(), 1)
        os.dup2(fe.fileno(), 2)
        sys.stdout = open(os.dup(1), "w", buffering=1, closefd=True)  # noqa: SIM115 - closed below
        sys.stderr = open(os.dup(2), "w", buffering=1, closefd=True)  # noqa: SIM115 - closed below
        try:
            yield out_s, err_s
        finally:
            for s in (sys.stdout, sys.stderr):
                s.flush()
                s.close()
            sys.stdout, sys.stderr = py
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for f, s in ((fo, out_s), (fe, err_s)):
                f.seek(0)
                s.write(f.read().decode(errors="replace"))


def _in_process(cmd: list[str], timeout: float) -> tuple[int | None, str, str, bool, bool]:
    from edge_sr.cli import main

    def alarm(signum: int, frame: object) -> None:
        raise _Hang()

    rc: int | None = None
    hang = tb = False
    old = signal.signal(signal.SIGALRM, alarm)
    with _captured() as (out, err):
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            rc = main(cmd)
        except _Hang:
            hang = True
        except SystemExit as e:  # argparse --help / --version only
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # what a real process would die of: a traceback, exit 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            traceback.print_exc(limit=3)
            rc, tb = 1, True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue(), hang, tb


def _limit_memory() -> None:  # in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _subprocess(cmd: list[str], timeout: float, cwd: Path) -> tuple[int | None, str, str, bool, bool]:
    code = "import sys; from edge_sr.cli import main; sys.exit(main(sys.argv[1:]))"
    try:
        r = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, cwd=cwd,
                           timeout=timeout, preexec_fn=_limit_memory)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, "", err, True, False
    return r.returncode, r.stdout, r.stderr, False, "Traceback" in r.stderr


def run_case(case: Case, verb: str, d: Path, base: Base) -> Outcome:
    """Make ``case`` in the empty folder ``d``, run ``verb`` on it and record what happened."""
    d.mkdir(parents=True, exist_ok=True)
    case.make(d, base)
    cmd = argv(case, verb, d, base)
    before = snapshot(d)
    t0 = time.perf_counter()
    if case.isolate:
        # the child's import takes a few seconds more than an in-process run
        rc, so, se, hang, tb = _subprocess(cmd, case.timeout + 15, d)
    else:
        rc, so, se, hang, tb = _in_process(cmd, case.timeout)
    seconds = time.perf_counter() - t0
    tb = tb or "Traceback" in se
    changed = diff(before, snapshot(d))
    return Outcome(case.id, verb, cmd, rc, so, se, seconds, hang, tb, changed, (d / MARKER).exists())
