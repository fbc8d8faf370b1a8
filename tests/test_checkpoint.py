"""Generic checkpoint behaviour: round trip with metadata, foreign .pth wrappers, strict key errors."""

from __future__ import annotations

import json

import pytest
import torch

from edge_sr.errors import CheckpointError
from edge_sr.models import card_of, create_model, load_checkpoint, load_state_dict_file, save_checkpoint
from edge_sr.models.checkpoint import load_into, read_metadata


def _model(name: str = "srvgg_compact", scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, scale=scale, num_feat=4, num_conv=2).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 10, 7)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_round_trip_keeps_arch_args_scale_form(tmp_path) -> None:
    m = _model(scale=3)
    path = save_checkpoint(m, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    assert meta["arch"] == "srvgg_compact" and meta["scale"] == 3 and meta["form"] == "deploy"
    assert meta["args"] == {"scale": 3, "num_feat": 4, "num_conv": 2}
    back = load_checkpoint(path)
    assert card_of(back).args == card_of(m).args and not back.training
    assert _same(m, back)


def test_train_form_recorded_for_reparameterizable(tmp_path) -> None:
    m = create_model("repsr_m4c16", scale=2, blocks=1, channels=4)
    assert read_metadata(save_checkpoint(m, tmp_path / "r.safetensors"))["form"] == "train"


@pytest.mark.parametrize("wrapper", ["params_ema", "params", "state_dict", None])
@pytest.mark.parametrize("prefix", ["module.", ""])
def test_foreign_pth_loads(tmp_path, wrapper: str | None, prefix: str) -> None:
    m = _model()
    sd = {prefix + k: v for k, v in m.state_dict().items()}
    obj = {wrapper: sd, "iter": torch.tensor(5)} if wrapper else sd
    path = tmp_path / "official.pth"
    torch.save(obj, path)
    assert set(load_state_dict_file(path)) == set(m.state_dict())
    back = load_checkpoint(path, model="srvgg_compact", scale=2, num_feat=4, num_conv=2)
    assert _same(m, back)


def test_foreign_state_dict_that_fits_no_family_names_the_closest(tmp_path) -> None:
    sd = _model().state_dict()
    sd["body.99.weight"] = torch.zeros(3, 3, 3, 3)  # one tensor no SRVGGNetCompact has
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"no zoo architecture fits .* closest is srvgg"):
        load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params": _model()}, path)  # a whole module: needs unpickling code
    with pytest.raises(CheckpointError, match=r"needs the global 'edge_sr\.models\.srvgg\.SRVGGNetCompact'"):
        load_state_dict_file(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path) -> None:
    m = _model()
    sd = dict(m.state_dict())
    sd.pop("body.0.bias")
    sd["body.99.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_into(_model(), sd, tmp_path / "x.pth")
    msg = str(e.value)
    assert "missing keys body.0.bias" in msg and "unexpected keys body.99.weight" in msg and "\n" not in msg


def test_shape_mismatch_is_an_error(tmp_path) -> None:
    path = tmp_path / "x2.pth"
    torch.save(_model(scale=2).state_dict(), path)
    # the tail conv has 3·s² outputs: the scale asked for disagrees with the weights
    with pytest.raises(CheckpointError, match="the weights are a x2 srvgg_compact model, not x4"):
        load_checkpoint(path, scale=4)
    # a declared argument the weights contradict: named, with both values
    with pytest.raises(
        CheckpointError, match=r"the weights of this srvgg_compact have num_feat 4 \(declared 8\)"
    ):
        load_checkpoint(path, num_feat=8)


def test_empty_and_garbage_files(tmp_path) -> None:
    empty = tmp_path / "e.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict_file(empty)
    junk = tmp_path / "j.safetensors"
    junk.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)


def test_span_official_checkpoint_with_eval_conv_loads(tmp_path) -> None:
    """An official SPAN file carries ``*.eval_conv.*`` next to the branches, under ``params_ema``."""
    torch.manual_seed(0)
    m = create_model("span_ch48", scale=4, feature_channels=4).eval()
    sd = m.state_dict()
    assert any(k.endswith("eval_conv.weight") for k in sd)
    torch.save({"params_ema": sd}, tmp_path / "spanx4.pth")
    back = load_checkpoint(tmp_path / "spanx4.pth", model="span_ch48", scale=4, feature_channels=4)
    assert _same(m, back)


def test_args_json_in_metadata(tmp_path) -> None:
    from safetensors import safe_open

    path = save_checkpoint(_model(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["args"])["num_feat"] == 4


def test_shape_mismatch_names_up_to_three_keys_with_both_shapes(tmp_path) -> None:
    path = tmp_path / "wide.pth"
    state = create_model("srvgg_compact", scale=2, num_feat=8, num_conv=2).state_dict()
    with pytest.raises(CheckpointError) as e:
        load_into(create_model("srvgg_compact", scale=2, num_feat=4, num_conv=2), state, path)
    msg = str(e.value)
    assert msg.count(" vs model ") == 3 and "more)" in msg and "(8, 3, 3, 3) vs model (4, 3, 3, 3)" in msg


def test_deploy_form_checkpoint_round_trips(tmp_path) -> None:
    from edge_sr.reparam import reparameterize

    fused = reparameterize(create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval())
    path = save_checkpoint(fused, tmp_path / "d.safetensors")
    assert read_metadata(path)["form"] == "deploy"
    assert _same(fused, load_checkpoint(path))


def test_weights_must_be_float_and_finite(tmp_path) -> None:
    sd = dict(_model().state_dict())
    sd["body.0.weight"] = sd["body.0.weight"].clone()
    sd["body.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="tensor 'body.0.weight' holds NaN; expected finite weights"):
        load_state_dict_file(tmp_path / "nan.pth")
    sd["body.0.weight"] = torch.ones(2, dtype=torch.bool)
    torch.save(sd, tmp_path / "bool.pth")
    with pytest.raises(CheckpointError, match="is bool; expected float32"):
        load_state_dict_file(tmp_path / "bool.pth")
