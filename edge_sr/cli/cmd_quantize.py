"""`edge-sr quantize CKPT --target T --calib DIR -o OUT`: an INT8 (or range-checked FP16) artifact, verified."""

from __future__ import annotations

import argparse
from typing import Any

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source, parse_hw
from edge_sr.convert import TARGETS, quantizable_targets, target_module
from edge_sr.errors import RuntimeBackendError


def add_parser(sub: argparse._SubParsersAction) -> None:
    int8 = quantizable_targets()
    modes = sorted({m for t in int8 for m in target_module(t).QUANT_MODES})
    p = sub.add_parser("quantize", help=f"INT8 PTQ / QAT ({', '.join(int8)}) or FP16 artifacts")
    p.add_argument(
        "checkpoint",
        type=checkpoint_path,
        help="checkpoint: edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors (architecture detected); "
        "train-form ones are fused first",
    )
    p.add_argument("--target", required=True, choices=list(TARGETS), help="the artifact format")
    p.add_argument(
        "--calib",
        required=True,
        metavar="DIR",
        help="image folder for calibration (HR unless --calib-lr); for a video model a sequence root "
        "(.../Vid4: its BIx4 clips), a folder of LR clips, or a video file",
    )
    p.add_argument(
        "--calib-count",
        type=int,
        default=32,
        metavar="N",
        help="calibration images, or clips for a video model (default 32)",
    )
    p.add_argument(
        "--calib-frames",
        type=int,
        default=8,
        metavar="T",
        help="video model: consecutive frames per calibration clip, streamed in order (default 8)",
    )
    p.add_argument("--calib-lr", action="store_true", help="the calibration images are LR already")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration crops and QAT samples")
    p.add_argument("--precision", default="int8", choices=["int8", "fp16"], help="int8 (default) or fp16")
    p.add_argument("--input-size", default="64x64", metavar="HxW", help="export and calibration size (64x64)")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning before converting")
    p.add_argument("--data", nargs="+", metavar="DIR", help="HR training folders for --qat")
    p.add_argument("--iters", type=int, default=4000, help="QAT steps (default 4000)")
    p.add_argument(
        "--lr", type=float, default=2e-4, help="QAT peak learning rate, cosine-decayed to 0 (default 2e-4)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="QAT batch size (default 8)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER", help="layers left in float")
    p.add_argument(
        "--int8-input-layers",
        action="store_true",
        help="quantize the convs that read the image too (by default they stay float: more accurate, and "
        "faster on XNNPACK)",
    )
    p.add_argument(
        "--keep-sensitive", type=int, default=0, metavar="K", help="keep the K most sensitive layers float"
    )
    io = [t for t in int8 if target_module(t).INT8_IO]
    p.add_argument(
        "--int8-io",
        action="store_true",
        help=f"{', '.join(io)}: int8 input (scale / zero point in the manifest)",
    )
    p.add_argument(
        "--mode",
        "--coreml-mode",
        dest="mode",
        choices=modes,
        help="the target's quantization mode (default its first: "
        + "; ".join(f"{t} {', '.join(target_module(t).QUANT_MODES)}" for t in int8)
        + ")",
    )
    p.add_argument(
        "--verify-data",
        metavar="DIR",
        help="benchmark folder to verify on (default: Set5 when present); a video model: a sequence root "
        "(default: --calib when it is one)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip verification")
    p.add_argument("-o", "--output", required=True, help="artifact path or folder")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.data.sequences import is_sequence_root
    from edge_sr.models.stream import is_stream_model
    from edge_sr.quantize.checkpoint import quantize_checkpoint
    from edge_sr.verify import default_set5, verify, verify_video

    art, model = quantize_checkpoint(
        model_source(args, args.checkpoint),
        args.target,
        calib=args.calib,
        out=args.output,
        precision=args.precision,
        input_size=parse_hw(args.input_size),
        calib_count=args.calib_count,
        calib_lr=args.calib_lr,
        seed=args.seed,
        qat=args.qat,
        data=args.data,
        iters=args.iters,
        lr=args.lr,
        batch_size=args.batch_size,
        keep_float=args.keep_float,
        keep_sensitive=args.keep_sensitive,
        int8_input_layers=args.int8_input_layers,
        int8_io=args.int8_io,
        mode=args.mode,
        calib_frames=args.calib_frames,
    )
    report: Any = None
    problem: str | None = None
    video = is_stream_model(model)
    if not args.no_verify:
        try:
            if video:
                data = args.verify_data or (args.calib if is_sequence_root(args.calib) else None)
                if data is None:
                    problem = "a video step is verified on a sequence root: pass --verify-data .../Vid4"
                else:
                    report = verify_video(art.path, reference=model, data=data)
            else:
                report = verify(art.path, reference=model, data=args.verify_data or default_set5())
        except RuntimeBackendError as e:  # e.g. an op the CoreML reference executor cannot run off macOS
            problem = str(e)
    obj = {
        "path": str(art.path),
        "manifest": str(art.manifest_path),
        "target": args.target,
        "precision": args.precision,
        "size_bytes": art.size_bytes,
        "verify": report.to_dict() if report else ({"passed": None, "error": problem} if problem else None),
    }
    if video:  # a step: its stream entry and the scale / zero point each state pair shares
        obj["stream"] = True
        obj["state_quant"] = (art.manifest.get("quantization") or {}).get("state")
    text = f"wrote {art.path} ({art.size_bytes} bytes) and {art.manifest_path.name}"
    if problem:
        text += f"\nnot verified: {problem}"
    if report:
        verdict = "passed" if report.passed else "FAILED"
        text += (
            f"\nverify {verdict} ({report.criterion}): {report.psnr:.2f} dB vs HR "
            f"(float {report.psnr_float:.2f}), {report.psnr_vs_float:.1f} dB vs float"
        )
    emit(args, obj, text)
    return 1 if problem or (report is not None and not report.passed) else 0
