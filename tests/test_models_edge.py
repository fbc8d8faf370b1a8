"""Edge model zoo: shapes at every scale, strict constructors, official key names, stats, `edge-sr models`."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_args import FAMILY_TINY

from edge_sr.cli import main
from edge_sr.errors import ConfigError
from edge_sr.models import card_of, create_model, get_entry, list_models, load_checkpoint, save_checkpoint
from edge_sr.models.stats import count_params, macs_per_lr_pixel, model_summary

# Tiny overrides per family so the whole zoo runs in seconds on two cores.
TINY: dict[str, dict] = {
    "srcnn": {"features": 8, "mid_features": 4},
    "espcn": {"features": 8, "mid_features": 4},
    "fsrcnn": {"d": 8, "s": 4, "m": 1},
    "carn": {"channels": 8, "group": 2},
    "ecbsr": {"blocks": 1, "channels": 4},
    "repsr": {"blocks": 1, "channels": 4},
    "srvgg": {"num_feat": 4, "num_conv": 2},
    "span": {"feature_channels": 4},
    **FAMILY_TINY,
}
EDGE = [n for n in list_models(kind="edge")]


def tiny(name: str, scale: int = 4) -> torch.nn.Module:
    return create_model(name, scale=scale, **TINY[get_entry(name).family])


def test_every_edge_family_is_present() -> None:
    families = {get_entry(n).family for n in EDGE}
    assert {"srcnn", "espcn", "fsrcnn", "carn", "ecbsr", "repsr", "srvgg", "span"} <= families


@pytest.mark.parametrize("name", EDGE)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(name: str, scale: int, device: torch.device) -> None:
    torch.manual_seed(0)
    m = tiny(name, scale).to(device).eval()
    x = torch.rand(2, 3, 13, 18, device=device)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 3, 13 * scale, 18 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", EDGE)
def test_constructor_rejects_unknown_kwargs(name: str) -> None:
    with pytest.raises(ConfigError, match="chanels"):
        create_model(name, scale=2, chanels=3)


@pytest.mark.parametrize("name", EDGE)
def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    m = tiny(name, 3).eval()
    for p in m.parameters():  # move off the init so a silent re-init would show
        p.data.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(m, tmp_path / f"{name}.safetensors")
    back = load_checkpoint(path)
    assert card_of(back).args == card_of(m).args
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_srvgg_official_keys() -> None:
    m = create_model("srvgg_compact", scale=4)
    keys = set(m.state_dict())
    # official: body.0 conv, body.1 prelu, ..., body.32 conv, body.33 prelu, body.34 last conv
    assert {"body.0.weight", "body.1.weight", "body.33.weight", "body.34.weight", "body.34.bias"} <= keys
    assert m.state_dict()["body.34.weight"].shape == (48, 64, 3, 3)
    assert count_params(m) == 621424  # realesr-animevideov3's size


def test_span_official_keys_and_eval_conv() -> None:
    m = create_model("span_ch48", scale=4)
    sd = m.state_dict()
    for k in (
        "conv_1.sk.weight",
        "conv_1.conv.0.weight",
        "conv_1.conv.2.bias",
        "conv_1.eval_conv.weight",
        "block_6.c3_r.conv.1.weight",
        "conv_cat.weight",
        "conv_2.eval_conv.bias",
        "upsampler.0.weight",
    ):
        assert k in sd, k
    # eval_conv is refreshed from the branches on every state_dict(), like the official eval-mode update
    w, b = m.conv_1.rep_params()
    assert torch.allclose(sd["conv_1.eval_conv.weight"], w) and torch.allclose(sd["conv_1.eval_conv.bias"], b)
    from edge_sr.reparam import reparameterize

    assert sum(p.numel() for p in reparameterize(m).parameters()) == 426288  # SPAN x4 ch48 deploy size


def test_carn_m_official_keys() -> None:
    sd = create_model("carn_m", scale=4).state_dict()
    for k in (
        "sub_mean.shifter.weight",
        "entry.weight",
        "b1.b1.body.0.weight",
        "b3.c3.body.0.weight",
        "c3.body.0.weight",
        "upsample.up.body.0.weight",
        "upsample.up.body.3.weight",
        "exit.weight",
    ):
        assert k in sd, k
    assert sd["b1.b1.body.0.weight"].shape == (64, 16, 3, 3)  # grouped, group=4


def test_fsrcnn_variants_and_srcnn_upsamples_inside() -> None:
    assert count_params(create_model("fsrcnn_s", scale=2)) < count_params(create_model("fsrcnn", scale=2))
    m = create_model("srcnn_955", scale=2)
    assert m.conv1.kernel_size == (9, 9) and m.conv2.kernel_size == (5, 5) and m.conv3.kernel_size == (5, 5)


def test_macs_per_lr_pixel_matches_hand_count() -> None:
    m = create_model("espcn", scale=3)
    # 5x5 3->64, 3x3 64->32, 3x3 32->27, all at LR resolution
    expected = 25 * 3 * 64 + 9 * 64 * 32 + 9 * 32 * 27
    assert macs_per_lr_pixel(m, 3) == pytest.approx(expected)
    s = create_model("srcnn_915", scale=2)  # runs at HR: 4x the per-HR-pixel cost per LR pixel
    bicubic = 25 * 3 * 4  # the in-model upsampling: depthwise 5x5, 3·s² phases, at LR resolution
    assert macs_per_lr_pixel(s, 2) == pytest.approx(bicubic + 4 * (81 * 3 * 64 + 64 * 32 + 25 * 32 * 3))


def test_model_summary_reports_deploy_form_for_reparameterizable() -> None:
    s = model_summary("ecbsr_m4c16", scale=4)
    assert s["params"] < s["params_train"] and s["macs_per_lr_pixel"] < s["macs_per_lr_pixel_train"]
    assert s["gmacs_720p"] == pytest.approx(s["macs_per_lr_pixel"] * 320 * 180 / 1e9)


def test_models_cli_json(capsys) -> None:
    assert main(["models", "--json", "--kind", "edge"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["kind"] == "edge" and obj["scale"] == 4
    rows = obj["models"]
    names = {r["name"] for r in rows}
    assert set(EDGE) == names
    for r in rows:
        assert {"name", "family", "params", "macs_per_lr_pixel", "bundled"} <= set(r)
        assert r["params"] > 0 and r["macs_per_lr_pixel"] > 0 and isinstance(r["bundled"], dict)


def test_shipped_zoo_figures_match_the_model_sources() -> None:
    """``edge-sr models`` reads zoo_stats.json; it must have been written from the current model sources."""
    from edge_sr.models.registry import list_models
    from edge_sr.models.stats import SHIPPED, SHIPPED_SCALES, source_digest

    data = json.loads(SHIPPED.read_text())
    assert data["source_sha256"] == source_digest(), (
        "edge_sr/models or edge_sr/reparam changed: rewrite the figures with `python -m edge_sr.models.stats`"
    )
    assert sorted(data["scales"]) == [str(s) for s in SHIPPED_SCALES]
    assert set(data["scales"]["4"]) == set(list_models())  # every registered model builds at x4


@pytest.mark.parametrize(
    ("name", "scale"), [("ecbsr_m4c16", 4), ("fsrcnn", 3), ("span_ch48", 2), ("rrn_edge", 4)]
)
def test_shipped_zoo_figures_equal_a_fresh_count(name: str, scale: int) -> None:
    from edge_sr.models.stats import model_summary, shipped_summary

    shipped = shipped_summary(name, scale)
    assert shipped is not None and shipped == model_summary(name, scale=scale)


def test_zoo_rows_count_the_figures_when_the_sources_changed(monkeypatch) -> None:
    from edge_sr.models import stats

    counted: list[str] = []
    real = stats.model_summary

    def counting(name: str, scale: int = 4) -> dict:
        counted.append(name)
        return real(name, scale=scale)

    monkeypatch.setattr(stats, "model_summary", counting)
    stats._shipped.cache_clear()
    shipped_rows = stats.zoo_rows(kind="edge", scale=2)
    assert counted == []  # all from the file
    monkeypatch.setattr(stats, "source_digest", lambda: "another")
    stats._shipped.cache_clear()
    try:
        fresh_rows = stats.zoo_rows(kind="edge", scale=2)
    finally:
        stats._shipped.cache_clear()
    assert sorted(counted) == sorted(EDGE) and fresh_rows == shipped_rows


def test_models_cli_table(capsys) -> None:
    assert main(["models", "--kind", "edge"]) == 0
    out = capsys.readouterr().out
    assert "span_ch48" in out and "GMACs" in out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_cropped_deconv_equals_the_padded_one(scale: int) -> None:
    from edge_sr.models.fsrcnn import deconv_same

    torch.manual_seed(scale)
    m = create_model("fsrcnn_s", scale=scale).double().eval()  # float64: the same sums, reordered
    for h, w in [(1, 1), (5, 9), (16, 12)]:
        x = torch.rand(2, 32, h, w, dtype=torch.float64)
        with torch.no_grad():
            ref, got = m.last_part(x), deconv_same(x, m.last_part)
        assert got.shape == ref.shape == (2, 3, scale * h, scale * w)
        assert (got - ref).abs().max() < 1e-12


def test_bundled_files_under_another_name_are_listed_with_their_architecture(tmp_path, monkeypatch) -> None:
    """A bundled file named otherwise than its architecture (``<arch>_bd_x4``: BD weights) is listed on its
    architecture's row by file name, beside the ``<arch>_x<scale>`` files."""
    import edge_sr.weights
    from edge_sr.models import create_model, save_checkpoint
    from edge_sr.models.stats import zoo_table

    net = create_model("ecbsr_m4c8", scale=2)
    for stem in ("ecbsr_m4c8_x2", "ecbsr_m4c8_bd_x2"):
        save_checkpoint(net, tmp_path / f"{stem}.safetensors")
    monkeypatch.setattr(edge_sr.weights, "WEIGHTS_DIR", tmp_path)
    rows, text = zoo_table(kind="edge")
    row = next(r for r in rows if r["name"] == "ecbsr_m4c8")
    assert row["bundled"] == {"2": str(tmp_path / "ecbsr_m4c8_x2.safetensors")}
    assert row["bundled_other"] == {"ecbsr_m4c8_bd_x2": str(tmp_path / "ecbsr_m4c8_bd_x2.safetensors")}
    assert all(not r["bundled"] and not r["bundled_other"] for r in rows if r["name"] != "ecbsr_m4c8")
    assert "x2,ecbsr_m4c8_bd_x2" in text
