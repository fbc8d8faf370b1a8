"""`edge-sr verify ARTIFACT --reference CKPT --data DIR`: judge an artifact against its float model."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, emit, model_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="compare an artifact with its float model on a benchmark folder")
    p.add_argument("artifact", help=".onnx, .tflite, .pte, .mlpackage (with its manifest) or a checkpoint")
    p.add_argument(
        "--reference",
        required=True,
        help="the float model's checkpoint (edge-sr, or foreign: detected or --model)",
    )
    p.add_argument("--data", help="benchmark folder with HR/ and LR_bicubic/X{s}/ (default: built-in images)")
    p.add_argument("--limit", type=int, help="use at most this many images")
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
    from edge_sr.verify import Thresholds, verify

    thr = Thresholds(args.fp32_max_abs_diff, args.fp16_min_psnr, args.int8_max_drop)
    report = verify(
        args.artifact, reference=model_source(args, args.reference), data=args.data, thresholds=thr, limit=args.limit,
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
