"""Where the benchmark and training data live: one documented default, the ``EDGE_SR_DATA`` variable.

The data root holds ``benchmarks/`` (Set5, Set14, … each with ``HR/`` and ``LR_bicubic/``) and ``train/``
(T91, BSD200, DIV2K, …). Library code never guesses a path beside the repository: a caller passes a folder
(``--data PATH``) or the environment names the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_sr.errors import ConfigError

DATA_ENV = "EDGE_SR_DATA"
"""Environment variable naming the data root (the folder holding ``benchmarks/`` and ``train/``)."""


def data_root() -> Path:
    """The data root named by ``EDGE_SR_DATA``.

    Returns:
        The folder, which exists.

    Raises:
        ConfigError: The variable is unset or names a missing folder.
    """
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        raise ConfigError(
            None,
            f"no data folder: pass --data PATH or set {DATA_ENV} to the folder holding benchmarks/ and train/",
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        raise ConfigError(
            root,
            f"{DATA_ENV} names a missing folder; pass --data PATH or set {DATA_ENV} "
            "to the folder holding benchmarks/ and train/",
        )
    return root


def data_path(*parts: str) -> Path:
    """A path under the data root, e.g. ``data_path("benchmarks", "Set5")``.

    Args:
        *parts: Path components below the root.

    Returns:
        The path, which exists.

    Raises:
        ConfigError: ``EDGE_SR_DATA`` is unset, or the root or the requested path is missing.
    """
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise ConfigError(
            path,
            f"not found under {DATA_ENV}; pass --data PATH or set {DATA_ENV} "
            "to the folder holding benchmarks/ and train/",
        )
    return path
