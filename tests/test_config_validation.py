"""Hostile recipes: every bad value is one line naming the file and the field, exit 2, nothing written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from edge_sr.cli import main
from edge_sr.errors import ConfigError
from edge_sr.train import TrainConfig, apply_overrides, load_config
from edge_sr.train.config_file import MAX_CONFIG_BYTES


def _recipe(tmp_path: Path, **top: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "model": {"name": "ecbsr_m4c8", "scale": 2, "args": {"collapsed": True}},
        "data": {"train_folders": [str(tmp_path / "no-images")], "patch_size": 12, "batch_size": 2},
        "iters": 4,
        "out_dir": str(tmp_path / "run"),
    }
    cfg.update(top)
    return cfg


def _set(cfg: dict[str, object], dotted: str, value: object) -> dict[str, object]:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})  # type: ignore[assignment]
    node[last] = value
    return cfg


def _refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *words: str, args: tuple[str, ...] = ()
) -> str:
    """Write ``text`` as the recipe, run ``edge-sr train``: exit 2, one line naming the file and ``words``."""
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"edge-sr train: {path}: "), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "run").exists()
    return err


BAD_VALUES = [
    ("optim.lr", -1e-3),
    ("optim.lr", 0.0),
    ("optim.lr", float("nan")),
    ("optim.lr", float("inf")),
    ("optim.min_lr", 1.0),
    ("optim.betas", [0.9, 1.0]),
    ("optim.milestones", [0]),
    ("data.batch_size", 0),
    ("data.patch_size", 4),
    ("data.patch_size", 100_000),
    ("data.workers", -1),
    ("data.augment.flip", 1.5),
    ("iters", -5),
    ("iters", 0),
    ("save_every", 0),
    ("log_every", 0),
    ("val_every", 0),
    ("ema_decay", 5.0),
    ("ema_decay", 1.0),
    ("ema_decay", -0.1),
    ("model.scale", 0),
    ("model.scale", 7),
    ("threads", -1),
    ("seed", -1),
    ("device", "gpu0"),
    ("charbonnier_eps", 0.0),
    ("data.hr_scales", []),
    ("data.hr_scales", [1.0, 1.0]),
    ("data.hr_scales", [1.0, 0.05]),
    ("data.hr_scales", [1.5]),
    ("loss_ycbcr", [0.0, 0.0, 0.0]),
    ("loss_ycbcr", [1.0, -0.1, 0.0]),
    ("loss_ycbcr", [1.0, float("nan"), 0.0]),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v}" for f, v in BAD_VALUES])
def test_out_of_range_value_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: object
) -> None:
    text = yaml.safe_dump(_set(_recipe(tmp_path), field, value))
    _refused(tmp_path, capsys, text, field, "expected")


@pytest.mark.parametrize(
    ("override", "field"),
    [("optim.lr=-1", "optim.lr"), ("save_every=0", "save_every"), ("ema_decay=nan", "ema_decay")],
)
def test_set_override_gets_the_same_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, field: str
) -> None:
    text = yaml.safe_dump(_recipe(tmp_path))
    _refused(tmp_path, capsys, text, field, "(from --set)", args=("--set", override))


def test_model_args_are_checked_like_checkpoint_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, word in [
        ({"channels": -1}, "channels"),
        ({"channels": 10**9}, "channels"),
        ({"bogus": 1}, "bogus"),
        ({"scale": 3}, "model.scale"),
    ]:
        cfg = _recipe(tmp_path)
        _set(cfg, "model.args", args)
        _refused(tmp_path, capsys, yaml.safe_dump(cfg), "model.args", word)


def test_patch_too_small_for_the_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _recipe(tmp_path, model={"name": "swinir_lightweight", "scale": 2})
    _set(cfg, "data.patch_size", 8)
    load_config_ok = tmp_path / "ok.yaml"
    load_config_ok.write_text(yaml.safe_dump(cfg))
    load_config(load_config_ok)  # window 8: a patch of 8 fits
    cfg = _recipe(tmp_path, model={"name": "hat_s", "scale": 2})  # window 16
    _set(cfg, "data.patch_size", 12)
    _refused(tmp_path, capsys, yaml.safe_dump(cfg), "data.patch_size is 12", "e.g. 16")


def test_out_dir_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    cfg = _recipe(tmp_path, out_dir=str(tmp_path / "afile" / "run"))
    _refused(tmp_path, capsys, yaml.safe_dump(cfg), "out_dir", "is a file")
    cfg = _recipe(tmp_path, out_dir=str(tmp_path / "afile"))
    _refused(tmp_path, capsys, yaml.safe_dump(cfg), "out_dir", "is a file")


def test_duplicate_key_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump(_recipe(tmp_path)) + "iters: 9\n"
    _refused(tmp_path, capsys, text, "duplicate key 'iters'", "line")
    text = "optim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n" + yaml.safe_dump(_recipe(tmp_path))
    _refused(tmp_path, capsys, text, "duplicate key 'lr'")


BOMB = """a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_yaml_alias_bomb_in_model_args_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "".join("    " + line + "\n" for line in BOMB.splitlines())
    text = f"model:\n  name: ecbsr_m4c8\n  args:\n{body}out_dir: {tmp_path / 'run'}\n"
    t0 = time.perf_counter()
    _refused(tmp_path, capsys, text, "alias *a refused")
    assert time.perf_counter() - t0 < 5
    _refused(tmp_path, capsys, BOMB, "alias")  # and at the top level


def test_size_nesting_encoding_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = "# " + "x" * MAX_CONFIG_BYTES + "\n"
    _refused(tmp_path, capsys, big, "larger than 1024 KiB")
    _refused(tmp_path, capsys, "model:\n  args:\n    x: " + "[" * 200 + "]" * 200 + "\n", "nested deeper")
    _refused(tmp_path, capsys, "1: 2\niters: 3\n", "config key 1")
    _refused(tmp_path, capsys, "- 1\n- 2\n", "must be a mapping")
    _refused(tmp_path, capsys, "iters: !!python/object/apply:os.system [true]\n", "cannot parse config")
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"iters: \xff\xfe\n")
    assert main(["train", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_toml_size_and_syntax(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\niters = 3\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
    path.write_text("iters = 3\niters = 4\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(path)
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_library_api_checks_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optim.lr is -1.0"):
        apply_overrides(TrainConfig(out_dir=str(tmp_path / "run")), ["optim.lr=-1"])
    from edge_sr.train import train

    cfg = TrainConfig(out_dir=str(tmp_path / "run"))
    cfg.save_every = 0  # set directly: train() checks before it builds or writes anything
    with pytest.raises(ConfigError, match="save_every is 0"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()
    ok = apply_overrides(TrainConfig(out_dir=str(tmp_path / "run")), ["optim.lr=1e-3", "threads=0"])
    assert ok.optim.lr == 1e-3
