"""`edge-sr bench`: one real cell (convert -> verify -> profile) on a tiny model, the report section, the
Pareto plot, the resume cache, and the Pareto front itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_sr.bench import Settings, bench_matrix, pareto_front

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
        settings=Settings(runs=3, warmup=1, threads=1),
    )
    res = bench_matrix(**kw)
    ok, int8 = res["rows"]
    assert ok["status"] == "ok", ok
    assert ok["psnr"] == pytest.approx(ok["psnr_float"], abs=1e-3) and ok["passed"] is True
    assert ok["median_ms"] > 0 and ok["size_bytes"] > 1000 and ok["gmacs"] > 0
    assert int8["status"].startswith(("ok", "skipped", "failed"))  # INT8 runs once quantize lands
    text = md.read_text()
    assert "keep me" in text and "<!-- matrix:begin -->" in text
    assert "| tiny_x2 | onnx | fp32 | 16x16 |" in text and "Machine:" in text and "onnxruntime" in text
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
    from edge_sr.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--targets", "coremk"])
    assert "invalid choice" in capsys.readouterr().err
