"""`edge-sr reparam CKPT -o OUT [--check | --no-check] [--json]`: fuse a train-form checkpoint."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reparam", help="fuse a train-form checkpoint into its deploy form, proven equal")
    p.add_argument(
        "checkpoint",
        type=checkpoint_path,
        help="train-form checkpoint (edge-sr .safetensors, or a foreign one: detected, or --model)",
    )
    p.add_argument("-o", "--out", required=True, help="deploy-form checkpoint to write (.safetensors)")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare both forms in float64 on random inputs before writing (default: on)",
    )
    p.add_argument("--atol", type=float, default=1e-9, help="tolerance of the check (default 1e-9)")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.errors import OutputError
    from edge_sr.io_utils import check_output
    from edge_sr.models import reparameterize_checkpoint

    out = check_output(args.out)  # a folder, device or FIFO at -o: refused before the work, not after
    with contextlib.suppress(OSError):  # the same file (symlink, ./, hard link, case): the input survives
        if os.path.samefile(args.checkpoint, out):
            raise OutputError(out, "is the input checkpoint itself; choose another -o (nothing written)")
    from edge_sr.errors import ConfigError
    from edge_sr.models.foreign import parse_model_args

    if args.module:
        raise ConfigError(
            None, "--module: reparam fuses zoo architectures; a custom module has no fusion rules"
        )
    r = reparameterize_checkpoint(
        args.checkpoint, args.out, check=args.check, atol=args.atol, model=args.model, scale=args.scale,
        **parse_model_args(args.model_arg),
    )  # fmt: skip
    check = f"max abs diff {r.max_abs_diff:.2e} (float64, atol {r.atol:g})" if r.checked else "not checked"
    text = f"{r.arch} x{r.scale}: {r.params_train} -> {r.params_deploy} parameters; {check}; wrote {r.out}"
    emit(args, dataclasses.asdict(r), text)
    return 0
