"""Shared fixtures and markers.

Markers (declared in pyproject.toml): ``gpu`` tests skip without CUDA, ``macos`` tests skip off macOS,
``slow`` tests skip unless ``EDGE_SR_SLOW=1`` or ``--run-slow`` is given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The data root (benchmarks/ and train/): EDGE_SR_DATA when set, else ../shared/data beside the repository.
# The library reads EDGE_SR_DATA only (edge_sr.data.data_path), so it is set here for it when unset.
DATA_ROOT = Path(os.environ.get("EDGE_SR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
if not os.environ.get("EDGE_SR_DATA") and DATA_ROOT.is_dir():
    os.environ["EDGE_SR_DATA"] = str(DATA_ROOT)

# Under pytest-xdist the workers share the cores: torch's intra-op pool in every worker sized for the whole
# machine oversubscribes it, and its spinning threads then wait on each other (a small conv measured 100x
# slower with 2 workers x 2 threads on 2 cores). Each worker gets its share; tests that time threads set
# their own count.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow") or os.environ.get("EDGE_SR_SLOW") == "1"
    skips = {
        "gpu": (not torch.cuda.is_available(), "needs a CUDA device"),
        "macos": (sys.platform != "darwin", "needs macOS"),
        "slow": (not run_slow, "slow: pass --run-slow or set EDGE_SR_SLOW=1"),
    }
    for item in items:
        for marker, (skip, reason) in skips.items():
            if skip and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root (``DATA_ROOT``: benchmarks and training images); skips when absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"test data not found at {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def device() -> torch.device:
    """CUDA when available (and not disabled with EDGE_SR_TEST_DEVICE=cpu), else the CPU."""
    want = os.environ.get("EDGE_SR_TEST_DEVICE")
    if want:
        return torch.device(want)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
