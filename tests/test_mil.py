"""Reference execution of saved Core ML programs (edge_sr.runtime.mil) against the PyTorch models."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.errors import InputError, RuntimeBackendError
from edge_sr.models import create_model, get_entry, list_models
from edge_sr.reparam import reparameterize
from edge_sr.runtime.mil import MILRunner, load_program, supported_ops

ct = pytest.importorskip("coremltools")
logging.getLogger("coremltools").setLevel(logging.ERROR)

SIZE = 16  # LR side: every model here runs on (1, 3, 16, 16)
FP16_MIN_PSNR = 50.0

# Constructor arguments that shrink a model when its class has them (families are free to name theirs).
TINY = {
    "channels": 8,
    "blocks": 2,
    "num_feat": 8,
    "num_block": 2,
    "num_conv": 2,
    "feature_channels": 8,
    "n_feats": 8,
    "n_resblocks": 2,
    "num_blocks": 2,
    "num_layers": 2,
    "embed_dim": 8,
    "depths": [2],
    "d": 16,
    "s": 8,
    "m": 2,
}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _convert(
    model: nn.Module, x: torch.Tensor, path: Path, precision: str = "fp32", inputs=None, target=None
):
    """Export with torch.export and save an .mlpackage the way the CoreML target does."""
    ep = torch.export.export(model.eval(), (x,)).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ct.convert(
            ep,
            minimum_deployment_target=target or ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            inputs=inputs or [ct.TensorType(name="x", shape=tuple(x.shape))],
        )
    ml.save(str(path))
    return ml


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    runner = MILRunner(path)
    feed = x.numpy().astype(np.float16 if runner.input_specs["x"].dtype == "fp16" else np.float32)
    (out,) = runner.run({"x": feed}).values()
    return out


def _tiny_edge_model(name: str) -> nn.Module:
    """The registered model with whatever TINY overrides its constructor takes (deploy form if fusable)."""
    default = create_model(name, scale=2)
    params = inspect.signature(type(default).__init__).parameters
    overrides = {k: v for k, v in TINY.items() if k in params}
    try:
        model = create_model(name, scale=2, **overrides) if overrides else default
    except Exception:  # a family may reject a combination; its defaults are edge-sized anyway
        model = default
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # wake up zero-initialised tails so the output depends on every layer
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    if get_entry(name).reparameterizable:
        model = reparameterize(model)
    return model


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, SIZE, SIZE)


# --- every edge model of the zoo, FP32 and FP16 -------------------------------------------------------------
@pytest.mark.parametrize("name", list_models(kind="edge"))
def test_edge_zoo_fp32_and_fp16(name: str, lr: torch.Tensor, tmp_path: Path) -> None:
    model = _tiny_edge_model(name)
    with torch.no_grad():
        ref = model(lr).numpy()
    _convert(model, lr, tmp_path / "fp32.mlpackage", "fp32")
    out32 = _run(tmp_path / "fp32.mlpackage", lr)
    assert out32.dtype == np.float32 and out32.shape == ref.shape
    assert np.abs(out32 - ref).max() <= 1e-4

    _convert(model, lr, tmp_path / "fp16.mlpackage", "fp16")
    out16 = _run(tmp_path / "fp16.mlpackage", lr)
    assert out16.dtype == np.float16  # FP16 programs compute and return float16
    diff = np.abs(out16.astype(np.float32) - ref).max()
    assert 0 < diff  # fp16 rounding must show: the program really ran in half precision
    assert _psnr(out16, ref) >= FP16_MIN_PSNR
