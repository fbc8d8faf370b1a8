"""SRCNN's in-model bicubic upsampling: equal to ``F.interpolate`` and exportable to every target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from edge_sr.convert import TARGETS, ExportSpec, export, target_module

from edge_sr.models import create_model
from edge_sr.models.srcnn import BicubicUpsample, bicubic_phase_taps


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (2, 5), (7, 4), (17, 12)])
def test_bicubic_equals_interpolate_everywhere(scale: int, size: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(scale))
    x[0, :, 0, :] = 1.0  # strong edges at the border exercise the clamped reads
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    got = BicubicUpsample(scale, 3)(x)
    assert got.shape == ref.shape == (2, 3, size[0] * scale, size[1] * scale)
    b = 2 * scale  # the outer two LR pixels: where the replicate padding decides the value
    border = torch.ones_like(ref, dtype=torch.bool)
    border[..., b:-b, b:-b] = False
    assert (got - ref)[border].abs().max() < 1e-5
    assert (got - ref).abs().max() < 1e-5


def test_phase_taps_are_a_partition_of_unity() -> None:
    for s in (2, 3, 4):
        taps = bicubic_phase_taps(s)
        assert torch.allclose(taps.sum(1), torch.ones(s, dtype=torch.float64))
        # the phase that samples an input pixel centre (odd s) is the identity
        if s % 2:
            assert torch.equal(taps[s // 2], torch.tensor([0, 0, 1, 0, 0], dtype=torch.float64))


def test_srcnn_state_dict_and_forward_unchanged() -> None:
    torch.manual_seed(0)
    m = create_model("srcnn_955", scale=2, features=8, mid_features=4).eval()
    assert sorted(m.state_dict()) == [f"conv{i}.{p}" for i in (1, 2, 3) for p in ("bias", "weight")]
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        ref = m.conv3(m.relu(m.conv2(m.relu(m.conv1(up)))))  # the former forward
        assert (m(x) - ref).abs().max() < 1e-5
    m.half()  # the fixed filter follows the model's dtype
    with torch.no_grad():
        assert m(x.half()).dtype == torch.float16


@pytest.mark.parametrize("target", TARGETS)
def test_srcnn_exports_and_runner_matches_eager(target: str, tmp_path) -> None:
    from edge_sr.runtime import load

    torch.manual_seed(0)
    model = create_model("srcnn_915", scale=2, features=8, mid_features=8).eval()
    graph = torch.export.export(model, (torch.rand(1, 3, 16, 16),)).graph
    assert not any("upsample" in str(n.target) for n in graph.nodes if n.op == "call_function")
    art = export(
        model, target, tmp_path / f"srcnn{target_module(target).SUFFIX}", ExportSpec(input_size=(16, 16))
    )
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x).numpy()
    got = load(art.path).run(x.numpy())  # (N, 3, H, W) batch in, batch out
    assert got.shape == ref.shape == (1, 3, 32, 32)
    assert np.abs(got - ref).max() < 1e-4, target
