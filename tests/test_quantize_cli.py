"""`edge-sr quantize`: JSON output, QAT vs PTQ on a briefly trained model, and one-line bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT

from edge_sr.cli import main

DATA = DATA_ROOT
SET5 = DATA / "benchmarks" / "Set5"
T91 = DATA / "train" / "T91"
needs_data = pytest.mark.skipif(not (SET5 / "HR").is_dir() or not T91.is_dir(), reason="needs ../shared/data")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """ecbsr_m4c8 x2 trained for a few hundred L1 steps on T91 24px patches (collapsed, fast)."""
    from torch.utils.data import DataLoader

    from edge_sr.data import HRFolderDataset, IndexRangeSampler
    from edge_sr.models import create_model, save_checkpoint

    torch.manual_seed(0)
    m = create_model("ecbsr_m4c8", scale=2, collapsed=True)
    ds = HRFolderDataset([T91], scale=2, patch_size=24, skip_small=True, seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    for lr, hr in DataLoader(ds, batch_size=16, sampler=IndexRangeSampler(0, 150 * 16)):
        loss = (m(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for blk in m.backbone:
        blk.collapsed = False
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(m, path, args={"scale": 2})
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_data
def test_quantize_json_and_qat_keeps_or_improves_psnr(trained, tmp_path, capsys):
    common = [
        "--target",
        "executorch",
        "--calib",
        str(SET5 / "HR"),
        "--calib-count",
        "4",
        "--input-size",
        "64x64",  # fewer, larger tiles over Set5: the verify pass is most of this test's time
        "--verify-data",
        str(SET5),
        "--json",
    ]
    code, out, _ = _run(capsys, "quantize", str(trained), *common, "-o", str(tmp_path / "ptq.pte"))
    ptq = json.loads(out)
    assert set(ptq) == {"path", "manifest", "target", "precision", "size_bytes", "verify"}
    assert ptq["precision"] == "int8" and Path(ptq["path"]).is_file() and ptq["size_bytes"] > 0
    manifest = json.loads(Path(ptq["manifest"]).read_text())
    assert manifest["quantization"]["calibration"]["count"] == 4 and manifest["verification"] is not None
    assert manifest["quantization"]["float_input_layers"] == ["body.0.0", "residual"]
    code, out, _ = _run(
        capsys,
        "quantize",
        str(trained),
        *common,
        "--int8-input-layers",
        "--no-verify",  # only its manifest is checked here
        "-o",
        str(tmp_path / "all.pte"),
    )
    every = json.loads(Path(json.loads(out)["manifest"]).read_text())["quantization"]
    assert code == 0 and every["float_input_layers"] == [] and every["keep_float"] == []
    code, out, _ = _run(
        capsys,
        "quantize",
        str(trained),
        *common,
        "--qat",
        "--data",
        str(T91),
        "--iters",
        "40",
        "--lr",
        "2e-5",
        "-o",
        str(tmp_path / "qat.pte"),
    )
    qat = json.loads(out)
    assert json.loads(Path(qat["manifest"]).read_text())["quantization"]["qat"]["iters"] == 40
    drop_ptq = ptq["verify"]["psnr_float"] - ptq["verify"]["psnr"]
    drop_qat = qat["verify"]["psnr_float"] - qat["verify"]["psnr"]
    assert math.isfinite(drop_qat) and drop_qat <= drop_ptq + 0.02


@needs_data
@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--calib", "EMPTY"], "no images"),
        (["--calib", str(SET5 / "HR"), "--calib-count", "50"], "asked for 50"),
        (["--calib", str(SET5 / "HR"), "--int8-io", "--target", "onnx"], "int8 I/O is a tflite option"),
        (["--calib", str(SET5 / "HR"), "--precision", "int4"], "choose from int8, fp16"),
        (["--calib", str(SET5 / "HR"), "--qat", "--data", str(T91), "--target", "onnx"], "cannot take QAT"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_artifact(trained, tmp_path, capsys, extra, match):
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / "EMPTY") if a == "EMPTY" else a for a in extra]
    target = [] if "--target" in extra else ["--target", "executorch"]
    out = tmp_path / "out"
    code, _, err = _run(
        capsys, "quantize", str(trained), *target, *extra, "--input-size", "16x16", "-o", str(out)
    )
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
