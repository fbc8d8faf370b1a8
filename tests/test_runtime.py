"""edge_sr.runtime: dispatch on the file, layout / int8 I/O from the manifest, tiling of fixed-shape artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_sr.convert import ExportSpec, export

from edge_sr.errors import InputError, RuntimeBackendError
from edge_sr.models import create_model, save_checkpoint
from edge_sr.runtime import Runner, TorchBackend, load


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval()


@pytest.fixture(scope="module")
def onnx_fixed(tmp_path_factory, model):
    return export(model, "onnx", tmp_path_factory.mktemp("rt") / "m.onnx", ExportSpec(input_size=(16, 16)))


def _eager(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_load_dispatches_on_suffix(onnx_fixed, tmp_path, model) -> None:
    r = load(onnx_fixed.path)
    assert r.kind == "onnx" and r.scale == 2 and r.precision == "fp32"
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    t = load(ckpt)
    assert t.kind == "torch" and t.scale == 2
    with pytest.raises(InputError):
        load(tmp_path / "missing.onnx")
    (tmp_path / "weird.bin").write_bytes(b"x")
    with pytest.raises(RuntimeBackendError, match="unknown artifact kind"):
        load(tmp_path / "weird.bin")


def test_run_hwc_image_and_batch(onnx_fixed, model) -> None:
    r = load(onnx_fixed.path)
    img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    y = r.run(img)
    assert y.shape == (32, 32, 3)
    ref = _eager(model, img.transpose(2, 0, 1)[None].copy())[0].transpose(1, 2, 0)
    assert np.abs(y - ref).max() <= 1e-5
    batch = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    assert np.abs(r.run(batch) - _eager(model, batch)).max() <= 1e-5
    u8 = (img * 255).astype(np.uint8)
    assert r.run(u8).shape == (32, 32, 3)
    with pytest.raises(InputError):
        r.run(np.zeros((4, 4)))


def test_fixed_shape_artifact_is_tiled(onnx_fixed, model) -> None:
    r = load(onnx_fixed.path)
    assert not r.accepts(40, 28) and r.tile_size() == (16, 16)
    x = np.random.default_rng(2).random((1, 3, 40, 28), dtype=np.float32)
    y = r.run(x, overlap=4)
    # three 3x3 convs: a 3-pixel receptive radius fits inside the 4-pixel overlap, so tiling is seamless
    assert y.shape == (1, 3, 80, 56)
    assert np.abs(y - _eager(model, x)).max() <= 1e-5
    small = np.random.default_rng(3).random((10, 12, 3), dtype=np.float32)  # padded up to the tile
    assert r.run(small, overlap=4).shape == (20, 24, 3)


def test_checkpoint_runner_matches_model(tmp_path, model) -> None:
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    x = np.random.default_rng(4).random((1, 3, 12, 12), dtype=np.float32)
    assert np.abs(load(ckpt).run(x) - _eager(model, x)).max() <= 1e-6


class _Int8Backend:
    """Stands in for an int8-I/O artifact: dequantizes its input, runs the model, quantizes the output."""

    def __init__(self, model, qin, qout) -> None:
        self.torch = TorchBackend(model)
        self.qin, self.qout = qin, qout
        self.seen_dtype = None

    def forward(self, q: np.ndarray) -> np.ndarray:
        self.seen_dtype = q.dtype
        x = (q.astype(np.float32) - self.qin[1]) * self.qin[0]
        y = self.torch.forward(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)  # NHWC artifact
        return np.clip(np.round(y / self.qout[0]) + self.qout[1], -128, 127).astype(np.int8)


def test_int8_io_uses_manifest_scale_and_zero_point(model) -> None:
    qin, qout = (1 / 255, -128), (1.2 / 255, -110)
    manifest = {
        "precision": "int8",
        "layout": "NHWC",
        "input_shape": {"mode": "fixed", "size": [16, 16]},
        "inputs": [{"name": "input", "dtype": "int8", "quant": {"scale": qin[0], "zero_point": qin[1]}}],
        "outputs": [{"name": "output", "dtype": "int8", "quant": {"scale": qout[0], "zero_point": qout[1]}}],
    }
    backend = _Int8Backend(model, qin, qout)
    r = Runner(backend, kind="fake", manifest=manifest, scale=2, path=None)
    x = np.random.default_rng(5).random((1, 3, 16, 16), dtype=np.float32)
    y = r.forward(x)
    assert backend.seen_dtype == np.int8 and y.dtype == np.float32
    # the int8 output covers [(-128 - zp)·s, (127 - zp)·s]; within it the error budget is the input step
    # (1/255) through the model plus half an output step
    lo, hi = (-128 - qout[1]) * qout[0], (127 - qout[1]) * qout[0]
    ref = np.clip(_eager(model, x), lo, hi)
    assert np.abs(y - ref).max() <= 0.05
    manifest["inputs"][0].pop("quant")
    with pytest.raises(RuntimeBackendError, match="scale / zero point"):
        Runner(backend, kind="fake", manifest=manifest, scale=2, path=None).forward(x)


def test_coreml_runs_off_macos_through_mil(tmp_path, model) -> None:
    pytest.importorskip("edge_sr.convert.coreml_mil")
    art = export(model, "coreml", tmp_path / "m.mlpackage", ExportSpec(input_size=(16, 16)))
    r = load(art.path)
    assert r.kind == "coreml"
    x = np.random.default_rng(6).random((1, 3, 16, 16), dtype=np.float32)
    assert np.abs(r.forward(x) - _eager(model, x)).max() <= 1e-4


def test_modified_artifact_is_refused_unless_asked(onnx_fixed, tmp_path) -> None:
    import shutil

    from edge_sr.convert.manifest import manifest_path

    art = tmp_path / "m.onnx"
    shutil.copy(onnx_fixed.path, art)
    shutil.copy(onnx_fixed.manifest_path, manifest_path(art))
    assert load(art).kind == "onnx"  # a fresh artifact passes the check
    import onnx

    raw = max((t.raw_data for t in onnx.load(str(art)).graph.initializer), key=len)
    data = bytearray(art.read_bytes())
    data[bytes(data).find(raw) + len(raw) // 2] ^= 0x01  # one weight changes; still a loadable model
    art.write_bytes(bytes(data))
    with pytest.raises(RuntimeBackendError, match="sha256 does not match its manifest"):
        load(art)
    assert load(art, check_sha256=False).kind == "onnx"


def test_invalid_manifest_is_refused_by_load(onnx_fixed, tmp_path) -> None:
    import json
    import shutil

    from edge_sr.convert.manifest import manifest_path

    art = tmp_path / "m.onnx"
    shutil.copy(onnx_fixed.path, art)
    data = json.loads(onnx_fixed.manifest_path.read_text())
    manifest_path(art).write_text(json.dumps({**data, "input_shape": {"mode": "fixed", "size": "16x16"}}))
    with pytest.raises(InputError, match="manifest 'input_shape.size'"):
        load(art)
