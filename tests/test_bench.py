"""`edge-sr bench`: one real matrix cell per precision (convert -> verify -> profile) on a tiny model, the
report section, the Pareto plot, the resume cache, the Pareto front, the data default, and the `--json`
object of the cheap kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_sr.bench import Settings, bench_matrix, pareto_front
from edge_sr.cli import main
from edge_sr.errors import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_setup(root: Path, scale: int = 2) -> tuple[Path, Path]:
    """A tiny ECBSR checkpoint and a two-image benchmark folder (HR/ + LR_bicubic/X<s>/)."""
    from edge_sr.data.imresize import imresize
    from edge_sr.data.io import write_image
    from edge_sr.models import create_model, save_checkpoint

    ckpt = save_checkpoint(
        create_model("ecbsr_m4c8", scale=scale, blocks=1, channels=4), root / "tiny_x2.safetensors"
    )
    rng = np.random.default_rng(0)
    for i in range(2):
        yy, xx = np.mgrid[0:32, 0:32] / 32.0
        hr = (
            np.stack([np.sin(6 * yy + i), np.cos(5 * xx), yy * xx], -1) * 0.4
            + 0.5
            + rng.normal(0, 0.02, (32, 32, 3))
        )
        hr8 = (np.clip(hr, 0, 1) * 255).round().astype(np.uint8)
        write_image(root / "data" / "HR" / f"img{i}.png", hr8)
        write_image(root / "data" / "LR_bicubic" / f"X{scale}" / f"img{i}.png", imresize(hr8, 1 / scale))
    return ckpt, root / "data"


def test_pareto_front() -> None:
    pts = [(10.0, 30.0), (5.0, 29.0), (20.0, 31.0), (12.0, 29.5), (5.0, 28.0), (30.0, 30.5)]
    # sorted by latency; a point stays when no faster point has at least its PSNR
    assert pareto_front(pts) == [1, 0, 2]


def test_bench_one_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ckpt, data = tiny_setup(tmp_path)
    md, png = tmp_path / "docs" / "BENCHMARKS.md", tmp_path / "docs" / "pareto.png"
    md.parent.mkdir()
    md.write_text("# Benchmarks\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    kw = dict(
        models=[str(ckpt)],
        targets=["onnx"],
        precisions=["fp32", "int8"],
        input_sizes=[(16, 16)],
        data=str(data),
        out=md,
        plot=png,
        workdir=tmp_path / "work",
        settings=Settings(runs=3, warmup=1, threads=1, calib=str(data / "HR"), calib_count=2),
    )
    res = bench_matrix(**kw)
    ok, int8 = res["rows"]
    assert ok["status"] == "ok", ok
    assert ok["psnr"] == pytest.approx(ok["psnr_float"], abs=1e-3) and ok["passed"] is True
    assert ok["median_ms"] > 0 and ok["size_bytes"] > 1000 and ok["gmacs"] > 0
    assert int8["status"] == "ok", int8
    assert int8["size_bytes"] > 0 and int8["median_ms"] > 0 and int8["passed"] is not None
    assert abs(int8["psnr_loss"]) < 3  # INT8 of an untrained tiny net: near its float model
    for row in (ok, int8):
        for key in ("percent_of_theoretical_peak", "percent_of_measured_peak"):
            assert row[key] is None or 0 < row[key] <= 100
    text = md.read_text()
    assert "keep me" in text and "<!-- matrix:begin -->" in text
    assert "| tiny_x2 | onnx | fp32 | 16x16 |" in text and "| tiny_x2 | onnx | int8 | 16x16 |" in text
    assert "Machine:" in text and "onnxruntime" in text and "Command: `edge-sr bench matrix`" in text
    assert png.read_bytes()[:8] == PNG
    cache = json.loads(md.with_suffix(".cache.json").read_text())
    assert any(v["artifact_sha256"] == ok["artifact_sha256"] for v in cache.values())

    # resume: the finished cell is not profiled again
    import edge_sr.profile

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("cached cell re-profiled")

    monkeypatch.setattr(edge_sr.profile, "profile", boom)
    again = bench_matrix(**{**kw, "precisions": ["fp32"]})
    assert again["rows"][0]["median_ms"] == ok["median_ms"]


def test_bench_cli_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "matrix", "--targets", "coremk"]) == 2
    err = capsys.readouterr().err
    assert "coremk" in err and "executorch" in err  # the choices come from edge_sr.convert.TARGETS


def test_matrix_needs_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --data and no EDGE_SR_DATA: a one-line error saying what to pass, before any cell runs."""
    monkeypatch.delenv("EDGE_SR_DATA", raising=False)
    with pytest.raises(ConfigError, match="EDGE_SR_DATA"):
        bench_matrix(targets=["onnx"], precisions=["fp32"], out=None, plot=None, workdir=tmp_path)


def test_bench_reparam_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "B.md"
    argv = ["bench", "reparam", "--models", "ecbsr_m4c8", "--input-size", "8x12", "--runs", "1"]
    assert main([*argv, "--cpu-time", "--out", str(md), "--json"]) == 0
    out = capfd.readouterr().out.strip().splitlines()
    assert len(out) == 1  # exactly one JSON object
    obj = json.loads(out[0])
    (row,) = obj["rows"]
    assert row["name"] == "ecbsr_m4c8" and row["params_deploy"] < row["params_train"] and row["speedup"] > 0
    text = md.read_text()
    assert "<!-- reparam:begin -->" in text and "Machine:" in text
    assert "Command: `edge-sr bench reparam --models ecbsr_m4c8 --runs 1 --input-size 8x12 --cpu-time" in text


def test_bench_collapse_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _, data = tiny_setup(tmp_path)
    md = tmp_path / "B.md"
    argv = ["bench", "collapse", "--model", "ecbsr_m4c8", "--steps", "2", "--batch", "2", "--patch", "8"]
    argv += ["--data", str(data / "HR"), "--val", str(data), "--out", str(md), "--json"]
    assert main(argv) == 0
    obj = json.loads(capfd.readouterr().out)
    assert obj["multi_branch_ms"] > 0 and obj["collapsed_ms"] > 0 and obj["speedup"] > 0
    assert obj["collapsed_psnr"] > 10 and obj["multi_branch_psnr"] > 10
    assert "<!-- train-collapsed:begin -->" in md.read_text()


def test_bench_quantize_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ckpt, data = tiny_setup(tmp_path)
    md = tmp_path / "B.md"
    argv = ["bench", "quantize", str(ckpt), "--targets", "onnx", "--input-size", "16x16", "--latency", "no"]
    argv += [
        "--benchmarks",
        str(tmp_path),
        "--sets",
        "data",
        "--calib",
        str(data / "HR"),
        "--calib-count",
        "2",
    ]
    assert main([*argv, "--qat-iters", "0", "--out", str(md), "--section", "q", "--json"]) == 0
    # onnxruntime's calibration prints through sys.stdout, which capfd replaces (in a real run the CLI sends
    # it to stderr): the JSON object is the last line
    obj = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    variants = {r["variant"]: r for r in obj["rows"]}
    assert set(variants) == {"float", "fp16", "int8-ptq"}  # onnx has no weight-only mode and no PT2E QAT
    for r in variants.values():
        assert r["note"] == "" and r["size_bytes"] > 0 and "data" in r["psnr"]
    assert variants["float"]["psnr"]["data"] == pytest.approx(
        variants["float"]["psnr_float"]["data"], abs=1e-3
    )
    assert obj["latency"] == {} and "| ecbsr_m4c8 x2 | onnx | int8-ptq |" in md.read_text()


def test_bench_gpu_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the benchmark would run")
    assert main(["bench", "gpu", "--json"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "CUDA" in err.err and len(err.err.strip().splitlines()) == 1


def test_bench_gpu_image_code_path_on_cpu(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """The heavy-image GPU benchmark's own code path, on the CPU with tiny configurations: every tile of the
    job is run at each precision, the markdown table has a row per model and precision with the FP32 ratio."""
    md = tmp_path / "B.md"
    argv = ["bench", "gpu", "--device", "cpu", "--tiny", "--job-size", "24", "--tile", "16", "--overlap", "4",
            "--batch", "3", "--models", "srformer", "esrt", "--out", str(md), "--json"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("srformer", "fp32"), ("srformer", "fp16"), ("esrt", "fp32"), ("esrt", "fp16"),
    ]  # fmt: skip
    assert all(r["tiles"] == 4 and r["size"] == 24 and r["device"] == "cpu" for r in rows)
    text = md.read_text()
    assert "| srformer | fp16 | 16 | 3 | 4 |" in text and "| esrt | fp32 |" in text and "1.00x" in text


def test_zoo_table_groups_each_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edge-sr bench zoo``: per scale, every bundled tier (in order of cost), then one bicubic row and the
    published rows; each bundled model above bicubic on both sets. Two tiers at x2 and one at x3 (the
    bundled files), Set5 standing in for Set14 to keep the test short."""
    import re

    from conftest import DATA_ROOT

    import edge_sr.bench.zoo as zoo
    from edge_sr.bench.zoo import zoo_report
    from edge_sr.weights import bundled_checkpoints

    every = bundled_checkpoints()
    subset = {"ecbsr_m4c16": {s: every["ecbsr_m4c16"][s] for s in (2, 3)}}
    if "ecbsr_m10c32" in every:
        subset["ecbsr_m10c32"] = {2: every["ecbsr_m10c32"][2]}
    monkeypatch.setattr(zoo, "bundled_checkpoints", lambda: subset)
    data = tmp_path / "benchmarks"
    data.mkdir()
    (data / "Set5").symlink_to(DATA_ROOT / "benchmarks" / "Set5")
    (data / "Set14").symlink_to(DATA_ROOT / "benchmarks" / "Set5")
    out = zoo_report(data, out=tmp_path / "ZOO.md", command="edge-sr bench zoo")
    rows = [
        r
        for r in out.read_text().splitlines()
        if r.startswith("| ") and not r.startswith(("| model", "| ---"))
    ]
    bundled = subset
    scales = sorted({s for by in bundled.values() for s in by})
    firsts = [r.split(" | ")[1] for r in rows]
    assert sorted(set(firsts), key=firsts.index) == [f"x{s}" for s in scales]  # grouped, in order
    for s in scales:
        group = [r for r in rows if r.split(" | ")[1] == f"x{s}"]
        assert sum(r.startswith("| bicubic |") for r in group) == 1
        bic = [float(x) for x in re.findall(r"(\d+\.\d+) / 0\.\d+", next(r for r in group if "bicubic" in r))]
        for r in group:
            if r.startswith("| **"):
                psnr = [float(x) for x in re.findall(r"\*\*(\d+\.\d+) / ", r)]
                assert len(psnr) == 2 and psnr[0] > bic[0] and psnr[1] > bic[1]
        assert sum(r.startswith("| **") for r in group) == sum(s in by for by in bundled.values())
    tiers = [r.split(" ")[1].strip("*") for r in rows if r.startswith("| **") and r.split(" | ")[1] == "x2"]
    assert tiers == sorted(subset, key=lambda a: a != "ecbsr_m4c16")  # the cheaper tier first


def test_bench_speed_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`edge-sr bench speed`: every variant timed in every cell, the INT8 artifact's Set5 loss, the summary's
    ratios from the same medians, and the ExecuTorch per-layer classes matching the model's convs."""
    import torch

    from edge_sr.bench.speed import conv_macs, mosaic
    from edge_sr.models import load_checkpoint
    from edge_sr.reparam import reparameterize

    ckpt, data = tiny_setup(tmp_path)
    md = tmp_path / "B.md"
    variants = ["torch eager fp32", "executorch fp32", "executorch int8", "onnxruntime fp32"]
    variants += ["onnxruntime, no graph opt. fp32"]
    argv = ["bench", "speed", str(ckpt), "--sizes", "16x16", "--threads", "1", "--runs", "2"]
    argv += ["--runs-large", "1", "--variants", *variants, "--data", str(data), "--calib", str(data / "HR")]
    argv += ["--calib-count", "2", "--workdir", str(tmp_path / "work"), "--out", str(md), "--json"]
    assert main(argv) == 0
    obj = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    (m,) = obj["models"]
    assert set(m["median_ms"]) == {"16x16@1"}
    for cell in m["median_ms"].values():
        assert set(cell) == set(variants) and all(v > 0 for v in cell.values())
    assert m["loss_db"]["torch eager fp32"] == 0.0 and abs(m["loss_db"]["executorch fp32"]) < 0.01
    assert m["loss_db"]["onnxruntime, no graph opt. fp32"] == m["loss_db"]["onnxruntime fp32"]
    assert isinstance(m["loss_db"]["executorch int8"], float)
    for row in obj["summary"]:
        ms = m["median_ms"][row["cell"]]
        assert row["eager_ms"] == ms["torch eager fp32"] and row["best"] in ms
        ratio = ms["executorch fp32"] / ms["executorch int8"]
        assert row["int8_vs_fp32 executorch"] == pytest.approx(ratio)
        assert row["int8_vs_fp32 tflite"] is None and row["int8_vs_fp32 onnxruntime"] is None  # not run
    # the per-layer classes: the tiny model's convs, those reading the image kept float in INT8
    deploy = reparameterize(load_checkpoint(ckpt))
    macs = conv_macs(deploy, (16, 16))
    fp32 = {r["class"]: r for r in m["layers"]["fp32"]}
    int8 = {r["class"]: r for r in m["layers"]["int8"]}
    assert fp32["float convolutions"]["ops"] == len(macs)
    assert fp32["float convolutions"]["gmacs"] == pytest.approx(sum(macs.values()) / 1e9)
    assert int8["int8 convolutions"]["ops"] + int8["float convolutions"]["ops"] == len(macs)
    assert int8["int8 convolutions"]["gmacs"] + int8["float convolutions"]["gmacs"] == pytest.approx(
        sum(macs.values()) / 1e9
    )
    text = md.read_text()
    assert "| executorch | int8 |" in text and "16x16@1" in text and "int8 convolutions" in text
    # a larger size's INT8 calibration is tiled from the patches
    p = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    t = mosaic(p, (6, 12))
    assert t.shape == (2, 3, 6, 12)
    assert torch.equal(t[0, :, :4, :5], p[0]) and torch.equal(t[0, :, :4, 5:10], p[1])
    assert torch.equal(t[1, :, :4, :5], p[1]) and torch.equal(t[0, :, 4:, :5], p[1, :, :2])


def test_bench_speed_video_step(tmp_path: Path, data_root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A video model in `edge-sr bench speed`: its step timed per frame with the state fed back, eager and on
    each runtime; the loss on Vid4 against the float stream; the ExecuTorch step's layer classes against the
    step's convs (every conv int8 in the INT8 step)."""
    import torch

    from edge_sr.bench.speed import conv_macs
    from edge_sr.models import create_model, save_checkpoint
    from edge_sr.models.stream import Stream

    if not (data_root / "video" / "Vid4" / "GT").is_dir():
        pytest.skip("no video data")
    torch.manual_seed(0)
    model = create_model("rrn_edge", scale=4, n_c=4, n_b=1).eval()
    ckpt = save_checkpoint(model, tmp_path / "rrn_tiny_x4.safetensors")
    md = tmp_path / "B.md"
    variants = ["torch eager fp32", "executorch fp32", "executorch int8", "onnxruntime fp32"]
    argv = ["bench", "speed", str(ckpt), "--sizes", "32x32", "720x1280", "--threads", "1", "--runs", "2"]
    argv += [
        "--variants",
        *variants,
        "--video-data",
        str(data_root / "video" / "Vid4"),
        "--video-frames",
        "1",
    ]
    argv += ["--video-calib", str(data_root / "video" / "clips" / "cockatoo.mp4")]
    argv += ["--workdir", str(tmp_path / "work"), "--out", str(md), "--json"]
    assert main(argv) == 0
    obj = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    (m,) = obj["models"]
    assert m["quality"] == "Vid4" and set(m["median_ms"]) == {"32x32@1"}  # the step at the first size only
    assert set(m["median_ms"]["32x32@1"]) == set(variants) and all(
        v > 0 for v in m["median_ms"]["32x32@1"].values()
    )
    assert m["loss_db"]["torch eager fp32"] == 0.0 and abs(m["loss_db"]["executorch fp32"]) < 0.01
    assert abs(m["loss_db"]["onnxruntime fp32"]) < 0.01 and isinstance(m["loss_db"]["executorch int8"], float)
    macs = conv_macs(model, (32, 32), run=lambda: Stream(model).push(torch.zeros(1, 3, 32, 32)))
    assert m["gmacs"] == {"32x32": pytest.approx(sum(macs.values()) / 1e9)}
    int8 = {r["class"]: r for r in m["layers"]["int8"]}
    assert "float convolutions" not in int8 and int8["int8 convolutions"]["ops"] == len(macs)
    assert int8["int8 convolutions"]["gmacs"] == pytest.approx(sum(macs.values()) / 1e9)
    (row,) = obj["summary"]
    ms = m["median_ms"]["32x32@1"]
    assert row["int8_vs_fp32 executorch"] == pytest.approx(ms["executorch fp32"] / ms["executorch int8"])
    text = md.read_text()
    assert "| runtime | precision | Vid4 loss (dB) | 32x32@1 |" in text and "a video step" in text


def test_bench_speed_unknown_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "speed", "--variants", "tflite fp64", "--out", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown variant 'tflite fp64'" in err[0]


def test_speed_workdir_reuses_an_artifact_only_with_the_current_int8_scheme(tmp_path: Path) -> None:
    from edge_sr.convert import target_module
    from edge_sr.convert.manifest import sha256_path

    from edge_sr.bench.speed import _reusable

    src, art = tmp_path / "m.safetensors", tmp_path / "onnx_int8_8x8.onnx"
    src.write_bytes(b"weights")
    art.write_bytes(b"program")
    scheme = target_module("onnx").quant_scheme("qdq")

    def manifest(scheme_: str | None) -> bool:
        made = {"target": "onnx", "source": {"sha256": sha256_path(src)}, "artifact_sha256": sha256_path(art)}
        if scheme_ is not None:
            made["quantization"] = {"scheme": scheme_, "mode": "qdq"}
        (tmp_path / (art.name + ".json")).write_text(json.dumps(made))
        return _reusable(art, src)

    assert manifest(None) and manifest(scheme)
    assert not manifest(scheme.replace("7-bit", "8-bit"))  # made with an older scheme: made again
    assert manifest(scheme)
    src.write_bytes(b"other weights")  # the manifest names the old weights
    assert not _reusable(art, src)
