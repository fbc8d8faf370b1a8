"""Run the whole hostile-input corpus and print the figures per verb; ``--write`` puts them in
docs/ROBUSTNESS.md between ``<!-- hostile:begin -->`` and ``<!-- hostile:end -->``.

    python tests/hostile/report.py [--write] [--jobs 2] [--only KIND/NAME ...]

Each job is a child process that builds the shared inputs once and runs its share of the (case, verb) pairs
the way tests/test_hostile.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile.corpus import VERBS, build_base, cases, runs  # noqa: E402
from hostile.runner import problems, run_case  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ROBUSTNESS.md"
BEGIN, END = "<!-- hostile:begin -->", "<!-- hostile:end -->"
# figure columns: the category of problems() each counts
COLUMNS = (("tracebacks", "traceback"), ("wrong exit codes", "exit code"), ("hangs", "hang"),
           ("half-written / changed files", "written"), ("code ran on load", "code ran"),
           ("messages not one line naming the file", "message"))  # fmt: skip


def _shard(index: int, count: int, only: list[str]) -> list[dict[str, object]]:
    """Run every ``count``-th pair from ``index`` in this process; one record per pair."""
    with tempfile.TemporaryDirectory(prefix="edge-sr-hostile-") as tmp:
        base = build_base(Path(tmp) / "base")
        todo = [(c, v) for c, v in runs() if not only or c.id in only]
        records = []
        for i, (case, verb) in enumerate(todo):
            if i % count != index:
                continue
            reason = case.skip_if() if case.skip_if else None
            if reason:
                records.append({"case": case.id, "verb": verb, "skipped": reason})
                continue
            d = Path(tmp) / "runs" / f"{i:04d}"
            out = run_case(case, verb, d, base)
            records.append({"case": case.id, "verb": verb, "rc": out.rc, "seconds": round(out.seconds, 2),
                            "problems": problems(case, out, d)})  # fmt: skip
        return records


def _run_all(jobs: int, only: list[str]) -> list[dict[str, object]]:
    children = []
    for i in range(jobs):
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [
            sys.executable,
            __file__,
            "--shard",
            f"{i}/{jobs}",
            "--out",
            path,
            *sum((["--only", o] for o in only), []),
        ]
        children.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    records: list[dict[str, object]] = []
    for proc, path in children:
        if proc.wait() != 0:
            raise SystemExit(f"a shard failed (exit {proc.returncode}); run it alone with --shard")
        records += json.loads(Path(path).read_text())
        os.unlink(path)
    return records


def table(records: list[dict[str, object]]) -> str:
    """The figures per verb, as a markdown table."""
    head = ["verb", "cases tried", *[c for c, _ in COLUMNS], "as expected"]
    rows = []
    for verb in [*VERBS, "all"]:
        mine = [r for r in records if (verb == "all" or r["verb"] == verb) and "skipped" not in r]
        if not mine:
            continue
        counts = [sum(1 for r in mine if key in r["problems"]) for _, key in COLUMNS]  # type: ignore[operator]
        ok = sum(1 for r in mine if not r["problems"])
        name = f"**{verb}**" if verb == "all" else verb
        rows.append([name, str(len(mine)), *map(str, counts), str(ok)])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def failures(records: list[dict[str, object]]) -> list[str]:
    out = []
    for r in records:
        if r.get("problems"):
            probs = "; ".join(f"{k}: {v}" for k, v in r["problems"].items())  # type: ignore[attr-defined]
            out.append(f"- `{r['case']}` × {r['verb']}: {probs}")
    return out


def section(records: list[dict[str, object]], seconds: float) -> str:
    kinds: dict[str, int] = {}
    for c in cases():
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    skipped = sorted({f"{r['case']} ({r['skipped']})" for r in records if "skipped" in r})
    fails = failures(records)
    parts = [
        BEGIN,
        "## Hostile inputs",
        "",
        f"{sum(kinds.values())} cases ({', '.join(f'{n} {k}' for k, n in kinds.items())}), each run through every "
        f"verb that reads it: {sum(1 for r in records if 'skipped' not in r)} runs, {seconds:.0f} s on "
        f"{os.cpu_count()} cores ({platform.machine()}, Python {platform.python_version()}).",
        "",
        table(records),
        "",
        "Produced by `python tests/hostile/report.py --write` (the same runs as `pytest tests/test_hostile.py`).",
        "A run is as expected when a refusal exits 2 with exactly one error line naming the file, no traceback",
        "and nothing added, removed or changed in its folder, within its time bound; an accepted input (gray,",
        "RGBA, 16-bit images) exits 0 and writes only its output.",
    ]
    if skipped:
        parts += ["", "Skipped on this machine: " + "; ".join(skipped) + "."]
    parts += ["", "Runs not as expected: " + ("none." if not fails else ""), *fails, END]
    return "\n".join(parts)


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.is_file() else "# Robustness\n"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write the section into {DOC.relative_to(REPO)}")
    ap.add_argument("--jobs", type=int, default=2, help="child processes (default 2)")
    ap.add_argument("--only", action="append", default=[], metavar="CASE", help="only these case ids")
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shard:
        i, n = map(int, args.shard.split("/"))
        Path(args.out).write_text(json.dumps(_shard(i, n, args.only)))
        return 0
    t0 = time.perf_counter()
    records = _run_all(args.jobs, args.only)
    text = section(records, time.perf_counter() - t0)
    print(text)
    if args.write:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
