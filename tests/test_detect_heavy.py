"""Detection of the heavy families (EDSR, RCAN, CARN-M, SwinIR, HAT) from their published key layouts.

For every family and layout a non-default tiny model is built, its weights written under that layout's key
names to a ``.pth`` (inside a ``params`` / ``params_ema`` wrapper) and read back with
``load_state_dict_file``; ``detect`` must return exactly the constructor arguments, and the model it
describes must load strictly and give the source model's output. BasicSR files are also checked against a
functional transcription of BasicSR's own forward pass.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError
from edge_sr.models import create_model, get_entry, list_models, load_state_dict_file
from edge_sr.models.carn import select_scale
from edge_sr.models.detect import Detection, detect, detectors

MINE = ("edsr", "rcan", "carn", "swinir", "hat")
DIV2K_MEAN = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)

# (id, arch, full constructor arguments): none of them a registry default
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "edsr": ("edsr_baseline", {"scale": 3, "n_resblocks": 3, "n_feats": 12, "res_scale": 1.0, "rgb_range": 255.0}),
    "rcan": ("rcan", {"scale": 2, "n_resgroups": 2, "n_resblocks": 3, "n_feats": 16, "reduction": 4, "rgb_range": 255.0}),
    "carn": ("carn_m", {"scale": 3, "channels": 16, "group": 2}),
    "swinir-classical": ("swinir_classical", {
        "scale": 2, "img_size": 16, "embed_dim": 12, "depths": (2, 3), "num_heads": (3, 2), "window_size": 4,
        "mlp_ratio": 1.5, "qkv_bias": True, "patch_norm": True, "resi_connection": "3conv",
        "upsampler": "pixelshuffle", "num_feat": 8, "img_range": 1.0,
    }),
    "swinir-lightweight": ("swinir_lightweight", {
        "scale": 3, "img_size": 12, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": False, "patch_norm": True, "resi_connection": "1conv",
        "upsampler": "pixelshuffledirect", "img_range": 1.0,
    }),
    "swinir-real-x4": ("swinir_classical", {
        "scale": 4, "img_size": 8, "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "patch_norm": False, "resi_connection": "3conv",
        "upsampler": "nearest+conv", "num_feat": 8, "img_range": 1.0,
    }),
    "swinir-real-x2": ("swinir_classical", {
        "scale": 2, "img_size": 16, "embed_dim": 8, "depths": (1, 2), "num_heads": (2, 4), "window_size": 4,
        "mlp_ratio": 3.0, "qkv_bias": True, "patch_norm": True, "resi_connection": "1conv",
        "upsampler": "nearest+conv", "num_feat": 4, "img_range": 1.0,
    }),
    "hat": ("hat", {
        "scale": 2, "embed_dim": 12, "depths": (2, 1), "num_heads": (2, 3), "window_size": 4, "mlp_ratio": 1.0,
        "qkv_bias": True, "patch_norm": True, "resi_connection": "1conv", "compress_ratio": 3,
        "squeeze_factor": 4, "overlap_ratio": 0.5, "conv_scale": 0.01, "img_range": 1.0, "num_feat": 8,
    }),
    "hat-s": ("hat_s", {
        "scale": 3, "embed_dim": 16, "depths": (2,), "num_heads": (4,), "window_size": 8, "mlp_ratio": 2.0,
        "qkv_bias": False, "patch_norm": True, "resi_connection": "3conv", "compress_ratio": 8,
        "squeeze_factor": 16, "overlap_ratio": 0.25, "conv_scale": 0.01, "img_range": 1.0, "num_feat": 8,
    }),
}  # fmt: skip
BASICSR_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "edsr": ("edsr_baseline", {"scale": 4, "n_resblocks": 2, "n_feats": 16, "res_scale": 1.0, "rgb_range": 255.0}),
    "rcan": ("rcan", {"scale": 3, "n_resgroups": 3, "n_resblocks": 2, "n_feats": 8, "reduction": 2, "rgb_range": 255.0}),
}  # fmt: skip


def _build(arch: str, args: dict[str, Any], seed: int = 0) -> nn.Module:
    """The model with every trainable tensor random (zero-initialised biases and norms included)."""
    model = create_model(arch, **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _roundtrip(state: dict[str, Tensor], path, wrapper: str) -> dict[str, Tensor]:
    """``state`` saved inside ``wrapper`` and read back as a user's file would be."""
    torch.save({wrapper: state, "iter": 1000}, path)
    return load_state_dict_file(path)


def _load(d: Detection, state: dict[str, Tensor]) -> nn.Module:
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(state), strict=True)
    return net


def _x(seed: int = 1) -> Tensor:
    return torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(seed))  # not a window multiple


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_layout_detected_exactly(case: str, tmp_path) -> None:
    arch, args = CASES[case]
    model = _build(arch, args)
    wrapper = ("params", "params_ema")[sorted(CASES).index(case) % 2]  # both wrappers, alternately
    state = _roundtrip(model.state_dict(), tmp_path / f"{case}.pth", wrapper)
    d = detect(state, path=tmp_path / f"{case}.pth")
    assert (d.arch, d.args, d.layout, d.form) == (arch, args, "official", "train")
    assert d.family == get_entry(arch).family
    net = _load(d, state)
    with torch.no_grad():
        assert torch.equal(net(_x()), model(_x()))


# ---- BasicSR layouts: the inverse renaming, and BasicSR's forward written out


def _edsr_to_basicsr(sd: dict[str, Tensor], n_resblocks: int) -> dict[str, Tensor]:
    rules = [
        (r"head\.0\.", "conv_first."),
        (rf"body\.{n_resblocks}\.", "conv_after_body."),
        (r"body\.(\d+)\.body\.0\.", r"body.\1.conv1."),
        (r"body\.(\d+)\.body\.2\.", r"body.\1.conv2."),
        (r"tail\.0\.", "upsample."),
        (r"tail\.1\.", "conv_last."),
    ]
    return _apply(sd, rules)


def _rcan_to_basicsr(sd: dict[str, Tensor], groups: int, blocks: int) -> dict[str, Tensor]:
    rules = [
        (r"head\.0\.", "conv_first."),
        (rf"body\.{groups}\.", "conv_after_body."),
        (rf"body\.(\d+)\.body\.{blocks}\.", r"body.\1.conv."),
        (
            r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.",
            r"body.\1.residual_group.\2.rcab.3.attention.1.",
        ),
        (
            r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.",
            r"body.\1.residual_group.\2.rcab.3.attention.3.",
        ),
        (r"body\.(\d+)\.body\.(\d+)\.body\.([02])\.", r"body.\1.residual_group.\2.rcab.\3."),
        (r"tail\.0\.", "upsample."),
        (r"tail\.1\.", "conv_last."),
    ]
    return _apply(sd, rules)


def _apply(sd: dict[str, Tensor], rules: list[tuple[str, str]]) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean.", "add_mean.")):
            continue  # BasicSR holds the mean outside its state dict
        for pat, rep in rules:
            new, n = re.subn("^" + pat, rep, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def _conv(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], padding=w.shape[-1] // 2)


def _basicsr_tail(sd: dict[str, Tensor], res: Tensor) -> Tensor:
    i = 0
    while f"upsample.{i}.weight" in sd:
        y = _conv(sd, f"upsample.{i}", res)
        res = F.pixel_shuffle(y, math.isqrt(y.shape[1] // res.shape[1]))
        i += 2
    return _conv(sd, "conv_last", res)


def basicsr_edsr(
    sd: dict[str, Tensor], x: Tensor, img_range: float = 255.0, res_scale: float = 1.0
) -> Tensor:
    """BasicSR's ``EDSR.forward``: ``(x - mean) · img_range``, conv_first, residual blocks,
    conv_after_body + skip, upsample, conv_last, ``/ img_range + mean``."""
    x = (x - DIV2K_MEAN) * img_range
    feat = h = _conv(sd, "conv_first", x)
    i = 0
    while f"body.{i}.conv1.weight" in sd:
        h = h + _conv(sd, f"body.{i}.conv2", F.relu(_conv(sd, f"body.{i}.conv1", h))) * res_scale
        i += 1
    return _basicsr_tail(sd, _conv(sd, "conv_after_body", h) + feat) / img_range + DIV2K_MEAN


def basicsr_rcan(sd: dict[str, Tensor], x: Tensor, img_range: float = 255.0) -> Tensor:
    """BasicSR's ``RCAN.forward``: groups of RCABs (conv, ReLU, conv, channel attention, + input) closed by
    ``body.{g}.conv`` + group input, then as EDSR."""
    x = (x - DIV2K_MEAN) * img_range
    feat = h = _conv(sd, "conv_first", x)
    g = 0
    while f"body.{g}.conv.weight" in sd:
        group_in, b = h, 0
        while f"body.{g}.residual_group.{b}.rcab.0.weight" in sd:
            p = f"body.{g}.residual_group.{b}.rcab"
            r = _conv(sd, f"{p}.2", F.relu(_conv(sd, f"{p}.0", h)))
            gate = torch.sigmoid(
                _conv(
                    sd,
                    f"{p}.3.attention.3",
                    F.relu(_conv(sd, f"{p}.3.attention.1", r.mean((2, 3), keepdim=True))),
                )
            )
            h = r * gate + h
            b += 1
        h = _conv(sd, f"body.{g}.conv", h) + group_in
        g += 1
    return _basicsr_tail(sd, _conv(sd, "conv_after_body", h) + feat) / img_range + DIV2K_MEAN


@pytest.mark.parametrize("family", sorted(BASICSR_CASES))
def test_basicsr_layout_detected_and_matches_basicsr(family: str, tmp_path) -> None:
    arch, args = BASICSR_CASES[family]
    model = _build(arch, args, seed=3)
    if family == "edsr":
        sd = _edsr_to_basicsr(model.state_dict(), args["n_resblocks"])
        assert {
            "conv_first.weight",
            "body.0.conv1.weight",
            "conv_after_body.weight",
            "upsample.2.weight",
        } <= set(sd)
    else:
        sd = _rcan_to_basicsr(model.state_dict(), args["n_resgroups"], args["n_resblocks"])
        assert {"body.0.residual_group.1.rcab.3.attention.3.weight", "body.2.conv.weight"} <= set(sd)
    assert not any(k.startswith(("head.", "tail.", "sub_mean")) for k in sd)
    # a BasicSR run with EMA saves both; the EMA weights are the ones to use
    path = tmp_path / "net_g_latest.pth"
    torch.save({"params": {k: v + 1.0 for k, v in sd.items()}, "params_ema": sd}, path)
    state = load_state_dict_file(path)
    d = detect(state)
    assert (d.arch, d.args, d.layout) == (arch, args, "basicsr")
    assert d.value_range == 255.0 and d.mean == pytest.approx((0.4488, 0.4371, 0.4040))
    assert {"rgb_range", "mean"} <= set(d.assumed)
    net = _load(d, state)
    x = _x(2)
    with torch.no_grad():
        got, source = net(x), model(x)
        reference = (basicsr_edsr if family == "edsr" else basicsr_rcan)(state, x)
    assert torch.equal(got, source)
    assert (got - reference).abs().max() < 1e-5  # same network; float32 rounding of the 255-range path


def test_carn_multiscale_release_reads_as_x4(tmp_path) -> None:
    base = {"channels": 8, "group": 4}
    models = {s: _build("carn_m", {"scale": s, **base}, seed=s) for s in (2, 3, 4)}
    body = {k: v for k, v in models[4].state_dict().items() if not k.startswith("upsample.")}
    state = dict(body)
    for s, m in models.items():
        m.load_state_dict({**m.state_dict(), **body})  # one body, three upsamplers
        state.update(
            {
                f"upsample.up{s}.{k[len('upsample.up.') :]}": v
                for k, v in m.state_dict().items()
                if k.startswith("upsample.up.")
            }
        )
    state = _roundtrip(state, tmp_path / "carn_m.pth", "params")
    d = detect(state)
    assert (d.arch, d.args, d.layout) == ("carn_m", {"scale": 4, **base}, "official-multiscale")
    assert "scale" in d.assumed
    with torch.no_grad():
        assert torch.equal(_load(d, state)(_x()), models[4](_x()))
        for s in (2, 3):
            net = create_model("carn_m", scale=s, **base).eval()
            net.load_state_dict(select_scale(state, s), strict=True)
            assert torch.equal(net(_x()), models[s](_x()))
    with pytest.raises(KeyError, match="up8"):
        select_scale(state, 8)


@pytest.mark.parametrize("case", ["swinir-classical", "hat"])
def test_window_models_without_buffers_get_them_back(case: str, tmp_path) -> None:
    # forks that keep the index tables and masks out of the state dict: the detection adds them
    arch, args = CASES[case]
    model = _build(arch, args)
    full = model.state_dict()
    sd = {k: v for k, v in full.items() if "relative_position_index" not in k and "attn_mask" not in k}
    assert len(sd) < len(full)
    state = _roundtrip(sd, tmp_path / "fork.pth", "params")
    d = detect(state)
    assert d.layout == "official-nobuffers"
    if case == "hat":
        assert d.args == args
    else:  # the mask gave the training patch size; without it the released models' is assumed
        assert "img_size" in d.assumed and d.args["img_size"] == 64
        assert {**d.args, "img_size": args["img_size"]} == args
    with torch.no_grad():
        assert torch.equal(_load(d, state)(_x()), model(_x()))


def test_nearest_conv_head_is_the_official_one() -> None:
    # official real-SR head: conv_before_upsample (LeakyReLU 0.01), then per x2: nearest, conv, LeakyReLU 0.2,
    # then conv_hr, LeakyReLU 0.2, conv_last
    for case in ("swinir-real-x4", "swinir-real-x2"):
        arch, args = CASES[case]
        m = _build(arch, args, seed=5)
        x = torch.rand(1, 3, 8, 8)  # a window multiple: no padding or crop
        sd = m.state_dict()
        with torch.no_grad():
            f = m.conv_first((x - m.mean) * m.img_range)
            f = m.conv_after_body(m.forward_features(f)) + f
            y = F.leaky_relu(_conv(sd, "conv_before_upsample.0", f), 0.01)
            for name in ("conv_up1", "conv_up2")[: int(math.log2(args["scale"]))]:
                y = F.leaky_relu(_conv(sd, name, F.interpolate(y, scale_factor=2, mode="nearest")), 0.2)
            y = _conv(sd, "conv_last", F.leaky_relu(_conv(sd, "conv_hr", y), 0.2)) / m.img_range + m.mean
            torch.testing.assert_close(m(x), y, atol=1e-6, rtol=0)
        assert ("conv_up2.weight" in sd) == (args["scale"] == 4)


# ---- every scale, and the released sizes, on the meta device (shapes only)


SCALES = [
    (case, s)
    for case in sorted(CASES)
    for s in (2, 3, 4)
    if s != 3 or CASES[case][1].get("upsampler") != "nearest+conv"  # the real-SR head: x2 and x4 only
]


@pytest.mark.parametrize(("case", "scale"), SCALES)
def test_scale_read_from_the_upsampler(case: str, scale: int) -> None:
    arch, args = CASES[case]
    args = {**args, "scale": scale}
    with torch.device("meta"):
        sd = create_model(arch, **args).state_dict()
    assert detect(sd).args == args


RELEASED = [  # (arch, overrides, parameters at x4 as reported by the papers, in millions)
    ("edsr_baseline", {}, 1.5),
    ("edsr", {}, 43.0),
    ("rcan", {}, 15.6),
    ("swinir_classical", {}, 11.9),
    ("swinir_lightweight", {}, 0.897),  # SwinIR-S; the paper leaves the bias tables (32 400) out
    ("swinir_classical", {"embed_dim": 240, "depths": (6,) * 9, "num_heads": (8,) * 9, "upsampler": "nearest+conv", "resi_connection": "3conv"}, None),
    ("hat_s", {}, 9.6),
    ("hat", {}, 20.8),
    ("hat", {"depths": (6,) * 12, "num_heads": (6,) * 12}, 40.8),  # HAT-L
    ("carn_m", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("arch", "overrides", "paper"), RELEASED)
def test_released_configurations_keep_their_names(arch: str, overrides: dict, paper: float | None) -> None:
    # the detector alone: the tiny cases above prove that what it describes fits
    with torch.device("meta"):
        model = create_model(arch, scale=4, **overrides)
    d = detectors()[get_entry(arch).family](model.state_dict())
    assert d is not None and d.arch == arch and d.scale == 4
    for k, v in overrides.items():
        assert d.args[k] == v
    if paper is not None:
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if arch == "swinir_lightweight":
            n -= sum(
                p.numel() for k, p in model.named_parameters() if k.endswith("relative_position_bias_table")
            )
        assert abs(n / 1e6 - paper) / paper < 0.02


def test_basicsr_full_edsr_is_named_edsr() -> None:
    with torch.device("meta"):
        model = create_model("edsr", scale=2)
    d = detect(_edsr_to_basicsr(model.state_dict(), 32))
    assert (d.arch, d.layout, d.args["res_scale"], d.args["n_feats"]) == ("edsr", "basicsr", 0.1, 256)


# ---- refusals


def _other_states() -> list[tuple[str, str, dict[str, Tensor]]]:
    """(family, name, state dict) of every other family's zoo models at their defaults (meta) and of the
    layouts above."""
    out = []
    for name in list_models():
        if get_entry(name).family in MINE:
            continue  # these families are represented by the tiny cases below
        try:
            with torch.device("meta"):
                out.append((get_entry(name).family, name, create_model(name, scale=2).state_dict()))
        except Exception:  # a family that cannot be built on meta is not reachable here
            continue
    with torch.device("meta"):
        for case, (arch, args) in {**CASES, **{f"basicsr-{k}": v for k, v in BASICSR_CASES.items()}}.items():
            sd = create_model(arch, **args).state_dict()
            if case == "basicsr-edsr":
                sd = _edsr_to_basicsr(sd, args["n_resblocks"])
            elif case == "basicsr-rcan":
                sd = _rcan_to_basicsr(sd, args["n_resgroups"], args["n_resblocks"])
            out.append((get_entry(arch).family, case, sd))
    return out


def test_each_detector_refuses_the_other_families() -> None:
    table = detectors()
    states = _other_states()
    assert {f for f, _, _ in states} >= set(MINE)
    for fam in MINE:
        for other, name, sd in states:
            if other != fam:
                assert table[fam](sd) is None, f"the {fam} detector answered for {name}"
            else:
                assert table[fam](sd) is not None, f"the {fam} detector missed {name}"


def test_edsr_with_a_tensor_missing_names_edsr_closest(tmp_path) -> None:
    arch, args = CASES["edsr"]
    sd = _build(arch, args).state_dict()
    del sd["body.1.body.2.weight"]
    path = tmp_path / "edsr_x3.pth"
    state = _roundtrip(sd, path, "params")
    with pytest.raises(CheckpointError, match="closest is edsr") as e:
        detect(state, path=path)
    assert "body.1.body.2.weight" in str(e.value)
