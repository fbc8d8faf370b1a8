"""`edge-sr import CKPT -o model.safetensors`: a foreign checkpoint as an edge-sr one (the detected card in its
metadata, the zoo's key names, the source file's sha256)."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="write a foreign checkpoint as an edge-sr .safetensors with its detected card",
        description="Detect the checkpoint's architecture (or take --model / --model-arg), load it strictly, "
        "and write an edge-sr checkpoint whose metadata keeps the card, the source file's name and sha256, "
        "the layout recognised and the arguments assumed.",
    )
    p.add_argument("checkpoint", help="the foreign checkpoint (.pth / .pt / .ckpt / .safetensors)")
    p.add_argument("-o", "--out", required=True, help="the edge-sr checkpoint to write (.safetensors)")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from edge_sr.errors import ConfigError, OutputError
    from edge_sr.models.foreign import import_checkpoint, parse_model_args

    if args.module:
        raise ConfigError(
            None, "--module: import writes zoo architectures; a custom class has no registry name"
        )
    with contextlib.suppress(OSError):
        if os.path.samefile(args.checkpoint, args.out):
            raise OutputError(args.out, "is the input checkpoint itself; choose another -o (nothing written)")
    r = import_checkpoint(
        args.checkpoint, args.out, model=args.model, scale=args.scale, **parse_model_args(args.model_arg)
    )
    d = r.detection
    text = (
        f"{r.src}: {d['arch']} x{d['scale']} ({d['form']} form, {d['layout']} layout) -> {r.out}"
        f"\n  source sha256 {r.sha256}"
    )
    if d["assumed"]:
        text += "\n" + "\n".join(f"  assumed {k}: {why}" for k, why in sorted(d["assumed"].items()))
    emit(args, r.to_dict(), text)
    return 0
