"""`edge-sr eval`: PSNR / SSIM of a model (or bicubic) on a benchmark folder, the way SR papers report it.

A sequence root (``GT/<clip>/`` beside ``BIx4/`` / ``BDx4/``: Vid4, the mmagic layout) is evaluated with the video
protocol (``edge_sr.evaluate_video``): Y, PSNR / SSIM per frame, mean per clip, then mean of clips.
"""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source
from edge_sr.cli.cmd_upscale import any_scale_args, scale_arg
from edge_sr.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="PSNR / SSIM (Y channel) on a benchmark folder or a video sequence set (Vid4)",
        description="Evaluate on DIR/HR (+ DIR/LR_bicubic/X<s> when present; else LR is made with MATLAB bicubic), "
        "border = scale; or on a sequence set DIR/GT/<clip>/ + DIR/<BI|BD>x<s>/<clip>/ (Vid4) with the video "
        "protocol: border --crop, mean per clip, then mean of clips; a video model streams with a fresh state per "
        "clip, an image model runs frame by frame. Without --model or --checkpoint, the bundled model for --scale.",
    )
    p.add_argument(
        "--data",
        required=True,
        help="benchmark folder with HR/ and optionally LR_bicubic/X<s>/, or a sequence set with GT/<clip>/",
    )
    p.add_argument(
        "--scale",
        type=scale_arg,
        required=True,
        help="2, 3 or 4; any factor (1.5, 2.5, 3.5) for an arbitrary-scale model (LIIF) or --model bicubic",
    )
    p.add_argument(
        "--checkpoint",
        type=checkpoint_path,
        help="a checkpoint: edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors (architecture detected); "
        "on a sequence set also an artifact (.onnx, .tflite, .pte, .mlpackage, .pt2 with its manifest)",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="bicubic (the baseline, no checkpoint), or the zoo architecture of a foreign --checkpoint",
    )
    p.add_argument(
        "--lr", choices=("auto", "shipped", "imresize"), default="auto", help="where LR images come from"
    )
    v = p.add_argument_group("video sequence sets (DIR/GT/<clip>/)")
    v.add_argument(
        "--degradation", choices=("BI", "BD"), help="the LR folder: BI (bicubic) or BD (blur); default BI"
    )
    v.add_argument(
        "--crop",
        type=int,
        help="border pixels shaved before measuring (default 0, as BasicVSR / mmagic; 8: RRN, DUF)",
    )
    v.add_argument("--clips", nargs="+", metavar="NAME", help="only these clips (default: all)")
    v.add_argument("--frames", type=int, metavar="N", help="only the first N frames of each clip")
    v.add_argument(
        "--chunk",
        type=int,
        metavar="N",
        help="whole-clip models (BasicVSR, IconVSR, BasicVSR++): frames per temporal chunk (default 0: the whole "
        "clip at once, as the papers test)",
    )
    v.add_argument(
        "--chunk-overlap", type=int, metavar="N", help="frames of context on each side of a cut (default 5)"
    )
    v.add_argument(
        "--reset-state",
        action="store_true",
        default=None,
        help="a streaming model starts every frame from its initial state (what it scores without the other frames)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    add_model_flags(p, scale=False, model=False)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.data.sequences import is_sequence_root
    from edge_sr.evaluate import evaluate

    video = is_sequence_root(args.data)
    given = [
        f"--{k.replace('_', '-')}"
        for k in ("degradation", "crop", "clips", "frames", "chunk", "chunk_overlap", "reset_state")
        if getattr(args, k) is not None
    ]
    if not video and given:
        raise ConfigError(args.data, f"{given[0]} is for a sequence set (DIR/GT/<clip>/); this is not one")
    if video and args.lr != "auto":
        raise ConfigError(
            args.data, "--lr is for image benchmarks; a sequence set reads its LR from --degradation"
        )
    if args.model == "bicubic":
        if args.checkpoint or args.model_arg or args.module:
            raise ConfigError(None, "--model bicubic is the baseline: it takes no checkpoint or model flags")
        source = "bicubic"
    elif video and _is_artifact(args):
        source = args.checkpoint  # a video artifact streams through edge_sr.runtime
    else:
        source = model_source(any_scale_args(args), args.checkpoint)
    if video:
        return _run_video(args, source)
    res = evaluate(args.data, args.scale, source, lr=args.lr, device=args.device)
    lines = [f"{'image':<14} {'PSNR':>8} {'SSIM':>7}"]
    lines += [f"{s.name:<14} {s.psnr:8.4f} {s.ssim:7.4f}" for s in res.images]
    lines.append(
        f"{'mean':<14} {res.psnr:8.4f} {res.ssim:7.4f}   (x{res.scale:g}, {res.model}, LR: {res.lr_source})"
    )
    emit(args, res.to_dict(), "\n".join(lines))
    return 0


def _is_artifact(args: argparse.Namespace) -> bool:
    """--checkpoint names an exported artifact (not a checkpoint) and no flag asks to build a model."""
    from pathlib import Path

    from edge_sr.models.checkpoint import CHECKPOINT_SUFFIXES

    if not args.checkpoint or args.model or args.model_arg or args.module:
        return False
    return Path(args.checkpoint).suffix.lower() not in CHECKPOINT_SUFFIXES


def _run_video(args: argparse.Namespace, source: object) -> int:
    from edge_sr.evaluate_video import evaluate_video

    res = evaluate_video(
        source, args.data, scale=args.scale, degradation=args.degradation or "BI", crop=args.crop or 0,
        clips=args.clips, frames=args.frames, device=args.device,
        chunk=0 if args.chunk is None else args.chunk, chunk_overlap=args.chunk_overlap,
        reset_state=bool(args.reset_state),
    )  # fmt: skip
    lines = [f"{'clip':<14} {'frames':>6} {'PSNR':>8} {'SSIM':>7}"]
    lines += [f"{c.name:<14} {c.frames:>6} {c.psnr:8.4f} {c.ssim:7.4f}" for c in res.clips]
    lines.append(
        f"{'mean of clips':<14} {res.frames:>6} {res.psnr:8.4f} {res.ssim:7.4f}   "
        f"(x{res.scale} {res.degradation}, Y, crop {res.crop}, {res.model})"
    )
    emit(args, res.to_dict(), "\n".join(lines))
    return 0
