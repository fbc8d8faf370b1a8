"""The whole-clip video families (BasicVSR, IconVSR, BasicVSR++, EDVR-M / EDVR-L) with SPyNet.

Published parameter counts on the meta device; the clip contract on tiny configurations; each family's
official layouts (BasicSR ``params`` and mmagic ``state_dict`` with ``generator.``) written with random weights,
detected and loaded back; foreign keys refused by name; the detectors answer only for their own family.
The mmagic names are produced here from mmagic's module structure (ConvModule wrappers, PixelShufflePack),
independently of the library's renaming.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from edge_sr.errors import CheckpointError, ConfigError, InputError
from edge_sr.models import create_model, load_checkpoint
from edge_sr.models.checkpoint import load_detected
from edge_sr.models.detect import detect, detectors
from edge_sr.models.registry import get_entry, list_models
from edge_sr.models.spynet import SpyNet, flow_warp

MINE = ("basicvsr", "basicvsrpp", "edvr")

# the papers' counts (millions, two decimals)
PUBLISHED = {"basicvsr": 6.29, "iconvsr": 8.69, "basicvsrpp": 7.32, "edvr_m": 3.30, "edvr_l": 20.63}

TINY = {
    "basicvsr": {"num_feat": 8, "num_block": 2},
    "iconvsr": {
        "num_feat": 8,
        "num_block": 2,
        "temporal_padding": 1,
        "deformable_groups": 2,
        "num_extract_block": 1,
        "keyframe_stride": 2,
    },
    "basicvsrpp": {"mid_channels": 8, "num_blocks": 2, "deform_groups": 2},
    "edvr_m": {
        "num_feat": 8,
        "num_frame": 3,
        "deformable_groups": 2,
        "num_extract_block": 2,
        "num_reconstruct_block": 2,
    },
}
CLIP = (1, 3, 3, 16, 16)  # N, T, C, H, W


def _tiny(name: str, seed: int = 0, **extra: object) -> torch.nn.Module:
    """The tiny model with every weight random (the zero-initialised offset convs too, so the deformable
    convolutions really deform)."""
    torch.manual_seed(seed)
    model = create_model(name, **{**TINY[name], **extra}).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "conv_offset" in k:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name: str) -> None:
    assert get_entry(name).kind == "video"
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PUBLISHED[name], count


def test_clip_contract() -> None:
    x = torch.rand(*CLIP)
    for name in ("basicvsr", "basicvsrpp"):
        with torch.no_grad():
            y = _tiny(name)(x)
        assert y.shape == (1, 3, 3, 64, 64), name
        assert torch.isfinite(y).all()
    # IconVSR reflect-pads to a multiple of 4 for its PCD pyramid and crops back
    with torch.no_grad():
        y = _tiny("iconvsr")(torch.rand(1, 3, 3, 14, 10))
    assert y.shape == (1, 3, 3, 56, 40) and torch.isfinite(y).all()
    with torch.no_grad():
        y = _tiny("edvr_m")(x)
    assert y.shape == (1, 3, 64, 64)  # the centre frame


def test_x2() -> None:
    with torch.no_grad():
        y = _tiny("basicvsr", scale=2)(torch.rand(1, 2, 3, 10, 14))
    assert y.shape == (1, 2, 3, 20, 28)


def test_same_size_forms() -> None:
    # EDVR's deblurring form (hr_in with predeblur) and BasicVSR++'s is_low_res_input=False: scale 1
    edvr = _tiny("edvr_m", scale=1, with_predeblur=True)
    bvpp = _tiny("basicvsrpp", scale=1)
    with torch.no_grad():
        assert edvr(torch.rand(1, 3, 3, 32, 48)).shape == (1, 3, 32, 48)
        assert bvpp(torch.rand(1, 3, 3, 16, 24)).shape == (1, 3, 3, 16, 24)
    for model, arch in ((edvr, "edvr_m"), (bvpp, "basicvsrpp")):
        d = detect(dict(model.state_dict()))
        assert (d.arch, d.scale) == (arch, 1)
    with pytest.raises(InputError, match="multiples of 16"):
        edvr(torch.rand(1, 3, 3, 24, 48))
    with pytest.raises(ConfigError, match="predeblur"):
        create_model("edvr_m", scale=1)


def test_bidirectional_each_output_sees_the_whole_clip() -> None:
    model = _tiny("basicvsr")
    x = torch.rand(*CLIP)
    x2 = x.clone()
    x2[:, -1] = torch.rand(3, 16, 16)  # change only the last frame
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert (a[:, 0] - b[:, 0]).abs().max() > 0  # the backward pass carries it to the first frame


def test_clip_refusals() -> None:
    with pytest.raises(InputError, match="at least 3 frames"):
        _tiny("iconvsr")(torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(InputError, match="exactly 3 frames"):
        _tiny("edvr_m")(torch.rand(1, 4, 3, 16, 16))
    with pytest.raises(InputError, match="multiples of 4"):
        _tiny("edvr_m")(torch.rand(1, 3, 3, 18, 16))


def test_spynet_zero_flow_for_equal_frames_and_warp_identity() -> None:
    net = SpyNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    x = torch.rand(2, 3, 20, 36)
    flow = net(x, x)
    assert flow.shape == (2, 2, 20, 36) and flow.abs().max() == 0
    torch.testing.assert_close(flow_warp(x, flow), x)
    # a whole-pixel shift: warping by flow (1, 0) reads the right neighbour
    shifted = flow_warp(x, torch.stack([torch.ones(2, 20, 36), torch.zeros(2, 20, 36)], 1))
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:])
    assert shifted[..., -1].abs().max() == 0  # zeros outside


# ---- the published layouts


_MM_CONV_MODULES = re.compile(
    r"(^|\.)(feat_l[23]_conv[12]|offset_conv[123]\.l[123]|feat_conv\.l[12]|cas_offset_conv[12]|feat_fusion"
    r"|spatial_attn[1-4]|spatial_attn_l[123]|spatial_attn_add1)\.(weight|bias)$"
)
_MM_NAMES = {
    "backward_trunk": "backward_resblocks",
    "forward_trunk": "forward_resblocks",
    "upconv1": "upsample1.upsample_conv",
    "upconv2": "upsample2.upsample_conv",
    "pcd_align": "pcd_alignment",
    "conv_l2_1": "feat_l2_conv1",
    "conv_l2_2": "feat_l2_conv2",
    "conv_l3_1": "feat_l3_conv1",
    "conv_l3_2": "feat_l3_conv2",
}


def _mmagic_key(key: str) -> str:
    """BasicSR -> mmagic, from mmagic's modules: SPyNet's convs are ConvModules 0..4 (no ReLU entries),
    EDVR's pyramid / PCD / TSA convs are ConvModules except the DCNs, temporal_attn*, spatial_attn5 and
    spatial_attn_add2; the upsamplers are PixelShufflePacks."""
    m = re.match(r"(.*spynet\.basic_module\.\d+\.basic_module\.)(\d)\.(weight|bias)$", key)
    if m:
        return f"{m.group(1)}{int(m.group(2)) // 2}.conv.{m.group(3)}"
    parts = key.split(".")
    parts = [_MM_NAMES.get(p, p) for p in parts]
    key = ".".join(parts)
    return _MM_CONV_MODULES.sub(lambda m: f"{m.group(1)}{m.group(2)}.conv.{m.group(3)}", key)


def _write(model: torch.nn.Module, path: Path, layout: str) -> dict[str, Tensor]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "basicsr":
        torch.save({"params": sd}, path)
    else:
        mm = {f"generator.{_mmagic_key(k)}": v for k, v in sd.items()}
        mm["step_counter"] = torch.zeros(1)  # the restorer's buffer beside the generator
        torch.save({"meta": {"mmedit_version": "0.x"}, "state_dict": mm}, path)
    return sd


CASES = [(n, lay) for n in TINY for lay in ("basicsr", "mmagic")]


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_official_layouts_load_back(tmp_path: Path, name: str, layout: str) -> None:
    model = _tiny(name, seed=3)
    path = tmp_path / f"{name}_{layout}.pth"
    want = _write(model, path, layout)
    if layout == "mmagic":
        keys = torch.load(path, weights_only=True)["state_dict"]
        assert not any(k.startswith("generator.upconv") for k in keys)  # really renamed
        assert any(".conv.weight" in k for k in keys)
    loaded, det = load_detected(path)
    assert det.arch == name and det.layout == layout
    assert {k: det.args[k] for k in TINY[name]} == {
        k: v for k, v in TINY[name].items() if k != "keyframe_stride"
    } | ({"keyframe_stride": 5} if name == "iconvsr" else {})
    got = loaded.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_spynet_constants_filled_where_a_file_lacks_them(tmp_path: Path) -> None:
    # SPyNet's mean / std are buffers registered after its weights load, so files saved from SPyNet alone
    # lack them; a checkpoint without them still loads, with the ImageNet statistics
    model = _tiny("basicvsr", seed=4)
    sd = {k: v for k, v in model.state_dict().items() if k not in ("spynet.mean", "spynet.std")}
    torch.save({"params": sd}, tmp_path / "no_buffers.pth")
    loaded, det = load_detected(tmp_path / "no_buffers.pth")
    assert det.layout == "basicsr"
    torch.testing.assert_close(loaded.spynet.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(loaded.spynet.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_loaded_model_computes_the_same(tmp_path: Path) -> None:
    model = _tiny("basicvsrpp", seed=5)
    path = tmp_path / "bvpp.pth"
    _write(model, path, "mmagic")
    loaded = load_checkpoint(path)
    x = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_edvr_l_and_tsa_less_variants_detected() -> None:
    with torch.device("meta"):
        sd_l = create_model("edvr_l", num_reconstruct_block=3).state_dict()
        sd_plain = create_model("edvr_m", with_tsa=False, with_predeblur=True, num_frame=7).state_dict()
    d = detect(sd_l)
    assert (d.arch, d.args["num_feat"], d.args["num_reconstruct_block"]) == ("edvr_l", 128, 3)
    d = detect(sd_plain)
    assert (d.arch, d.args["with_tsa"], d.args["with_predeblur"], d.args["num_frame"]) == (
        "edvr_m",
        False,
        True,
        7,
    )
    assert "center_frame_idx" in d.assumed


def test_foreign_keys_are_named(tmp_path: Path) -> None:
    sd = dict(_tiny("basicvsr").state_dict())
    sd["fusion_extra.weight"] = sd.pop("fusion.weight")
    path = tmp_path / "odd.pth"
    torch.save({"params": sd}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "fusion.weight" in msg and "fusion_extra.weight" in msg and "\n" not in msg


def test_detectors_answer_only_for_their_own_family() -> None:
    table = detectors()
    states: list[tuple[str, str, dict[str, Tensor]]] = []
    with torch.device("meta"):
        for name in list_models():
            states.append((get_entry(name).family, name, create_model(name, scale=2).state_dict()))
        for name, args in TINY.items():
            states.append((get_entry(name).family, f"tiny {name}", create_model(name, **args).state_dict()))
    for fam in MINE:
        for owner, what, state in states:
            got = table[fam](state)
            assert (got is not None) == (owner == fam), f"the {fam} detector on {what}"
    # and no other family's detector claims ours
    for owner, what, state in states:
        if owner in MINE:
            assert detect(state).family == owner, what
