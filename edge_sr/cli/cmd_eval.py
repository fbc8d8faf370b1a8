"""`edge-sr eval`: PSNR / SSIM of a model (or bicubic) on a benchmark folder, the way SR papers report it."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, emit, model_source
from edge_sr.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR / SSIM (Y channel, border = scale) on a benchmark folder",
        description="Evaluate on DIR/HR (+ DIR/LR_bicubic/X<s> when present; else LR is made with MATLAB bicubic). "
        "Without --model or --checkpoint, the bundled model for --scale.",
    )
    p.add_argument("--data", required=True, help="benchmark folder with HR/ and optionally LR_bicubic/X<s>/")
    p.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    p.add_argument(
        "--checkpoint",
        help="a checkpoint: edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors (architecture detected)",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="bicubic (the baseline, no checkpoint), or the zoo architecture of a foreign --checkpoint",
    )
    p.add_argument(
        "--lr", choices=("auto", "shipped", "imresize"), default="auto", help="where LR images come from"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    add_model_flags(p, scale=False, model=False)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.evaluate import evaluate

    if args.model == "bicubic":
        if args.checkpoint or args.model_arg or args.module:
            raise ConfigError(None, "--model bicubic is the baseline: it takes no checkpoint or model flags")
        source = "bicubic"
    else:
        source = model_source(args, args.checkpoint)
    res = evaluate(args.data, args.scale, source, lr=args.lr, device=args.device)
    lines = [f"{'image':<14} {'PSNR':>8} {'SSIM':>7}"]
    lines += [f"{s.name:<14} {s.psnr:8.4f} {s.ssim:7.4f}" for s in res.images]
    lines.append(
        f"{'mean':<14} {res.psnr:8.4f} {res.ssim:7.4f}   (x{res.scale}, {res.model}, LR: {res.lr_source})"
    )
    emit(args, res.to_dict(), "\n".join(lines))
    return 0
