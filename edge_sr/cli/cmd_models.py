"""`edge-sr models [--json] [--kind edge|heavy|video] [--scale S]`: the zoo with sizes and costs."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo: parameters, MACs, bundled weights")
    p.add_argument("--kind", choices=["edge", "heavy", "video"], default=None, help="only this kind of model")
    p.add_argument("--scale", type=int, default=4, help="scale the figures are computed for (default 4)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.models.stats import zoo_table

    rows, text = zoo_table(kind=args.kind, scale=args.scale)
    emit(args, {"kind": args.kind, "scale": args.scale, "models": rows}, text)
    return 0
