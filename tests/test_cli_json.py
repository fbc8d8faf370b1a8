"""`--json` on every verb and every target: stdout holds exactly one JSON object and nothing else.

Runs in-process with ``capfd``, which captures file descriptors 1 and 2, so what converters and runtimes
print from C++ or through their own progress bars is caught too (it has to land on stderr).
"""

from __future__ import annotations

import json

import pytest
import torch
from edge_sr.convert import TARGETS, target_module

from edge_sr.cli import main
from edge_sr.models import create_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors")


def run_json(capfd, *argv: str) -> tuple[int, dict | None, str]:
    """Run the CLI with --json; stdout must be exactly one JSON object (or empty on exit 2)."""
    capfd.readouterr()
    code = main([*argv, "--json"])
    out, err = capfd.readouterr()
    if code == 2:  # bad input: one line on stderr, nothing on stdout
        assert out == "", f"{argv[0]} wrote to stdout on failure: {out[:200]!r}"
        assert len(err.strip().splitlines()) >= 1
        return code, None, err
    lines = out.splitlines()
    assert len(lines) == 1, f"{argv[0]}: expected one JSON line on stdout, got {len(lines)}: {out[:300]!r}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return code, obj, err


@pytest.mark.parametrize("target", list(TARGETS))
def test_target_verbs_print_one_json_object(tmp_path, ckpt, capfd, target: str) -> None:
    mod = target_module(target)
    art = tmp_path / f"m{mod.SUFFIX}"
    code, obj, _ = run_json(
        capfd,
        "convert",
        str(ckpt),
        "--target",
        target,
        "--input-size",
        "32x32",
        "-o",
        str(art),
        "--no-verify",
    )
    assert code == 0 and obj is not None and obj["path"] == str(art) and obj["target"] == target

    code, obj, _ = run_json(capfd, "verify", str(art), "--reference", str(ckpt), "--limit", "1")
    assert code in (0, 1) and obj is not None and obj["precision"] == "fp32"

    code, obj, err = run_json(capfd, "profile", str(art), "--runs", "2", "--warmup", "0")
    if target == "coreml" and code == 2:  # CoreML latency needs macOS: one line says so
        assert "macOS" in err
    else:
        assert code == 0 and obj is not None and obj["median_ms"] > 0

    # INT8 where the target has it, else the range-checked FP16 artifact
    precision = "int8" if mod.QUANT_MODES else "fp16"
    qart = tmp_path / f"q{mod.SUFFIX}"
    code, obj, _ = run_json(
        capfd,
        "quantize",
        str(ckpt),
        "--target",
        target,
        "--precision",
        precision,
        "--calib",
        str(tmp_path / "calib"),
        "--calib-lr",
        "--calib-count",
        "4",
        "--input-size",
        "16x16",
        "-o",
        str(qart),
        "--no-verify",
    )
    assert code == 0 and obj is not None and obj["precision"] == precision and qart.exists()


@pytest.fixture(autouse=True)
def calib_images(tmp_path):
    """Four small photos-like images as an LR calibration folder."""
    import numpy as np
    from PIL import Image

    d = tmp_path / "calib"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.random((4, 4, 3))
        img = np.kron(base, np.ones((8, 8, 1)))  # smooth blocks, like an image rather than noise
        Image.fromarray((img * 255).astype(np.uint8)).save(d / f"{i}.png")


def test_other_verbs_print_one_json_object(tmp_path, ckpt, capfd) -> None:
    code, obj, _ = run_json(capfd, "models")
    assert code == 0 and obj is not None
    code, obj, _ = run_json(capfd, "reparam", str(ckpt), "-o", str(tmp_path / "d.safetensors"))
    assert code == 0 and obj is not None
    code, obj, _ = run_json(
        capfd,
        "upscale",
        str(tmp_path / "calib" / "0.png"),
        "--checkpoint",
        str(ckpt),
        "-o",
        str(tmp_path / "u.png"),
        "--no-progress",
    )
    assert code == 0 and obj is not None and (tmp_path / "u.png").is_file()
    code, obj, _ = run_json(
        capfd, "eval", "--data", str(tmp_path / "calib"), "--scale", "2", "--checkpoint", str(ckpt)
    )
    assert (
        code == 2 and obj is None
    )  # no HR/ folder: refused, one line on stderr (run_json checks stdout is empty)
    (tmp_path / "bench").mkdir()
    (tmp_path / "calib").rename(tmp_path / "bench" / "HR")
    code, obj, _ = run_json(
        capfd, "eval", "--data", str(tmp_path / "bench"), "--scale", "2", "--checkpoint", str(ckpt)
    )
    assert code == 0 and obj is not None
    code, obj, _ = run_json(capfd, "convert", str(ckpt), "--target", "nope")
    assert code == 2 and obj is None


def _choices(argv: list[str], dest: str) -> list[str]:
    """The ``choices`` of option ``dest`` of the sub-command ``argv`` as the CLI builds it now."""
    import argparse

    from edge_sr.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for word in argv:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return list(next(a for a in parser._actions if a.dest == dest).choices)


def test_every_target_list_is_the_registry(monkeypatch) -> None:
    """CLI choices, bench, profile and runtime.load derive from convert.TARGETS: a target registered there
    (one line; here a second name for the pt2 module) appears everywhere with no other edit."""
    from edge_sr.convert import target_for_path

    from edge_sr.profile import artifact_kind

    for registry in (dict(TARGETS), {**TARGETS, "pt2_copy": "edge_sr.convert.pt2"}):
        monkeypatch.setattr("edge_sr.convert.TARGETS", registry)
        monkeypatch.setattr("edge_sr.cli.cmd_convert.TARGETS", registry)
        monkeypatch.setattr("edge_sr.cli.cmd_quantize.TARGETS", registry)
        names = list(registry)
        assert _choices(["convert"], "target") == names
        assert _choices(["quantize"], "target") == names
        assert _choices(["bench", "matrix"], "targets") == names
        assert _choices(["bench", "quantize"], "targets") == names
    monkeypatch.undo()
    for name in TARGETS:
        suffix = target_module(name).SUFFIX
        assert target_for_path(f"m{suffix}") == name and artifact_kind(f"m{suffix}") == name
