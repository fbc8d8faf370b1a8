"""Converters: every edge zoo model to every target, manifests, embedded metadata, spec options, failures."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from edge_sr.convert import TARGETS, ExportSpec, export, manifest_path, target_module
from edge_sr.convert.manifest import sha256_path
from tiny_args import FAMILY_TINY
from torch import nn

from edge_sr.errors import ConfigError, ConversionError
from edge_sr.models import ModelCard, create_model, get_entry, list_models
from edge_sr.reparam import has_fusable

ALL_TARGETS = sorted(TARGETS)
# small values for whichever size arguments a family's constructor has
TINY = {
    "channels": 8,
    "blocks": 1,
    "features": 8,
    "mid_features": 8,
    "feature_channels": 8,
    "num_feat": 8,
    "num_conv": 2,
    "d": 8,
    "s": 4,
    "m": 1,
}


def tiny_model(name: str, scale: int = 2) -> nn.Module:
    """The zoo entry ``name`` with every size argument it has made tiny, in eval mode."""
    cls = type(create_model(name, scale=scale))
    params = inspect.signature(cls.__init__).parameters
    overrides = {k: v for k, v in TINY.items() if k in params}
    overrides = FAMILY_TINY.get(get_entry(name).family, overrides)
    torch.manual_seed(0)
    return create_model(name, scale=scale, **overrides).eval()


def distinct_edge_models() -> list[str]:
    """Edge zoo entries whose tiny forms differ (same class and parameter shapes count once)."""
    seen, names = set(), []
    for name in list_models(kind="edge"):
        m = tiny_model(name)
        key = (type(m).__name__, tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()))
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


EDGE = distinct_edge_models()
X16 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("name", EDGE)
def test_edge_zoo_fp32_matches_eager(out_dir, name: str, target: str) -> None:
    from edge_sr.runtime import load

    model = tiny_model(name)
    art = export(
        model, target, out_dir / f"{name}{target_module(target).SUFFIX}", ExportSpec(input_size=(16, 16))
    )
    assert art.path.exists() and art.manifest_path == manifest_path(art.path) and art.manifest_path.is_file()
    runner = load(art.path)
    with torch.no_grad():
        ref = model(X16).numpy()
    y = runner.forward(X16.numpy())
    assert y.shape == ref.shape == (1, 3, 32, 32)
    assert np.abs(y - ref).max() <= 1e-4, f"{name} on {target}"
    assert art.manifest["reparameterized"] == has_fusable(model)  # train form fused first
    assert art.manifest["form"] == "deploy"


@pytest.fixture(scope="module")
def ecbsr() -> nn.Module:
    return tiny_model("ecbsr_m4c8")


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_fp16_close_to_float(out_dir, ecbsr, target: str) -> None:
    from edge_sr.runtime import load

    art = export(
        ecbsr,
        target,
        out_dir / f"fp16{target_module(target).SUFFIX}",
        ExportSpec(input_size=(16, 16), precision="fp16"),
    )
    assert art.manifest["precision"] == "fp16"
    with torch.no_grad():
        ref = ecbsr(X16).numpy()
    y = load(art.path).forward(X16.numpy())
    assert np.abs(y - ref).max() <= 5e-3
    psnr = 10 * np.log10(1.0 / np.mean((y - ref) ** 2))
    assert psnr >= 50.0


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_manifest_and_embedded_metadata(out_dir, ecbsr, target: str) -> None:
    mod = target_module(target)
    art = export(ecbsr, target, out_dir / f"meta{mod.SUFFIX}", ExportSpec(input_size=(16, 16)))
    m = json.loads(art.manifest_path.read_text())
    assert m == art.manifest
    assert m["arch"] == "ecbsr_m4c8" and m["scale"] == 2 and m["args"]["channels"] == 8
    assert m["form"] == "deploy" and m["reparameterized"] is True  # train form fused first
    assert m["input_shape"] == {"mode": "fixed", "size": [16, 16]}
    assert m["layout"] == "NCHW" and m["inputs"][0]["value_range"] == [0.0, 1.0]
    assert m["artifact_sha256"] == sha256_path(art.path) and m["size_bytes"] > 0
    assert "torch" in m["versions"] and m["verification"] is None
    embedded = mod.read_embedded(art.path)
    if target == "executorch":
        assert embedded == {}  # manifest only
    else:
        assert embedded["edge_sr.arch"] == "ecbsr_m4c8" and embedded["edge_sr.scale"] == "2"
        assert json.loads(embedded["edge_sr.args"])["channels"] == 8


def test_source_checkpoint_hash(tmp_path, ecbsr) -> None:
    from edge_sr.models import load_checkpoint, save_checkpoint

    ckpt = save_checkpoint(ecbsr, tmp_path / "m.safetensors")
    art = export(load_checkpoint(ckpt), "onnx", tmp_path, ExportSpec(input_size=(16, 16)))
    assert art.path.name == "ecbsr_m4c8_x2_fp32.onnx"
    assert art.manifest["source"] == {"checkpoint": str(ckpt), "sha256": sha256_path(ckpt)}


@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_dynamic_shapes(out_dir, ecbsr, target: str) -> None:
    from edge_sr.runtime import load

    art = export(ecbsr, target, out_dir / f"dyn{target_module(target).SUFFIX}", ExportSpec(dynamic=(8, 48)))
    assert art.manifest["input_shape"] == {"mode": "dynamic", "min": 8, "max": 48}
    runner = load(art.path)
    for h, w in [(12, 20), (40, 16)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = ecbsr(x).numpy()
        assert np.abs(runner.forward(x.numpy()) - ref).max() <= 1e-4


@pytest.mark.parametrize("target", ["coreml", "tflite"])
def test_several_sizes_and_nhwc(out_dir, ecbsr, target: str) -> None:
    from edge_sr.runtime import load

    spec = ExportSpec(sizes=((16, 16), (12, 24)), layout="NHWC", pixel_shuffle="rank4")
    art = export(ecbsr, target, out_dir / f"sizes{target_module(target).SUFFIX}", spec)
    assert art.manifest["layout"] == "NHWC"
    runner = load(art.path)
    for h, w in spec.sizes:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = ecbsr(x).numpy()
        assert np.abs(runner.forward(x.numpy()) - ref).max() <= 1e-4
    if target == "tflite":
        assert art.manifest["target_info"]["signatures"] == ["h16w16", "h12w24"]


def test_coreml_image_io(out_dir, ecbsr) -> None:
    from edge_sr.runtime import load

    art = export(ecbsr, "coreml", out_dir / "img.mlpackage", ExportSpec(input_size=(16, 16), io="image"))
    assert art.manifest["inputs"][0]["value_range"] == [0.0, 255.0]
    assert not (art.path / "executorch_debug_handle_mapping.json").exists()  # debug cruft, not shipped
    x = np.round(X16.numpy() * 255) / 255  # pixel buffers hold whole 0-255 values
    with torch.no_grad():
        ref = ecbsr(torch.from_numpy(x)).clamp(0, 1).numpy()
    ref = np.round(ref * 255) / 255  # and so does the output buffer
    assert np.abs(load(art.path).forward(x.astype(np.float32)) - ref).max() <= 1e-4


def test_executorch_coreml_delegate_lowers(out_dir, ecbsr) -> None:
    from edge_sr.convert.executorch import Options

    art = export(
        ecbsr,
        "executorch",
        out_dir / "ct.pte",
        ExportSpec(input_size=(16, 16)),
        options=Options(delegate="coreml"),
    )
    assert art.manifest["target_info"]["delegate"] == "coreml"
    assert art.manifest["target_info"]["delegate_calls"] >= 1 and art.size_bytes > 0


@pytest.mark.parametrize(
    "target,spec",
    [
        ("onnx", ExportSpec(io="image")),
        ("tflite", ExportSpec(dynamic=(8, 32))),
        ("tflite", ExportSpec(pixel_shuffle="depth_to_space")),
        ("executorch", ExportSpec(sizes=((8, 8), (16, 16)))),
        ("onnx", ExportSpec(precision="int8")),
        ("pt2", ExportSpec(sizes=((8, 8), (16, 16)))),
        ("pt2", ExportSpec(io="image")),
    ],
)
def test_unsupported_spec_is_one_line_and_writes_nothing(tmp_path, ecbsr, target, spec) -> None:
    with pytest.raises(ConversionError) as e:
        export(ecbsr, target, tmp_path / "out", spec)
    assert "\n" not in str(e.value) and target in str(e.value)
    assert not any(tmp_path.rglob("*"))


def test_unknown_target_and_bad_suffix(tmp_path, ecbsr) -> None:
    with pytest.raises(ConfigError, match=f"choose from {', '.join(sorted(TARGETS))}"):
        export(ecbsr, "coremk", tmp_path)
    with pytest.raises(ConfigError, match=r"\.onnx"):
        export(ecbsr, "onnx", tmp_path / "m.tflite")
    assert not any(tmp_path.iterdir())


def test_converter_failure_names_the_op_and_leaves_nothing(tmp_path, ecbsr, monkeypatch) -> None:
    mod = target_module("onnx")

    def broken(model, example, spec, path, metadata, options):
        path.write_bytes(b"half")  # a partial artifact
        raise NotImplementedError("Unsupported op 'aten.frobnicate.default' in graph\nmore lines")

    monkeypatch.setattr(mod, "export", broken)
    with pytest.raises(ConversionError) as e:
        export(ecbsr, "onnx", tmp_path / "m.onnx", ExportSpec(input_size=(8, 8)))
    msg = str(e.value)
    assert "aten.frobnicate.default" in msg and "onnx" in msg and "\n" not in msg
    assert not any(tmp_path.iterdir())


class _Erfinv(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(x * 0.5).repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


def test_real_unsupported_op_on_coreml(tmp_path) -> None:
    with pytest.raises(ConversionError) as e:
        model = ModelCard("erfinv", {"scale": 2}, scale=2, form="deploy").attach(_Erfinv())
        export(model, "coreml", tmp_path / "m.mlpackage", ExportSpec(input_size=(8, 8)))
    assert "erfinv" in str(e.value) and "coreml" in str(e.value)
    assert not any(tmp_path.iterdir())


def test_options_are_typed_per_target(tmp_path, ecbsr) -> None:
    from edge_sr.convert import onnx as onnx_target

    with pytest.raises(ConfigError, match="opset 17 is too old"):
        onnx_target.Options(opset=17)
    with pytest.raises(ConfigError, match="edge_sr.convert.onnx.Options"):
        export(ecbsr, "onnx", tmp_path / "m.onnx", ExportSpec(input_size=(8, 8)), options={"opset": 18})
    art = export(
        ecbsr,
        "onnx",
        tmp_path / "m.onnx",
        ExportSpec(input_size=(8, 8)),
        options=onnx_target.Options(opset=19),
    )
    assert art.manifest["target_info"]["opset"] == 19
    assert not (tmp_path / "x.pte").exists()


def test_every_target_module_satisfies_the_contract() -> None:
    """Each registered module has every member of the Target protocol, and suffixes are distinct."""
    from edge_sr.convert import suffixes
    from edge_sr.convert.target import Target

    members = [m for m in Target.__annotations__] + [
        m for m in vars(Target) if callable(getattr(Target, m)) and not m.startswith("_")
    ]
    for name in TARGETS:
        mod = target_module(name)
        missing = [m for m in members if not hasattr(mod, m)]
        assert not missing, f"{name} lacks {missing}"
        assert mod.NAME == name and mod.SUFFIX.startswith(".")
        assert set(mod.PT2E_MODES) <= set(mod.QUANT_MODES)
        assert callable(mod.Options)
    assert sorted(suffixes().values()) == sorted(TARGETS)


def test_pt2_dynamic_range_runs_every_size_and_refuses_outside(tmp_path, ecbsr) -> None:
    from edge_sr.errors import RuntimeBackendError
    from edge_sr.runtime import load

    art = export(ecbsr, "pt2", tmp_path / "m.pt2", ExportSpec(dynamic=(8, 40)))
    assert art.manifest["input_shape"] == {"mode": "dynamic", "min": 8, "max": 40}
    runner = load(art.path)
    for h, w in ((8, 8), (13, 40), (40, 21)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            ref = ecbsr(x).numpy()
        assert np.abs(runner.forward(x.numpy()) - ref).max() <= 1e-4
    with pytest.raises(RuntimeBackendError):
        runner.backend.forward(np.zeros((1, 3, 41, 8), np.float32))


@pytest.mark.parametrize(("target", "option"), [("tflite", "xnnpack"), ("onnx", "optimize")])
def test_runner_without_the_runtime_default(out_dir, ecbsr, target: str, option: str) -> None:
    """TFLite without its default XNNPACK delegate and onnxruntime without graph optimizations (what the speed
    benchmark compares with) compute the same output as the defaults."""
    mod = target_module(target)
    art = export(ecbsr, target, out_dir / f"plain_{option}{mod.SUFFIX}", ExportSpec(input_size=(16, 16)))
    x = X16.numpy()
    base = mod.Runner(art.path, threads=1).forward(x)
    plain = mod.Runner(art.path, threads=1, **{option: False}).forward(x)
    with torch.no_grad():
        ref = ecbsr(X16).numpy()
    assert np.abs(base - ref).max() <= 1e-4 and np.abs(plain - ref).max() <= 1e-4


def test_out_names_a_folder_or_replaces_an_artifact_folder(tmp_path) -> None:
    """-o: a folder gets a named artifact inside; an existing .mlpackage (itself a folder) is the artifact."""
    from edge_sr.convert import _resolve_out

    (tmp_path / "m.mlpackage").mkdir()
    assert (
        _resolve_out(tmp_path / "m.mlpackage", ".mlpackage", "ecbsr", 2, "fp32") == tmp_path / "m.mlpackage"
    )
    assert _resolve_out(tmp_path, ".mlpackage", "ecbsr", 2, "fp32") == tmp_path / "ecbsr_x2_fp32.mlpackage"
    assert _resolve_out(tmp_path / "new", ".pte", None, 4, "int8") == tmp_path / "new" / "model_x4_int8.pte"
    (tmp_path / "d.pte").mkdir()  # a folder that merely ends like another target's file is still a folder
    assert (
        _resolve_out(tmp_path / "d.pte", ".tflite", None, 2, "fp32")
        == tmp_path / "d.pte" / "model_x2_fp32.tflite"
    )
