"""`edge-sr bench KIND`: the benchmarks of ``edge_sr.bench``, each writing its section of a docs page.

Kinds in pipeline order: reparam, collapse, quantize, matrix, gpu, zoo. With ``--json`` each prints one JSON
object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import Any

from edge_sr.cli._common import add_json_flag, emit, parse_hw

BENCHMARKS = "docs/BENCHMARKS.md"


def _targets() -> list[str]:
    from edge_sr.convert import TARGETS

    return list(TARGETS)


def _precisions() -> list[str]:
    from edge_sr.convert.spec import PRECISIONS

    return list(PRECISIONS)


def _size(text: str) -> tuple[int, int]:
    from edge_sr.errors import ConfigError

    try:
        return parse_hw(text, "size")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def _matrix(p: argparse.ArgumentParser) -> None:
    targets, precisions = _targets(), _precisions()
    p.add_argument("--models", nargs="+", default=None, metavar="M", help="checkpoints or bundled names")
    p.add_argument(
        "--targets", nargs="+", default=targets, choices=targets, metavar="T", help=" ".join(targets)
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=precisions,
        choices=precisions,
        metavar="P",
        help=" ".join(precisions),
    )
    p.add_argument("--input-sizes", nargs="+", type=_size, default=[(180, 320)], metavar="HxW")
    p.add_argument(
        "--data", default=None, metavar="DIR", help="Set5 folder (default $EDGE_SR_DATA/benchmarks/Set5)"
    )
    p.add_argument("--calib", default=None, metavar="DIR", help="INT8 calibration images, used as LR patches")
    p.add_argument("--calib-count", type=int, default=16, metavar="N")
    p.add_argument("--out", default=BENCHMARKS, help="markdown page (its `matrix` section)")
    p.add_argument("--plot", default="docs/pareto.png", help="Pareto plot PNG")
    p.add_argument("--workdir", default="out/bench", help="where artifacts are written")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="recompute every cell")


def _run_matrix(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench import Settings, bench_matrix

    def show(row: dict) -> None:
        med, psnr = row.get("median_ms"), row.get("psnr")
        print(
            f"{row['model']:>20} {row['target']:>10} {row['precision']:>5} {row['input']:>8}  "
            f"{'—' if psnr is None else f'{psnr:.2f} dB':>9}  {'—' if med is None else f'{med:.2f} ms':>10}  "
            f"{row['status']}",
            file=sys.stderr,
        )

    settings = Settings(a.runs, a.warmup, a.threads, calib=a.calib, calib_count=a.calib_count)
    res = bench_matrix(
        models=a.models, targets=a.targets, precisions=a.precisions, input_sizes=a.input_sizes, data=a.data,
        out=a.out or None, plot=a.plot or None, workdir=a.workdir, settings=settings,
        use_cache=not a.no_cache, command=command, progress=show,
    )  # fmt: skip
    return res, f"wrote {res['out']} and {res['plot']}"


def _reparam(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None, metavar="M", help="default: every fusable zoo model")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--input-size", type=_size, default=(180, 320), metavar="HxW")
    p.add_argument(
        "--cpu-time", action="store_true", help="time with the process CPU clock (shared machines)"
    )
    p.add_argument("--out", default=BENCHMARKS, help="markdown page (its `reparam` section; '' to skip)")


def _run_reparam(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.reparam import bench_reparam

    rows = bench_reparam(
        a.models, a.input_size, a.runs, a.scale, a.threads, a.out or None, command, a.cpu_time
    )
    return {"rows": [r.to_dict() for r in rows], "out": a.out or None}, f"{len(rows)} models measured"


def _quantize(p: argparse.ArgumentParser) -> None:
    targets = _targets()
    p.add_argument("checkpoints", nargs="*", help="default: the bundled checkpoints")
    p.add_argument(
        "--targets", nargs="+", default=targets, choices=targets, metavar="T", help=" ".join(targets)
    )
    p.add_argument("--input-size", type=_size, default=(64, 64), metavar="HxW")
    p.add_argument(
        "--benchmarks", default=None, metavar="DIR", help="folder of the sets ($EDGE_SR_DATA/benchmarks)"
    )
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--calib", default=None, metavar="DIR", help="default $EDGE_SR_DATA/train/General100")
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument(
        "--qat-data", nargs="+", default=[], metavar="DIR", help="default train/T91 train/General100"
    )
    p.add_argument("--qat-iters", type=int, default=4000)
    p.add_argument("--qat-lr", type=float, default=2e-4)
    p.add_argument("--qat-batch", type=int, default=8)
    p.add_argument("--compare-qat-forms", action="store_true", help="also QAT the multi-branch train form")
    p.add_argument("--latency", choices=("yes", "no", "only"), default="yes", help="time FP32 against INT8")
    p.add_argument("--latency-target", default="executorch", choices=targets)
    p.add_argument("--latency-size", type=_size, default=(180, 320), metavar="HxW")
    p.add_argument("--latency-calib", default=None, metavar="DIR", help="default $EDGE_SR_DATA/train/BSD200")
    p.add_argument("--runs", type=int, default=30, help="timed rounds of the latency pair")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=BENCHMARKS, help="markdown page ('' to skip)")
    p.add_argument("--section", default="quantization", help="section of --out to rewrite")


def _run_quantize(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.quantize import QuantBenchSettings, bench_quantize

    s = QuantBenchSettings(
        targets=tuple(a.targets), input_size=a.input_size, benchmarks=a.benchmarks, sets=tuple(a.sets),
        calib=a.calib, calib_count=a.calib_count, qat_data=tuple(a.qat_data), qat_iters=a.qat_iters,
        qat_lr=a.qat_lr, qat_batch=a.qat_batch, compare_qat_forms=a.compare_qat_forms, latency=a.latency,
        latency_target=a.latency_target, latency_size=a.latency_size, latency_calib=a.latency_calib,
        runs=a.runs, threads=a.threads,
    )  # fmt: skip
    res = bench_quantize(a.checkpoints, s, doc=a.out or None, section=a.section, command=command)
    return res, f"{len(res['rows'])} artifacts measured"


def _collapse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="ecbsr_m4c16")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--data", nargs="+", default=None, metavar="DIR", help="default train/T91 train/BSD200")
    p.add_argument("--val", default=None, metavar="DIR", help="default $EDGE_SR_DATA/benchmarks/Set5")
    p.add_argument("--out", default=BENCHMARKS, help="markdown page ('' to skip)")


def _run_collapse(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.collapse import bench_collapse

    r = bench_collapse(
        a.model, a.scale, a.steps, data=a.data, val=a.val, threads=a.threads, batch=a.batch, patch=a.patch,
        doc=a.out or None, command=command,
    )  # fmt: skip
    return r, f"collapsed training {r['speedup']:.2f}x faster per step"


def _gpu(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="M",
        help="default: swinir_classical hat srformer dat craft swinfir act esrt lbnet edsr rcan; "
        "with --video: basicvsr iconvsr basicvsrpp edvr_m edvr_l",
    )
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--out", default=BENCHMARKS, help="markdown page ('' to skip)")
    v = p.add_argument_group("video")
    v.add_argument(
        "--video",
        action="store_true",
        help="the whole-clip / window video models: frames per second at 180x320 -> 720x1280, FP32 against FP16",
    )
    v.add_argument(
        "--chunk", type=int, default=None, help="temporal chunk of the whole-clip models (default 30)"
    )
    v.add_argument("--frames", type=int, default=50, help="frames of the timed clip")
    v.add_argument("--runs", type=int, default=3, help="timed passes (the median is reported)")
    # the benchmark's own test: the same code path on the CPU with the tiny configurations
    v.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    v.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    v.add_argument("--lr-size", type=_size, default=(180, 320), help=argparse.SUPPRESS)
    v.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], help=argparse.SUPPRESS)
    v.add_argument("--job-size", type=int, default=1024, help=argparse.SUPPRESS)


def _run_gpu(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.gpu import bench_gpu, bench_gpu_video, to_markdown, video_markdown

    if a.video:
        rows = bench_gpu_video(
            a.models, frames=a.frames, size=a.lr_size, chunk=a.chunk, runs=a.runs, device=a.device,
            tiny=a.tiny, precisions=tuple(a.precisions), doc=a.out or None, command=command,
        )  # fmt: skip
        return {"rows": [r.to_dict() for r in rows], "out": a.out or None}, video_markdown(rows, command)
    res = bench_gpu(
        a.models, tile=a.tile, overlap=a.overlap, batch=a.batch, doc=a.out or None, command=command,
        device=a.device, tiny=a.tiny, size=a.job_size, precisions=tuple(a.precisions),
    )  # fmt: skip
    return {"rows": [r.to_dict() for r in res], "out": a.out or None}, to_markdown(res, command)


def _speed(p: argparse.ArgumentParser) -> None:
    from edge_sr.bench.speed import VARIANTS
    from edge_sr.cli._common import checkpoint_path

    p.add_argument(
        "checkpoints",
        nargs="*",
        type=checkpoint_path,
        help="default: the bundled image models and the bundled video model (names work)",
    )
    p.add_argument("--sizes", nargs="+", type=_size, default=[(180, 320), (720, 1280)], metavar="HxW")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], metavar="T", help="one pass each")
    p.add_argument("--runs", type=int, default=15, help="timed rounds at the first size")
    p.add_argument("--runs-large", type=int, default=5, help="timed rounds at the other sizes")
    p.add_argument(
        "--variants",
        nargs="+",
        default=[],
        metavar="V",
        help="a subset, quoted: " + ", ".join(repr(v.key) for v in VARIANTS),
    )
    p.add_argument(
        "--data", default=None, metavar="DIR", help="Set5 folder (default $EDGE_SR_DATA/benchmarks/Set5)"
    )
    p.add_argument(
        "--calib", default=None, metavar="DIR", help="INT8 calibration images, used as LR (default BSD200)"
    )
    p.add_argument("--calib-count", type=int, default=8, metavar="N")
    p.add_argument(
        "--max-loss", type=float, default=0.05, metavar="DB", help="Set5 loss allowed for 'fastest'"
    )
    p.add_argument("--no-ops", action="store_true", help="skip the ExecuTorch per-layer breakdown")
    p.add_argument(
        "--video-data",
        default=None,
        metavar="DIR",
        help="Vid4 root for a video model ($EDGE_SR_DATA/video/Vid4)",
    )
    p.add_argument(
        "--video-calib",
        default=None,
        metavar="CLIP",
        help="a video model's INT8 calibration clip (cockatoo.mp4)",
    )
    p.add_argument("--video-frames", type=int, default=None, metavar="N", help="Vid4 frames per clip scored")
    p.add_argument("--workdir", default=None, metavar="DIR", help="keep the artifacts here (reused)")
    p.add_argument("--out", default=BENCHMARKS, help="markdown page (its `speed` section; '' to skip)")


def _run_speed(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.speed import SpeedSettings, bench_speed

    s = SpeedSettings(
        sizes=tuple(a.sizes), threads=tuple(a.threads), runs=a.runs, runs_large=a.runs_large,
        variants=tuple(a.variants), data=a.data, calib=a.calib, calib_count=a.calib_count,
        max_loss_db=a.max_loss, ops=not a.no_ops, video_data=a.video_data, video_calib=a.video_calib,
        video_frames=a.video_frames,
    )  # fmt: skip
    res = bench_speed(
        a.checkpoints or None, s, workdir=a.workdir, doc=a.out or None, command=command,
        progress=lambda m: print(m, file=sys.stderr),
    )  # fmt: skip
    lines = [
        f"{r['model']} {r['cell']}: eager {r['eager_ms']:.1f} ms, fastest {r['best']} {r['best_ms']:.1f} ms "
        f"({r['best_speedup']:.1f}x)"
        for r in res["summary"]
        if r["eager_ms"] and r["best_ms"]
    ]
    return res, "\n".join(lines) or "nothing measured"


def _zoo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=None, metavar="DIR", help="folder of Set5/ Set14/ ($EDGE_SR_DATA/benchmarks)"
    )
    p.add_argument("--out", default="docs/MODEL_ZOO.md", help="markdown page (its `zoo` section)")


def _run_zoo(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.zoo import zoo_report

    out = zoo_report(a.data, a.out, command)
    return {"out": str(out)}, f"wrote {out}"


def _explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="DIR", help="folder of Set14/ ($EDGE_SR_DATA/benchmarks)")
    p.add_argument(
        "--checkpoints", nargs="+", default=[], metavar="CKPT", help="more models after the bundled"
    )
    p.add_argument("--out", default="docs/EXPLAIN.md", help="markdown page (rewritten)")


def _run_explain(a: argparse.Namespace, command: str) -> tuple[Any, str]:
    from edge_sr.bench.explain import explain_report

    out = explain_report(a.data, a.out, command, a.checkpoints)
    return {"out": str(out)}, f"wrote {out}"


Kind = tuple[
    Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, str], tuple[Any, str]], str
]
KINDS: dict[str, Kind] = {
    "reparam": (_reparam, _run_reparam, "train against deploy form: params, MACs, CPU latency"),
    "collapse": (_collapse, _run_collapse, "collapsed against multi-branch training: step time, PSNR"),
    "quantize": (_quantize, _run_quantize, "float / FP16 / INT8 per target on the benchmark sets"),
    "matrix": (
        _matrix,
        _run_matrix,
        "convert -> verify -> profile per model, target, precision; Pareto plot",
    ),
    "speed": (_speed, _run_speed, "every runtime against torch eager: ms, INT8 / FP32, per-layer rates"),
    "gpu": (_gpu, _run_gpu, "transformer tiles per second on CUDA, FP32 against FP16"),
    "zoo": (_zoo, _run_zoo, "every bundled model on Set5 / Set14 (docs/MODEL_ZOO.md)"),
    "explain": (_explain, _run_explain, "LAM diffusion index float / deploy / FP16 / INT8 (docs/EXPLAIN.md)"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks that write docs/BENCHMARKS.md and docs/MODEL_ZOO.md sections",
        description="Each kind measures one thing and rewrites its own section of a docs page; data folders "
        "default to $EDGE_SR_DATA (the folder holding benchmarks/ and train/).",
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for name, (add, _, text) in KINDS.items():
        k = kinds.add_parser(name, help=text, description=text)
        add(k)
        add_json_flag(k)
        k.set_defaults(func=lambda args, k=k: run(args, k))


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The shortest ``edge-sr bench KIND ...`` line that reproduces ``args``: options that differ from
    their defaults (``--json`` left out)."""
    words = ["edge-sr", "bench", args.kind]
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest in ("help", "json") or value == action.default:
            continue
        if not action.option_strings:  # positional
            words += [str(v) for v in (value if isinstance(value, list) else [value])]
        elif isinstance(action, argparse._StoreTrueAction):
            words.append(action.option_strings[0])
        else:
            values = value if isinstance(value, list) else [value]
            words += [action.option_strings[0], *(_word(v) for v in values)]
    return " ".join(shlex.quote(w) for w in words)


def _word(v: Any) -> str:
    return f"{v[0]}x{v[1]}" if isinstance(v, tuple) and len(v) == 2 else str(v)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _, call, _ = KINDS[args.kind]
    obj, text = call(args, command_line(parser, args))
    emit(args, obj, text)
    return 0
