"""`edge-sr inspect CKPT [--json]`: which architecture a checkpoint is, with which arguments, read from its
keys and shapes (or from an edge-sr card)."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="detect a checkpoint's architecture, arguments, scale, colours and form",
        description="Read a checkpoint (edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors: "
        "loaded with weights_only, nothing executes) and print what every verb would build from it.",
    )
    p.add_argument("checkpoint", type=checkpoint_path, help="the checkpoint (or a bundled file's name)")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.errors import ConfigError
    from edge_sr.models.foreign import describe_checkpoint, parse_model_args

    if args.module:
        raise ConfigError(
            None, "--module: inspect detects zoo architectures; a custom class is what you say it is"
        )
    obj = describe_checkpoint(
        args.checkpoint, model=args.model, scale=args.scale, **parse_model_args(args.model_arg)
    )
    lines = [
        f"{args.checkpoint}",
        f"  architecture  {obj['arch']} (family {obj['family']}, layout {obj['layout']})",
        f"  arguments     {', '.join(f'{k}={v!r}' for k, v in sorted(obj['args'].items()))}",
        f"  scale         x{obj['scale']}",
        f"  colours       {obj['colors']} ({'RGB' if obj['colors'] == 3 else 'Y channel, BT.601'})",
        f"  form          {obj['form']}",
        f"  value range   [0, {obj['value_range']:g}] inside the network; [0, 1] at its boundary",
        f"  mean          {obj['mean'] if obj['mean'] is not None else 'none'}",
        f"  parameters    {obj['params']:,}",
    ]
    lines += [f"  assumed       {k}: {why}" for k, why in sorted(obj["assumed"].items())]
    emit(args, obj, "\n".join(lines))
    return 0
