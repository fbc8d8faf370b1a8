"""`edge-sr bench`: the matrix (models × targets × precisions × input sizes) of convert -> verify on Set5 ->
profile, written to docs/BENCHMARKS.md and a Pareto plot; `edge-sr bench reparam` measures fusion."""

from __future__ import annotations

import argparse
import sys

from edge_sr.cli._common import add_json_flag, emit

TARGETS = ("executorch", "tflite", "onnx", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark matrix: convert, verify on Set5, profile; table + Pareto plot",
        description="Each cell (model, target, precision, input size) is converted, verified on Set5 and "
        "profiled; finished cells are cached beside --out, so an interrupted run resumes.",
    )
    p.add_argument(
        "what",
        nargs="?",
        choices=["matrix", "reparam"],
        default="matrix",
        help="matrix (default) or reparam (train-form vs fused latency, when available)",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="M",
        help="checkpoints or bundled names (default: every bundled checkpoint)",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=list(TARGETS),
        choices=TARGETS,
        metavar="T",
        help=f"targets (default: {' '.join(TARGETS)})",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        metavar="P",
        help=f"precisions (default: {' '.join(PRECISIONS)})",
    )
    p.add_argument("--input-sizes", nargs="+", default=["180x320"], metavar="HxW", help="default 180x320")
    p.add_argument(
        "--data", default=None, metavar="DIR", help="Set5 folder (HR/, LR_bicubic/) for verification"
    )
    p.add_argument(
        "--calib",
        default=None,
        metavar="DIR",
        help="images for INT8 calibration, used as LR patches of the input size (INT8 cells need it)",
    )
    p.add_argument(
        "--calib-count", type=int, default=16, metavar="N", help="calibration patches (default 16)"
    )
    p.add_argument("--out", default="docs/BENCHMARKS.md", help="markdown report (its `matrix` section)")
    p.add_argument("--plot", default="docs/pareto.png", help="Pareto plot PNG")
    p.add_argument("--workdir", default="out/bench", help="where artifacts are written (default out/bench)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per cell (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per cell (default 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="recompute every cell")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "reparam":
        return _reparam(args)
    from edge_sr.bench import Settings, bench_matrix
    from edge_sr.profile import parse_size

    def show(row: dict) -> None:
        if not args.json:
            med = row.get("median_ms")
            psnr = row.get("psnr")
            print(
                f"{row['model']:>20} {row['target']:>10} {row['precision']:>5} {row['input']:>8}  "
                f"{'—' if psnr is None else f'{psnr:.2f} dB':>9}  {'—' if med is None else f'{med:.2f} ms':>10}  "
                f"{row['status']}",
                file=sys.stderr,
            )

    res = bench_matrix(
        models=args.models,
        targets=args.targets,
        precisions=args.precisions,
        input_sizes=[parse_size(s) for s in args.input_sizes],
        data=args.data,
        out=args.out,
        plot=args.plot,
        workdir=args.workdir,
        settings=Settings(
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            calib=args.calib,
            calib_count=args.calib_count,
        ),
        use_cache=not args.no_cache,
        command="edge-sr bench " + " ".join(sys.argv[2:]),
        progress=show,
    )
    emit(args, res, f"wrote {res['out']} and {res['plot']}")
    return 0


def _reparam(args: argparse.Namespace) -> int:
    import dataclasses

    from edge_sr.errors import ConfigError

    try:
        from edge_sr.reparam_bench import bench_reparam
    except ImportError:
        raise ConfigError(None, "`edge-sr bench reparam` is not available in this build") from None
    rows = bench_reparam(
        models=args.models,
        runs=args.runs,
        threads=args.threads,
        doc=args.out,
        command="edge-sr bench " + " ".join(sys.argv[2:]),
    )
    data = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in rows]
    emit(args, {"rows": data, "out": args.out}, f"wrote the reparam section of {args.out}")
    return 0
