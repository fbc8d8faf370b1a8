"""Generic CLI contract: --version, and every verb has --help and --json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_sr import __version__
from edge_sr.cli import VERBS, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out


def _commands() -> list[list[str]]:
    """Every verb, and every kind of the verbs that have kinds (``bench matrix`` ...)."""
    from edge_sr.cli.cmd_bench import KINDS

    return [[v] for v in sorted(VERBS) if v != "bench"] + [["bench", k] for k in KINDS]


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_verb_has_help_and_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"edge-sr {' '.join(argv)}" in out and "--json" in out


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "required" in err


def test_bad_choice_is_one_line_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_sr.convert import TARGETS

    assert main(["convert", "x.safetensors", "--target", "coremk"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edge-sr convert: unknown target 'coremk'; choose from {', '.join(TARGETS)}"


def test_module_entry_point() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge_sr.cli", "--version"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and __version__ in run.stdout


def test_bundled_file_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--checkpoint ecbsr_m4c16_x2`` (a name ``edge-sr models`` lists) is the bundled file; a file of that
    name in the working folder wins, and an unknown name stays a missing file."""
    import json

    from edge_sr.cli._common import checkpoint_path
    from edge_sr.weights import bundled_checkpoint, bundled_checkpoints

    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "ecbsr_m4c16_x2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(bundled_checkpoint(2)) and out["scale"] == 2
    assert checkpoint_path("ecbsr_m4c16_x3.safetensors") == str(bundled_checkpoint(3))
    Path("ecbsr_m4c16_x2").write_bytes(b"")
    assert checkpoint_path("ecbsr_m4c16_x2") == "ecbsr_m4c16_x2"
    assert checkpoint_path("ecbsr_m4c16_x5") == "ecbsr_m4c16_x5"
    assert checkpoint_path("sub/ecbsr_m4c16_x2") == "sub/ecbsr_m4c16_x2"
    from edge_sr.cli import build_parser

    args = build_parser().parse_args(["train", "recipe.yaml", "--init", "ecbsr_m10c32_x2"])
    assert args.init == str(bundled_checkpoints(None)["ecbsr_m10c32"][2])
