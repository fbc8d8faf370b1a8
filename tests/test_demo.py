"""The demo's core (`demos/main.py`, what `make demo` runs) on a tiny model: re-parameterize, export,
verify, profile, the table, and the side-by-side picture."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from test_bench import PNG, tiny_setup

DEMO = Path(__file__).resolve().parents[1] / "demos" / "main.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("edge_sr_demo_main", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_chain_on_a_tiny_model(demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ckpt, data = tiny_setup(tmp_path)
    out = tmp_path / "demo"
    rows, skipped, deploy = demo.run_chain(
        ckpt,
        out,
        data=data,
        calib=data / "HR",
        calib_count=2,
        targets=("executorch", "coreml", "pt2"),
        precisions=("fp16", "int8"),
        input_size=(16, 16),
        runs=2,
        warmup=1,
    )
    by = {(r["target"], r["precision"]): r for r in rows}
    et = by[("executorch", "fp16")]
    assert et["passed"] is True and abs(et["loss"]) < 0.05 and et["median_ms"] > 0
    # CoreML converts and verifies here (reference execution); its latency needs macOS
    cm = by.get(("coreml", "fp16"))
    assert cm is not None and cm.get("psnr") is not None
    if sys.platform == "darwin":
        assert cm["median_ms"] > 0
    else:
        assert "median_ms" not in cm and "macOS" in cm["latency_note"]
    # the server target: FP16 runs; it has no INT8, which is listed as skipped with the reason
    assert by[("pt2", "fp16")]["passed"] is True and by[("pt2", "fp16")]["median_ms"] > 0
    assert ("pt2", "int8") not in by and any(s.startswith("pt2 int8: ") for s in skipped)
    # INT8 through the target's PT2E quantizer, calibrated on the images as LR patches
    assert ("executorch", "int8") in by, skipped
    q = by[("executorch", "int8")]
    assert q.get("psnr") is not None and q["size_bytes"] > 0
    # every (target, precision) is either a row or a skipped line with its reason
    assert len(rows) + len(skipped) == 6, skipped
    table = demo.results_table(rows)
    assert "executorch" in table and "fp16" in table and "Set5 PSNR" in table
    pic = demo.comparison_image(rows, deploy, data, out, scale=2, image="img0", crop=8)
    assert pic is not None and pic.read_bytes()[:8] == PNG
