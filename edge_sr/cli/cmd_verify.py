"""`edge-sr verify ARTIFACT --reference CKPT --data DIR`: judge an artifact against its float model.

With a sequence set as ``--data`` (``DIR/GT/<clip>/``: Vid4), a streaming (video) artifact runs over every frame
of every clip (``edge_sr.verify.verify_video``): per clip the PSNR against the float model and against GT, the
worst frame and the drift of the error along the clip.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source
from edge_sr.errors import ConfigError

if TYPE_CHECKING:
    from edge_sr.verify import Thresholds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="compare an artifact with its float model on a benchmark folder")
    p.add_argument("artifact", help=".onnx, .tflite, .pte, .mlpackage (with its manifest) or a checkpoint")
    p.add_argument(
        "--reference",
        required=True,
        type=checkpoint_path,
        help="the float model's checkpoint (edge-sr, or foreign: detected or --model)",
    )
    p.add_argument(
        "--data",
        help="benchmark folder with HR/ and LR_bicubic/X{s}/ (default: built-in images), or a sequence set with "
        "GT/<clip>/ for a video artifact (default: $EDGE_SR_DATA/video/Vid4)",
    )
    p.add_argument("--limit", type=int, help="use at most this many images")
    v = p.add_argument_group("video artifacts on a sequence set (DIR/GT/<clip>/)")
    v.add_argument("--degradation", choices=("BI", "BD"), default=None, help="the LR folder (default BI)")
    v.add_argument("--crop", type=int, default=None, help="border pixels shaved against GT (default 0)")
    v.add_argument("--clips", nargs="+", metavar="NAME", help="only these clips (default: all)")
    v.add_argument("--frames", type=int, metavar="N", help="only the first N frames of each clip")
    v.add_argument(
        "--drift-db",
        type=float,
        default=1.0,
        help="fail when a clip's PSNR vs float falls by more than this from its first half to its second",
    )
    p.add_argument("--fp32-max-abs-diff", type=float, default=1e-4, help="fp32 pass threshold")
    p.add_argument("--fp16-min-psnr", type=float, default=50.0, help="fp16 pass threshold (dB vs float)")
    p.add_argument(
        "--int8-max-drop", type=float, default=0.2, help="int8 pass threshold (dB below float vs HR)"
    )
    p.add_argument(
        "--no-check-sha256",
        dest="check_sha256",
        action="store_false",
        help="run an artifact whose bytes no longer match its manifest's artifact_sha256",
    )
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.data.sequences import is_sequence_root
    from edge_sr.verify import Thresholds, verify

    thr = Thresholds(args.fp32_max_abs_diff, args.fp16_min_psnr, args.int8_max_drop, args.drift_db)
    source = model_source(args, args.reference)
    if args.data is None:
        source = _default_video_data(args, source)
    if args.data is not None and is_sequence_root(args.data):
        if args.limit is not None:
            raise ConfigError(
                args.data, "--limit counts images; on a sequence set use --frames N and --clips"
            )
        return _run_video(args, source, thr)
    given = [f"--{k}" for k in ("degradation", "crop", "clips", "frames") if getattr(args, k) is not None]
    if given:
        raise ConfigError(args.data, f"{given[0]} is for a sequence set (--data DIR with GT/<clip>/)")
    report = verify(
        args.artifact, reference=source, data=args.data, thresholds=thr, limit=args.limit,
        check_sha256=args.check_sha256,
    )  # fmt: skip
    lines = [f"{'image':<14} {'PSNR':>7} {'float':>7} {'vs float':>9} {'max diff':>9}"]
    for r in report.images:
        lines.append(
            f"{r.name:<14} {r.psnr:7.2f} {r.psnr_float:7.2f} {r.psnr_vs_float:9.2f} {r.max_abs_diff:9.2e}"
        )
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(
        f"{verdict} ({report.precision}: {report.criterion}); mean {report.psnr:.2f} dB vs float model {report.psnr_float:.2f} dB"
    )
    emit(args, report.to_dict(), "\n".join(lines))
    return 0 if report.passed else 1


def _default_video_data(args: argparse.Namespace, source: Any) -> Any:
    """Without --data, a streaming reference is verified on $EDGE_SR_DATA/video/Vid4 (sets ``args.data``);
    returns the reference, loaded when it had to be read to tell."""
    from torch import nn

    from edge_sr.data.paths import data_path
    from edge_sr.models import load_checkpoint
    from edge_sr.models.stream import is_stream_model

    ref = source if isinstance(source, nn.Module) else load_checkpoint(source)
    if is_stream_model(ref):
        args.data = str(data_path("video", "Vid4"))
    return ref


def _run_video(args: argparse.Namespace, source: Any, thr: Thresholds) -> int:
    from edge_sr.verify import verify_video

    report = verify_video(
        args.artifact, reference=source, data=args.data,
        degradation=args.degradation or "BI", crop=args.crop or 0, clips=args.clips, frames=args.frames,
        thresholds=thr, check_sha256=args.check_sha256,
    )  # fmt: skip
    head = f"{'clip':<10} {'frames':>6} {'PSNR':>7} {'float':>7} {'vs float':>9} {'worst':>12} {'max diff':>9} {'drift dB':>9}"
    lines = [head]
    for c in report.clips:
        worst = f"{c.worst_psnr_vs_float:.2f}@{c.worst_frame}"
        flag = " DRIFT" if c.drift else ""
        lines.append(
            f"{c.name:<10} {c.frames:>6} {c.psnr:7.2f} {c.psnr_float:7.2f} {c.psnr_vs_float:9.2f} {worst:>12} "
            f"{c.max_abs_diff:9.2e} {c.drift_halves:+9.3f}{flag}"
        )
    verdict = "PASSED" if report.passed else "FAILED"
    why = report.criterion + ("; drift: " + report.drift_criterion if report.drift else "")
    lines.append(
        f"{verdict} ({report.precision}: {why}); mean of clips {report.psnr:.2f} dB vs float model "
        f"{report.psnr_float:.2f} dB (Y, {report.degradation}, crop {report.crop})"
    )
    emit(args, report.to_dict(), "\n".join(lines))
    return 0 if report.passed else 1
