"""`evaluate` / `edge-sr eval`: the published bicubic table, the protocol details, and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sr.cli import main
from edge_sr.data.imresize import imresize, modcrop
from edge_sr.data.io import write_image
from edge_sr.errors import CheckpointError, InputError
from edge_sr.evaluate import evaluate
from edge_sr.metrics import psnr, ssim

# The field's published bicubic baseline (PSNR-Y / SSIM-Y, border = scale).
PUBLISHED = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


@pytest.mark.parametrize("lr", ["shipped", "imresize"])
@pytest.mark.parametrize("bench,scale", sorted(PUBLISHED))
def test_bicubic_reproduces_published_table(data_root: Path, bench: str, scale: int, lr: str) -> None:
    res = evaluate(data_root / "benchmarks" / bench, scale, "bicubic", lr=lr)  # type: ignore[arg-type]
    want_psnr, want_ssim = PUBLISHED[(bench, scale)]
    assert res.lr_source == lr and len(res.images) == (5 if bench == "Set5" else 14)
    assert abs(res.psnr - want_psnr) <= 0.02, res.psnr
    assert abs(res.ssim - want_ssim) <= 0.002, res.ssim


def _folder(tmp_path: Path) -> Path:
    """A benchmark folder without LR: one RGB and one gray image, sizes not multiples of the scale."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:38, 0:45]
    base = (np.sin(xx / 5.0) * np.cos(yy / 7.0) + 1) / 2
    hr = tmp_path / "bench" / "HR"
    write_image(
        hr / "rgb.png", np.stack([base, base[::-1], 1 - base], -1) * 0.8 + 0.2 * rng.random((38, 45, 3))
    )
    write_image(hr / "gray.png", base, gray=True)
    return tmp_path / "bench"


def test_model_protocol_gray_and_rgb(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    scale = 3

    def nearest(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")

    res = evaluate(root, scale, nearest)
    assert res.lr_source == "imresize" and [s.name for s in res.images] == ["gray", "rgb"]
    for s in res.images:  # an independent computation of the same protocol
        from PIL import Image

        hr = modcrop(np.asarray(Image.open(root / "HR" / f"{s.name}.png")), scale)
        sr = np.kron(imresize(hr, 1 / scale), np.ones((scale, scale) + (1,) * (hr.ndim - 2), np.uint8))
        assert sr.shape == hr.shape
        assert s.psnr == pytest.approx(psnr(sr, hr, crop_border=scale), abs=1e-9)
        assert s.ssim == pytest.approx(ssim(sr, hr, crop_border=scale), abs=1e-9)
    assert res.psnr == pytest.approx(np.mean([s.psnr for s in res.images]))


def test_checkpoint_and_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_sr.models import create_model, save_checkpoint

    root = _folder(tmp_path)
    ckpt = save_checkpoint(create_model("ecbsr_m4c8", scale=2), tmp_path / "m.safetensors")
    assert main(["eval", "--data", str(root), "--scale", "2", "--checkpoint", str(ckpt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scale"] == 2 and {i["name"] for i in out["images"]} == {"gray", "rgb"}
    assert set(out) >= {"psnr", "ssim", "scale", "images"}
    assert all(set(i) == {"name", "psnr", "ssim"} for i in out["images"])
    assert math.isfinite(out["psnr"]) and 0 < out["ssim"] <= 1
    # Text mode prints a table with the mean.
    assert main(["eval", "--data", str(root), "--scale", "2", "--model", "bicubic"]) == 0
    assert "mean" in capsys.readouterr().out
    # A checkpoint of another scale: exit 2 with one line.
    assert main(["eval", "--data", str(root), "--scale", "3", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "x2" in err and "m.safetensors" in err


def test_no_bundled_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_sr.weights

    monkeypatch.setattr(edge_sr.weights, "bundled_checkpoint", lambda scale=4, arch=None: None)
    with pytest.raises(CheckpointError, match="no bundled x3 model"):
        evaluate(_folder(tmp_path), 3)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="HR"):
        evaluate(tmp_path, 2, "bicubic")
    with pytest.raises(InputError, match="no such folder"):
        evaluate(_folder(tmp_path), 2, "bicubic", lr="shipped")
