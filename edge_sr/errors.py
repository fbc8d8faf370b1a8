"""One exception family for edge-sr.

Every error carries the file (or object) it is about and a one-line problem; the CLI prints
``str(err)`` and exits with code 2, without a traceback.
"""

from __future__ import annotations

import os


class EdgeSRError(Exception):
    """Base class: ``EdgeSRError(path, problem)`` prints as ``path: problem``."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.path is None else f"{self.path}: {self.problem}")


class InputError(EdgeSRError):
    """An input file or folder is missing, unreadable or of the wrong kind."""


class CheckpointError(EdgeSRError):
    """A checkpoint cannot be read, or does not match the architecture."""


class ConfigError(EdgeSRError):
    """A configuration value or option is invalid."""


class ConversionError(EdgeSRError):
    """A model cannot be exported to a target (unsupported op, precision, shape)."""


class RuntimeBackendError(EdgeSRError):
    """An artifact cannot be loaded or executed."""


class OutputError(EdgeSRError):
    """An output path cannot be written."""
