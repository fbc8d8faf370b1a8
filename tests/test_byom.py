"""Bring your own model: foreign files through the verbs, safe loading, any nn.Module through the library."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.cli import main
from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models import card_of, create_model, load_checkpoint, load_state_dict_file
from edge_sr.models.checkpoint import inspect_checkpoint, read_metadata
from edge_sr.models.detect import _DETECTORS, Detection, detect
from edge_sr.models.foreign import adopt, load_module, parse_model_args

X = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(3))


class TinyNet(nn.Module):
    """A network edge-sr does not know: conv, ReLU, conv to C·s², pixel shuffle, plus nearest upsampling."""

    def __init__(self, scale: int = 2, feats: int = 8, colors: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(colors, feats, 3, padding=1)
        self.tail = nn.Conv2d(feats, colors * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_shuffle(self.tail(torch.relu(self.head(x))), self.scale)
        return y + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Evil:
    """Unpickling this would run a shell command that creates ``marker``: it must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _srvgg(scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    m = create_model("srvgg_compact", scale=scale, num_feat=8, num_conv=3).eval()
    for p in m.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    return m


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---- reading files


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"params": sd, "params_ema": {k: v * 0 for k, v in sd.items()}},  # params_ema preferred
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 10},
        lambda sd: {"generator": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    ],
    ids=["params_ema", "lightning", "gan-dataparallel", "compiled"],
)
def test_wrappers_and_prefixes_are_unwrapped(tmp_path: Path, wrap) -> None:
    m = _srvgg()
    sd = m.state_dict()
    path = tmp_path / "w.ckpt"
    torch.save(wrap(sd), path)
    got = load_state_dict_file(path)
    assert set(got) == set(sd)
    want_zero = "params_ema" in torch.load(path, weights_only=True)
    assert all(torch.equal(got[k], v * 0 if want_zero else v) for k, v in sd.items())


def test_foreign_global_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    torch.save({"params": _srvgg().state_dict(), "payload": Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"needs the global '(posix|os)\.system'.*nothing was executed"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_truncated_file_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cut.pth"
    torch.save(_srvgg().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rc, out, err = _cli(capsys, "inspect", str(path))
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "cut.pth" in err and "truncated or corrupt" in err


# ---- detection, scale, arguments


def test_detected_checkpoint_loads_and_matches(tmp_path: Path) -> None:
    m = _srvgg(scale=3)
    path = tmp_path / "w.pth"
    torch.save({"params_ema": m.state_dict()}, path)
    det = inspect_checkpoint(path)
    assert (det.arch, det.scale, det.args["num_feat"], det.args["num_conv"]) == ("srvgg_compact", 3, 8, 3)
    back = load_checkpoint(path)
    assert card_of(back).source == str(path) and card_of(back).args == det.args
    with torch.no_grad():
        assert torch.equal(back(X), m(X))


def test_two_fitting_families_are_an_ambiguity_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _srvgg().state_dict()
    real = detect(sd)
    monkeypatch.setitem(_DETECTORS, "twin", lambda state: Detection(real.arch, real.args, layout="twin"))
    with pytest.raises(
        CheckpointError, match=r"fit both srvgg_compact\(.*\) and srvgg_compact.*--model NAME"
    ):
        detect(sd)


def test_model_arg_types_are_checked() -> None:
    assert parse_model_args(["num_feat=16", "act_type=relu"], arch="srvgg_compact") == {
        "num_feat": 16,
        "act_type": "relu",
    }
    assert parse_model_args(["depths=6,6,6", "mlp_ratio=2"]) == {"depths": [6, 6, 6], "mlp_ratio": 2}
    with pytest.raises(ConfigError, match="'num_feat' is 'wide'; expected an integer"):
        parse_model_args(["num_feat=wide"], arch="srvgg_compact")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_model_args(["num_feat"])
    with pytest.raises(ConfigError, match="TinyNet expects int"):
        parse_model_args(["feats=8.5"], cls=TinyNet)
    with pytest.raises(ConfigError, match="not a keyword of TinyNet; it takes scale, feats, colors"):
        parse_model_args(["width=8"], cls=TinyNet)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--scale", "4"], "the weights are a x2 srvgg_compact model, not x4"),
        (["--model-arg", "num_feat=wide"], "'num_feat' is 'wide'; expected an integer"),
        (["--model-arg", "num_feat=16"], "have num_feat 8 (declared 16)"),
        (["--model", "edsr"], "edsr"),
        (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
    ],
    ids=["scale", "type", "shape", "family", "name"],
)
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path: Path, capsys, argv, expect) -> None:
    path = tmp_path / "x2.pth"
    torch.save(_srvgg(2).state_dict(), path)
    out_dir = tmp_path / "out"
    rc, out, err = _cli(capsys, "convert", str(path), "--target", "onnx", "-o", str(out_dir), *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and expect in err, err
    assert not out_dir.exists()
    rc, _, err = _cli(capsys, "import", str(path), "-o", str(tmp_path / "m.safetensors"), *argv)
    assert rc == 2 and expect in err and not (tmp_path / "m.safetensors").exists()


def test_unknown_weights_name_the_closest_family(tmp_path: Path, capsys) -> None:
    sd = _srvgg().state_dict()
    sd["body.3.weight"] = torch.zeros(8, 8, 5, 5)  # a 5x5 conv where SRVGG has a PReLU
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    rc, out, err = _cli(capsys, "inspect", str(path))
    assert rc == 2 and out == "" and "no zoo architecture fits" in err and "closest is srvgg" in err


# ---- inspect and import


def test_inspect_and_import(tmp_path: Path, capsys) -> None:
    m = _srvgg(scale=4)
    src = tmp_path / "net_g_5000.pth"
    torch.save({"params": m.state_dict()}, src)
    rc, out, _ = _cli(capsys, "inspect", str(src), "--json")
    obj = json.loads(out)
    assert rc == 0 and out.count("\n") == 1
    assert obj["arch"] == "srvgg_compact" and obj["scale"] == 4 and obj["form"] == "deploy"
    assert obj["params"] == sum(p.numel() for p in m.parameters())
    dst = tmp_path / "m.safetensors"
    rc, out, _ = _cli(capsys, "import", str(src), "-o", str(dst), "--json")
    res = json.loads(out)
    assert rc == 0 and res["out"] == str(dst)
    meta = read_metadata(dst)
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == res["sha256"]
    assert meta["source_file"] == "net_g_5000.pth" and meta["arch"] == "srvgg_compact" and meta["scale"] == 4
    with torch.no_grad():
        assert torch.equal(load_checkpoint(dst)(X), m(X))
    rc, out, _ = _cli(capsys, "inspect", str(dst), "--json")
    assert json.loads(out)["layout"] == "edge-sr"


# ---- any nn.Module


def test_adopt_measures_scale_and_colours() -> None:
    card = card_of(adopt(TinyNet(scale=3).eval()))
    assert (card.arch, card.scale, card.colors, card.form) == ("TinyNet", 3, 3, "deploy")
    card = card_of(adopt(TinyNet(scale=2, colors=1).eval()))
    assert (card.scale, card.colors) == (2, 1)
    with pytest.raises(ConfigError, match=r"maps \(1, 3, 16, 16\) to \(1, 6, 32, 32\)"):
        adopt(nn.Sequential(nn.Conv2d(3, 24, 1), nn.PixelShuffle(2)))


def test_any_module_through_export_ptq_qat_verify_profile(tmp_path: Path, data_root: Path) -> None:
    from edge_sr.convert import ExportSpec, export
    from edge_sr.quantize import from_tensors, ptq, qat

    from edge_sr.profile import profile
    from edge_sr.runtime import load
    from edge_sr.verify import verify

    torch.manual_seed(0)
    net = adopt(TinyNet(scale=2).eval())
    art = export(net, "onnx", tmp_path / "tiny.onnx", ExportSpec(input_size=(32, 32)))
    assert art.manifest["arch"] == "TinyNet" and art.manifest["scale"] == 2
    with torch.no_grad():
        ref = net(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    y = load(art.path).forward(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).numpy())
    assert abs(y - ref.numpy()).max() < 1e-5
    assert verify(art.path, reference=net).passed
    calib = from_tensors(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    int8 = ptq(net, "executorch", calib, out=tmp_path / "tiny_int8.pte")
    assert int8.manifest["precision"] == "int8" and verify(int8.path, reference=net).psnr_vs_float > 25
    trained = qat(net, "tflite", [data_root / "train" / "T91"], calib=calib, iters=2, batch_size=2,
                  out=tmp_path / "tiny_qat.tflite")  # fmt: skip
    assert trained.manifest["precision"] == "int8"
    weights = tmp_path / "tiny.pth"
    torch.save(net.state_dict(), weights)
    rep = profile(weights, model=net, input_size=(16, 16), runs=2, warmup=0, ops=False, peak=False)
    assert rep.kind == "checkpoint" and rep.gmacs is not None and rep.gmacs > 0


def test_cli_builds_the_users_own_class(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_sr_net.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            import torch.nn.functional as F

            class Net(nn.Module):
                def __init__(self, scale: int = 2, feats: int = 8):
                    super().__init__()
                    self.s = scale
                    self.a = nn.Conv2d(3, feats, 3, padding=1)
                    self.b = nn.Conv2d(feats, 3 * scale * scale, 3, padding=1)

                def forward(self, x):
                    return F.pixel_shuffle(self.b(torch.relu(self.a(x))), self.s)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = load_module("my_sr_net:Net", None, {"scale": 3, "feats": 4})
    torch.save({"params": net.state_dict()}, tmp_path / "w.pth")
    spec = ["--module", "my_sr_net:Net", "--model-arg", "scale=3", "--model-arg", "feats=4"]
    rc, out, err = _cli(capsys, "convert", "w.pth", "--target", "tflite", "-o", "net.tflite", "--json", *spec)
    obj = json.loads(out)
    assert rc == 0 and obj["verify"]["passed"], err
    man = json.loads((tmp_path / "net.tflite.json").read_text())
    assert man["arch"] == "my_sr_net:Net" and man["scale"] == 3
    rc, out, err = _cli(
        capsys, "convert", "w.pth", "--target", "onnx", "-o", "x.onnx", "--module", "my_sr_net:Net"
    )
    assert rc == 2 and "shape mismatch" in err and not (tmp_path / "x.onnx").exists()
    rc, out, err = _cli(capsys, "profile", "w.pth", "--runs", "2", "--no-ops", "--json", *spec)
    assert rc == 0 and json.loads(out)["kind"] == "checkpoint"


def test_multiscale_file_gives_the_scale_asked_for(tmp_path: Path) -> None:
    """The CARN-M release holds one upsampler per scale around one body: --scale picks one."""
    torch.manual_seed(0)
    nets = {s: create_model("carn_m", scale=s, channels=8, group=2).eval() for s in (2, 3, 4)}
    body = {k: v for k, v in nets[4].state_dict().items() if not k.startswith("upsample.")}
    state = dict(body)
    for s, net in nets.items():
        net.load_state_dict({**net.state_dict(), **body})
        ups = {k: v for k, v in net.state_dict().items() if k.startswith("upsample.up.")}
        state.update({k.replace("upsample.up.", f"upsample.up{s}."): v for k, v in ups.items()})
    path = tmp_path / "carn_m.pth"
    torch.save(state, path)
    assert inspect_checkpoint(path).scale == 4 and "scale" in inspect_checkpoint(path).assumed
    for s, net in nets.items():
        back = load_checkpoint(path, scale=s)
        assert card_of(back).scale == s and "scale" not in inspect_checkpoint(path, scale=s).assumed
        with torch.no_grad():
            assert torch.equal(back(X), net(X))
    with pytest.raises(CheckpointError, match="holds x2, x3, x4, not x8"):
        load_checkpoint(path, scale=8)


@pytest.mark.parametrize(
    ("name", "want"),
    [("fsrcnn_x3.pth", 3), ("RealESRGAN_x4plus.pth", 4), ("4x_foo.pth", 4), ("model.pth", None),
     ("x2_to_x4.pth", None), ("srx3.pth", None)],
)  # fmt: skip
def test_scale_from_the_file_name_when_the_weights_cannot_tell(tmp_path: Path, name: str, want) -> None:
    from edge_sr.models.checkpoint import scale_in_name

    assert scale_in_name(name) == want
    torch.manual_seed(0)
    net = create_model("fsrcnn", scale=3, d=8, s=4, m=1).eval()
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    det = inspect_checkpoint(path)
    assert det.scale == (want or 2) and "scale" in det.assumed  # FSRCNN's weights do not depend on the scale
    assert (
        inspect_checkpoint(path, scale=3).scale == 3
        and "scale" not in inspect_checkpoint(path, scale=3).assumed
    )


def test_y_channel_checkpoint_quantizes_with_qat_from_the_cli(
    tmp_path: Path, capsys, data_root: Path
) -> None:
    """A foreign 1-channel FSRCNN file: detected as Y, calibrated and fine-tuned on Y, a 1-channel INT8 artifact."""
    torch.manual_seed(0)
    net = create_model("fsrcnn", scale=2, colors=1, d=8, s=4, m=1).eval()
    path = tmp_path / "fsrcnn_x2.pth"
    torch.save({"params": net.state_dict()}, path)
    assert inspect_checkpoint(path).colors == 1 and inspect_checkpoint(path).scale == 2
    t91 = str(data_root / "train" / "T91")
    argv = ["quantize", str(path), "--target", "tflite", "--calib", t91, "--calib-count", "4", "--input-size",
            "32x32", "--qat", "--data", t91, "--iters", "2", "--batch-size", "2", "--no-verify", "-o",
            str(tmp_path / "y.tflite"), "--json"]  # fmt: skip
    rc, out, err = _cli(capsys, *argv)
    assert rc == 0, err
    man = json.loads((tmp_path / "y.tflite.json").read_text())
    assert man["color"]["colors"] == 1 and man["quantization"]["calibration"]["channel"] == "Y"
    assert man["quantization"]["method"] == "qat"
