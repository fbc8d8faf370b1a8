"""`edge-sr eval`: PSNR / SSIM of a model (or bicubic) on a benchmark folder, the way SR papers report it."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR / SSIM (Y channel, border = scale) on a benchmark folder",
        description="Evaluate on DIR/HR (+ DIR/LR_bicubic/X<s> when present; else LR is made with MATLAB bicubic). "
        "Without --model or --checkpoint, the bundled model for --scale.",
    )
    p.add_argument("--data", required=True, help="benchmark folder with HR/ and optionally LR_bicubic/X<s>/")
    p.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", choices=("bicubic",), help="a baseline instead of a network")
    g.add_argument("--checkpoint", help="an edge-sr .safetensors checkpoint")
    p.add_argument(
        "--lr", choices=("auto", "shipped", "imresize"), default="auto", help="where LR images come from"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.evaluate import evaluate

    res = evaluate(args.data, args.scale, args.model or args.checkpoint, lr=args.lr, device=args.device)
    lines = [f"{'image':<14} {'PSNR':>8} {'SSIM':>7}"]
    lines += [f"{s.name:<14} {s.psnr:8.4f} {s.ssim:7.4f}" for s in res.images]
    lines.append(
        f"{'mean':<14} {res.psnr:8.4f} {res.ssim:7.4f}   (x{res.scale}, {res.model}, LR: {res.lr_source})"
    )
    emit(args, res.to_dict(), "\n".join(lines))
    return 0
