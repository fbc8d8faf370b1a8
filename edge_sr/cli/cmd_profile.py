"""`edge-sr profile ARTIFACT`: latency (min / median / p90), peak memory, size, per-operator breakdown and
achieved GMAC/s against this CPU's theoretical and measured peak of the artifact's precision; ``--adb`` runs
the platform's benchmark tool on a phone."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    from edge_sr.convert import TARGETS

    p = sub.add_parser(
        "profile",
        help="time an artifact (" + ", ".join(TARGETS) + ") or a checkpoint",
        description="Latency min / median / p90 after warm-up, peak RSS, size, per-operator times (each "
        "runtime's own profiler; torch profiler for checkpoints) and GMAC/s as a share of this CPU's "
        "theoretical and measured peak for the artifact's precision (FP32, FP16 or INT8).",
    )
    p.add_argument(
        "artifact",
        type=checkpoint_path,
        help="an artifact of any target, or a checkpoint (edge-sr, or foreign: detected)",
    )
    p.add_argument(
        "--input-size",
        default=None,
        metavar="HxW",
        help="input size for dynamic artifacts and checkpoints (default: the manifest's, else 180x320)",
    )
    p.add_argument("--runs", type=int, default=50, help="timed runs")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-ops", action="store_true", help="skip the per-operator breakdown")
    p.add_argument("--no-peak", action="store_true", help="skip the comparison with the CPU's peaks")
    p.add_argument(
        "--adb",
        nargs="?",
        const="",
        default=None,
        metavar="SERIAL",
        help="run on an Android device over adb (optional serial) with --benchmark-binary",
    )
    p.add_argument(
        "--benchmark-binary",
        default=None,
        metavar="PATH",
        help="ExecuTorch executor_runner (for .pte) or TFLite benchmark_model (for .tflite), built "
        "for the device",
    )
    p.add_argument(
        "--no-check-sha256",
        dest="check_sha256",
        action="store_false",
        help="time an artifact whose bytes no longer match its manifest's artifact_sha256",
    )
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.convert.spec import parse_hw
    from edge_sr.profile import profile, profile_adb

    size = parse_hw(args.input_size) if args.input_size else None
    if args.adb is not None:
        report = profile_adb(
            args.artifact,
            binary=args.benchmark_binary,
            serial=args.adb or None,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            input_size=size,
            ops=not args.no_ops,
        )
    else:
        src = model_source(args, args.artifact)
        report = profile(
            args.artifact,
            model=None if isinstance(src, str) else src,
            input_size=size,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            ops=not args.no_ops,
            peak=not args.no_peak,
            check_sha256=args.check_sha256,
        )
    emit(args, report.to_dict(), report.to_text())
    return 0
