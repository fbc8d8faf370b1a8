"""Architecture detection of the edge families from bare state dicts (train and deploy forms).

Each case builds a non-default tiny model, saves its state dict as a foreign ``.pth`` would be saved (a
``params`` / ``state_dict`` wrapper, once a ``module.`` prefix), reads it back with ``load_state_dict_file``,
and checks that ``detect`` names exactly the arguments the model was built with and that the model the
detection describes loads the weights strictly and computes the same output. Deploy forms are written under
the published fused names (ECBSR's ``PlainSR`` conversion, the NTIRE 2024 SPAN entry's ``eval_conv``-only
Conv3XC) from the training-form model and compared with ``reparameterize``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from edge_sr.models import create_model, get_entry, list_models, load_state_dict_file
from edge_sr.models.common import UNREADABLE_SCALE, nearest_name, pixel_shuffle_scale
from edge_sr.models.detect import Detection, build_skeleton, detect, detectors
from edge_sr.reparam import reparameterize

MINE = ("srcnn", "fsrcnn", "espcn", "srvgg", "ecbsr", "repsr", "span")

# (registry name, the full constructor arguments): every family, off its defaults, 1 and 3 colours
TRAIN_CASES: list[tuple[str, dict[str, Any]]] = [
    ("srcnn_955", {"scale": 2, "colors": 1, "features": 6, "mid_features": 5, "kernel_sizes": [9, 5, 5]}),
    ("srcnn_915", {"scale": 2, "colors": 3, "features": 7, "mid_features": 3, "kernel_sizes": [9, 1, 5]}),
    ("srcnn_955", {"scale": 2, "colors": 1, "features": 4, "mid_features": 4, "kernel_sizes": [7, 3, 3]}),
    ("fsrcnn", {"scale": 2, "colors": 1, "d": 56, "s": 12, "m": 4}),  # the paper's FSRCNN
    ("fsrcnn_s", {"scale": 2, "colors": 1, "d": 32, "s": 5, "m": 1}),  # the paper's FSRCNN-s
    ("fsrcnn_s", {"scale": 2, "colors": 3, "d": 10, "s": 4, "m": 2}),
    ("espcn", {"scale": 3, "colors": 1, "features": 6, "mid_features": 5}),
    ("espcn", {"scale": 2, "colors": 3, "features": 5, "mid_features": 7}),
    ("srvgg_compact", {"scale": 3, "colors": 3, "num_feat": 5, "num_conv": 3, "act_type": "prelu"}),
    ("srvgg_compact", {"scale": 2, "colors": 1, "num_feat": 6, "num_conv": 2, "act_type": "relu"}),
    ("srvgg_compact_c32", {"scale": 2, "colors": 3, "num_feat": 4, "num_conv": 24, "act_type": "prelu"}),
    (
        "ecbsr_m4c8",
        {
            "scale": 3,
            "colors": 1,
            "blocks": 2,
            "channels": 5,
            "act": "prelu",
            "identity": False,
            "depth_multiplier": 2.0,
        },
    ),
    (
        "ecbsr_m4c16",
        {
            "scale": 2,
            "colors": 3,
            "blocks": 4,
            "channels": 16,
            "act": "prelu",
            "identity": False,
            "depth_multiplier": 2.0,
        },
    ),
    (
        "ecbsr_m10c32",
        {
            "scale": 4,
            "colors": 1,
            "blocks": 8,
            "channels": 12,
            "act": "relu",
            "identity": False,
            "depth_multiplier": 1.5,
        },
    ),
    ("repsr_m4c16", {"scale": 3, "colors": 1, "blocks": 2, "channels": 6, "expand": 3, "act": "prelu"}),
    ("repsr_m8c32", {"scale": 2, "colors": 3, "blocks": 7, "channels": 4, "expand": 2, "act": "relu"}),
    ("span_ch48", {"scale": 3, "feature_channels": 5, "img_range": 255.0, "norm": True}),
    ("span_ch48", {"scale": 2, "feature_channels": 4, "img_range": 255.0, "norm": False}),
]


def _ids(cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"{n}-" + "-".join(f"{k}{v}" for k, v in a.items() if k != "img_range") for n, a in cases]


def _trained(name: str, args: dict[str, Any]) -> nn.Module:
    """The model, with every parameter and BatchNorm statistic moved off its init (eval mode)."""
    torch.manual_seed(0)
    m = create_model(name, **args)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _write(state: dict[str, Tensor], path: Path, wrap: str) -> Path:
    """``torch.save`` as training frameworks do: inside a wrapper, or with DataParallel's prefix."""
    state = {k: v.detach().clone() for k, v in state.items()}
    if wrap == "module.":
        obj: object = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = {wrap: state, "iter": torch.tensor(10)} if wrap == "state_dict" else {wrap: state}
    torch.save(obj, path)
    return path


def _load(det: Detection, state: dict[str, Tensor]) -> nn.Module:
    """The model the detection describes, with ``state`` loaded strictly."""
    net = build_skeleton(det.arch, det.args, det.form, device=None)
    net.load_state_dict(det.state(state), strict=True)
    return net.eval()


def _x(colors: int) -> Tensor:
    return torch.rand(2, colors, 9, 11, generator=torch.Generator().manual_seed(3))


def _colors(args: dict[str, Any]) -> int:
    return int(args.get("colors", 3))


WRAPS = ["params", "state_dict", "module."]


@pytest.mark.parametrize(("name", "args"), TRAIN_CASES, ids=_ids(TRAIN_CASES))
def test_train_form_is_detected_exactly(name: str, args: dict[str, Any], tmp_path: Path) -> None:
    model = _trained(name, args)
    wrap = WRAPS[TRAIN_CASES.index((name, args)) % len(WRAPS)]
    state = load_state_dict_file(_write(model.state_dict(), tmp_path / "w.pth", wrap))
    det = detect(state, path="w.pth")
    assert det.arch == name
    assert det.args == args
    assert det.scale == args["scale"] and det.colors == _colors(args)
    assert det.form == ("train" if get_entry(name).reparameterizable else "deploy")
    family = get_entry(name).family
    assert ("scale" in det.assumed) == (family in ("srcnn", "fsrcnn"))  # read from the weights elsewhere
    if family == "span":  # computes on 0..255 after the DIV2K mean shift, unless norm=False
        norm = args["norm"]
        assert det.value_range == (255.0 if norm else 1.0)
        assert det.mean == ((0.4488, 0.4371, 0.4040) if norm else None)
        assert ("img_range" in det.assumed) == norm
    else:
        assert det.value_range == 1.0 and det.mean is None
    net = _load(det, state)
    x = _x(_colors(args))
    with torch.no_grad():
        assert torch.equal(net(x), model(x))


@pytest.mark.parametrize("name", ["srcnn_955", "fsrcnn"])
def test_scale_that_weights_cannot_tell_is_assumed(name: str) -> None:
    # SRCNN upsamples first; FSRCNN's deconvolution kernel is 9x9 at every stride: x3 weights read as x2
    state = create_model(name, scale=3, colors=1).state_dict()
    det = detect(state)
    assert det.args["scale"] == UNREADABLE_SCALE == 2
    assert "scale" in det.assumed and "--scale" in det.assumed["scale"]
    # an override of the scale builds a model the same weights fit
    net = build_skeleton(det.arch, {**det.args, "scale": 3}, det.form, device=None)
    net.load_state_dict(state, strict=True)
    assert net(torch.rand(1, 1, 5, 6)).shape == (1, 1, 15, 18)


def test_activation_without_weights_is_assumed() -> None:
    relu = detect(
        create_model("srvgg_compact", scale=2, num_feat=4, num_conv=1, act_type="relu").state_dict()
    )
    prelu = detect(create_model("srvgg_compact", scale=2, num_feat=4, num_conv=1).state_dict())
    assert relu.args["act_type"] == "relu" and "act_type" in relu.assumed
    assert prelu.args["act_type"] == "prelu" and "act_type" not in prelu.assumed
    ecb = detect(create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).state_dict())
    assert ecb.args["act"] == "prelu" and "act" not in ecb.assumed and "identity" in ecb.assumed
    ecb_relu = detect(create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4, act="relu").state_dict())
    assert ecb_relu.args["act"] == "relu" and "act" in ecb_relu.assumed


def test_registry_names_of_published_sizes() -> None:
    sizes = {"ecbsr_m4c8": (4, 8), "ecbsr_m4c16": (4, 16), "ecbsr_m10c32": (10, 32), "ecbsr_m16c64": (16, 64)}
    for name, (blocks, channels) in sizes.items():
        with torch.device("meta"):
            state = create_model(name, scale=4, colors=1).state_dict()
        det = detect(state)
        assert det.arch == name and (det.args["blocks"], det.args["channels"]) == (blocks, channels)
    for name in ("fsrcnn", "fsrcnn_s", "srvgg_compact", "srvgg_compact_c32", "span_ch48", "span_ch52"):
        with torch.device("meta"):
            state = create_model(name, scale=4).state_dict()
        assert detect(state).arch == name
    assert nearest_name({(4, 8): "a", (10, 32): "b"}, (9, 30)) == "b"


def test_span_official_file_without_fused_kernels(tmp_path: Path) -> None:
    # a file that ships only the branches: the fused eval_conv is computed from them on load
    model = _trained("span_ch48", {"scale": 2, "feature_channels": 4})
    state = {k: v for k, v in model.state_dict().items() if ".eval_conv." not in k}
    state = load_state_dict_file(_write(state, tmp_path / "w.pth", "params"))
    det = detect(state)
    assert det.form == "train" and det.args["feature_channels"] == 4
    net = _load(det, state)
    full = model.state_dict()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, full[k], rtol=0, atol=1e-6)
    x = _x(3)
    with torch.no_grad():
        assert torch.equal(net(x), model(x))


# ---- deploy forms: fused weights under the published names


def _ecbsr_plainsr(model: nn.Module, fused: nn.Module) -> dict[str, Tensor]:
    """The official conversion script's ``PlainSR`` state dict: per ECB, its re-parameterized 3x3 kernel as
    ``backbone.N.conv3x3`` and its PReLU as ``backbone.N.act``."""
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for n, block in enumerate(model.backbone):  # type: ignore[arg-type, union-attr]
            w, b = block.rep_params()
            out[f"backbone.{n}.conv3x3.weight"], out[f"backbone.{n}.conv3x3.bias"] = w, b
            if isinstance(block.act, nn.PReLU):
                out[f"backbone.{n}.act.weight"] = block.act.weight
    return out


def _span_challenge(model: nn.Module, fused: nn.Module) -> dict[str, Tensor]:
    """The NTIRE 2024 entry's layout: each Conv3XC keeps only ``eval_conv`` (the fused kernel)."""
    return {
        k: v
        for k, v in model.state_dict().items()
        if ".eval_conv." in k or k.startswith(("conv_cat.", "upsampler.")) or k == "no_norm"
    }


def _fused(model: nn.Module, fused: nn.Module) -> dict[str, Tensor]:
    """The fused model's own state dict (``reparameterize(model).state_dict()``)."""
    return fused.state_dict()


DEPLOY_CASES: list[
    tuple[str, dict[str, Any], str, Callable[[nn.Module, nn.Module], dict[str, Tensor]], str]
] = [
    (
        "ecbsr_m4c8",
        {"scale": 3, "colors": 1, "blocks": 2, "channels": 5, "act": "prelu"},
        "ecbsr_m4c8",
        _ecbsr_plainsr,
        "plainsr",
    ),
    (
        "ecbsr_m4c16",
        {"scale": 2, "colors": 3, "blocks": 3, "channels": 6, "act": "relu"},
        "ecbsr_m4c8",
        _ecbsr_plainsr,
        "plainsr",
    ),
    (
        "ecbsr_m4c8",
        {"scale": 4, "colors": 3, "blocks": 1, "channels": 4, "act": "prelu"},
        "ecbsr_m4c8",
        _fused,
        "deploy",
    ),
    # a fused RepSR net is ECBSR's PlainSR: detected (and loaded) as that
    (
        "repsr_m4c16",
        {"scale": 2, "colors": 1, "blocks": 3, "channels": 6, "act": "prelu"},
        "ecbsr_m4c8",
        _fused,
        "deploy",
    ),
    (
        "span_ch48",
        {"scale": 3, "feature_channels": 5, "img_range": 255.0, "norm": True},
        "span_ch48",
        _span_challenge,
        "ntire2024",
    ),
    (
        "span_ch48",
        {"scale": 2, "feature_channels": 4, "img_range": 255.0, "norm": False},
        "span_ch48",
        _fused,
        "deploy",
    ),
]


@pytest.mark.parametrize(
    ("name", "args", "arch", "write", "layout"),
    DEPLOY_CASES,
    ids=[f"{c[0]}-{c[4]}-x{c[1]['scale']}" for c in DEPLOY_CASES],
)
def test_deploy_form_is_detected_and_loads_into_the_fused_model(
    name: str,
    args: dict[str, Any],
    arch: str,
    write: Callable[[nn.Module, nn.Module], dict[str, Tensor]],
    layout: str,
    tmp_path: Path,
) -> None:
    model = _trained(name, args)
    fused = reparameterize(model)
    wrap = WRAPS[DEPLOY_CASES.index((name, args, arch, write, layout)) % len(WRAPS)]
    state = load_state_dict_file(_write(write(model, fused), tmp_path / "w.pth", wrap))
    det = detect(state)
    assert (det.arch, det.form, det.layout) == (arch, "deploy", layout)
    assert det.args == args  # the deploy net depends on no other argument
    net = _load(det, state)
    assert type(net) is type(fused)
    x = _x(_colors(args))
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(y, fused(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(y, model(x), rtol=0, atol=1e-3)  # SPAN computes on 0..255


def test_official_span_with_branches_and_fused_kernels_is_the_train_form() -> None:
    model = _trained("span_ch48", {"scale": 2, "feature_channels": 4})
    state = model.state_dict()
    assert "block_1.c1_r.eval_conv.weight" in state and "block_1.c1_r.sk.weight" in state
    det = detect(state)
    assert det.form == "train" and det.layout == "official" and det.adapt is None


# ---- no detector claims another family's weights


def _other_states() -> list[tuple[str, str, dict[str, Tensor]]]:
    """(family, what, state dict) for every registered model at its defaults (meta tensors) and every case
    above, training and deploy layouts."""
    out: list[tuple[str, str, dict[str, Tensor]]] = []
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        for name in list_models():
            out.append((get_entry(name).family, name, create_model(name, scale=2).state_dict()))
        for name, args in TRAIN_CASES:
            out.append((get_entry(name).family, f"{name}{args}", create_model(name, **args).state_dict()))
        for name, args, _, write, layout in DEPLOY_CASES:
            fam = "ecbsr" if get_entry(name).family == "repsr" else get_entry(name).family
            model = create_model(name, **args).eval()
            out.append((fam, f"{name} {layout}", write(model, reparameterize(model))))
    return out


def test_each_detector_answers_only_for_its_own_family() -> None:
    table = detectors()
    assert set(MINE) <= set(table)
    states = _other_states()
    for fam in MINE:
        for owner, what, state in states:
            got = table[fam](state)
            if owner == fam:
                assert got is not None, (fam, what)
            else:
                assert got is None, f"the {fam} detector claims {what}"


def test_unrelated_weights_are_refused() -> None:
    srcnn = create_model("srcnn_955", scale=2, features=4, mid_features=4).state_dict()
    extra = {**srcnn, "conv4.weight": torch.zeros(3, 3, 3, 3)}
    assert detectors()["srcnn"](extra) is None
    espcn = create_model("espcn", scale=2, features=4, mid_features=4).state_dict()
    # a last conv whose channels are not colours · s² cannot be an ESPCN
    bad = {**espcn, "last_part.0.weight": torch.zeros(6, 4, 3, 3), "last_part.0.bias": torch.zeros(6)}
    with pytest.raises(ValueError, match="not 3·s²"):
        detectors()["espcn"](bad)
    with pytest.raises(ValueError, match="not a multiple"):
        pixel_shuffle_scale(10, 3)
    span = create_model("span_ch48", scale=2, feature_channels=4).state_dict()
    gray = {**span, "conv_1.sk.weight": torch.zeros(4, 1, 1, 1)}
    with pytest.raises(ValueError, match="RGB"):
        detectors()["span"](gray)
