"""The built wheel holds every package (including the top-level convert/ and quantize/) and the package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the import path it installs as (pyproject.toml's package-dir mapping).
MAPPING = {"edge_sr": "edge_sr", "convert": "edge_sr/convert", "quantize": "edge_sr/quantize"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    for name in [*MAPPING, "pyproject.toml", "README.md", "LICENSE"]:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.exists():
            shutil.copy2(p, src / name)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp),
        str(src),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (whl,) = tmp.glob("edge_sr-*.whl")
    return zipfile.ZipFile(whl)


def _source_files(pattern: str) -> list[tuple[Path, str]]:
    """(source file, path inside the wheel) for every file matching ``pattern`` under the mapped folders."""
    out = []
    for folder, target in MAPPING.items():
        for f in sorted((ROOT / folder).rglob(pattern)):
            rel = f.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts and not any(part.startswith(".") for part in rel.parts):
                out.append((f, f"{target}/{rel.as_posix()}"))
    return out


def test_every_package_directory_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packages = [(f.parent, w.rsplit("/", 1)[0]) for f, w in _source_files("__init__.py")]
    assert {"edge_sr", "edge_sr/convert", "edge_sr/quantize", "edge_sr/cli", "edge_sr/models"} <= {
        p for _, p in packages
    }
    missing = [p for _, p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"package directories missing from the wheel (add them to pyproject.toml): {missing}"


def test_every_python_module_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    # Catches a nested folder of modules under convert/ or quantize/ that no packages= entry lists.
    names = set(wheel.namelist())
    missing = [w for _, w in _source_files("*.py") if w not in names]
    assert not missing, f"modules missing from the wheel: {missing}"


def test_package_data_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    data = _source_files("*.png") + _source_files("*.safetensors") + _source_files("py.typed")
    assert any(w.startswith("edge_sr/assets/") for _, w in data), "no bundled demo image found in the sources"
    wanted = [
        w for _, w in data if w.startswith(("edge_sr/assets/", "edge_sr/weights/")) or w.endswith("py.typed")
    ]
    missing = [w for w in wanted if w not in names]
    assert not missing, f"package data missing from the wheel: {missing}"


def test_console_script_is_declared(wheel: zipfile.ZipFile) -> None:
    ep = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "edge-sr = edge_sr.cli:main" in wheel.read(ep).decode()
