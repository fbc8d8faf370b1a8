"""Checkpoint metadata, weights, manifests and artifact bytes are checked before use.

Every bad input ends in one ``EdgeSRError`` line naming the file and the problem: through the library, and
through each CLI verb that reads a checkpoint (exit code 2, one line on stderr, nothing written).
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from edge_sr.convert import ExportSpec, export
from edge_sr.convert.manifest import manifest_path, read_manifest, sha256_path
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from edge_sr.cli import main
from edge_sr.errors import CheckpointError, InputError, RuntimeBackendError
from edge_sr.models import create_model, list_models, load_checkpoint, save_checkpoint
from edge_sr.models.card import check_args
from edge_sr.models.checkpoint import read_metadata
from edge_sr.models.registry import model_parameters

ARCH = "ecbsr_m4c8"


def _tiny(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ARCH, scale=scale, blocks=1, channels=4).eval()


def _ckpt(
    path: Path,
    meta: dict[str, str] | None = None,
    *,
    drop: tuple[str, ...] = (),
    state: dict[str, torch.Tensor] | None = None,
    scale: int = 2,
) -> Path:
    """A checkpoint of the tiny model whose metadata (and weights) are replaced as given."""
    save_checkpoint(_tiny(scale), path)
    with safe_open(str(path), framework="pt") as f:
        stored = dict(f.metadata())
    stored.update(meta or {})
    for key in drop:
        stored.pop(key, None)
    save_file(state if state is not None else load_file(str(path)), str(path), metadata=stored)
    return path


def _weights(change: str) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in _tiny().state_dict().items()}
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 4)
    if change == "nan":
        sd[key][0, 0, 0, 0] = math.nan
    elif change == "inf":
        sd[key][0, 0, 0, 0] = math.inf
    elif change == "int":
        sd[key] = sd[key].to(torch.int32)
    elif change == "float64":
        sd[key] = sd[key].double()
    return sd


# name -> (metadata changes, weights, the message's tell-tale part)
BAD: dict[str, tuple[dict[str, str], dict[str, torch.Tensor] | None, str]] = {
    "args_not_json": ({"args": "{scale: 2"}, None, "metadata 'args' is not JSON"),
    "args_list": ({"args": "[2, 4]"}, None, "metadata 'args' is a JSON list; expected a JSON object"),
    "act_number": ({"args": '{"scale": 2, "blocks": 1, "channels": 4, "act": 5}'}, None, "'act' is 5"),
    "negative_channels": (
        {"args": '{"scale": 2, "blocks": 1, "channels": -4}'},
        None,
        "'channels' is -4; expected an integer 1-4096",
    ),
    "bool_channels": ({"args": '{"scale": 2, "blocks": 1, "channels": true}'}, None, "'channels' is true"),
    "huge_channels": ({"args": '{"scale": 2, "blocks": 1, "channels": 1000000000}'}, None, "1-4096"),
    "unknown_key": ({"args": '{"scale": 2, "chanels": 4}'}, None, "'chanels', not a keyword of ecbsr_m4c8"),
    "nan_arg": (
        {"args": '{"scale": 2, "blocks": 1, "channels": 4, "depth_multiplier": NaN}'},
        None,
        "finite",
    ),
    "scale_abc": ({"scale": "abc"}, None, "metadata 'scale' is 'abc'; expected an integer 1-8"),
    "scale_zero": ({"scale": "0", "args": '{"scale": 0, "blocks": 1, "channels": 4}'}, None, "1-8"),
    "scale_disagrees_with_args": ({"scale": "3"}, None, "metadata 'scale' is 3 but 'args' says scale 2"),
    "scale_disagrees_with_weights": (
        {"scale": "3", "args": '{"scale": 3, "blocks": 1, "channels": 4}'},
        None,
        "shape mismatch",
    ),
    "form": ({"form": "eval"}, None, "metadata 'form' is 'eval'; expected train or deploy"),
    "colors": ({"colors": "2"}, None, "metadata 'colors' is '2'; expected 1 or 3"),
    "arch_typo": ({"arch": "ecbsr_m4c9"}, None, "close: ecbsr_m4c8"),
    "activation_refused": (
        {"args": '{"scale": 2, "blocks": 1, "channels": 4, "act": "swish"}'},
        None,
        "cannot be built: unknown activation 'swish'",
    ),
    "nan_weights": ({}, _weights("nan"), "holds NaN"),
    "inf_weights": ({}, _weights("inf"), "holds Inf"),
    "int_weights": ({}, _weights("int"), "is int32; expected float32, float16 or bfloat16"),
    "float64_weights": ({}, _weights("float64"), "is float64; expected float32"),
}


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    return {
        name: _ckpt(d / f"{name}.safetensors", meta, state=state) for name, (meta, state, _) in BAD.items()
    }


@pytest.mark.parametrize("name", list(BAD))
def test_bad_checkpoint_is_one_line_naming_file_and_field(bad_ckpts: dict[str, Path], name: str) -> None:
    path = bad_ckpts[name]
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert BAD[name][2] in msg


def test_scale_message_is_exact(tmp_path: Path) -> None:
    path = _ckpt(tmp_path / "m.safetensors", {"scale": "abc"})
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert str(e.value) == f"{path}: metadata 'scale' is 'abc'; expected an integer 1-8"


def test_metadata_is_checked_before_any_model_is_built(tmp_path: Path, monkeypatch) -> None:
    import edge_sr.models.registry as registry

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("create_model was called")

    monkeypatch.setattr(registry, "create_model", boom)
    for meta in ({"args": "[1]"}, {"scale": "abc"}, {"form": "x"}, {"arch": "nope"}):
        with pytest.raises(CheckpointError):
            load_checkpoint(_ckpt(tmp_path / "m.safetensors", meta))


def test_shape_mismatch_lists_keys_with_both_shapes(bad_ckpts: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad_ckpts["scale_disagrees_with_weights"])
    msg = str(e.value)
    # the tail conv has 3·s² outputs: 12 in the x2 file, 27 in the x3 model the card builds
    assert "(12, 4, 3, 3) vs model (27, 4, 3, 3)" in msg and "ecbsr_m4c8(" in msg


def test_missing_scale_and_args_object_forms(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no 'scale'"):
        read_metadata(_ckpt(tmp_path / "a.safetensors", {"args": "{}"}, drop=("scale",)))
    meta = read_metadata(_ckpt(tmp_path / "b.safetensors", drop=("scale",)))
    assert meta["scale"] == 2 and meta["form"] == "train" and meta["colors"] == 3
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CheckpointError, match="not JSON"):
        read_metadata(_ckpt(tmp_path / "c.safetensors", {"args": deep}))


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_default_passes_its_own_check(name: str) -> None:
    args = {
        k: p.default for k, p in model_parameters(name).items() if p.default is not inspect.Parameter.empty
    }
    args = json.loads(json.dumps(args))  # as a checkpoint stores them: tuples become lists
    assert check_args(name, args, "x.safetensors") == args


def test_bundled_weights_still_load() -> None:
    from edge_sr.weights import bundled_checkpoint

    path = bundled_checkpoint(4)
    if path is None:
        pytest.skip("no bundled x4 model in this build")
    assert read_metadata(path)["scale"] == 4
    load_checkpoint(path)


@pytest.mark.parametrize("change", ["nan", "int"])
def test_foreign_pth_weights_are_checked(tmp_path: Path, change: str) -> None:
    path = tmp_path / "official.pth"
    torch.save({"params": _weights(change)}, path)
    with pytest.raises(CheckpointError, match="NaN|int32"):
        load_checkpoint(path, model=ARCH, scale=2, blocks=1, channels=4)


# ---- the CLI verbs that read a checkpoint: exit 2, one stderr line, nothing written


CLI_CASES = ["args_not_json", "args_list", "act_number", "negative_channels", "scale_abc"]
CLI_CASES += ["form", "scale_disagrees_with_weights", "nan_weights", "int_weights", "activation_refused"]


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / "img.png")
    (d / "data" / "HR").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "data" / "HR" / "a.png")
    return {"img": d / "img.png", "data": d / "data"}


def _verbs(ckpt: Path, inputs: dict[str, Path], out: Path) -> dict[str, list[str]]:
    scale = "3" if "disagrees" in ckpt.name else "2"  # eval --scale must agree with the card to get further
    return {
        "upscale": ["upscale", str(inputs["img"]), "--checkpoint", str(ckpt), "-o", str(out / "up.png")],
        "eval": ["eval", "--data", str(inputs["data"]), "--scale", scale, "--checkpoint", str(ckpt)],
        "convert": ["convert", str(ckpt), "--target", "onnx", "--no-verify", "-o", str(out / "m.onnx")],
        "reparam": ["reparam", str(ckpt), "-o", str(out / "deploy.safetensors")],
        "profile": ["profile", str(ckpt), "--runs", "1", "--warmup", "0", "--no-ops", "--no-peak"],
    }


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert any(n in lines[0] for n in names), lines[0]
    return lines[0]


@pytest.mark.parametrize("verb", ["upscale", "eval", "convert", "reparam", "profile"])
@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_refuses_bad_checkpoint(
    bad_ckpts: dict[str, Path], cli_inputs: dict[str, Path], tmp_path: Path, capsys, verb: str, name: str
) -> None:
    ckpt = bad_ckpts[name]
    out = tmp_path / "out"
    out.mkdir()
    line = _refused(_verbs(ckpt, cli_inputs, out)[verb], capsys, ckpt.name)
    assert BAD[name][2] in line
    assert list(out.iterdir()) == []  # nothing written, no temporary left


# ---- manifests


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("art")
    art = export(_tiny(), "onnx", d / "m.onnx", ExportSpec(input_size=(32, 32)))
    ckpt = save_checkpoint(_tiny(), d / "m.safetensors")
    return {"artifact": art.path, "ckpt": ckpt}


def _copy(onnx_art: dict[str, Path], dst: Path) -> Path:
    dst.mkdir(exist_ok=True)
    art = Path(shutil.copy(onnx_art["artifact"], dst / "m.onnx"))
    shutil.copy(manifest_path(onnx_art["artifact"]), manifest_path(art))
    return art


MANIFEST_BAD = {
    "scale": ("2", "manifest 'scale' is \"2\"; expected an integer 1-8"),
    "precision": ("fp64", "'precision' is \"fp64\"; expected one of fp32, fp16, int8"),
    "layout": ("NWHC", "'layout'"),
    "target": ("tflite", "'target' is \"tflite\"; expected onnx"),
    "input_shape": ({"mode": "fixed", "size": [16]}, "'input_shape.size'"),
    "inputs": ("x", "'inputs'"),
    "outputs": ([{"dtype": "float32", "quant": {"scale": -1, "zero_point": 0}}], "'outputs[0].quant'"),
    "artifact_sha256": ("abc", "'artifact_sha256' is \"abc\"; expected 64 lowercase hex digits"),
}


@pytest.mark.parametrize("field", list(MANIFEST_BAD))
def test_manifest_fields_are_checked(onnx_art: dict[str, Path], tmp_path: Path, field: str) -> None:
    art = _copy(onnx_art, tmp_path)
    mp = manifest_path(art)
    value, part = MANIFEST_BAD[field]
    data = json.loads(mp.read_text())
    data[field] = value
    mp.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        read_manifest(art)
    msg = str(e.value)
    assert msg.startswith(f"{mp}: ") and part in msg and "\n" not in msg


def test_dynamic_range_must_be_ordered(onnx_art: dict[str, Path], tmp_path: Path) -> None:
    art = _copy(onnx_art, tmp_path)
    mp = manifest_path(art)
    data = json.loads(mp.read_text())
    data["input_shape"] = {"mode": "dynamic", "min": 64, "max": 16}
    mp.write_text(json.dumps(data))
    with pytest.raises(InputError, match="min <= max"):
        read_manifest(art)


# ---- artifact integrity


def _flip_weight_byte(art: Path) -> None:
    import onnx

    raw = max((t.raw_data for t in onnx.load(str(art)).graph.initializer), key=len)
    data = bytearray(art.read_bytes())
    at = bytes(data).find(raw) + len(raw) // 2
    assert at > len(raw) // 2  # found
    data[at] ^= 0xFF
    art.write_bytes(bytes(data))


@pytest.fixture
def flipped(onnx_art: dict[str, Path], tmp_path: Path) -> Path:
    art = _copy(onnx_art, tmp_path)
    _flip_weight_byte(art)
    return art


def test_flipped_byte_is_refused_by_load_verify_profile(flipped: Path, onnx_art: dict[str, Path]) -> None:
    from edge_sr.profile import profile
    from edge_sr.runtime import load
    from edge_sr.verify import verify

    calls = [
        lambda **k: load(flipped, **k),
        lambda **k: verify(flipped, reference=onnx_art["ckpt"], record=False, **k),
        lambda **k: profile(flipped, runs=1, warmup=0, ops=False, peak=False, **k),
    ]
    for call in calls:
        with pytest.raises(RuntimeBackendError) as e:
            call()
        assert str(e.value) == (
            f"{flipped}: the artifact's sha256 does not match its manifest (modified after export?); "
            "re-export it or pass --no-check-sha256"
        )
        call(check_sha256=False)  # the user's word: it runs


def test_flipped_byte_through_the_cli(flipped: Path, onnx_art: dict[str, Path], capsys) -> None:
    ref = str(onnx_art["ckpt"])
    before = manifest_path(flipped).read_bytes()
    for argv in (["verify", str(flipped), "--reference", ref], ["profile", str(flipped), "--runs", "1"]):
        _refused(argv, capsys, "sha256 does not match its manifest")
    assert manifest_path(flipped).read_bytes() == before  # no verification recorded for a refused artifact
    rc = main(["verify", str(flipped), "--reference", ref, "--limit", "1", "--no-check-sha256", "--json"])
    assert rc in (0, 1)
    rc = main(["profile", str(flipped), "--runs", "1", "--warmup", "0", "--no-ops", "--no-peak"])
    assert rc == 2
    rc = main(
        [
            "profile",
            str(flipped),
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-ops",
            "--no-peak",
            "--no-check-sha256",
        ]
    )
    assert rc == 0
    capsys.readouterr()


def test_verify_record_keeps_the_artifact_hash(onnx_art: dict[str, Path], tmp_path: Path) -> None:
    from edge_sr.runtime import load
    from edge_sr.verify import verify

    art = _copy(onnx_art, tmp_path)
    report = verify(art, reference=onnx_art["ckpt"], limit=1)
    data = read_manifest(art)
    assert data is not None and data["verification"]["passed"] == report.passed
    assert data["artifact_sha256"] == sha256_path(art)
    load(art)  # still matches after the manifest was rewritten
