"""What every benchmark section states: the machine, the library versions, the command; and where the
data is when no path is given (``EDGE_SR_DATA``, see ``edge_sr.data.data_root``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from edge_sr.errors import ConfigError


def environment(threads: int | None = None) -> dict[str, Any]:
    """The machine and library versions a table was measured with."""
    from edge_sr.convert.manifest import library_versions
    from edge_sr.profile.peak import cpu_name

    env: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": library_versions(),
    }
    if threads is not None:
        env["threads"] = threads
    return env


def environment_block(env: dict[str, Any], command: str | None) -> str:
    """The lines under a section's heading: machine, versions, command."""
    vers = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    threads = f", {env['threads']} threads" if env.get("threads") else ""
    lines = [
        f"Machine: {env['cpu']}, {env['cores']} cores{threads}, {env['os']}, Python {env['python']}.",
        f"Versions: {vers}.",
    ]
    if command:
        lines.append(f"Command: `{command}`")
    return "\n".join(lines)


def data_dir(given: str | os.PathLike[str] | None, *parts: str) -> Path:
    """``given`` when a path was passed, else ``parts`` under the ``EDGE_SR_DATA`` root.

    Raises:
        ConfigError: ``given`` is missing, or neither it nor ``EDGE_SR_DATA`` names the data.
    """
    if given is not None:
        path = Path(given)
        if not path.exists():
            raise ConfigError(path, "no such data folder; pass an existing folder")
        return path
    from edge_sr.data import data_path

    return data_path(*parts)
