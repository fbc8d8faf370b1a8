"""`edge-sr upscale`: super-resolve image files and folders, tiled, keeping bit depth, gray and alpha."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, emit, model_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images (PNG, JPEG, WebP, TIFF; 8/16-bit, gray, alpha)",
        description="Upscale files or folders into -o (a file for one input, else a folder keeping each format; "
        "without -o, beside each input as <name>_x<scale>). "
        "Exit code 1 when some files failed, 2 when none could be processed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument(
        "-o",
        "--out",
        help="output file (format from its extension) or folder (default: beside each input, <name>_x<scale>)",
    )
    p.add_argument(
        "--checkpoint",
        help="edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors: architecture detected (default: bundled)",
    )
    p.add_argument(
        "--scale", type=int, choices=(2, 3, 4), help="pick the bundled model / check the checkpoint"
    )
    p.add_argument("--tile", type=int, default=256, help="tile size in input pixels")
    p.add_argument("--tile-overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--alpha", dest="alpha_mode", default="bicubic", choices=("bicubic", "model"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_flags(p, scale=False)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.upscale import upscale_files

    rep = upscale_files(
        args.inputs, args.out, checkpoint=model_source(args, args.checkpoint), scale=args.scale, tile=args.tile,
        tile_overlap=args.tile_overlap, device=args.device, precision=args.precision, tile_batch=args.tile_batch,
        alpha_mode=args.alpha_mode, progress=not (args.no_progress or args.json),
    )  # fmt: skip
    lines = [f"{f.input} -> {f.output} ({f.seconds:.2f} s)" for f in rep.files if f.ok]
    lines += [f"failed: {f.error}" for f in rep.failed]
    lines += rep.notes
    fb = sum(f.fp32_fallback_tiles for f in rep.files)
    if fb:
        lines.append(f"{fb} tiles recomputed in FP32 ({args.precision} output overflowed)")
    lines.append(f"{len(rep.files) - len(rep.failed)} of {len(rep.files)} written (x{rep.scale})")
    emit(args, rep.to_dict(), "\n".join(lines))
    return rep.exit_code
