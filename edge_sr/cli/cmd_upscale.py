"""`edge-sr upscale`: super-resolve image files and folders, tiled, keeping bit depth, gray and alpha; or one
video (a file, or a frame folder with ``--video``), frame rate, frame count and audio kept."""

from __future__ import annotations

import argparse
from fractions import Fraction

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images (PNG, JPEG, WebP, TIFF; 8/16-bit, gray, alpha) or a video (mp4, mov, mkv, webm)",
        description="Upscale files or folders into -o (a file for one input, else a folder keeping each format; "
        "without -o, beside each input as <name>_x<scale>). "
        "Exit code 1 when some files failed, 2 when none could be processed. "
        "A video (mp4, mov, mkv, webm, or a frame folder with --video) is upscaled on its own into -o "
        "(the container from its suffix, H.264 or VP9 for .webm; a path without a video suffix: a folder of PNG "
        "frames), same frame rate and frame count, audio copied; a streaming video model carries its state "
        "from frame to frame (one state per tile), an image model runs frame by frame.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders, or one video")
    p.add_argument(
        "-o",
        "--out",
        help="output file (format from its extension) or folder (default: beside each input, <name>_x<scale>)",
    )
    p.add_argument(
        "--checkpoint",
        type=checkpoint_path,
        help="edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors: architecture detected (default: "
        "bundled; for a video the bundled video model); for a video also an image model's artifact",
    )
    p.add_argument(
        "--scale",
        type=scale_arg,
        help="2, 3 or 4: pick the bundled model / check the checkpoint; any factor (2.5) for an arbitrary-scale "
        "model (LIIF / UltraSR), whose output is round(h*scale) x round(w*scale)",
    )
    p.add_argument("--tile", type=int, default=256, help="tile size in input pixels")
    p.add_argument("--tile-overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--alpha", dest="alpha_mode", default="bicubic", choices=("bicubic", "model"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = p.add_argument_group("video")
    v.add_argument(
        "--video", action="store_true", help="the input folder is the frames of one clip, in name order"
    )
    v.add_argument("--crf", type=int, help="encoder quality, lower is better (default: 18 H.264, 24 VP9)")
    v.add_argument(
        "--audio",
        default="copy",
        choices=("copy", "encode", "none"),
        help="copy the audio packets (default; refused when the output container cannot take the codec), "
        "re-encode them (AAC; Opus for .webm), or drop the sound",
    )
    v.add_argument(
        "--fps", type=_fraction, help="frame rate of a frame folder (default 25; 30000/1001 works)"
    )
    v.add_argument(
        "--frames", type=int, dest="max_frames", metavar="N", help="only the first N frames (a preview)"
    )
    v.add_argument(
        "--chunk",
        type=int,
        metavar="N",
        help="whole-clip models (BasicVSR, IconVSR, BasicVSR++): frames per temporal chunk (default 30; 0: the "
        "whole clip at once, memory grows with the clip)",
    )
    v.add_argument(
        "--chunk-overlap",
        type=int,
        metavar="N",
        help="frames of context on each side of a cut between chunks: neighbouring chunks share 2N frames, "
        "whose outputs are blended (default 5)",
    )
    add_model_flags(p, scale=False)
    add_json_flag(p)
    p.set_defaults(func=run)


def scale_arg(text: str) -> float | int:
    """``--scale``: a positive factor up to 8; whole numbers stay ints (2, 3, 4 for fixed-scale models)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a scale factor (2, 3, 4, or 2.5 for LIIF)"
        ) from None
    if not (1.0 <= value <= 8.0):
        raise argparse.ArgumentTypeError(f"scale {text} is out of range; choose a factor from 1 to 8")
    return int(value) if value.is_integer() else value


def any_scale_args(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` without ``--scale`` when the checkpoint is an arbitrary-scale model (LIIF): its factor is chosen
    per call, not checked against the card's."""
    from edge_sr.upscale import checkpoint_is_arbitrary_scale

    if (
        args.scale is None
        or not args.checkpoint
        or not checkpoint_is_arbitrary_scale(args.checkpoint, args.model)
    ):
        return args
    return argparse.Namespace(**{**vars(args), "scale": None})


def _fraction(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate (25, 29.97, 30000/1001)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive frame rate")
    return value


def run(args: argparse.Namespace) -> int:
    from edge_sr.data.video import is_video_file
    from edge_sr.upscale import upscale_files

    if args.video or any(is_video_file(p) for p in args.inputs):
        return _run_video(args)

    source = model_source(any_scale_args(args), args.checkpoint)
    rep = upscale_files(
        args.inputs, args.out, checkpoint=source, scale=args.scale, tile=args.tile,
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


def _run_video(args: argparse.Namespace) -> int:
    from edge_sr.errors import ConfigError
    from edge_sr.upscale_video import upscale_video

    if len(args.inputs) != 1:
        raise ConfigError(None, f"a video is upscaled on its own; give one input, not {len(args.inputs)}")
    if args.alpha_mode != "bicubic":
        raise ConfigError(None, "--alpha is for images; video frames have no alpha")
    rep = upscale_video(
        args.inputs[0], args.out, checkpoint=model_source(args, args.checkpoint), scale=args.scale,
        tile=args.tile, tile_overlap=args.tile_overlap, tile_batch=args.tile_batch, device=args.device,
        precision=args.precision, crf=args.crf, audio=args.audio, fps=args.fps, max_frames=args.max_frames,
        progress=not (args.no_progress or args.json), chunk=args.chunk, chunk_overlap=args.chunk_overlap,
    )  # fmt: skip
    w0, h0 = rep.size_in
    w1, h1 = rep.size_out
    sound = "no audio"
    if rep.audio is not None or rep.audio_packets:
        how = "copied" if rep.audio_copied else "re-encoded" if rep.audio_packets else "not written"
        sound = f"audio {how} ({rep.audio or 'unknown codec'}, {rep.audio_packets} packets)"
    lines = [
        f"{rep.input} -> {rep.output}: {rep.frames} frames {w0}x{h0} -> {w1}x{h1} at {rep.fps_out} fps, {sound}",
        f"{rep.kind} model {rep.model} x{rep.scale} ({rep.checkpoint}); {rep.seconds:.1f} s, "
        f"{rep.speed_fps:.2f} frames/s",
        *rep.notes,
    ]
    emit(args, rep.to_dict(), "\n".join(lines))
    return 0
