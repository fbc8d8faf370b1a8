"""Every pixel-shuffle lowering equals nn.PixelShuffle, in torch and through converted artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_sr.convert.pixelshuffle import ConvTransposeShuffle, lower_pixel_shuffle, make_shuffle
from edge_sr.convert.spec import PIXEL_SHUFFLE_MODES
from torch import nn

from edge_sr.models import ModelCard


class _Tiny(nn.Module):
    """conv -> (N, C·s², H, W) -> pixel shuffle -> (N, C, H·s, W·s)."""

    def __init__(self, scale: int, colors: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, colors * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


@pytest.mark.parametrize("mode", PIXEL_SHUFFLE_MODES)
@pytest.mark.parametrize("scale,channels", [(2, 3), (3, 1), (4, 5)])
def test_lowering_equals_pixel_shuffle(mode: str, scale: int, channels: int) -> None:
    x = torch.randn(2, channels * scale * scale, 5, 7)
    ref = nn.PixelShuffle(scale)(x)
    out = make_shuffle(mode, scale, channels)(x)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)  # a pure permutation: bit-exact


def test_conv_transpose_is_exact_in_fp16() -> None:
    x = torch.randn(1, 12, 4, 4).half()
    assert torch.equal(ConvTransposeShuffle(2, 3)(x), nn.PixelShuffle(2)(x))


@pytest.mark.parametrize("mode", PIXEL_SHUFFLE_MODES)
def test_lower_replaces_every_shuffle_and_keeps_outputs(mode: str) -> None:
    model = _Tiny(3, colors=2).eval()
    x = torch.rand(1, 3, 6, 6)
    lowered, n = lower_pixel_shuffle(model, mode, x)
    assert n == 1
    assert not any(isinstance(m, nn.PixelShuffle) for m in lowered.modules())
    assert any(isinstance(m, nn.PixelShuffle) for m in model.modules())  # the original is untouched
    with torch.no_grad():
        assert torch.allclose(lowered(x), model(x), atol=1e-6)


ONNX_OPS = {
    "reshape": "Reshape",
    "rank4": "Reshape",
    "depth_to_space": "DepthToSpace",
    "conv_transpose": "ConvTranspose",
}


@pytest.mark.parametrize("mode", PIXEL_SHUFFLE_MODES)
def test_lowering_through_onnx(tmp_path, mode: str) -> None:
    import onnx
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    model = ModelCard("tiny", {"scale": 2}, scale=2, form="deploy").attach(_Tiny(2).eval())
    art = export(model, "onnx", tmp_path / "m.onnx", ExportSpec(input_size=(8, 8), pixel_shuffle=mode))
    proto = onnx.load(str(art.path))
    ops = {n.op_type for n in proto.graph.node}
    assert ONNX_OPS[mode] in ops
    if mode != "depth_to_space":
        assert "DepthToSpace" not in ops
    if mode == "rank4":  # every Reshape target has at most 4 dims
        shapes = onnx.shape_inference.infer_shapes(proto)
        ranks = [len(v.type.tensor_type.shape.dim) for v in shapes.graph.value_info]
        assert ranks and max(ranks) <= 4
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(load(art.path).forward(x) - ref).max() <= 1e-5


@pytest.mark.parametrize(
    "mode,op", [("depth_to_space", "pixel_shuffle"), ("conv_transpose", "conv_transpose")]
)
def test_lowering_through_coreml(tmp_path, mode: str, op: str) -> None:
    pytest.importorskip("edge_sr.convert.coreml_mil")
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    model = ModelCard("tiny", {"scale": 2}, scale=2, form="deploy").attach(_Tiny(2).eval())
    art = export(model, "coreml", tmp_path / "m.mlpackage", ExportSpec(input_size=(8, 8), pixel_shuffle=mode))
    assert op in art.manifest["target_info"]["ops"]
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(load(art.path).forward(x) - ref).max() <= 1e-5
