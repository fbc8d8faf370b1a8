"""Y-channel (1-colour) models through eval, upscale, convert, INT8, verify and the runtime.

Two tiny x2 models with ``colors=1``: an FSRCNN (d=8, s=4, m=1) whose first channel carries the image (identity
convs, a bilinear transposed conv) and an ECBSR (1 block x 4 channels) whose tail is scaled down so the
nearest-neighbour residual dominates: random weights elsewhere, but outputs close to an upscaled image, so
PSNR against HR and the INT8 verdict mean something. The colour protocol is MATLAB's: BT.601 ``rgb2ycbcr`` Y
into the net, Cb / Cr by the MATLAB bicubic, ``ycbcr2rgb`` back; a gray image straight in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from edge_sr.convert import ExportSpec, export
from edge_sr.convert.manifest import check_manifest, color_entry, manifest_path
from edge_sr.quantize import fp16_check, from_tensors, load_calibration, ptq
from torch import nn

from edge_sr.data.imresize import imresize
from edge_sr.data.io import DEMO_IMAGE, read_image, write_image
from edge_sr.errors import CheckpointError, ConfigError, InputError
from edge_sr.evaluate import evaluate
from edge_sr.metrics import psnr_values, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from edge_sr.models import ModelCard, card_of, create_model, save_checkpoint
from edge_sr.runtime import load
from edge_sr.upscale import matlab_bicubic, upscale_array, upscale_files
from edge_sr.verify import verify

SET5 = DATA_ROOT / "benchmarks" / "Set5"
SET14 = DATA_ROOT / "benchmarks" / "Set14"
SIZE = 32  # export / calibration input size
ALL_TARGETS = ["onnx", "pt2", "executorch", "tflite", "coreml"]
INT8_TARGETS = ["onnx", "executorch", "tflite", "coreml"]


def _fsrcnn() -> nn.Module:
    """Tiny 1-colour FSRCNN x2: channel 0 passes the image through identity convs into a bilinear x2
    transposed conv; the other channels add small random detail."""
    torch.manual_seed(0)
    m = create_model("fsrcnn", scale=2, colors=1, d=8, s=4, m=1)
    k1 = torch.tensor([0, 0, 0, 0.25, 0.75, 0.75, 0.25, 0, 0])  # bilinear x2 for the 9-tap, padding-4 deconv
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.05)
        convs = [m.first_part[0], *[c for c in m.mid_part if isinstance(c, nn.Conv2d)]]
        for conv in convs:
            k = conv.kernel_size[0] // 2
            conv.weight[0].zero_()
            conv.weight[0, 0, k, k] = 1.0
            conv.bias[0] = 0.0
        m.last_part.weight[0, 0] = torch.outer(k1, k1)
        m.last_part.bias.zero_()
    return m.eval()


def _ecbsr() -> nn.Module:
    """Tiny 1-colour ECBSR x2 (train form) whose tail adds a little to the nearest-neighbour residual."""
    torch.manual_seed(0)
    m = create_model("ecbsr_m4c16", scale=2, colors=1, blocks=1, channels=4)
    with torch.no_grad():
        for p in m.backbone[-1].parameters():
            p.mul_(0.02)
    return m.eval()


MODELS = {"fsrcnn": _fsrcnn, "ecbsr": _ecbsr}


@pytest.fixture(scope="module", params=sorted(MODELS))
def ymodel(request) -> nn.Module:
    return MODELS[request.param]()


class _BicubicY(nn.Module):
    """A 1-colour x2 'model' that is MATLAB's bicubic, recording what it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return matlab_bicubic(x, 2).float()


def _bicubic_y() -> nn.Module:
    m = _BicubicY()
    return ModelCard(
        arch="bicubic_y", args={"scale": 2, "colors": 1}, scale=2, form="deploy", colors=1
    ).attach(m)


def _reference_rgb(model: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """The Y protocol written out with numpy: (H, W, 3) float RGB -> (2H, 2W, 3) float RGB, unclipped."""
    ycc = rgb_to_ycbcr(rgb, peak=1.0)
    with torch.no_grad():
        y = model(torch.from_numpy(ycc[..., 0]).float()[None, None])[0, 0].double().numpy()
    return ycbcr_to_rgb(np.concatenate([y[..., None], imresize(ycc[..., 1:], 2.0)], -1), peak=1.0)


def _image(h: int = 40, w: int = 36, seed: int = 0) -> np.ndarray:
    """A smooth (h, w, 3) float32 RGB picture (gradients, a ring) with a little noise."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    ring = 0.5 + 0.5 * np.cos(9 * np.hypot(xx - 0.5, yy - 0.4))
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * ring, 0.8 - 0.5 * yy], -1)
    img += np.random.default_rng(seed).normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- colour


def test_ycbcr_is_matlab_and_bicubic_is_imresize() -> None:
    # MATLAB: rgb2ycbcr(uint8([255 0 0; 255 255 255; 0 0 0])) before rounding
    ycc = rgb_to_ycbcr(np.array([[255.0, 0, 0], [255, 255, 255], [0, 0, 0]]))
    assert np.allclose(ycc, [[81.481, 90.203, 240.0], [235, 128, 128], [16, 128, 128]], atol=1e-9)
    x = np.random.default_rng(0).random((5, 7, 3))
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(x, peak=1.0), peak=1.0) - x).max() < 1e-12
    assert np.allclose(rgb_to_ycbcr(x * 255)[..., 0], rgb_to_y(x * 255))
    t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    assert np.abs(matlab_bicubic(t, 3)[0].numpy().transpose(1, 2, 0) - imresize(x, 3.0)).max() < 1e-12


# ---------------------------------------------------------------------------------------------- eval


def test_eval_feeds_y_and_scores_y(tmp_path: Path) -> None:
    """The model sees the unrounded Y of the LR image (a gray image's values straight) and is scored on
    its own rounded output against the HR's Y (gray values)."""
    rgb_hr = np.round(_image(48, 40) * 255).astype(np.uint8)
    gray_hr = np.round(_image(48, 40, seed=1)[..., 1] * 255).astype(np.uint8)
    (tmp_path / "HR").mkdir()
    write_image(tmp_path / "HR" / "a_rgb.png", rgb_hr)
    write_image(tmp_path / "HR" / "b_gray.png", gray_hr)
    m = _bicubic_y()
    res = evaluate(tmp_path, 2, m, lr="imresize")
    rgb_lr, gray_lr = imresize(rgb_hr, 0.5), imresize(gray_hr, 0.5)
    assert np.array_equal(m.seen[0][0, 0].numpy(), (rgb_to_y(rgb_lr) / 255).astype(np.float32))
    assert np.array_equal(m.seen[1][0, 0].numpy(), (gray_lr / 255).astype(np.float32))
    sr = np.round(np.clip(imresize(rgb_to_y(rgb_lr) / 255, 2.0), 0, 1) * 255)
    assert res.images[0].psnr == pytest.approx(psnr_values(sr, rgb_to_y(rgb_hr), crop_border=2), abs=1e-9)
    sr_g = np.round(np.clip(imresize(gray_lr / 255, 2.0), 0, 1) * 255)
    assert res.images[1].psnr == pytest.approx(
        psnr_values(sr_g, gray_hr.astype(float), crop_border=2), abs=1e-9
    )
    assert res.model == "bicubic_y"


def test_eval_bicubic_on_y_scores_the_published_bicubic_rows(data_root) -> None:
    # Set5 x2 33.66 dB, Set14 x2 30.24 dB (the bicubic rows of the SR tables)
    y5 = evaluate(SET5, 2, _bicubic_y())
    assert y5.psnr == pytest.approx(evaluate(SET5, 2, "bicubic").psnr, abs=0.05)
    assert y5.psnr == pytest.approx(33.66, abs=0.05)
    y14 = evaluate(SET14, 2, _bicubic_y())  # bridge.png is gray: straight in, scored on gray values
    assert y14.psnr == pytest.approx(30.24, abs=0.1)


def test_eval_set5_y_models(data_root, ymodel) -> None:
    res = evaluate(SET5, 2, ymodel)
    assert res.model == card_of(ymodel).arch and len(res.images) == 5
    assert 28.0 < res.psnr < 40.0 and 0.8 < res.ssim <= 1.0
    with pytest.raises(CheckpointError, match="x2 model"):
        evaluate(SET5, 3, ymodel)


# ---------------------------------------------------------------------------------------------- upscale


def test_upscale_rgb_photo_y_through_the_net_chroma_bicubic(ymodel, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"  # a 96x80 crop of the bundled photo (the face)
    write_image(photo, read_image(DEMO_IMAGE, native=True).rgb[40:136, 88:168])
    out = tmp_path / "photo_x2.png"
    rep = upscale_files([photo], out, checkpoint=ymodel, tile=40, tile_overlap=8, progress=False)
    assert rep.exit_code == 0 and rep.scale == 2 and rep.files[0].tiles > 1
    got = read_image(out, native=True)
    assert got.rgb.shape == (192, 160, 3) and not got.was_gray and got.bit_depth == 8
    src = read_image(photo).rgb
    ref = _reference_rgb(ymodel, src)
    v = got.rgb.astype(np.float64)
    assert np.abs(v - np.round(np.clip(ref, 0, 1) * 255)).max() <= 1  # tiles meet without a seam
    # chroma is MATLAB bicubic of Cb / Cr (where the RGB result was not clipped)
    inside = ((ref > 0.002) & (ref < 0.998)).all(-1)
    chroma = rgb_to_ycbcr(v)[..., 1:]
    want = imresize(rgb_to_ycbcr(src.astype(np.float64) * 255)[..., 1:], 2.0)
    assert inside.mean() > 0.5 and np.abs(chroma - want)[inside].max() <= 0.6
    # a checkpoint of the same model upscales the same
    ckpt = save_checkpoint(ymodel, tmp_path / "y.safetensors")
    upscale_files([photo], tmp_path / "b.png", checkpoint=ckpt, tile=40, tile_overlap=8, progress=False)
    assert np.array_equal(read_image(tmp_path / "b.png", native=True).rgb, got.rgb)
    with pytest.raises(CheckpointError, match="x2 model"):
        upscale_files([photo], tmp_path / "c.png", checkpoint=ymodel, scale=4, progress=False)


def test_upscale_gray_16bit_and_alpha(tmp_path: Path) -> None:
    m = _fsrcnn()
    img = _image(24, 20)
    gray = img[..., 1]
    write_image(tmp_path / "g.png", gray)
    g_in = read_image(tmp_path / "g.png", native=True)
    assert g_in.was_gray
    upscale_files([tmp_path / "g.png"], tmp_path / "g_x2.png", checkpoint=m, progress=False)
    g_out = read_image(tmp_path / "g_x2.png", native=True)
    with torch.no_grad():  # gray straight in
        want = m(torch.from_numpy(g_in.rgb[..., 0] / 255.0).float()[None, None])[0, 0].numpy()
    assert g_out.was_gray and np.abs(g_out.rgb[..., 0] - np.round(np.clip(want, 0, 1) * 255)).max() <= 1
    # 16-bit RGBA: 16-bit RGB from the Y protocol, alpha kept (bicubic)
    alpha = np.linspace(0, 1, 24 * 20, dtype=np.float32).reshape(24, 20)
    write_image(tmp_path / "a.png", img, alpha, bit_depth=16)
    upscale_files([tmp_path / "a.png"], tmp_path / "a_x2.png", checkpoint=m, progress=False)
    a_out = read_image(tmp_path / "a_x2.png")
    assert a_out.bit_depth == 16 and a_out.alpha is not None and a_out.rgb.shape == (48, 40, 3)
    ref = np.clip(_reference_rgb(m, read_image(tmp_path / "a.png").rgb), 0, 1)
    assert np.abs(a_out.rgb - ref).max() < 2e-4
    rgb_arr, a_arr = upscale_array(img, m, scale=2, alpha=alpha, bit_depth=16)
    assert rgb_arr.dtype == np.uint16 and a_arr is not None and a_arr.shape == (48, 40)


# ---------------------------------------------------------------------------------------------- convert


def test_manifest_color_entry_is_checked(tmp_path: Path) -> None:
    ok = {"args": {"scale": 2, "colors": 1}, "color": color_entry(1)}
    check_manifest(ok, "m.json")
    check_manifest({"args": {}, "color": color_entry(3)}, "m.json")
    hostile = [
        ({"color": {**color_entry(1), "colors": 2}}, "color"),
        ({"color": {**color_entry(1), "model_input": "RGB"}}, "color"),
        ({"color": {**color_entry(1), "conversion": "BT.709"}}, "color"),
        ({"color": {**color_entry(1), "colors": True}}, "color"),
        ({"color": {**color_entry(1), "extra": 1}}, "color"),
        ({"color": "Y"}, "color"),
        ({"color": [1]}, "color"),
        ({"args": {"colors": 1}, "color": color_entry(3)}, "color.colors"),
        ({"args": {"colors": "1"}}, "args.colors"),
        ({"args": {"colors": 4}}, "args.colors"),
    ]
    for data, field in hostile:
        with pytest.raises(InputError, match=f"manifest '{field}'"):
            check_manifest(data, "m.json")
    # a tampered manifest beside an artifact is refused on load, in one line
    art = export(_fsrcnn(), "pt2", tmp_path, ExportSpec(input_size=(16, 16)))
    mp = manifest_path(art.path)
    data = json.loads(mp.read_text())
    data["color"]["chroma"] = "nearest"
    mp.write_text(json.dumps(data))
    with pytest.raises(InputError, match="manifest 'color'"):
        load(art.path)


def _runtime_vs_library(model: nn.Module, path: Path) -> tuple[float, float]:
    """(max abs difference, PSNR) between ``runtime.load(path).run(rgb)`` and ``upscale_array`` of the float
    model (16-bit, so the library's rounding stays below 1e-5), on an image the artifact takes in tiles."""
    img = _image(40, 36)
    lib, _ = upscale_array(img, model, scale=2, bit_depth=16)
    got = np.clip(load(path).run(img), 0, 1)
    d = got - lib.astype(np.float64) / 65535
    return float(np.abs(d).max()), 10 * math.log10(1 / max(float(np.mean(d**2)), 1e-20))


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_fp32_artifact_is_one_channel_runs_rgb_and_verifies(ymodel, target: str, tmp_path: Path) -> None:
    art = export(ymodel, target, tmp_path, ExportSpec(input_size=(SIZE, SIZE)))
    man = art.manifest
    assert man["color"] == color_entry(1) == json.loads(art.manifest_path.read_text())["color"]
    assert man["args"]["colors"] == 1
    runner = load(art.path)
    assert runner.colors == 1
    y = runner.forward(np.random.default_rng(0).random((1, 1, SIZE, SIZE), dtype=np.float32))
    assert y.shape == (1, 1, 2 * SIZE, 2 * SIZE)  # the artifact itself is 1-channel
    with pytest.raises(InputError):
        runner.forward(np.zeros((1, 3, SIZE, SIZE), np.float32))
    diff, _ = _runtime_vs_library(ymodel, art.path)
    assert diff < 1e-4
    gray = _image(40, 36)[..., 0]
    assert runner.run(gray).shape == (80, 72)
    rep = verify(art.path, reference=ymodel)
    assert rep.passed and rep.precision == "fp32", rep
    assert 25.0 < rep.psnr == pytest.approx(rep.psnr_float, abs=1e-3)
    assert json.loads(art.manifest_path.read_text())["verification"]["passed"] is True


def test_verify_refuses_a_reference_of_other_colours(tmp_path: Path) -> None:
    art = export(_ecbsr(), "pt2", tmp_path, ExportSpec(input_size=(16, 16)))
    rgb = create_model("ecbsr_m4c16", scale=2, blocks=1, channels=4).eval()
    with pytest.raises(ConfigError, match="colour channels"):
        verify(art.path, reference=rgb, record=False)


# ---------------------------------------------------------------------------------------------- INT8


@pytest.fixture(scope="module")
def ycalib(data_root):
    return load_calibration(SET14 / "HR", count=4, input_size=(SIZE, SIZE), scale=2, colors=1)


def test_calibration_on_y(data_root, ycalib) -> None:
    rgb = load_calibration(SET14 / "HR", count=4, input_size=(SIZE, SIZE), scale=2)
    assert ycalib.colors == 1 and ycalib.patches.shape == (4, 1, SIZE, SIZE)
    want = (rgb_to_y(rgb.patches.permute(0, 2, 3, 1).double().numpy() * 255) / 255).astype(np.float32)
    assert np.abs(ycalib.patches[:, 0].numpy() - want).max() < 1e-6
    assert ycalib.manifest_entry()["channel"] == "Y" and "channel" not in rgb.manifest_entry()
    assert rgb.with_colors(1).patches.shape[1] == 1 and rgb.with_colors(3) is rgb
    with pytest.raises(InputError):
        ycalib.with_colors(3)
    assert from_tensors(ycalib.patches).colors == 1
    # RGB patches given for a Y model: the quantizer calibrates on their Y
    got, want = fp16_check(_fsrcnn(), rgb).layers, fp16_check(_fsrcnn(), ycalib).layers
    assert want and [(r.name, r.max_abs) for r in got] == [(r.name, r.max_abs) for r in want]


@pytest.mark.parametrize(
    "target",
    [t if t != "coreml" else pytest.param(t, marks=pytest.mark.slow) for t in INT8_TARGETS],  # W8A8: ~75 s
)
def test_int8_artifact_calibrated_on_y_verifies(ymodel, ycalib, target: str, tmp_path: Path) -> None:
    art = ptq(ymodel, target, ycalib, out=tmp_path)
    man = art.manifest
    assert man["precision"] == "int8" and man["color"] == color_entry(1)
    assert man["quantization"]["calibration"]["channel"] == "Y"
    diff, p = _runtime_vs_library(ymodel, art.path)
    assert p > 40.0 and diff < 0.05, (diff, p)
    rep = verify(art.path, reference=ymodel)
    assert rep.precision == "int8" and rep.psnr_vs_float > 45.0, rep
    # the verdict is the 0.2 dB rule on Y; the image path through four int8 layers (FSRCNN) sits near it
    drop = rep.psnr_float - rep.psnr
    assert drop < 0.3 and rep.passed == (drop <= 0.2), rep
