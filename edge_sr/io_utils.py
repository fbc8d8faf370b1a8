"""Atomic file writes: every artifact and checkpoint goes to a temporary name, then is renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
