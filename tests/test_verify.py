"""verify(): metrics, verdicts per precision, the manifest record, and the convert / verify verbs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from edge_sr.convert import ExportSpec, export, read_manifest

from edge_sr.cli import main
from edge_sr.models import create_model, load_checkpoint, save_checkpoint
from edge_sr.runtime import Runner, TorchBackend
from edge_sr.verify import Thresholds, builtin_pairs, verify


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors")


@pytest.fixture(scope="module")
def onnx_dyn(tmp_path_factory, model):
    return export(model, "onnx", tmp_path_factory.mktemp("v") / "m.onnx", ExportSpec(dynamic=(8, 320)))


def test_fp32_artifact_passes_on_set5(data_root, onnx_dyn, model) -> None:
    rep = verify(onnx_dyn.path, reference=model, data=data_root / "benchmarks" / "Set5", limit=2)
    assert rep.passed and rep.precision == "fp32" and len(rep.images) == 2
    assert rep.max_abs_diff <= 1e-4 and abs(rep.psnr - rep.psnr_float) < 0.01
    assert 10 < rep.psnr < 60 and 0 < rep.ssim <= 1
    rec = read_manifest(onnx_dyn.path)["verification"]
    assert rec["passed"] is True and rec["images"][0]["name"] == rep.images[0].name


def test_builtin_pairs_synthetic_fallback(monkeypatch) -> None:
    import edge_sr.verify as v

    monkeypatch.setattr(v, "default_set5", lambda: None)
    pairs = builtin_pairs(3, count=2, lr_size=20)
    assert [p[0] for p in pairs] == ["synthetic0", "synthetic1"]
    assert (
        pairs[0][1].shape == (20, 20, 3)
        and pairs[0][2].shape == (60, 60, 3)
        and pairs[0][1].dtype == np.uint8
    )
    assert not np.array_equal(pairs[0][2], pairs[1][2])


def _fake_runner(model, precision: str) -> Runner:
    return Runner(TorchBackend(model), kind="fake", manifest={"precision": precision}, scale=2, path=None)


def _perturbed(model, eps: float):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(eps * torch.randn_like(p))
    return m


def test_verdicts_per_precision(model) -> None:
    pairs = builtin_pairs(2, count=2, lr_size=24)
    torch.manual_seed(1)
    slightly = _perturbed(model, 1e-4)
    rep = verify(_fake_runner(slightly, "fp32"), reference=model, data=pairs)
    assert not rep.passed and rep.max_abs_diff > 1e-4  # fp32 is strict
    assert verify(_fake_runner(slightly, "fp16"), reference=model, data=pairs).passed  # fp16: >= 50 dB
    assert verify(_fake_runner(slightly, "int8"), reference=model, data=pairs).passed  # int8: within 0.2 dB
    broken = _perturbed(model, 0.2)
    for precision in ("fp16", "int8"):
        assert not verify(_fake_runner(broken, precision), reference=model, data=pairs).passed
    loose = Thresholds(fp32_max_abs_diff=1.0)
    assert verify(_fake_runner(slightly, "fp32"), reference=model, data=pairs, thresholds=loose).passed


def test_verify_cli_json(data_root, onnx_dyn, ckpt, capsys) -> None:
    code = main(
        [
            "verify",
            str(onnx_dyn.path),
            "--reference",
            str(ckpt),
            "--data",
            str(data_root / "benchmarks" / "Set5"),
            "--limit",
            "1",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"] is True
    assert {"passed", "precision", "psnr", "psnr_float", "psnr_vs_float", "max_abs_diff", "images"} <= set(
        out
    )


def test_verify_cli_fails_with_exit_1(tmp_path, model, ckpt, capsys) -> None:
    torch.manual_seed(2)
    art = export(_perturbed(model, 0.05), "onnx", tmp_path / "bad.onnx", ExportSpec(dynamic=(8, 64)))
    assert main(["verify", str(art.path), "--reference", str(ckpt), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["passed"] is False
    assert read_manifest(art.path)["verification"]["passed"] is False


def test_convert_cli_json_with_verify(tmp_path, ckpt, capsys) -> None:
    code = main(
        ["convert", str(ckpt), "--target", "onnx", "--input-size", "24x24", "-o", str(tmp_path), "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) == {"path", "manifest", "target", "precision", "size_bytes", "verify"}
    assert out["target"] == "onnx" and out["precision"] == "fp32" and out["size_bytes"] > 0
    assert out["verify"]["passed"] is True
    assert read_manifest(out["path"])["verification"]["passed"] is True


def test_convert_cli_no_verify_fp16(tmp_path, ckpt, capsys) -> None:
    out_path = tmp_path / "m.pte"
    code = main(
        [
            "convert",
            str(ckpt),
            "--target",
            "executorch",
            "--precision",
            "fp16",
            "--dynamic",
            "8:64",
            "-o",
            str(out_path),
            "--no-verify",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["verify"] is None and out["path"] == str(out_path) and out_path.is_file()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--target", "coremk"], "unknown target"),
        (["--target", "onnx", "--precision", "int8"], "int8"),
        (["--target", "tflite", "--dynamic", "8:64"], "fixed shapes"),
    ],
)
def test_convert_cli_bad_input(tmp_path, ckpt, capsys, argv, needle) -> None:
    out = tmp_path / "out"
    assert main(["convert", str(ckpt), *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_convert_cli_missing_checkpoint(tmp_path, capsys) -> None:
    assert (
        main(["convert", str(tmp_path / "nope.safetensors"), "--target", "onnx", "-o", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "nope.safetensors" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


SET14 = DATA_ROOT / "benchmarks" / "Set14"


@pytest.mark.skipif(not (SET14 / "HR").is_dir(), reason="needs ../shared/data/benchmarks/Set14")
def test_scores_follow_the_eval_protocol(tmp_path) -> None:
    """verify's PSNR / SSIM against HR are `edge-sr eval`'s, image by image (Set14's gray `bridge` included)."""
    from edge_sr.evaluate import evaluate
    from edge_sr.runtime import from_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        create_model("espcn", scale=3, features=8, mid_features=4), tmp_path / "e.safetensors"
    )
    model = load_checkpoint(ckpt)
    rep = verify(from_model(model), reference=model, data=SET14)
    ev = evaluate(SET14, 3, ckpt)
    assert [r.name for r in rep.images] == [s.name for s in ev.images]
    for r, s in zip(rep.images, ev.images):
        assert r.psnr == pytest.approx(s.psnr, abs=1e-9) and r.ssim == pytest.approx(s.ssim, abs=1e-9), r.name
