"""SAFMN and DIPNet: paper parameter counts, official keys (train and deploy forms), detection round trips,
output shapes, SAFMN's export-friendly pooling, DIPNet's fusion."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.errors import ConfigError
from edge_sr.models import create_model, get_entry, list_models, load_state_dict_file
from edge_sr.models.detect import build_skeleton, detect, detectors
from edge_sr.models.dipnet import ESA, DIPNet, RepRRFB
from edge_sr.models.safmn import SAFMN, pooled_level
from edge_sr.models.stats import count_params
from edge_sr.reparam import has_fusable, reparameterize

SAFMN_ARGS = {"scale": 3, "dim": 12, "n_blocks": 2, "ffn_scale": 1.5, "n_levels": 3, "colors": 3}
DIPNET_ARGS = {
    "scale": 2,
    "feature_channels": 10,
    "mid_channels": 6,
    "esa_channels": 4,
    "blocks": 2,
    "rep_channels": 12,
    "colors": 3,
}


def _moved(m: nn.Module, seed: int = 0) -> nn.Module:
    """``m`` in eval mode with every parameter moved off its init, so a silent re-init would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.eval()


def _meta(name: str, **args) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **args)


# --- parameter counts (SAFMN README / paper table; DIPNet paper and its challenge results.txt: 0.243M) ----


@pytest.mark.parametrize(
    ("name", "scale", "params"),
    [
        ("safmn", 2, 227_820),
        ("safmn", 3, 232_695),
        ("safmn", 4, 239_520),
        ("safmn_l", 4, 5_600_816),
    ],
)
def test_safmn_parameter_counts(name: str, scale: int, params: int) -> None:
    assert count_params(_meta(name, scale=scale)) == params


def test_dipnet_deploy_parameter_count_and_official_keys() -> None:
    deploy = reparameterize(create_model("dipnet", scale=4))
    assert count_params(deploy) == 243_252
    sd = deploy.state_dict()
    want = {"conv_1.weight", "conv_2.weight", "upsampler.0.weight"}
    for i in range(1, 5):
        want |= {f"block_{i}.{c}.weight" for c in ("c1_r", "c2_r", "c3_r", "c5")}
        want |= {
            f"block_{i}.esa.{c}.{p}"
            for c in ("conv1", "conv_f", "conv2", "conv3", "conv4")
            for p in ("weight", "bias")
        }
    assert set(sd) == want  # bias-free trunk convs, as released
    assert sd["block_1.c1_r.weight"].shape == (38, 44, 3, 3)
    assert sd["block_1.c3_r.weight"].shape == (44, 38, 3, 3)
    assert sd["upsampler.0.weight"].shape == (48, 44, 3, 3)


def test_dipnet_training_form_keys() -> None:
    sd = _meta("dipnet", scale=4).state_dict()
    assert sd["block_2.c1_r.weight"].shape == (256, 44, 3, 3)
    assert sd["block_2.c1_r_11_m.weight"].shape == (38, 256, 1, 1)
    assert sd["block_2.c3_r_11_a.weight"].shape == (44, 38, 1, 1)
    assert not any(k.startswith("block_2.idt") for k in sd)  # the identity is a fixed, unsaved kernel


def test_safmn_official_keys() -> None:
    sd = _meta("safmn", scale=4).state_dict()
    assert sd["to_feat.weight"].shape == (36, 3, 3, 3)
    assert sd["feats.7.norm1.weight"].shape == (36,) and "feats.7.norm2.bias" in sd
    assert sd["feats.0.safm.mfr.3.weight"].shape == (9, 1, 3, 3)
    assert sd["feats.0.safm.aggr.weight"].shape == (36, 36, 1, 1)
    assert sd["feats.0.ccm.ccm.0.weight"].shape == (72, 36, 3, 3)
    assert sd["feats.0.ccm.ccm.2.weight"].shape == (36, 72, 1, 1)
    assert sd["to_img.0.weight"].shape == (48, 36, 3, 3)
    assert "feats.8.norm1.weight" not in sd


# --- official-key round trips through a .pth file --------------------------------------------------------


def _round_trip(tmp_path, model: nn.Module, state: dict, form: str):
    path = tmp_path / "foreign.pth"
    torch.save({"params": state}, path)
    sd = load_state_dict_file(path)
    det = detect(sd, path=path)
    net = build_skeleton(det.arch, det.args, det.form, device=None)
    net.load_state_dict(det.state(sd), strict=True)
    x = torch.rand(1, det.colors, 16, 24)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), model(x), atol=1e-5)
    assert det.form == form
    return det


@pytest.mark.parametrize("colors", [3, 1])
def test_safmn_detected_with_its_arguments(tmp_path, colors: int) -> None:
    args = {**SAFMN_ARGS, "colors": colors}
    torch.manual_seed(0)
    m = _moved(create_model("safmn", **args))
    det = _round_trip(tmp_path, m, m.state_dict(), "train")
    assert det.family == "safmn" and det.args == args


def test_safmn_l_default_detected(tmp_path) -> None:
    from edge_sr.models.detect import detect_candidates

    found, _ = detect_candidates(_meta("safmn_l", scale=2).state_dict())
    assert [(d.arch, d.args) for d in found] == [
        ("safmn_l", {"scale": 2, "dim": 128, "n_blocks": 16, "ffn_scale": 2.0, "n_levels": 4, "colors": 3})
    ]


def test_dipnet_train_form_detected_with_its_arguments(tmp_path) -> None:
    torch.manual_seed(0)
    m = _moved(create_model("dipnet", **DIPNET_ARGS))
    det = _round_trip(tmp_path, m, m.state_dict(), "train")
    assert det.family == "dipnet" and det.args == DIPNET_ARGS and not det.assumed


@pytest.mark.parametrize("colors", [3, 1])
def test_dipnet_deploy_file_detected_and_loaded_fused(tmp_path, colors: int) -> None:
    args = {**DIPNET_ARGS, "colors": colors, "scale": 4}
    torch.manual_seed(0)
    m = _moved(create_model("dipnet", **args))
    deploy = reparameterize(m)
    det = _round_trip(tmp_path, m, deploy.state_dict(), "deploy")
    # the fused file cannot tell the training branch width: the authors' value, said so
    assert det.args == {**args, "rep_channels": 256} and "rep_channels" in det.assumed
    assert det.layout == "deploy"


# --- detectors: None on every other family ---------------------------------------------------------------


def _other_states() -> list[tuple[str, dict]]:
    out = []
    for name in list_models():
        if get_entry(name).family in ("safmn", "dipnet"):
            continue
        try:
            out.append((name, _meta(name, scale=2).state_dict()))
        except Exception:  # a family still being written may not build
            continue
    return out


def _rlfn_like() -> dict:
    """RLFN's official keys: DIPNet's layout with biased trunk convs and six 52-wide blocks."""
    sd = reparameterize(
        create_model("dipnet", scale=4, feature_channels=52, mid_channels=52, blocks=6)
    ).state_dict()
    for k in list(sd):
        if k.endswith(".weight") and ".esa." not in k:
            sd[k.replace(".weight", ".bias")] = torch.zeros(sd[k].shape[0])
    return sd


def test_detectors_ignore_other_families() -> None:
    table = detectors()
    states = _other_states() + [("rlfn-like", _rlfn_like())]
    states += [("dipnet", create_model("dipnet", **DIPNET_ARGS).state_dict())]
    states += [("dipnet-deploy", reparameterize(create_model("dipnet", **DIPNET_ARGS)).state_dict())]
    states += [("safmn", create_model("safmn", **SAFMN_ARGS).state_dict())]
    for name, sd in states:
        if not name.startswith("dipnet"):
            assert table["dipnet"](sd) is None, name
        if name != "safmn":
            assert table["safmn"](sd) is None, name


# --- shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["safmn", "dipnet"])
@pytest.mark.parametrize("hw", [(16, 24), (13, 9)])  # SAFMN: divisible / not; DIPNet: at / under 15 px
def test_output_shapes(name: str, scale: int, hw: tuple[int, int]) -> None:
    tiny = {
        "safmn": {"dim": 8, "n_blocks": 1},
        "dipnet": {"feature_channels": 8, "mid_channels": 4, "blocks": 1, "rep_channels": 8},
    }
    m = create_model(name, scale=scale, **tiny[name]).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 3, *hw))
    assert y.shape == (2, 3, hw[0] * scale, hw[1] * scale) and torch.isfinite(y).all()


def test_constructors_refuse_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        SAFMN(dim=10, n_levels=4)
    with pytest.raises(ConfigError, match="at least 1"):
        DIPNet(blocks=0)


# --- SAFMN: the exported pooling equals the official adaptive pooling -----------------------------------


def _official_level(x: torch.Tensor, i: int, conv: nn.Module) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(conv(F.adaptive_max_pool2d(x, (h // 2**i, w // 2**i))), size=(h, w), mode="nearest")


@pytest.mark.parametrize("hw", [(8, 8), (16, 40), (24, 16)])
def test_pooled_level_equals_adaptive_at_divisible_sizes(hw: tuple[int, int]) -> None:
    conv = nn.Conv2d(2, 2, 3, padding=1, groups=2).double()
    x = torch.randn(2, 2, *hw, dtype=torch.float64)
    for i in (1, 2, 3):
        assert torch.equal(pooled_level(x, i, conv), _official_level(x, i, conv))
        assert torch.equal(  # the pool itself: kernel = stride = 2^i
            F.max_pool2d(x, 2**i, 2**i), F.adaptive_max_pool2d(x, (hw[0] // 2**i, hw[1] // 2**i))
        )


def _official_safmn(m: SAFMN, x: torch.Tensor) -> torch.Tensor:
    """The official forward, written with its adaptive pooling, on ``m``'s modules."""
    f = m.to_feat(x)
    y = f
    for blk in m.feats:
        z = blk.norm1(y)
        parts = z.chunk(blk.safm.n_levels, dim=1)
        out = [blk.safm.mfr[0](parts[0])]
        out += [_official_level(parts[i], i, blk.safm.mfr[i]) for i in range(1, blk.safm.n_levels)]
        y = blk.safm.act(blk.safm.aggr(torch.cat(out, 1))) * z + y
        y = blk.ccm(blk.norm2(y)) + y
    return m.to_img(y + f)


@pytest.mark.parametrize("hw", [(16, 24), (13, 18), (9, 11)])
def test_safmn_forward_equals_official_at_every_size(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = _moved(create_model("safmn", scale=2, dim=8, n_blocks=2)).double()
    x = torch.rand(1, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), _official_safmn(m, x), atol=1e-12)


def test_safmn_refuses_inputs_under_the_pyramid_and_indivisible_exports() -> None:
    m = create_model("safmn", scale=2, dim=8, n_blocks=1).eval()
    with pytest.raises(ConfigError, match="at least 8x8"):
        m(torch.rand(1, 3, 9, 7))
    with pytest.raises(ConfigError, match="multiples of 8"):
        torch.export.export(m, (torch.rand(1, 3, 12, 16),))


# --- DIPNet: fusion and the small-input ESA --------------------------------------------------------------


def test_rep_block_fuses_exactly_with_uneven_identity() -> None:
    torch.manual_seed(0)
    blk = _moved(RepRRFB(channels=8, mid_channels=5, esa_channels=4, rep_channels=6)).double()
    fused = blk.fuse()
    assert has_fusable(blk) and fused.c1_r.bias is None and fused.c3_r.weight.shape == (8, 5, 3, 3)
    x = torch.randn(2, 8, 17, 15, dtype=torch.float64)
    with torch.no_grad():
        assert (blk(x) - fused(x)).abs().max() < 1e-10
        # the identity branch of c3_r (5 -> 8 channels) copies input channel o mod 5 to output o
        a = blk.c3_r_11_a.weight
        ref = F.conv2d(x[:, :5], a) + blk.c3_r_11_m(blk.c3_r(x[:, :5])) + x[:, :5][:, torch.arange(8) % 5]
        assert torch.allclose(blk._rep_conv(3, x[:, :5]), ref, atol=1e-12)


def test_esa_under_15_pixels_pools_the_whole_map() -> None:
    torch.manual_seed(0)
    esa = ESA(channels=6, esa_channels=4).double().eval()
    x = torch.randn(1, 6, 13, 11, dtype=torch.float64)
    with torch.no_grad():
        c1_ = esa.conv1(x)
        c3 = esa.conv3(esa.conv2(c1_).amax(dim=(2, 3), keepdim=True))
        c3 = F.interpolate(c3, size=(13, 11), mode="bilinear", align_corners=False)
        ref = x * torch.sigmoid(esa.conv4(c3 + esa.conv_f(c1_)))
        assert torch.allclose(esa(x), ref, atol=1e-12)


def test_dipnet_reparameterize_keeps_the_model() -> None:
    torch.manual_seed(0)
    m = _moved(create_model("dipnet", **DIPNET_ARGS))
    before = copy.deepcopy(m.state_dict())
    deploy = reparameterize(m)
    assert not has_fusable(deploy) and has_fusable(m)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
