"""Atomic file writes (every artifact and checkpoint goes to a temporary name, then is renamed), and the one
place where third-party output is kept off the results stream (:func:`tool_output_to`).

An output replaces only a regular file (or a CoreML package by a new one): an existing folder, a device,
a FIFO or a socket at the destination (or a symlink to one) is refused with an ``OutputError`` before
anything is written, so a typo in ``-o`` never deletes a user's folder or swaps ``/dev/null`` for a file.
A full disk, a quota, a read-only file system or a permission refused while writing is a one-line
``OutputError`` too, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from edge_sr.errors import EdgeSRError, OutputError

# Errors of the disk, not of the data: they become one-line OutputErrors naming the destination.
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system",
}
# Native writers (safetensors, C++ converters) wrap the OS error in their own exception: find its code.
_OS_ERROR_CODE = re.compile(r"os error (\d+)|errno[ =:]*(\d+)", re.IGNORECASE)
_FOLDER_ARTIFACTS = {".mlpackage": "Manifest.json"}  # suffix -> the file that proves it is one


def ensure_writable_dir(folder: Path, hint: str = "") -> None:
    """Create ``folder`` if needed; an ``OutputError`` naming it when it cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(folder, "is a file, not an output folder" + (f"; {hint}" if hint else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(folder, f"cannot create the output folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(folder, "output folder is not writable" + (f"; {hint}" if hint else ""))


def is_folder_artifact(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder that edge-sr writes as one artifact (a CoreML ``.mlpackage``)."""
    p = Path(path)
    marker = _FOLDER_ARTIFACTS.get(p.suffix.lower())
    return marker is not None and p.is_dir() and not p.is_symlink() and (p / marker).is_file()


def check_output(path: str | os.PathLike[str]) -> Path:
    """Refuse a destination that is not a regular file or absent: an ``OutputError`` naming it and why.

    A folder is refused unless it is a folder artifact of its suffix (a CoreML package, which a new
    ``.mlpackage`` may replace); a device, FIFO or socket is refused, also behind a symlink. Nothing is
    opened: a FIFO is examined with ``stat`` only, so the check never blocks.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks: what a write would reach
    except FileNotFoundError:
        return p  # absent, or a dangling symlink (the rename replaces the link itself)
    except OSError as e:
        raise OutputError(p, f"cannot examine the output ({e.strerror})") from None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return p
    link = " (through a symlink)" if p.is_symlink() else ""
    if stat.S_ISDIR(mode):
        if is_folder_artifact(p):
            return p
        raise OutputError(
            p, f"is an existing folder{link}; give a file name that is not a folder (nothing written)"
        )
    kind = (
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip
    raise OutputError(p, f"is {kind}{link}; outputs replace only regular files (nothing written)")


def disk_error(e: BaseException) -> str | None:
    """The disk problem behind ``e`` (full, quota, read-only, permission), or None when it is another error.

    Looks through ``__cause__`` / ``__context__`` and, for native writers that wrap it, the ``os error N``
    of the message.
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[cur.errno]
        if not isinstance(cur, EdgeSRError):
            for m in _OS_ERROR_CODE.finditer(str(cur)):
                code = int(m.group(1) or m.group(2))
                if code in _DISK_ERRNOS:
                    return _DISK_ERRNOS[code]
        cur = cur.__cause__ or cur.__context__
    return None


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.edge-sr-"


def _remove(p: Path) -> None:
    """Remove a temporary file or folder of ours; silent when it is gone."""
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _remove_stale_temps(path: Path, parent: Path) -> None:
    """Remove temporaries of ``path`` left by a process that died while writing (a converter's abort)."""
    prefix = _tmp_prefix(path)
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                _remove(entry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``, on failure remove it.

    Works for files and for folder artifacts (``.mlpackage``). The temporary name keeps the suffix, so
    writers that look at it (PIL, coremltools) pick the right format, and carries the writer's process
    id, so that a temporary left by a process that died is removed by the next write of the same output.

    Raises:
        OutputError: ``path`` is a folder (other than a folder artifact replaced by a new one), a device,
            a FIFO or a socket; or the disk refused the write (full, quota, read-only, permission).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    check_output(path)
    ensure_writable_dir(parent)
    _remove_stale_temps(path, parent)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=parent
        )
    except OSError as e:
        raise OutputError(path, f"cannot write ({disk_error(e) or e.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (file or folder)
    try:
        try:
            yield tmp
        except EdgeSRError as e:
            err = _about(path, tmp, e)
            if err is e:
                raise
            raise err from None
        except Exception as e:
            problem = disk_error(e)
            if problem is None:
                raise
            raise OutputError(path, f"cannot write: {problem}; nothing was written") from None
        if not tmp.exists():
            raise OutputError(path, "the writer produced nothing")
        _commit(tmp, path)
    finally:
        _remove(tmp)


def _about(path: Path, tmp: Path, e: EdgeSRError) -> EdgeSRError:
    """``e`` as the user sees it: a disk problem behind it is an ``OutputError``, and the error names
    ``path``, not the temporary (nested writers, such as a manifest written beside its artifact)."""
    problem = disk_error(e.__cause__) if e.__cause__ is not None else None
    if problem is not None:
        return OutputError(path, f"cannot write: {problem}; nothing was written")
    if e.path is not None and (e.path == str(tmp) or e.path.startswith(str(tmp) + os.sep)):
        return type(e)(path, e.problem)
    return e


def _commit(tmp: Path, path: Path) -> None:
    """Rename the finished temporary onto ``path`` (checked again: it may have changed meanwhile)."""
    check_output(path)
    old: Path | None = None
    try:
        if tmp.is_file():  # mkstemp made the name private (0600); give the file the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        if path.is_dir():  # a folder artifact replaced by a new one of the same kind: keep it until done
            if not tmp.is_dir():
                raise OutputError(path, "is an existing folder; a file cannot replace it (nothing written)")
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
    except OSError as e:
        raise OutputError(path, f"cannot write: {disk_error(e) or e.strerror}; nothing was written") from None
    finally:
        if old is not None:
            _remove(old)


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
