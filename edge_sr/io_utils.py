"""Atomic file writes (every artifact and checkpoint goes to a temporary name, then is renamed), and the one
place where third-party output is kept off the results stream (:func:`tool_output_to`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from edge_sr.errors import OutputError


def ensure_writable_dir(folder: Path, hint: str = "") -> None:
    """Create ``folder`` if needed; an ``OutputError`` naming it when it cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(folder, f"cannot create the output folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(folder, "output folder is not writable" + (f"; {hint}" if hint else ""))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on failure remove it.

    Works for files and for directory artifacts (``.mlpackage``). The temporary name keeps the suffix,
    so writers that look at it (PIL, coremltools) pick the right format.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    ensure_writable_dir(parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (file or folder)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(path, "the writer produced nothing")
        if tmp.is_file():  # mkstemp made the name private (0600); give the file the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


_CONSOLE: TextIO | None = None  # the real stdout while tool output is redirected


def console() -> TextIO:
    """Where results go: the process's stdout, also while :func:`tool_output_to` redirects file descriptor 1."""
    return _CONSOLE or sys.stdout


@contextlib.contextmanager
def tool_output_to(log: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Send what converters and runtimes print to the log, at the file-descriptor level.

    Progress bars, C++ logging and stray ``print`` calls of third-party code go to fd 1 (stdout) and fd 2;
    inside this block fd 1 goes to ``log`` (a file, appended to; fd 2 too) or, when ``log`` is None, to
    stderr, where this program's log is; ``sys.stdout`` follows. :func:`console` keeps writing to the
    stdout the block started with, so a ``--json`` result stays the only thing there. Blocks nest.
    """
    global _CONSOLE
    sys.stdout.flush()
    sys.stderr.flush()
    outer, py_stdout = _CONSOLE, sys.stdout
    if outer is not None:
        _CONSOLE = outer
    elif _fileno(py_stdout) == 1:  # the process's stdout: keep a duplicate of it before fd 1 moves
        _CONSOLE = os.fdopen(os.dup(1), "w")
    else:  # already a Python-level stream (a capture, a StringIO): results keep going there
        _CONSOLE = py_stdout
    saved = os.dup(1), os.dup(2)
    f = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed in finally
    try:
        if f is not None:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        else:
            os.dup2(2, 1)
        sys.stdout = sys.stderr
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout = py_stdout
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        if f is not None:
            f.close()
        if outer is None and _CONSOLE is not py_stdout:
            _CONSOLE.close()
        _CONSOLE = outer


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
