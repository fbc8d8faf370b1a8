"""One exported transformer graph serves every input size in its range (ONNX and ExecuTorch); CoreML and
TFLite at fixed sizes.

Sizes include ones that are not multiples of the window: padding, the shifted-window mask and the crop
are all computed from the runtime H/W inside the graph.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_sr.convert.dynamic import export_dynamic

from edge_sr.errors import ConfigError, ConversionError
from edge_sr.models import create_model

TINY = {
    "swinir_classical": {
        "img_size": 16, "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8,
    },
    "hat_s": {
        "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "compress_ratio": 3,
        "squeeze_factor": 4, "num_feat": 8,
    },
}  # fmt: skip
ONNX_SIZES = [(8, 8), (13, 17), (20, 24), (33, 9), (40, 27)]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, scale=2, **TINY[name]).eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_onnx_one_graph_all_sizes(name: str, tmp_path) -> None:
    import onnxruntime as ort

    model = _model(name)
    example = torch.rand(1, 3, 20, 24)
    ep = export_dynamic(model, example, min_size=8, max_size=40)
    h, w = torch.export.Dim("h", min=8, max=40), torch.export.Dim("w", min=8, max=40)
    onx = torch.onnx.export(ep, (example,), dynamo=True, dynamic_shapes=({2: h, 3: w},), verbose=False)
    path = tmp_path / f"{name}.onnx"
    onx.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    for size in ONNX_SIZES:
        x = torch.rand(1, 3, *size)
        got = sess.run(None, {feed: x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert np.abs(got - ref).max() < 1e-4, size


@pytest.mark.parametrize("target", ["executorch", "pt2"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_one_program_all_sizes(name: str, target: str, tmp_path) -> None:
    """Through the product path: ``convert.export`` with a dynamic range, run by ``edge_sr.runtime``."""
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    model = _model(name)
    art = export(model, target, tmp_path, ExportSpec(input_size=(16, 20), dynamic=(8, 40)))
    runner = load(art.path)
    for size in [(16, 16), (13, 22), (8, 40), (33, 9)]:
        x = torch.rand(1, 3, *size)
        got = runner.forward(x.numpy())
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4, size


def test_shape_assumption_false_in_range_is_refused(tmp_path) -> None:
    """A range down to the window itself: the traced graph assumes more than one window per axis."""
    from edge_sr.convert import ExportSpec, export

    model = _model("swinir_classical")
    with pytest.raises(ConversionError, match=r"false at size 4x4 .*a dynamic range of 5:24 avoids them"):
        export(model, "executorch", tmp_path, ExportSpec(input_size=(16, 20), dynamic=(4, 24)))
    assert not list(tmp_path.iterdir())


def test_proven_asserts_are_removed() -> None:
    model = _model("hat_s")
    ep = export_dynamic(model, torch.rand(1, 3, 16, 20), min_size=8, max_size=24)
    assert any(n.target is torch.ops.aten._assert_scalar.default for n in ep.graph.nodes)
    ep = export_dynamic(model, torch.rand(1, 3, 16, 20), min_size=8, max_size=24, shape_asserts=False)
    assert not any(n.target is torch.ops.aten._assert_scalar.default for n in ep.graph.nodes)


def test_export_range_below_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="smaller than the attention window"):
        export_dynamic(_model("hat_s"), torch.rand(1, 3, 8, 8), min_size=3, max_size=16)


@pytest.mark.parametrize("target", ["coreml", "tflite"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_fixed_size_coreml_and_tflite(name: str, target: str, tmp_path) -> None:
    """CoreML (checked by the reference execution of the saved program) and TFLite at a fixed size that is
    not a multiple of the window (4): padding, mask and crop are inside the artifact."""
    from edge_sr.convert import ExportSpec, export, target_module

    from edge_sr.runtime import load

    model = _model(name)
    x = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(1))
    art = export(
        model, target, tmp_path / f"{name}{target_module(target).SUFFIX}", ExportSpec(input_size=(10, 14))
    )
    with torch.no_grad():
        ref = model(x).numpy()
    got = load(art.path).forward(x.numpy())
    assert got.shape == ref.shape == (1, 3, 20, 28)
    assert np.abs(got - ref).max() < 1e-4
