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


VIDEO_DEMO = DEMO.with_name("video.py")


def test_demo_video_step_on_a_tiny_model(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The video step end to end on a tiny random RRN: the clip upscaled with its audio, the Vid4 table, the
    step exported (FP32 / FP16 / INT8), verified frame by frame and timed, the side-by-side frame."""
    import torch

    from edge_sr.models import create_model, save_checkpoint

    if not (data_root / "video" / "Vid4" / "GT").is_dir():
        pytest.skip("no video data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    ckpt = tmp_path / "rrn_tiny_x4.safetensors"
    save_checkpoint(create_model("rrn_edge", scale=4, n_c=4, n_b=1), ckpt)
    spec = importlib.util.spec_from_file_location("edge_sr_demo_video", VIDEO_DEMO)
    video = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(video)
    out = tmp_path / "demo"
    out.mkdir()
    rows = video.video_step(
        out,
        data_root,
        checkpoint=ckpt,
        input_size=(24, 32),
        frames=3,
        runs=2,
        targets=("onnx",),
        eval_frames=2,
        clip_frames=3,
        calib_clips=1,
    )
    by = {r["precision"]: r for r in rows}
    assert set(by) == {"fp32", "fp16", "int8"}
    # the FP32 step equals the float stream; FP16 / INT8 stay within their precision's rule, without drift
    assert by["fp32"]["passed"] is True and by["fp32"]["psnr_vs_float"] > 60
    assert by["int8"]["passed"] is True and not by["int8"]["drift"]
    assert all(r["fps"] > 0 for r in rows)
    assert (out / "realshort_x4.mp4").stat().st_size > 0
    assert (out / "video_side_by_side.png").read_bytes()[:8] == PNG
    assert "onnx" in video.results_table(rows, 3)
