"""The ``edge-sr`` command line: argparse sub-commands, one module per verb, each a thin shell over one
library call. ``main(argv) -> int`` so tests call it in-process.

Exit codes: 0 success; 1 a check failed (verify thresholds, some files of a batch failed); 2 bad input
(an ``edge_sr.errors.EdgeSRError``, printed as one line naming the file and the problem); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from edge_sr import __version__
from edge_sr.errors import EdgeSRError
from edge_sr.io_utils import tool_output_to

# verb -> module under edge_sr.cli providing ``add_parser(subparsers)``
VERBS: dict[str, str] = {
    "models": "cmd_models",
    "inspect": "cmd_inspect",
    "import": "cmd_import",
    "eval": "cmd_eval",
    "upscale": "cmd_upscale",
    "train": "cmd_train",
    "reparam": "cmd_reparam",
    "convert": "cmd_convert",
    "verify": "cmd_verify",
    "quantize": "cmd_quantize",
    "profile": "cmd_profile",
    "bench": "cmd_bench",
    "explain": "cmd_explain",
}


class UsageError(Exception):
    """A command line argparse refused; ``main`` prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals as one line (``unknown target 'coremk'; choose from ...``), not usage."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r"argument (\S+?)(?:/\S+)?: invalid choice: '?([^' ]*)'? \(choose from (.*)\)", message)
        if m:
            name = m.group(1).lstrip("-").split("/")[-1].replace("-", " ")
            choices = m.group(3).replace("'", "")
            message = f"unknown {name} {m.group(2)!r}; choose from {choices}"
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge-sr", description="Super-resolution models from PyTorch to the edge.")
    parser.add_argument("--version", action="version", version=f"edge-sr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(f"edge_sr.cli.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        verb = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in VERBS), None)
        print(f"edge-sr{' ' + verb if verb else ''}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    # with --json, what third-party code prints on stdout goes to stderr: the JSON object is stdout's only line
    quiet = tool_output_to(None) if getattr(args, "json", False) else contextlib.nullcontext()
    try:
        with quiet:
            return int(args.func(args) or 0)
    except EdgeSRError as e:
        print(f"edge-sr {args.verb}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-sr {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
