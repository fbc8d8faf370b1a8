"""`edge-sr explain`: LAM on networks with a known receptive field, completeness, forms, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edge_sr.cli import main
from edge_sr.errors import ConfigError, InputError
from edge_sr.explain import explain, gini
from edge_sr.explain.lam import gaussian_blur
from edge_sr.models import create_model, save_checkpoint


def conv_stack(depth: int, act: type[nn.Module] | None = nn.Tanh) -> nn.Module:
    """``depth`` 3x3 convs (zero padding), scale 1: the input receptive field of a pixel is ±depth."""
    torch.manual_seed(depth)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Conv2d(3, 3, 3, padding=1))
        if act is not None and i < depth - 1:
            layers.append(act())
    return nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 32, 32, generator=g)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval()
    folder = tmp_path_factory.mktemp("explain")
    ckpt = save_checkpoint(model, folder / "tiny.safetensors")
    rng = np.random.default_rng(0)
    img = np.kron(rng.random((3, 3, 3)), np.ones((6, 6, 1)))  # 18x18, smooth blocks
    png = folder / "lr.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(png)
    return model, ckpt, png


def test_blur_keeps_constants_and_sigma_zero_is_identity(image) -> None:
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat, atol=1e-6)
    assert torch.equal(gaussian_blur(image[None], 0.0), image[None])
    assert gaussian_blur(image[None], 1.5).std() < image.std()


def test_gini() -> None:
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.eye(1, 100).ravel()) == pytest.approx(0.99)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_attribution_outside_the_receptive_field_is_exactly_zero(image, depth: int) -> None:
    x, y, w, h = 14, 12, 4, 4
    rep = explain(conv_stack(depth), image, box=(x, y, w, h), steps=8)
    amap = rep.maps["float"].map
    inside = np.zeros_like(amap, dtype=bool)
    inside[y - depth : y + h + depth, x - depth : x + w + depth] = True
    assert np.all(amap[~inside] == 0.0)
    # the receptive field is used up to its edge
    assert amap[y - depth, x : x + w].sum() > 0 and amap[y + h + depth - 1, x : x + w].sum() > 0


def test_di_grows_with_depth(image) -> None:
    dis = [explain(conv_stack(d), image, box=(14, 14, 4, 4), steps=8).maps["float"].di for d in (1, 2, 4, 6)]
    assert dis == sorted(dis) and len(set(dis)) == len(dis), dis


def test_completeness_error_falls_with_steps(image) -> None:
    net = conv_stack(3)
    gaps = [explain(net, image, box=(10, 10, 8, 8), steps=s, sigma_max=3.0).maps["float"] for s in (2, 8, 32)]
    errs = [g.completeness_gap for g in gaps]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3, errs
    a = gaps[-1]
    assert a.signed.sum() == pytest.approx(a.f_image - a.f_baseline, rel=1e-3)
    # linear in its input: the path integral is exact at any step count
    lin = explain(conv_stack(3, act=None), image, box=(10, 10, 8, 8), steps=2).maps["float"]
    assert lin.completeness_gap < 1e-4


def test_forms_deploy_equals_float_and_int8_runs(tiny) -> None:
    model, _, png = tiny
    rep = explain(model, png, box=(8, 8, 8, 8), compare=("float", "deploy", "int8", "fp16"), steps=8)
    ref = rep.maps["float"].map
    assert np.abs(rep.diff("deploy")).max() <= 1e-4 * max(1.0, float(ref.max()))
    for form in ("int8", "fp16"):
        m = rep.maps[form]
        assert np.isfinite(m.map).all() and 0 < m.di <= 100
        assert np.abs(rep.diff(form)).sum() < 0.5 * ref.sum()  # close to float, not equal
    d = rep.to_dict()
    assert set(d["maps"]) == {"float", "deploy", "int8", "fp16"} and d["scale"] == 2
    assert any("int8" in n for n in rep.notes)


def test_bad_inputs(tiny, tmp_path) -> None:
    model, _, png = tiny  # 18x18 LR -> 36x36 output
    with pytest.raises(InputError, match="not inside"):
        explain(model, png, box=(30, 30, 16, 16))
    with pytest.raises(ConfigError, match="smaller than the scale"):
        explain(model, png, box=(4, 4, 1, 1))
    with pytest.raises(ConfigError, match="unknown form"):
        explain(model, png, compare=("int4",))
    art = tmp_path / "m.onnx"
    art.write_bytes(b"not a model")
    with pytest.raises(InputError, match="no gradients"):
        explain(art, png)


def test_artifact_is_explained_through_its_source(tiny, tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    model, ckpt, png = tiny
    art = export(model, "pt2", tmp_path, ExportSpec(input_size=(18, 18)), source=ckpt)
    rep = explain(art.path, png, box=(8, 8), steps=4)
    assert list(rep.maps) == ["float", "deploy"] and rep.notes


def test_cli_json_png_and_bad_inputs(tiny, tmp_path, capfd) -> None:
    _, ckpt, png = tiny
    out = tmp_path / "lam.png"
    capfd.readouterr()
    argv = [
        "explain",
        str(ckpt),
        str(png),
        "--box",
        "8,8,8,8",
        "--steps",
        "4",
        "--compare",
        "float",
        "deploy",
    ]
    assert main([*argv, "-o", str(out), "--json"]) == 0
    stdout = capfd.readouterr().out.splitlines()
    assert len(stdout) == 1
    obj = json.loads(stdout[0])
    assert obj["box"] == {"x": 8, "y": 8, "w": 8, "h": 8} and set(obj["maps"]) == {"float", "deploy"}
    assert out.is_file() and Image.open(out).format == "PNG"
    for bad in (["--box", "40,40"], ["--box", "2,2,1,1"], ["--box", "1,2,3"]):
        assert main(["explain", str(ckpt), str(png), *bad, "--json"]) == 2
        o, e = capfd.readouterr()
        assert o == "" and len(e.strip().splitlines()) == 1, e
    nograd = tmp_path / "m.tflite"
    nograd.write_bytes(b"x")
    assert main(["explain", str(nograd), str(png)]) == 2
    assert len(capfd.readouterr().err.strip().splitlines()) == 1
