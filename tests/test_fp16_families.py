"""FP16 of the transformer families added after SwinIR / HAT (SRFormer, DAT, CRAFT, SwinFIR, ESRT, LBNet, ACT):
the range analysis finds a layer FP16 cannot hold, and the FP16 export keeps that span in FP32.

Each tiny model gets one MLP whose first linear layer is scaled up by K and whose second is scaled down by K:
the float model stays finite (the intermediate reaches ~1e5-1e6, past FP16's 65504), a plain FP16 graph turns it
into inf / NaN, and the checked export (``export_fp16_checked``, what ``edge-sr quantize --precision fp16``
runs) must give the float model's output back.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from edge_sr.quantize import export_fp16_checked
from edge_sr.quantize.fp16 import FP16_MAX, fp16_ranges, fp32_spans, keep_fp32
from test_models_act import EXPORT as ACT_TINY
from test_models_craft_swinfir import TINY as CRAFT_SWINFIR_TINY
from test_models_esrt_lbnet import TINY as ESRT_LBNET_TINY
from test_models_srformer_dat import CASES
from torch import nn

from edge_sr.models import create_model

# family -> (constructor arguments, the MLP's first and second linear layer)
FAMILIES: dict[str, tuple[dict, str, str]] = {
    "srformer": (CASES["srformer"][1], "layers.0.residual_group.blocks.0.mlp.fc1",
                 "layers.0.residual_group.blocks.0.mlp.fc2"),
    "dat": (CASES["dat"][1], "layers.0.blocks.0.ffn.fc1", "layers.0.blocks.0.ffn.fc2"),
    "craft": ({"scale": 2, **CRAFT_SWINFIR_TINY["craft"]}, "layers.0.residual_group.srwa_blocks.0.mlp.fc1",
              "layers.0.residual_group.srwa_blocks.0.mlp.fc2"),
    "swinfir": ({"scale": 2, **CRAFT_SWINFIR_TINY["swinfir"]}, "layers.0.residual_group.blocks.0.mlp.fc1",
                "layers.0.residual_group.blocks.0.mlp.fc2"),
    "esrt": ({"scale": 2, **ESRT_LBNET_TINY["esrt"]}, "body.0.attention.mlp.fc1", "body.0.attention.mlp.fc2"),
    "lbnet": ({"scale": 2, **ESRT_LBNET_TINY["lbnet"]}, "attention.mlp.fc1", "attention.mlp.fc2"),
    "act": ({"scale": 2, **ACT_TINY}, "mhsa_block.0.1.fn.net.0", "mhsa_block.0.1.fn.net.3"),
}  # fmt: skip
K = 1e6
SIZE = (16, 16)


def _model(arch: str, up: str | None = None, down: str | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, **FAMILIES[arch][0]).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised projections would hide the scaled path
            if p.dim() >= 2 and not p.abs().sum():
                p.normal_(0, 0.02)
        if up:
            first, second = model.get_submodule(up), model.get_submodule(down or "")
            first.weight.mul_(K)
            if first.bias is not None:
                first.bias.mul_(K)
            second.weight.div_(K)
    return model


def _onnx(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_range_check_finds_the_overflowing_mlp_and_the_export_keeps_it_fp32(arch, tmp_path):
    _, up, down = FAMILIES[arch]
    torch.manual_seed(1)
    x = torch.rand(1, 3, *SIZE)
    # the healthy model: nothing overflows
    assert not [r.name for r in fp16_ranges(_model(arch), [x]).layers if r.overflow]
    model = _model(arch, up, down)
    with torch.no_grad():
        ref = model(x)
        assert torch.isfinite(ref).all()
        half = copy.deepcopy(model).half()(x.half()).float()
    assert not torch.isfinite(half).all() or (half - ref).abs().max() > 0.1  # the premise: FP16 breaks it

    report = fp16_ranges(model, [x])
    rows = {r.name: r for r in report.layers}
    assert rows[up].overflow and rows[up].max_abs > FP16_MAX
    assert up in report.offenders and not rows[down].overflow
    spans = fp32_spans(report)
    # one FP32 region holds both layers: the MLP block around them, whose output is back in range
    region = [s for s in spans if up.startswith(s + ".")]
    assert len(region) == 1 and down.startswith(region[0] + "."), spans
    assert report.blocks[region[0]].max_abs <= FP16_MAX
    with torch.no_grad():
        mixed = keep_fp32(model, spans).half()(x.half()).float()
    assert torch.isfinite(mixed).all()
    assert _psnr(mixed.numpy(), ref.numpy()) > 40.0


@pytest.mark.parametrize("arch", ["srformer"])
def test_fp16_onnx_export_keeps_the_span_fp32(arch, tmp_path):
    """Through the exporter (``edge-sr quantize --precision fp16 --target onnx`` runs this): the mixed graph is
    finite and close to float; without the mixed precision it is not."""
    _, up, down = FAMILIES[arch]
    torch.manual_seed(1)
    x = torch.rand(1, 3, *SIZE)
    model = _model(arch, up, down)
    with torch.no_grad():
        ref = model(x).numpy()
    report = fp16_ranges(model, [x])
    art = export_fp16_checked(model, "onnx", report, {"source": "test"}, SIZE, out=tmp_path)
    q = art.manifest["quantization"]
    assert q["scheme"].startswith("fp16 mixed") and q["fp32_layers"] == fp32_spans(report)
    y = _onnx(art.path, x)
    assert np.isfinite(y).all() and _psnr(y, ref) > 40.0
    plain = export_fp16_checked(model, "onnx", report, {}, SIZE, out=tmp_path / "plain", mixed=False)
    y_plain = _onnx(plain.path, x)
    assert not np.isfinite(y_plain).all() or _psnr(y_plain, ref) < 30.0
