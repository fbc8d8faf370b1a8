"""Write the hostile-input corpus into a folder, one sub-folder per case, and list it.

    python tests/hostile/make_corpus.py OUT_DIR

``OUT_DIR/base`` holds the valid inputs the cases borrow; ``OUT_DIR/<kind>/<name>`` each case's own files;
``OUT_DIR/cases.json`` the cases with their verbs, expectations and the command line of every verb.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile.corpus import argv, build_base, cases  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="an empty or missing folder")
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out}: not empty", file=sys.stderr)
        return 2
    base = build_base(args.out / "base")
    listing = []
    for case in cases():
        reason = case.skip_if() if case.skip_if else None
        if reason:
            listing.append({"id": case.id, "skipped": reason})
            continue
        d = args.out / case.id
        d.mkdir(parents=True)
        case.make(d, base)
        commands = {verb: " ".join(["edge-sr", *argv(case, verb, d, base)]) for verb in case.verbs}
        listing.append({"id": case.id, "kind": case.kind, "note": case.note, "expect": case.expect,
                        "commands": commands})  # fmt: skip
    (args.out / "cases.json").write_text(json.dumps(listing, indent=1) + "\n")
    kinds: dict[str, int] = {}
    for c in listing:
        kinds[c["id"].split("/")[0]] = kinds.get(c["id"].split("/")[0], 0) + 1
    print(f"{len(listing)} cases in {args.out}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
