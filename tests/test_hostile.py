"""Hostile inputs through every verb that reads them (the corpus of tests/hostile/corpus.py).

A refusal exits 2 with exactly one error line naming the file, no traceback, nothing written or changed in
its folder and no code run, within its time bound; an accepted input exits 0 and writes only its output.
The figures of docs/ROBUSTNESS.md come from the same runs: ``python tests/hostile/report.py --write``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile.corpus import MARKER, Base, Case, build_base, runs
from hostile.runner import problems, run_case


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """The valid inputs the cases borrow, built once per worker."""
    return build_base(tmp_path_factory.mktemp("hostile-base"))


def _params() -> list[object]:
    # no pytest-timeout mark: its SIGALRM would fight the runner's own watchdog (an interval timer per run)
    return [pytest.param(case, verb, id=f"{case.id}-{verb}") for case, verb in runs()]


@pytest.mark.parametrize(("case", "verb"), _params())
def test_hostile_input(case: Case, verb: str, base: Base, tmp_path: Path) -> None:
    reason = case.skip_if() if case.skip_if else None
    if reason:
        pytest.skip(reason)
    out = run_case(case, verb, tmp_path / "case", base)
    found = problems(case, out, tmp_path / "case")
    assert not (tmp_path / "case" / MARKER).exists(), "loading the file ran code"
    assert not found, f"edge-sr {' '.join(out.argv)}\n{found}\nstderr: {out.stderr[-2000:]}"
