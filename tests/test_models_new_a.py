"""PAN, RLFN and IMDN: published sizes, official key names, detection round trips, equal-math rewrites."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.errors import ConfigError
from edge_sr.models import create_model, get_entry, list_models, load_state_dict_file
from edge_sr.models.detect import detect, detectors
from edge_sr.models.pan import BilinearUpsample, nearest_upsample

NEW_FAMILIES = ("pan", "rlfn", "imdn")


def _params(name: str, scale: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, scale=scale).parameters())


# (entry, scale, parameters of the official code, the paper's count)
PUBLISHED = [
    ("pan", 4, 272_419, 272_000),
    ("pan", 2, 261_403, 261_000),
    ("rlfn", 4, 543_740, 543_000),
    ("rlfn_s", 4, 317_218, 317_000),
    ("imdn", 4, 715_176, 715_000),
    ("imdn", 2, 694_404, 694_000),
]


@pytest.mark.parametrize(("name", "scale", "exact", "paper"), PUBLISHED)
def test_parameter_counts_match_the_papers(name: str, scale: int, exact: int, paper: int) -> None:
    n = _params(name, scale)
    assert n == exact
    assert abs(n - paper) / paper < 0.005


def test_official_key_names() -> None:
    with torch.device("meta"):
        pan = create_model("pan", scale=4).state_dict()
        rlfn = create_model("rlfn_s", scale=4).state_dict()
        imdn = create_model("imdn", scale=4).state_dict()
        rtc = create_model("imdn_rtc", scale=2).state_dict()
    for k in (
        "conv_first.weight",
        "SCPA_trunk.15.conv1_a.weight",
        "SCPA_trunk.0.k1.0.weight",
        "SCPA_trunk.0.PAConv.k2.bias",
        "SCPA_trunk.0.PAConv.k4.weight",
        "SCPA_trunk.0.conv3.weight",
        "trunk_conv.bias",
        "att1.conv.weight",
        "HRconv2.weight",
        "conv_last.weight",
    ):
        assert k in pan, k
    assert "SCPA_trunk.0.k1.0.bias" not in pan and tuple(pan["upconv1.weight"].shape) == (24, 40, 3, 3)
    for k in ("conv_1.weight", "block_4.c3_r.weight", "block_1.esa.conv_f.weight", "block_4.esa.conv4.bias"):
        assert k in rlfn, k
    assert "block_5.c1_r.weight" not in rlfn and tuple(rlfn["block_1.c2_r.weight"].shape) == (48, 48, 3, 3)
    for k in (
        "fea_conv.weight",
        "IMDB6.c4.weight",
        "IMDB1.cca.conv_du.2.weight",
        "c.0.weight",
        "LR_conv.bias",
    ):
        assert k in imdn, k
    assert tuple(imdn["c.0.weight"].shape) == (64, 384, 1, 1) and tuple(imdn["IMDB1.c4.weight"].shape)[
        :2
    ] == (16, 48)
    # the official IMDN_RTC keys are these under "model.", a shared prefix checkpoint reading removes
    assert {"0.weight", "1.sub.4.c5.weight", "1.sub.5.weight", "2.weight"} <= set(rtc)
    assert not any(".cca." in k for k in rtc)


# non-default configurations, as the official code would save them (rtc: under the official "model." prefix)
ROUND_TRIP = [
    ("pan", {"scale": 4, "colors": 3, "nf": 10, "unf": 6, "nb": 2}, ""),
    ("pan", {"scale": 2, "colors": 1, "nf": 6, "unf": 4, "nb": 3}, ""),
    (
        "rlfn",
        {
            "scale": 3,
            "colors": 3,
            "feature_channels": 12,
            "mid_channels": 10,
            "num_blocks": 2,
            "esa_channels": 8,
            "img_range": 255.0,
        },
        "",
    ),
    ("imdn", {"scale": 3, "colors": 3, "nf": 20, "num_modules": 2}, ""),
    ("imdn", {"scale": 4, "colors": 1, "nf": 16, "num_modules": 3}, ""),
    ("imdn_rtc", {"scale": 3, "colors": 3, "nf": 8, "num_modules": 2}, "model."),
]


@pytest.mark.parametrize(("arch", "args", "prefix"), ROUND_TRIP)
def test_official_checkpoint_is_detected_and_loads(arch: str, args: dict, prefix: str, tmp_path) -> None:
    torch.manual_seed(0)
    src = create_model(arch, **args).eval()
    with torch.no_grad():
        for p in src.parameters():  # away from the initialisation, so a wrong load would show
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f"{arch}.pth"
    torch.save({"params": {prefix + k: v for k, v in src.state_dict().items()}}, path)

    state = load_state_dict_file(path)
    det = detect(state, path=path)
    assert det.arch == arch and det.family == get_entry(arch).family
    assert det.args == args and det.form == "train" and det.colors == args["colors"]
    net = create_model(det.arch, **det.args).eval()
    net.load_state_dict(det.state(state), strict=True)
    x = torch.rand(1, args["colors"], 17, 15)
    with torch.no_grad():
        assert torch.equal(net(x), src(x))
    assert net(x).shape == (1, args["colors"], 17 * args["scale"], 15 * args["scale"])


def test_detection_reports_what_the_weights_cannot_tell() -> None:
    with torch.device("meta"):
        rlfn = create_model("rlfn_s", scale=4).state_dict()
        pan3 = create_model("pan", scale=3, nf=8, unf=4, nb=1).state_dict()
        rtc = {"model." + k: v for k, v in create_model("imdn_rtc", scale=2).state_dict().items()}
    d = detect(rlfn)
    assert d.value_range == 255.0 and d.args["img_range"] == 255.0 and "img_range" in d.assumed
    assert (d.args["feature_channels"], d.args["mid_channels"], d.args["num_blocks"]) == (46, 48, 4)
    # x2 and x3 PAN weights are alike: 2 is assumed and said so
    d = detect(pan3)
    assert d.args["scale"] == 2 and "scale" in d.assumed
    assert create_model("pan", **{**d.args, "scale": 3}).state_dict().keys() == pan3.keys()
    # the official IMDN_RTC names, unwrapped or not
    d = detect(rtc)
    assert d.arch == "imdn_rtc" and d.args == {"scale": 2, "colors": 3, "nf": 12, "num_modules": 5}
    assert set(d.state(rtc)) == set(create_model("imdn_rtc", scale=2).state_dict())


def _meta_states() -> dict[str, dict[str, torch.Tensor]]:
    """Every registered model's default x4 state dict, and x2 for the families here (meta tensors: names
    and shapes only)."""
    out = {}
    for name in list_models():
        for scale in (4, 2) if get_entry(name).family in NEW_FAMILIES else (4,):
            with torch.device("meta"):
                out[f"{name}_x{scale}"] = create_model(name, scale=scale).state_dict()
    return out


def test_detectors_refuse_other_families() -> None:
    table = detectors()
    states = _meta_states()
    for fam in NEW_FAMILIES:
        fn = table[fam]
        for key, state in states.items():
            name = key.rsplit("_x", 1)[0]
            if get_entry(name).family == fam:
                assert fn(state) is not None, key
            else:
                assert fn(state) is None, f"the {fam} detector answered for {key}"
    for key in ("pan_x4", "rlfn_x2", "rlfn_s_x4", "imdn_x4", "imdn_rtc_x2"):
        d = detect(states[key])  # proven, and no other family fits
        assert d.arch == key.rsplit("_x", 1)[0] and d.scale == int(key[-1])


@pytest.mark.parametrize("name", ["pan", "rlfn", "rlfn_s", "imdn", "imdn_rtc"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(name: str, scale: int) -> None:
    tiny = {
        "pan": {"nf": 8, "unf": 4, "nb": 1},
        "rlfn": {"feature_channels": 8, "mid_channels": 6, "num_blocks": 1, "esa_channels": 4},
        "imdn": {"nf": 16, "num_modules": 2},
    }[get_entry(name).family]
    m = create_model(name, scale=scale, **tiny).eval()
    for h, w in [(3, 4), (9, 20)]:  # RLFN's strided attention conv needs 3 pixels
        with torch.no_grad():
            y = m(torch.rand(2, 3, h, w))
        assert y.shape == (2, 3, h * scale, w * scale) and torch.isfinite(y).all()


def test_constructors_refuse_what_the_architecture_cannot_build() -> None:
    with pytest.raises(ConfigError, match="scale 5"):
        create_model("pan", scale=5)
    with pytest.raises(ConfigError, match="even"):
        create_model("pan", scale=2, nf=9)
    with pytest.raises(ConfigError, match="multiple of 4"):
        create_model("imdn", scale=2, nf=18)
    with pytest.raises(ConfigError, match="at least 16"):
        create_model("imdn", scale=2, nf=12)


# ---- the rewrites are the official math


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pan_upsamplers_equal_interpolate(scale: int) -> None:
    x = torch.rand(2, 5, 7, 11, dtype=torch.float64)
    assert torch.equal(nearest_upsample(x, scale), F.interpolate(x, scale_factor=scale, mode="nearest"))
    bil = BilinearUpsample(scale, 5).double()
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert (bil(x) - ref).abs().max() < 1e-7  # the x3 taps are stored in float32


def _official_pan(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official PAN forward (F.interpolate for both enlargements) on the module's layers."""
    lrelu = nn.LeakyReLU(0.2)
    fea = m.conv_first(x)
    fea = fea + m.trunk_conv(m.SCPA_trunk(fea))
    ups = [(m.scale, 1)] if m.scale in (2, 3) else [(2, 1), (2, 2)]
    for s, i in ups:
        fea = getattr(m, f"upconv{i}")(F.interpolate(fea, scale_factor=s, mode="nearest"))
        fea = lrelu(getattr(m, f"att{i}")(fea))
        fea = lrelu(getattr(m, f"HRconv{i}")(fea))
    return m.conv_last(fea) + F.interpolate(x, scale_factor=m.scale, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pan_forward_equals_official(scale: int) -> None:
    torch.manual_seed(scale)
    m = create_model("pan", scale=scale, nf=8, unf=6, nb=2).double().eval()
    x = torch.rand(1, 3, 10, 13, dtype=torch.float64)
    with torch.no_grad():
        assert (m(x) - _official_pan(m, x)).abs().max() < 1e-6


def _official_esa(esa: nn.Module, x: torch.Tensor) -> torch.Tensor:
    c1 = esa.conv1(x)
    small = esa.conv3(F.max_pool2d(esa.conv2(c1), kernel_size=7, stride=3))
    up = F.interpolate(small, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
    return x * torch.sigmoid(esa.conv4(up + esa.conv_f(c1)))


def test_rlfn_attention_equals_official_where_the_official_runs() -> None:
    torch.manual_seed(0)
    m = create_model("rlfn", scale=2, feature_channels=8, num_blocks=1, esa_channels=4).eval()
    esa = m.block_1.esa
    for h, w in [(15, 15), (24, 40), (33, 17)]:
        x = torch.randn(1, 8, h, w)
        with torch.no_grad():
            assert torch.equal(esa(x), _official_esa(esa, x))
    with torch.no_grad():  # smaller maps: pooled over what there is (the official pooling cannot run)
        with pytest.raises(RuntimeError):
            _official_esa(esa, torch.randn(1, 8, 13, 18))
        assert esa(torch.randn(1, 8, 13, 18)).shape == (1, 8, 13, 18)


def test_rlfn_computes_on_its_img_range() -> None:
    torch.manual_seed(0)
    a = create_model("rlfn", scale=2, feature_channels=8, num_blocks=1, esa_channels=4).eval()
    b = create_model("rlfn", scale=2, feature_channels=8, num_blocks=1, esa_channels=4, img_range=1.0).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # a [0, 255] network given [0, 1] input: the boundary scales by 255 both ways
        assert torch.allclose(a(x), b(x * 255) / 255, rtol=1e-5, atol=1e-6)
