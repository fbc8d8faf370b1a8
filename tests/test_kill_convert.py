"""kill -9 during convert / quantize never leaves an artifact under its final name.

The artifact and its manifest are written to temporary names and published by renames, so a process killed at
any moment leaves either nothing at the final path or the finished artifact with its manifest; and the next
export to the same path succeeds (stale temporaries are no obstacle).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edge_sr.models import create_model, save_checkpoint

# seconds after the start at which the child is killed: during import, tracing, conversion and writing
DELAYS = (2.0, 4.0, 6.0, 8.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors")


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_sr.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _published(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".json").exists()


@pytest.mark.parametrize(
    "verb,target,suffix",
    [("convert", "onnx", ".onnx"), ("quantize", "executorch", ".pte")],
)
def test_kill_9_leaves_nothing_under_the_final_name(tmp_path, ckpt, verb, target, suffix) -> None:
    from edge_sr.runtime import load

    out = tmp_path / f"m{suffix}"
    extra = (
        ["--calib", str(tmp_path / "calib"), "--calib-lr", "--calib-count", "2"] if verb == "quantize" else []
    )
    if verb == "quantize":
        import numpy as np
        from PIL import Image

        (tmp_path / "calib").mkdir()
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * i + 20, np.uint8)).save(tmp_path / "calib" / f"{i}.png")
    argv = [
        verb,
        str(ckpt),
        "--target",
        target,
        "--input-size",
        "32x32",
        "-o",
        str(out),
        "--no-verify",
        *extra,
    ]
    killed = 0
    for delay in DELAYS:
        proc = _start(argv)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < delay:
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
            if out.exists():  # published before the kill: then whole, with its manifest
                assert out.with_name(out.name + ".json").is_file()
                load(out)
            else:
                assert not _published(out), "a manifest without its artifact"
        else:
            assert proc.returncode == 0 and out.is_file()
        for f in (out, out.with_name(out.name + ".json")):
            f.unlink(missing_ok=True)
    assert killed >= 1, "every run finished before its kill: no kill was tested"
    # a run after the kills succeeds and publishes a loadable artifact despite any stale temporaries
    assert subprocess.run([sys.executable, "-m", "edge_sr.cli", *argv], capture_output=True).returncode == 0
    load(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")]
    assert not leftovers, f"temporaries left after a clean run: {leftovers}"
