"""The ``quantization`` section of docs/BENCHMARKS.md: float / FP16 / INT8-PTQ / INT8-QAT per target, measured.

    python -m edge_sr.quantize.quantize_bench [CKPT ...] [--targets executorch tflite onnx coreml]
        [--calib DIR] [--calib-count 32] [--qat-data DIR ...] [--qat-iters 4000] [--sets Set5 Set14]
        [--latency-calib DIR] [--latency yes|no|only] [--threads 1] [--runs 30] [--section quantization_x4]

For each checkpoint (default: the bundled ones) and target, every artifact is built at ``--input-size`` (tiled
over the full benchmark images by ``edge_sr.runtime``) and verified with ``edge_sr.verify`` on each set: Y-PSNR
of the float model and of the artifact, artifact size. ExecuTorch FP32 and INT8 are also exported at 180x320
and timed on this CPU (median of ``--runs`` calls, one process). Rows that cannot run here say why.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DOC = REPO / "docs" / "BENCHMARKS.md"


@dataclass
class Row:
    model: str
    target: str
    variant: str  # float, fp16, int8-ptq, int8-qat
    size_bytes: int = 0
    psnr: dict[str, float] = field(default_factory=dict)  # set -> artifact Y-PSNR
    psnr_float: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _verify(path: Path, model: Any, sets: Sequence[str], row: Row) -> None:
    from edge_sr.verify import verify

    for name in sets:
        rep = verify(path, reference=model, data=DATA / "benchmarks" / name, record=name == sets[0])
        row.psnr[name], row.psnr_float[name] = rep.psnr, rep.psnr_float


def _variant(build: Any, model: Any, sets: Sequence[str], row: Row) -> Row:
    try:
        art = build()
        row.size_bytes = art.size_bytes
        _verify(art.path, model, sets, row)
    except Exception as e:  # one row says why instead of stopping the table
        row.note = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        logger.warning("%s %s %s: %s", row.model, row.target, row.variant, row.note)
    return row


def latency_rounds(
    paths: Sequence[Path], size: tuple[int, int], runs: int = 10, threads: int = 1
) -> list[list[float]]:
    """Wall times (ms) of one forward at ``size`` for each artifact, ``runs`` rounds, the artifacts called in
    turn within each round (so a load change on the machine hits all of them alike), after one warm-up call
    each."""
    from edge_sr.runtime import load

    runners = [load(p, threads=threads) for p in paths]
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    for r in runners:
        r.forward(x)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for r, ts in zip(runners, times):
            t = time.perf_counter()
            r.forward(x)
            ts.append((time.perf_counter() - t) * 1e3)
    return times


def bench_model(ckpt: Path, args: argparse.Namespace, out: Path) -> tuple[list[Row], dict[str, float]]:
    from edge_sr.convert import ExportSpec, export

    from edge_sr import quantize as q
    from edge_sr.models import load_checkpoint

    model = load_checkpoint(ckpt)
    scale = int(model.edge_sr_args.get("scale", getattr(model, "scale", 0)))
    name = f"{model.edge_sr_arch} x{scale}"
    size = tuple(int(v) for v in args.input_size.split("x"))
    rows: list[Row] = []
    quality = args.latency != "only"
    if quality:
        calib = q.load_calibration(args.calib, count=args.calib_count, input_size=size, scale=scale, seed=0)
    for t in args.targets if quality else ():
        d = out / f"{ckpt.stem}_{t}"
        spec32 = ExportSpec(input_size=size, **({"deployment_target": "iOS17"} if t == "coreml" else {}))
        builds = {
            "float": lambda t=t, d=d, s=spec32: export(model, t, d / "fp32", s),
            "fp16": lambda t=t, d=d: q.fp16_export(model, t, calib, out=d / "fp16"),
            "int8-ptq": lambda t=t, d=d: q.ptq(model, t, calib, out=d / "ptq"),
        }
        if t == "coreml":
            builds["int8-weights"] = lambda d=d: q.ptq(
                model, "coreml", calib, q.QuantSpec(coreml_mode="weights"), out=d / "w8"
            )
        if t != "onnx" and args.qat_iters > 0:
            builds["int8-qat"] = lambda t=t, d=d: q.qat(
                model,
                t,
                args.qat_data,
                calib=calib,
                iters=args.qat_iters,
                lr=args.qat_lr,
                batch_size=args.qat_batch,
                out=d / "qat",
            )
        if t == "executorch" and args.qat_iters > 0 and args.compare_qat_forms:
            # QAT on the multi-branch train form, converted as it is (no fusion possible afterwards)
            builds["int8-qat-trainform"] = lambda d=d: q.qat(
                model,
                "executorch",
                args.qat_data,
                calib=calib,
                iters=args.qat_iters,
                lr=args.qat_lr,
                batch_size=args.qat_batch,
                form="train",
                out=d / "qat_train",
            )
        for variant, build in builds.items():
            rows.append(_variant(build, model, args.sets, Row(name, t, variant)))
            logger.info("%s", rows[-1])
    timed = args.latency != "no" and "executorch" in args.targets
    lat = int8_latency(model, name, scale, args, out) if timed else {}
    return rows, lat


def int8_latency(model: Any, name: str, scale: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """ExecuTorch-XNNPACK FP32 and INT8 (PTQ) at 180x320: medians and their ratio, from one run."""
    from edge_sr.convert import ExportSpec, export

    from edge_sr import quantize as q

    lat: dict[str, float] = {}
    big = (180, 320)
    try:  # the images as LR patches: few HR photos give a 180x320 LR patch
        cal_big = q.load_calibration(
            args.latency_calib, count=min(8, args.calib_count), input_size=big, scale=scale, lr_input=True
        )
        fp32 = export(model, "executorch", out / "lat" / "fp32.pte", ExportSpec(input_size=big))
        int8 = q.ptq(model, "executorch", cal_big, out=out / "lat" / "int8.pte")
        r32, r8 = latency_rounds([fp32.path, int8.path], big, args.runs, args.threads)
        t32, t8 = statistics.median(r32), statistics.median(r8)
        # the ratio within each round as well: a burst of load on this shared machine hits one round's pair
        per_round = statistics.median(a / b for a, b in zip(r32, r8))
        lat = {"fp32_ms": t32, "int8_ms": t8, "speed-up": t32 / t8, "speed-up per round": per_round}
    except Exception as e:  # the quality rows above still get written
        logger.warning("%s latency: %s", name, e)
    return {f"{name} {k}": v for k, v in lat.items()}


def render(
    rows: list[Row], lat: dict[str, float], sets: Sequence[str], command: str, threads: int, runs: int
) -> str:
    if not rows:
        return "\n".join(
            [
                "## INT8 against FP32 latency (ExecuTorch-XNNPACK, 180x320)",
                "",
                *_latency_lines(lat, command, threads, runs),
            ]
        )
    models = ", ".join(dict.fromkeys(r.model for r in rows))
    lines = [
        f"## Quantization: float / FP16 / INT8 per target ({models})",
        "",
        f"Measured with `{command}`. Y-PSNR (dB, border = scale) on the benchmark sets;",
        "artifacts at a fixed input size, run tile by tile over each image; (drop) = float model minus artifact.",
        "",
        "How the pieces compose: quantization always acts on the deploy (fused) graph, the one the device runs.",
        "QAT fuses first, then fine-tunes the plain convs with fake-quant (`int8-qat`). QAT on the multi-branch",
        "train form (`int8-qat-trainform`) gives every branch its own quantizer; a sum of separately quantized",
        "convs is not a quantized fused conv, so it cannot be fused afterwards and ships as a multi-branch int8",
        "graph. CoreML W8A8 comes from the PT2E CoreML quantizer (calibrated in torch, no macOS needed);",
        "`int8-weights` is coremltools weight-only int8 with `weight_threshold=0` (every conv).",
        "",
        "| model | target | variant | size (KB) | "
        + " | ".join(f"{s} PSNR (drop)" for s in sets)
        + " | note |",
        "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in sets) + " | --- |",
    ]
    for r in rows:
        cells = []
        for s in sets:
            if s in r.psnr:
                cells.append(f"{r.psnr[s]:.2f} ({r.psnr_float[s] - r.psnr[s]:+.3f})")
            else:
                cells.append("-")
        lines.append(
            f"| {r.model} | {r.target} | {r.variant} | {r.size_bytes / 1024:.1f} | "
            + " | ".join(cells)
            + f" | {r.note} |"
        )
    if lat:
        lines += ["", *_latency_lines(lat, None, threads, runs)]
    return "\n".join(lines)


def _latency_lines(lat: dict[str, float], command: str | None, threads: int, runs: int) -> list[str]:
    how = f"Measured with `{command}`: " if command else ""
    lines = [
        f"{how}ExecuTorch-XNNPACK CPU latency at 180x320, {threads} thread(s): median of {runs} rounds, FP32 and "
        "INT8 called in turn in each round (one process), after a warm-up call each.",
        "",
    ]
    for k, v in lat.items():
        unit = " ms"
        if k.endswith("speed-up"):
            unit = "x (FP32 / INT8 medians, one run)"
        elif k.endswith("per round"):
            unit = "x (median over the rounds of FP32 / INT8 in the same round)"
        lines.append(f"- {k}: {v:.2f}{unit}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from edge_sr.report import update_section
    from edge_sr.weights import bundled_checkpoints

    p = argparse.ArgumentParser(prog="python -m edge_sr.quantize.quantize_bench")
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument("--targets", nargs="+", default=["executorch", "tflite", "onnx", "coreml"])
    p.add_argument("--calib", type=Path, default=DATA / "train" / "General100")
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument(
        "--latency-calib",
        type=Path,
        default=DATA / "train" / "BSD200",
        help="images used as 180x320 LR calibration patches for the latency artifacts",
    )
    p.add_argument("--input-size", default="64x64")
    p.add_argument("--qat-data", nargs="+", default=[str(DATA / "train" / n) for n in ("T91", "General100")])
    p.add_argument("--qat-iters", type=int, default=4000)
    p.add_argument("--qat-lr", type=float, default=2e-4)
    p.add_argument("--qat-batch", type=int, default=8)
    p.add_argument("--compare-qat-forms", action="store_true", help="also QAT the train form (executorch)")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--runs", type=int, default=30, help="timed rounds of the latency pair")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the latency runs")
    p.add_argument(
        "--latency",
        choices=("yes", "no", "only"),
        default="yes",
        help="time ExecuTorch FP32 against INT8 at 180x320 (only: skip the quality rows)",
    )
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument(
        "--section", default="quantization", help="section of --doc to (re)write; one per run of models"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ckpts = args.checkpoints or [f for scales in bundled_checkpoints().values() for f in scales.values()]
    rows: list[Row] = []
    lat: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ck in ckpts:
            r, l_ = bench_model(Path(ck), args, Path(tmp))
            rows += r
            lat.update(l_)
    given = list(argv) if argv is not None else sys.argv[1:]
    command = "python -m edge_sr.quantize.quantize_bench " + " ".join(given)
    update_section(
        args.doc,
        args.section,
        render(rows, lat, args.sets, command.strip(), args.threads, args.runs),
        title="Benchmarks",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
