"""`verify_video` / `edge-sr verify … --data <sequence set>`: a streaming artifact against its float model."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from seqdata import make_sequence_set

from edge_sr.cli import main
from edge_sr.errors import ConfigError
from edge_sr.evaluate_video import EagerVideo, evaluate_video
from edge_sr.models import create_model, save_checkpoint
from edge_sr.verify import DRIFT_WARMUP, Thresholds, drift, verify_video


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """Tiny models on tiny frames: one thread (two threads contending on a shared two-core machine cost 5x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("rrn_edge", scale=4, n_c=4, n_b=1).eval()


def _perturbed(model: torch.nn.Module, eps: float) -> torch.nn.Module:
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * eps)
    return m


class _Offset:
    """A stand-in artifact: the float model's output plus ``offset(t)`` at frame t of each clip."""

    def __init__(self, model: torch.nn.Module, offset, precision: str = "fp16") -> None:  # noqa: ANN001
        self.inner, self.offset, self.precision = EagerVideo(model), offset, precision
        self.scale, self.colors, self.path, self.kind = 4, 3, None, "torch"

    def stream(self):  # noqa: ANN201
        inner, offset = self.inner.stream(), self.offset

        class S:
            t = 0

            def push(self, frame: np.ndarray) -> np.ndarray:
                y = inner.push(frame) + offset(S.t)
                S.t += 1
                return y

        return S()


def test_vid4_two_clips_report(data_root: Path, model: torch.nn.Module) -> None:
    vid4 = data_root / "video" / "Vid4"
    art = EagerVideo(_perturbed(model, 1e-4), precision="fp16")
    n = DRIFT_WARMUP + 4  # the fewest frames that give drift figures
    rep = verify_video(art, reference=model, data=vid4, clips=["city", "walk"], frames=n, record=False)
    assert [(c.name, c.frames) for c in rep.clips] == [("city", n), ("walk", n)]
    ev = evaluate_video(model, vid4, clips=["walk"], frames=n)  # the float model as `edge-sr eval` scores it
    assert rep.clips[1].psnr_float == pytest.approx(ev.psnr, abs=1e-9)
    assert rep.clips[1].ssim_float == pytest.approx(ev.ssim, abs=1e-9)
    for c in rep.clips:
        v = c.frame_psnr_vs_float
        assert len(v) == n and c.worst_frame == int(np.argmin(v)) and c.worst_psnr_vs_float == min(v)
        assert c.psnr_vs_float == pytest.approx(np.mean(v)) and 50 < c.psnr_vs_float < 120
        assert 0 < c.max_abs_diff < 1e-2 and abs(c.psnr - c.psnr_float) < 0.05
        assert not c.drift and abs(c.drift_halves) < 1.0
    assert rep.precision == "fp16" and rep.passed and not rep.drift
    assert rep.psnr == pytest.approx(np.mean([c.psnr for c in rep.clips]))


def test_drift_is_flagged_and_fails(tmp_path: Path, model: torch.nn.Module) -> None:
    root = make_sequence_set(tmp_path / "seq", {"alpha": (10, 32, 32), "beta": (3, 32, 32)})
    steady = verify_video(_Offset(model, lambda t: 1e-3), reference=model, data=root, record=False)
    assert steady.passed and not steady.drift  # fp16: 60 dB vs float on every frame
    assert min(steady.clips[0].frame_psnr_vs_float) >= 60.0 - 1e-6  # 1e-3 everywhere; clipping only raises it
    growing = verify_video(_Offset(model, lambda t: 1e-5 * 2.0**t), reference=model, data=root, record=False)
    alpha, beta = growing.clips
    assert alpha.drift and alpha.drift_slope == pytest.approx(-20 * math.log10(2), abs=0.5)
    assert alpha.worst_frame == 9 and not beta.drift  # 3 frames: nothing to judge after the warm-up
    assert growing.drift and not growing.passed
    assert growing.psnr_vs_float >= 50  # the precision criterion alone would pass
    lenient = verify_video(
        _Offset(model, lambda t: 1e-5 * 2.0**t), reference=model, data=root, record=False,
        thresholds=Thresholds(drift_db=100.0),
    )  # fmt: skip
    assert lenient.passed and not lenient.drift


def test_drift_figures() -> None:
    w = [90.0, 30.0][:DRIFT_WARMUP]  # the warm-up frames are left out, however far off they are
    assert drift([*w, 50, 50.2, 49.9, 50.1, 50, 50.1], 1.0) == pytest.approx((0.0, 0.0, False), abs=0.1)
    slope, halves, flagged = drift([*w, 50, 49, 48, 47, 46, 45], 1.0)
    assert flagged and slope == pytest.approx(-1.0) and halves == pytest.approx(-3.0)
    assert not drift([*w, 50, 49, 48, 47, 46, 45], 5.0)[2]
    assert not drift([*w, 50, 50, 50, 40, 48, 56], 1.0)[2]  # the halves fall but the line rises
    assert drift([*w, math.inf, math.inf, 50, 48], 1.0) == (0.0, 0.0, False)  # 2 finite frames: no figures
    assert drift([*w, 50, 50, 50], 1.0) == (0.0, 0.0, False)


def test_int8_criterion_is_the_image_one(tmp_path: Path, model: torch.nn.Module) -> None:
    root = make_sequence_set(tmp_path / "seq")
    rep = verify_video(
        EagerVideo(_perturbed(model, 3e-2), precision="int8"), reference=model, data=root, record=False
    )
    assert rep.criterion == "Y-PSNR within 0.2 dB of float"
    assert rep.passed == (rep.psnr_float - rep.psnr <= 0.2 and not rep.drift)


def test_cli_checkpoint_against_itself_passes(tmp_path: Path, model: torch.nn.Module, capsys) -> None:  # noqa: ANN001
    root = make_sequence_set(tmp_path / "seq")
    ckpt = tmp_path / "rrn.safetensors"
    save_checkpoint(model, ckpt)
    rc = main(["verify", str(ckpt), "--reference", str(ckpt), "--data", str(root), "--frames", "4", "--json"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 1
    d = json.loads(out)
    assert d["passed"] and d["precision"] == "fp32" and d["max_abs_diff"] == 0.0 and d["frames"] == 7
    assert d["psnr_vs_float"] is None  # identical frames: inf, written as null
    assert [(c["name"], c["frames"]) for c in d["clips"]] == [("alpha", 4), ("beta", 3)]
    keys = {
        "name",
        "psnr",
        "psnr_float",
        "psnr_vs_float",
        "worst_frame",
        "drift",
        "drift_slope",
        "drift_halves",
    }
    assert all(keys <= set(c) for c in d["clips"])


def test_cli_perturbed_fails_exit_1(tmp_path: Path, model: torch.nn.Module, capsys) -> None:  # noqa: ANN001
    root = make_sequence_set(tmp_path / "seq")
    ref, art = tmp_path / "ref.safetensors", tmp_path / "art.safetensors"
    save_checkpoint(model, ref)
    save_checkpoint(_perturbed(model, 1e-3), art)
    rc = main(["verify", str(art), "--reference", str(ref), "--data", str(root), "--clips", "beta"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1 and lines[1].split()[:2] == ["beta", "3"] and lines[-1].startswith("FAILED (fp32")


def test_runtime_runner_drops_in(tmp_path: Path, model: torch.nn.Module) -> None:
    from edge_sr.runtime import load

    root = make_sequence_set(tmp_path / "seq")
    art = tmp_path / "art.safetensors"
    save_checkpoint(_perturbed(model, 1e-3), art)
    via_runtime = verify_video(load(art), reference=model, data=root, record=False)
    eager = verify_video(EagerVideo(_perturbed(model, 1e-3)), reference=model, data=root, record=False)
    for a, b in zip(via_runtime.clips, eager.clips):
        np.testing.assert_allclose(a.frame_psnr_vs_float, b.frame_psnr_vs_float, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--limit", "2"], "--limit counts images"),
        (["--degradation", "BD"], "no BD x4 frames"),
    ],
)
def test_cli_bad_input_exit_2(tmp_path: Path, model: torch.nn.Module, capsys, argv, needle) -> None:  # noqa: ANN001
    root = make_sequence_set(tmp_path / "seq")
    ckpt = tmp_path / "rrn.safetensors"
    save_checkpoint(model, ckpt)
    rc = main(["verify", str(ckpt), "--reference", str(ckpt), "--data", str(root), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and needle in err, err


def test_image_reference_refused(tmp_path: Path, model: torch.nn.Module) -> None:
    root = make_sequence_set(tmp_path / "seq")
    image_model = create_model("espcn", scale=4)
    with pytest.raises(ConfigError, match="image model"):
        verify_video(EagerVideo(model), reference=image_model, data=root, record=False)


def test_cli_default_data_is_vid4(data_root: Path, tmp_path: Path, model: torch.nn.Module, capsys) -> None:  # noqa: ANN001
    ckpt = tmp_path / "rrn.safetensors"
    save_checkpoint(model, ckpt)
    rc = main(["verify", str(ckpt), "--reference", str(ckpt), "--clips", "walk", "--frames", "2", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert (
        rc == 0
        and [(c["name"], c["frames"]) for c in d["clips"]] == [("walk", 2)]
        and d["degradation"] == "BI"
    )


def test_onnx_step_artifact_end_to_end(tmp_path: Path, model: torch.nn.Module, capsys) -> None:  # noqa: ANN001
    """A real artifact: the step exported to ONNX at alpha's LR size (12x16); beta's 10x14 frames are padded to
    it, and the float model streams through the same padding, so fp32 passes on both clips."""
    from edge_sr.convert import read_manifest

    root = make_sequence_set(tmp_path / "seq")
    ckpt = tmp_path / "rrn.safetensors"
    save_checkpoint(model, ckpt)
    argv = [
        "convert",
        str(ckpt),
        "--target",
        "onnx",
        "--input-size",
        "12x16",
        "--no-verify",
        "-o",
        str(tmp_path),
    ]
    assert main([*argv, "--json"]) == 0
    art = json.loads(capsys.readouterr().out)["path"]
    rc = main(["verify", art, "--reference", str(ckpt), "--data", str(root), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["passed"] and d["precision"] == "fp32" and d["max_abs_diff"] <= 1e-4
    assert [(c["name"], c["frames"]) for c in d["clips"]] == [("alpha", 5), ("beta", 3)]
    recorded = read_manifest(art)["verification"]
    assert recorded["passed"] and [c["name"] for c in recorded["clips"]] == ["alpha", "beta"]
    # the artifact evaluated with the video protocol scores as its checkpoint does (fp32, same padding)
    scores = []
    for source in (art, str(ckpt)):
        assert main(["eval", "--data", str(root), "--scale", "4", "--checkpoint", source, "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["model"].endswith(".onnx") and scores[0]["frames"] == 8
    np.testing.assert_allclose(
        scores[0]["clips"][0]["frame_psnr"], scores[1]["clips"][0]["frame_psnr"], atol=1e-3
    )
