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


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help_and_json(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"edge-sr {verb}" in out and "--json" in out


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_module_entry_point() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edge_sr.cli", "--version"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and __version__ in run.stdout
