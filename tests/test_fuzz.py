"""Property-based fuzzing of the parsers of outside input: checkpoint metadata (the model card), training
recipes and artifact manifests. Whatever the values, the result is a valid object or an
``edge_sr.errors.EdgeSRError``; never another exception.

Each property is bounded (``max_examples``) and derandomized, so a run takes seconds and repeats exactly.
Integers stay small (-4..64): the sizes that would allocate gigabytes are the hostile corpus's job
(tests/hostile), where they run under a memory limit.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from edge_sr.errors import EdgeSRError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ARCH = "ecbsr_m4c8"

# any JSON-ish value, NaN and infinities included (Python's json reads and writes them)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-4, 64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


_SCRATCH = tempfile.TemporaryDirectory(prefix="edge-sr-fuzz-")  # removed when the process ends


def _tmp() -> Path:
    """A fresh folder for one example."""
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


class _Tiny(dict):  # type: ignore[type-arg]
    """The fixture's values, with a short repr (hypothesis prints the arguments of a failing example)."""

    def __repr__(self) -> str:
        return "tiny"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid tiny checkpoint and a PT2 artifact of it, with their metadata and manifest."""
    from edge_sr.convert import ExportSpec, export

    from edge_sr.models import create_model, save_checkpoint

    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = create_model(ARCH, scale=2)
    ckpt = save_checkpoint(model, root / "base.safetensors")
    with safe_open(str(ckpt), framework="pt") as f:
        meta = dict(f.metadata() or {})
    art = export(model, "pt2", root / "art" / "model.pt2", ExportSpec(input_size=(32, 32)), source=str(ckpt))
    manifest = json.loads(art.manifest_path.read_text())
    return _Tiny(state=load_file(str(ckpt)), meta=meta, artifact=art.path, manifest=manifest)


# ------------------------------------------------------------------------------------ checkpoint metadata


def _arg_names() -> list[str]:
    import inspect

    from edge_sr.models.registry import create_model

    return sorted(inspect.signature(type(create_model(ARCH, scale=2)).__init__).parameters.keys() - {"self"})


def _metadata() -> st.SearchStrategy[dict[str, str]]:
    """Card fields that are valid, plausible-but-wrong, random text or any JSON encoded as text."""
    arg_keys = st.sampled_from([*_arg_names(), "bogus"]) | st.text(max_size=6)
    args = st.dictionaries(arg_keys, values, max_size=4).map(lambda d: json.dumps(d))
    encoded = values.map(lambda v: json.dumps(v))
    field = {
        "arch": st.sampled_from([ARCH, "espcn", "nope", ""]) | st.text(max_size=10),
        "args": args | encoded | st.text(max_size=20),
        "scale": st.sampled_from(["2", "3", "0", "7", "-2", "abc", "2.0", " 2", "99999999999"]) | encoded,
        "form": st.sampled_from(["train", "deploy", "eval", ""]) | st.text(max_size=8),
        "colors": st.sampled_from(["3", "1", "0", "4", "x"]),
    }
    return st.fixed_dictionaries(
        {"arch": field["arch"]}, optional={k: v for k, v in field.items() if k != "arch"}
    )


def _load_or_refuse(path: Path) -> None:
    from edge_sr.models import load_checkpoint
    from edge_sr.models.checkpoint import read_metadata

    try:
        meta = read_metadata(path)
    except EdgeSRError:
        return
    assert isinstance(meta["args"], dict) and isinstance(meta["scale"], int)
    assert meta["form"] in ("train", "deploy")
    try:
        net = load_checkpoint(path)
    except EdgeSRError:
        return
    assert isinstance(net, torch.nn.Module)


@settings(FUZZ, max_examples=200)
@given(meta=_metadata())
def test_check_metadata_returns_a_card_or_refuses(meta: dict[str, str]) -> None:
    from edge_sr.models.card import check_metadata

    try:
        out = check_metadata(meta, "fuzz.safetensors")
    except EdgeSRError as e:
        assert "\n" not in str(e) and "fuzz.safetensors" in str(e)
        return
    assert (
        isinstance(out["args"], dict) and out["scale"] in range(1, 9) and out["form"] in ("train", "deploy")
    )


@settings(FUZZ, max_examples=60)
@given(meta=_metadata())
def test_checkpoint_metadata_loads_or_refuses(tiny: dict[str, Any], meta: dict[str, str]) -> None:
    path = _tmp() / "model.safetensors"
    save_file(tiny["state"], str(path), metadata=meta)
    _load_or_refuse(path)


@settings(FUZZ, max_examples=60)
@given(
    header=st.dictionaries(st.text(max_size=8), values, max_size=4),
    claim=st.none() | st.integers(0, 2**64 - 1),
    tail=st.binary(max_size=64),
)
def test_safetensors_header_loads_or_refuses(header: dict[str, Any], claim: int | None, tail: bytes) -> None:
    """A raw safetensors file: an 8-byte length (maybe a lie), a JSON header of anything, some bytes."""
    import struct

    text = json.dumps({"__metadata__": {"arch": ARCH}, **header}).encode()
    path = _tmp() / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(text) if claim is None else claim) + text + tail)
    _load_or_refuse(path)
    from edge_sr.models.checkpoint import load_state_dict_file

    try:
        load_state_dict_file(path)
    except EdgeSRError:
        pass


# ------------------------------------------------------------------------------------------------ recipes


def _recipe() -> dict[str, Any]:
    return {
        "model": {"name": ARCH, "scale": 2, "args": {}},
        "data": {"train_folders": [str(Path(tempfile.gettempdir()))], "patch_size": 12, "batch_size": 2},
        "iters": 1,
        "out_dir": str(Path(tempfile.gettempdir()) / "edge-sr-fuzz-run"),
    }


_KEYS = [
    "model.name", "model.scale", "model.args", "model.args.channels", "model.args.act", "data.train_folders",
    "data.patch_size", "data.batch_size", "data.workers", "data.holdout", "data.val_max_size", "data.augment",
    "data.augment.mixup", "optim.lr", "optim.betas", "optim.optimizer", "optim.schedule", "optim.milestones",
    "optim.warmup_iters", "optim.gamma", "optim.grad_clip", "loss", "iters", "ema_decay", "val_every",
    "save_every", "log_every", "out_dir", "seed", "threads", "amp", "device", "bogus", "optim.bogus",
]  # fmt: skip


# documents YAML readers stumble on: aliases, duplicate keys, deep nesting, impossible dates, odd tags
_AWKWARD_YAML = [
    "a: &x [1]\nb: *x\n", "a: 1\na: 2\n", "[" * 200, "{a: }", "iters: 2020-13-40\n", "seed: !!python/int 3\n",
    "iters: !!binary AAAA\n", "? [a]\n: 1\n", "iters: 0x7fffffffffffffffffff\n", "model: !!set {a, b}\n",
    "&a [*a]\n", "out_dir: \"\\ud800\"\n",
]  # fmt: skip


def _put(cfg: dict[str, Any], key: str, value: Any) -> None:
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[last] = value


def _config_or_refuse(path: Path, overrides: list[str] | None = None) -> None:
    from edge_sr.train import TrainConfig, load_config

    try:
        cfg = load_config(path, overrides)
    except EdgeSRError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(cfg, TrainConfig)
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.iters, int)


@settings(FUZZ, max_examples=150)
@given(changes=st.lists(st.tuples(st.sampled_from(_KEYS), values), min_size=1, max_size=3))
def test_recipe_fields_load_or_refuse(changes: list[tuple[str, Any]]) -> None:
    cfg = _recipe()
    for key, value in changes:
        _put(cfg, key, value)
    path = _tmp() / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    _config_or_refuse(path)


@settings(FUZZ, max_examples=100)
@given(text=st.text(max_size=200) | st.sampled_from(_AWKWARD_YAML))
def test_recipe_text_loads_or_refuses(text: str) -> None:
    path = _tmp() / "cfg.yaml"
    path.write_text(text)
    _config_or_refuse(path)


@settings(FUZZ, max_examples=200)
@given(text=st.text(max_size=300) | st.sampled_from(_AWKWARD_YAML))
def test_parse_yaml_parses_or_raises_yaml_error(text: str) -> None:
    """The strict recipe reader: YAML's own error (turned into a ConfigError by load_config) or a value."""
    from edge_sr.train.config_file import parse_yaml

    try:
        parse_yaml(text)
    except yaml.YAMLError:
        pass


@settings(FUZZ, max_examples=100)
@given(key=st.sampled_from(_KEYS) | st.text(max_size=10), value=st.text(max_size=16))
def test_overrides_load_or_refuse(key: str, value: str) -> None:
    path = _tmp() / "cfg.yaml"
    path.write_text(yaml.safe_dump(_recipe(), sort_keys=False))
    _config_or_refuse(path, [f"{key}={value}"])


# ---------------------------------------------------------------------------------------------- manifests


def _manifest_or_refuse(artifact: Path, *, load: bool) -> None:
    from edge_sr.convert.manifest import read_manifest

    try:
        m = read_manifest(artifact)
    except EdgeSRError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(m, dict)
    if load:
        from edge_sr.runtime import load as load_runner

        try:
            load_runner(artifact)
        except EdgeSRError:
            pass


_MANIFEST_KEYS = [
    "format", "target", "artifact", "arch", "args", "scale", "form", "precision", "quantization",
    "input_shape", "layout", "io", "pixel_shuffle", "inputs", "outputs", "source", "artifact_sha256",
    "size_bytes", "verification", "versions",
]  # fmt: skip


def _write_artifact(tiny: dict[str, Any], manifest_text: str) -> Path:
    d = _tmp()
    art = d / "model.pt2"
    art.write_bytes(Path(tiny["artifact"]).read_bytes())
    (d / "model.pt2.json").write_text(manifest_text)
    return art


@settings(FUZZ, max_examples=300)
@given(changes=st.lists(st.tuples(st.sampled_from(_MANIFEST_KEYS), values), min_size=1, max_size=3))
def test_check_manifest_passes_or_refuses(tiny: dict[str, Any], changes: list[tuple[str, Any]]) -> None:
    from edge_sr.convert.manifest import check_manifest

    m = dict(tiny["manifest"])
    for key, value in changes:
        m[key] = value
    try:
        check_manifest(m, "fuzz.pt2.json", artifact="fuzz.pt2")
    except EdgeSRError as e:
        assert "\n" not in str(e) and "fuzz.pt2.json" in str(e)


@settings(FUZZ, max_examples=150)
@given(changes=st.lists(st.tuples(st.sampled_from(_MANIFEST_KEYS), values), min_size=1, max_size=3))
def test_manifest_fields_read_or_refuse(tiny: dict[str, Any], changes: list[tuple[str, Any]]) -> None:
    m = dict(tiny["manifest"])
    for key, value in changes:
        m[key] = value
    _manifest_or_refuse(_write_artifact(tiny, json.dumps(m)), load=False)


@settings(FUZZ, max_examples=25)
@given(changes=st.lists(st.tuples(st.sampled_from(_MANIFEST_KEYS), values), min_size=1, max_size=2))
def test_manifest_fields_load_or_refuse(tiny: dict[str, Any], changes: list[tuple[str, Any]]) -> None:
    """The runtime, too, takes any manifest or refuses it."""
    m = dict(tiny["manifest"])
    for key, value in changes:
        m[key] = value
    _manifest_or_refuse(_write_artifact(tiny, json.dumps(m)), load=True)


@settings(FUZZ, max_examples=100)
@given(text=st.text(max_size=200) | values.map(json.dumps))
def test_manifest_text_reads_or_refuses(tiny: dict[str, Any], text: str) -> None:
    _manifest_or_refuse(_write_artifact(tiny, text), load=False)
