"""`edge-sr models` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from edge_sr.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="(not available yet)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise ConfigError(None, "'models' is not available in this build yet")
