"""Generic CLI contract: --version, and every verb has --help and --json."""

from __future__ import annotations

import subprocess
import sys

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
