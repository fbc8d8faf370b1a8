"""Arbitrary-scale SR (edge_sr.models.liif): LIIF / UltraSR against a transcription of the official query, official
keys and detection, batched and tiled inference, fractional-scale eval and upscale, export at a fixed output size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_sr.cli import main
from edge_sr.errors import ConfigError
from edge_sr.models import create_model, load_checkpoint, save_checkpoint
from edge_sr.models.detect import detect
from edge_sr.models.liif import LIIF, FixedSizeLIIF

TINY = {"depth": 1, "feats": 4, "hidden": (8, 8)}


def tiny(name: str = "liif_edge", **kw: object) -> LIIF:
    torch.manual_seed(0)
    m = create_model(name, **{**TINY, **kw}).eval()
    assert isinstance(m, LIIF)
    return m


# ---- the official query, transcribed from yinboc/liif models/liif.py (grid_sample, per-query concatenation)


def make_coord(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    seqs = [-1 + 1 / n + (2 / n) * torch.arange(n, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*seqs, indexing="ij"), -1)


def official_query(m: LIIF, inp: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """The official ``query_rgb`` (local ensemble, unfold, cell decode) on the whole grid, no spatial encoding."""
    feat = m.encoder((inp - 0.5) / 0.5)
    n, c, h, w = feat.shape
    feat = F.unfold(feat, 3, padding=1).view(n, c * 9, h, w)
    coord = make_coord(out_hw, inp.dtype).view(1, -1, 2)
    cell = torch.ones_like(coord)
    cell[..., 0] *= 2 / out_hw[0]
    cell[..., 1] *= 2 / out_hw[1]
    feat_coord = make_coord((h, w), inp.dtype).permute(2, 0, 1)[None]
    preds, areas = [], []
    for vx in (-1, 1):
        for vy in (-1, 1):
            c_ = coord.clone()
            c_[..., 0] += vx / h + 1e-6
            c_[..., 1] += vy / w + 1e-6
            c_.clamp_(-1 + 1e-6, 1 - 1e-6)
            g = c_.flip(-1).unsqueeze(1)
            q_feat = F.grid_sample(feat, g, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            q_coord = F.grid_sample(feat_coord, g, mode="nearest", align_corners=False)[:, :, 0].permute(
                0, 2, 1
            )
            rel = coord - q_coord
            rel[..., 0] *= h
            rel[..., 1] *= w
            rel_cell = cell.clone()
            rel_cell[..., 0] *= h
            rel_cell[..., 1] *= w
            preds.append(m.imnet(torch.cat([q_feat, rel, rel_cell], -1)))
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
    tot = torch.stack(areas).sum(0)
    areas = areas[::-1]  # the official swaps 0 <-> 3 and 1 <-> 2
    ret = sum(p * (a / tot)[..., None] for p, a in zip(preds, areas, strict=True))
    return (ret * 0.5 + 0.5).view(1, *out_hw, 3).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("lr", "out"), [((7, 9), (17, 23)), ((8, 8), (24, 24)), ((5, 7), (10, 14)), ((6, 5), (6, 5))]
)
def test_equals_the_official_query(lr: tuple[int, int], out: tuple[int, int]) -> None:
    # float64: at odd integer factors an output centre falls exactly on the last LR centre, where the official
    # float32 blend weights are set by rounding noise (all four areas are 1e-9 in exact arithmetic)
    m = tiny("liif_edsr").double()
    x = torch.rand(1, 3, *lr, dtype=torch.float64)
    with torch.no_grad():
        ref = official_query(m, x, out)
        y = m(x, size=out)
        coord = make_coord(out, torch.float64).view(1, -1, 2)
        cell = torch.tensor([2 / out[0], 2 / out[1]], dtype=torch.float64).expand_as(coord)
        pts = m.query_points(m.features(x), coord, cell).view(1, *out, 3).permute(0, 3, 1, 2)
    assert y.shape == ref.shape == (1, 3, *out)
    assert (y - ref).abs().max() < 1e-7
    assert (pts - ref).abs().max() < 1e-7


def test_spatial_encoding_changes_the_mlp_input_only() -> None:
    liif, ultra = tiny("liif_edsr"), tiny("ultrasr_edsr", spatial_freqs=3)
    assert liif.imnet.layers[0].in_features == 4 * 9 + 4
    assert ultra.imnet.layers[0].in_features == 4 * 9 + 4 * (2 * 3 + 1)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        y = ultra(x, scale=2.5)
        coord = make_coord(y.shape[-2:], torch.float32).view(1, -1, 2)
        cell = torch.tensor([2 / y.shape[-2], 2 / y.shape[-1]]).expand_as(coord)
        pts = ultra.query_points(ultra.features(x), coord, cell).view(1, *y.shape[-2:], 3).permute(0, 3, 1, 2)
    assert y.shape == (1, 3, 15, 18)
    assert (y - pts).abs().max() < 1e-5


def test_published_parameter_counts_and_official_keys() -> None:
    with torch.device("meta"):
        m = create_model("liif_edsr")
    enc = sum(p.numel() for p in m.encoder.parameters())
    mlp = sum(p.numel() for p in m.imnet.parameters())
    assert round(enc / 1e6, 2) == 1.22  # EDSR-baseline without its upsampler (LIIF's encoder)
    assert mlp == 580 * 256 + 256 + 3 * (256 * 256 + 256) + 256 * 3 + 3  # in: 64·9 + 2 + 2
    keys = m.state_dict().keys()
    assert {"encoder.sub_mean.weight", "encoder.head.0.weight", "encoder.body.0.body.0.weight"} <= keys
    assert "encoder.body.16.weight" in keys and not any(k.startswith("encoder.tail") for k in keys)
    assert sorted({k.split(".")[2] for k in keys if k.startswith("imnet.")}) == ["0", "2", "4", "6", "8"]


@pytest.mark.parametrize(
    ("name", "kw"), [("liif_edsr", {}), ("ultrasr_edsr", {"spatial_freqs": 2}), ("liif_edge", {})]
)
def test_official_layout_saved_reloaded_and_detected(tmp_path, name: str, kw: dict) -> None:
    m = tiny(name, **kw)
    path = tmp_path / "liif.pth"
    torch.save(m.state_dict(), path)
    det = detect(m.state_dict())
    assert det.arch == name and det.args["feats"] == 4 and det.args["depth"] == 1
    assert det.args.get("spatial_freqs") == m.spatial_freqs
    back = load_checkpoint(path)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(back(x, scale=1.7), m(x, scale=1.7))
    save_checkpoint(m, tmp_path / "own.safetensors")
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "own.safetensors")(x, scale=3.1), m(x, scale=3.1))


def test_official_training_wrapper_loads(tmp_path) -> None:
    m = tiny("liif_edsr")
    spec = {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline"}}, "sd": m.state_dict()}
    torch.save({"model": spec, "epoch": 1000}, tmp_path / "epoch-last.pth")
    assert load_checkpoint(tmp_path / "epoch-last.pth").edge_sr_card.arch == "liif_edsr"


def test_batched_and_tiled_inference_equal_the_plain_one() -> None:
    m = tiny("liif_edsr")
    x = torch.rand(1, 3, 30, 23)
    with torch.no_grad():
        plain = m(x, scale=2.3)
        m.query_batch = 160  # three output rows per band
        batched = m(x, scale=2.3)
        m.query_batch = 65536
        tiled = m.upscale(x, scale=2.3, tile=18)  # overlap defaults to the model's reach
        sized = m.upscale(x, size=(50, 41), tile=20, overlap=m.radius + 1)
        ref = m(x, size=(50, 41))
    assert plain.shape == (1, 3, 69, 53)
    assert (batched - plain).abs().max() < 1e-6
    assert (tiled - plain).abs().max() < 1e-6
    assert (sized - ref).abs().max() < 1e-6
    with pytest.raises(ConfigError, match="overlap"):
        m.upscale(x, scale=2.0, tile=18, overlap=m.radius - 1)


def test_edge_encoder_reparameterizes_exactly() -> None:
    from edge_sr.reparam import has_fusable, reparameterize

    m = tiny("liif_edge")
    fused = reparameterize(m)
    assert has_fusable(m) and not has_fusable(fused)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert (fused(x, scale=3.3) - m(x, scale=3.3)).abs().max() < 1e-5


def test_bad_inputs() -> None:
    m = tiny()
    with pytest.raises(ConfigError, match="not a positive factor"):
        m(torch.rand(1, 3, 8, 8), scale=-2.0)
    with pytest.raises(ConfigError, match="empty"):
        m(torch.rand(1, 3, 8, 8), scale=0.01)
    with pytest.raises(ConfigError, match="scale 9"):
        create_model("liif_edge", scale=9)


# ---- eval and upscale at fractional factors


@pytest.fixture(scope="module")
def two_images(tmp_path_factory, data_root):
    import shutil

    root = tmp_path_factory.mktemp("set5_two")
    (root / "HR").mkdir()
    for name in ("bird", "head"):
        shutil.copy(data_root / "benchmarks" / "Set5" / "HR" / f"{name}.png", root / "HR")
    return root


def test_fractional_eval_on_two_set5_images(two_images, tmp_path) -> None:
    from edge_sr.data.imresize import imresize
    from edge_sr.evaluate import evaluate, fractional_pair, read_benchmark_u8

    hr = read_benchmark_u8(two_images / "HR" / "bird.png")  # 288 x 288
    crop, lr = fractional_pair(hr, 2.5)
    assert lr.shape[:2] == (115, 115) and crop.shape[:2] == (288, 288)  # floor(288 / 2.5), round(115 · 2.5)
    crop, lr = fractional_pair(hr, 3.5)
    assert lr.shape[:2] == (82, 82) and crop.shape[:2] == (287, 287)

    def float_bicubic(x: torch.Tensor) -> torch.Tensor:  # the same resize, unrounded between passes
        h, w = x.shape[-2:]
        out = imresize(x[0].permute(1, 2, 0).double().numpy(), output_shape=(round(h * 2.5), round(w * 2.5)))
        return torch.from_numpy(out).permute(2, 0, 1)[None]

    bic = {s: evaluate(two_images, s, "bicubic") for s in (1.5, 2.5, 3.5)}
    assert bic[1.5].psnr > bic[2.5].psnr > bic[3.5].psnr > 25.0
    assert bic[2.5].lr_source == "imresize" and bic[2.5].scale == 2.5 and len(bic[2.5].images) == 2
    as_model = evaluate(two_images, 2.5, float_bicubic)
    assert abs(as_model.psnr - bic[2.5].psnr) < 0.05  # the model path crops, sizes and shaves alike
    m = tiny()
    save_checkpoint(m, tmp_path / "liif.safetensors")
    res = evaluate(two_images, 2.5, tmp_path / "liif.safetensors")
    assert res.scale == 2.5 and math.isfinite(res.psnr) and res.model == "liif.safetensors"
    integer = evaluate(two_images, 2, "bicubic")
    assert integer.scale == 2 and integer.psnr > bic[2.5].psnr


def test_cli_upscale_and_eval_at_fractional_scales(two_images, tmp_path, capsys) -> None:
    from PIL import Image

    m = tiny()
    ckpt = tmp_path / "liif.safetensors"
    save_checkpoint(m, ckpt)
    src = tmp_path / "small.png"
    Image.open(two_images / "HR" / "head.png").crop((0, 0, 60, 44)).save(src)
    out = tmp_path / "small_x2.5.png"
    code = main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "--scale", "2.5", "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["scale"] == 2.5 and rep["written"] == 1
    assert Image.open(out).size == (150, 110)
    # without --scale: the card's factor, through the same exact tiling (LR tiles of 40)
    code = main(["upscale", str(src), "-o", str(tmp_path / "x4.png"), "--checkpoint", str(ckpt), "--tile", "40",
                 "--json"])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["scale"] == 4
    assert Image.open(tmp_path / "x4.png").size == (240, 176)
    # a fixed-scale model refuses a non-integer factor in one line (exit 2)
    fixed = tmp_path / "espcn.safetensors"
    save_checkpoint(create_model("espcn", scale=2), fixed)
    assert (
        main(
            ["upscale", str(src), "-o", str(tmp_path / "x.png"), "--checkpoint", str(fixed), "--scale", "2.5"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "2.5" in err and len(err.splitlines()) == 1
    assert main(["eval", "--data", str(two_images), "--scale", "1.5", "--model", "bicubic", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scale"] == 1.5
    assert main(["eval", "--data", str(two_images), "--scale", "abc", "--model", "bicubic"]) == 2
    assert "not a scale factor" in capsys.readouterr().err


# ---- export: the encoder and a decoder for one output size


@pytest.fixture(scope="module")
def fixed() -> FixedSizeLIIF:
    return FixedSizeLIIF(tiny(), (12, 12), (30, 30))  # x2.5


# ExecuTorch and TFLite take 20-35 s each here; test_convert's zoo test converts liif_edge through every target
@pytest.mark.parametrize(
    "target",
    [
        "onnx",
        "coreml",
        pytest.param("executorch", marks=pytest.mark.slow),
        pytest.param("tflite", marks=pytest.mark.slow),
    ],
)
def test_fixed_size_export_equals_pytorch(tmp_path, fixed: FixedSizeLIIF, target: str) -> None:
    from edge_sr.convert import ExportSpec, export, target_module

    from edge_sr.runtime import load

    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = fixed.model(x, size=(30, 30)).numpy()
        assert np.abs(fixed(x).numpy() - ref).max() < 1e-6
    art = export(
        fixed, target, tmp_path / f"liif{target_module(target).SUFFIX}", ExportSpec(input_size=(12, 12))
    )
    y = load(art.path).forward(x.numpy())
    assert y.shape == (1, 3, 30, 30)
    assert np.abs(y - ref).max() < 1e-4, target


# ---- training on random factors


def test_random_scale_samples(data_root) -> None:
    from edge_sr.data.datasets import RandomScaleDataset

    ds = RandomScaleDataset([data_root / "train" / "T91"], scale_range=(1.0, 4.0), sample_q=40, patch_size=8)
    lr, q = ds[3]
    assert lr.shape == (3, 8, 8) and q.shape == (40, 7)
    cell = q[:, 2:4]
    s = 2 / cell[0, 0].item() / 8  # the HR crop is round(8·s) pixels: cell = 2 / crop
    assert 1.0 <= s <= 4.0 + 1 / 8 and torch.allclose(cell, cell[0, 0].expand_as(cell))
    assert q[:, :2].abs().max() < 1 and q[:, 4:].min() >= 0 and q[:, 4:].max() <= 1
    again, q2 = ds[3]
    assert torch.equal(lr, again) and torch.equal(q, q2)  # a pure function of (seed, index)
    factors = {round(2 / ds[i][1][0, 2].item() / 8, 3) for i in range(8)}
    assert len(factors) > 4  # a factor per sample


def test_training_on_random_scales_lowers_the_loss(tmp_path, data_root) -> None:
    import shutil

    import yaml

    from edge_sr.train import load_config, train

    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(1, 9):
        shutil.copy(data_root / "train" / "T91" / f"t{i}.png", folder)
    cfg = {
        "model": {"name": "liif_edge", "scale": 2, "args": {"depth": 1, "feats": 8, "hidden": [16]}},
        "data": {"train_folders": [str(folder)], "scale_range": [1, 4], "sample_q": 64, "patch_size": 12,
                 "batch_size": 4, "holdout": 1, "val_max_size": 32},
        "optim": {"lr": 3e-3, "schedule": "constant"},
        "iters": 60, "val_every": 60, "save_every": 60, "log_every": 1, "ema_decay": 0,
        "out_dir": str(tmp_path / "run"), "threads": 1,
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res = train(load_config(tmp_path / "cfg.yaml"), progress=False)
    assert res.step == 60 and res.best_psnr is not None
    log = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    model = load_checkpoint(next(res.run_dir.glob("*.safetensors")))
    with torch.no_grad():
        assert model(torch.rand(1, 3, 10, 10), scale=3.3).shape == (1, 3, 33, 33)


def test_the_shipped_config_loads() -> None:
    from pathlib import Path

    from edge_sr.train import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "liif_edge.yaml")
    assert cfg.model.name == "liif_edge" and cfg.data.scale_range == [1.0, 4.0] and cfg.data.sample_q == 2304


@pytest.mark.slow  # 15-30 s here; the decoder is test_fixed_size_export_equals_pytorch's, the encoder EDSR's convs
def test_edsr_encoder_with_spatial_encoding_exports_at_x3_5(tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    m = tiny("ultrasr_edsr", spatial_freqs=3)
    x = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(x, size=(35, 49)).numpy()
    art = export(
        FixedSizeLIIF(m, (10, 14), (35, 49)), "onnx", tmp_path / "u.onnx", ExportSpec(input_size=(10, 14))
    )
    assert art.manifest["outputs"][0]["shape"] == [1, 3, 35, 49]
    assert np.abs(load(art.path).forward(x.numpy()) - ref).max() < 1e-4


def test_cli_convert_for_one_output_size(tmp_path, capsys) -> None:
    """``edge-sr convert --output-size``: one artifact per output size, checked against PyTorch; refusals."""
    ckpt = tmp_path / "liif_edge.safetensors"
    save_checkpoint(tiny("liif_edge"), ckpt)
    argv = ["convert", str(ckpt), "--target", "onnx", "--input-size", "12x16", "--output-size", "30x40",
            "-o", str(tmp_path / "a"), "--json"]  # fmt: skip
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["output_size"] == [30, 40] and obj["verify"]["output_size"] == [30, 40]
    assert obj["verify"]["passed"] and obj["verify"]["max_abs_diff"] < 1e-4
    manifest = json.loads(open(obj["manifest"]).read())
    assert manifest["outputs"][0]["shape"][-2:] == [30, 40]
    bad = [(["--dynamic", "8:32"], "--dynamic"), (["--output-size", "0x10"], "positive")]
    for extra, match in bad:
        base = ["convert", str(ckpt), "--target", "onnx", "-o", str(tmp_path / "b")]
        size = [] if extra[0] == "--dynamic" else ["--input-size", "12x16"]
        extra = extra if extra[0] != "--dynamic" else [*extra, "--output-size", "30x40"]
        assert main([*base, *size, *extra]) == 2
        assert match in capsys.readouterr().err
    fixed_ckpt = tmp_path / "ecbsr.safetensors"
    save_checkpoint(create_model("ecbsr_m4c8", scale=2), fixed_ckpt)
    assert (
        main(["convert", str(fixed_ckpt), "--target", "onnx", "--output-size", "30x40", "-o", str(tmp_path)])
        == 2
    )
    assert "arbitrary-scale" in capsys.readouterr().err
    assert not list((tmp_path / "b").glob("*.onnx"))
