"""The ``quantization`` sections of docs/BENCHMARKS.md: float / FP16 / INT8 variants per target, measured.

``edge-sr bench quantize``: for each checkpoint (default: the bundled ones) and target, every artifact is
built at ``input_size`` (run tile by tile over the full benchmark images by ``edge_sr.runtime``) and verified
with ``edge_sr.verify`` on each set: Y-PSNR of the float model and of the artifact, artifact size. The
variants a target gets follow from its module: ``int8-ptq`` with its first quantization mode, ``int8-weights``
where it offers weight-only int8, ``int8-qat`` where it has a PT2E quantizer. The latency target's FP32 and
INT8 programs are also timed in turn (one process) at ``latency_size``. Rows that cannot run here say why.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_sr.bench._env import data_dir, environment, environment_block
from edge_sr.convert import TARGETS, target_module

logger = logging.getLogger(__name__)
QAT_SETS = ("T91", "General100")  # default QAT folders under train/ of the data root


@dataclass(frozen=True)
class QuantBenchSettings:
    """What to build and measure; data paths default to folders under ``EDGE_SR_DATA``."""

    targets: tuple[str, ...] = tuple(TARGETS)
    input_size: tuple[int, int] = (64, 64)
    benchmarks: str | None = None  # folder holding the sets (default benchmarks/)
    sets: tuple[str, ...] = ("Set5", "Set14")
    calib: str | None = None  # default train/General100
    calib_count: int = 32
    qat_data: tuple[str, ...] = ()  # default train/T91 and train/General100
    qat_iters: int = 4000
    qat_lr: float = 2e-4
    qat_batch: int = 8
    compare_qat_forms: bool = False  # also QAT the multi-branch train form
    latency: Literal["yes", "no", "only"] = "yes"
    latency_target: str = "executorch"
    latency_size: tuple[int, int] = (180, 320)
    latency_calib: str | None = None  # images used as LR calibration patches; default train/BSD200
    runs: int = 30
    threads: int = 1


@dataclass
class Row:
    """One artifact: size, Y-PSNR per set of it and of the float model, or why it failed."""

    model: str
    target: str
    variant: str  # float, fp16, int8-ptq, int8-weights, int8-qat, int8-qat-trainform
    size_bytes: int = 0
    psnr: dict[str, float] = field(default_factory=dict)
    psnr_float: dict[str, float] = field(default_factory=dict)
    note: str = ""


def latency_rounds(
    paths: Sequence[Path], size: tuple[int, int], runs: int = 10, threads: int = 1
) -> list[list[float]]:
    """Wall times (ms) of one forward at ``size`` for each artifact, ``runs`` rounds, the artifacts called in
    turn within each round (so a load change on the machine hits all of them alike), after one warm-up call
    each."""
    from edge_sr.bench.speed import round_times
    from edge_sr.runtime import load

    runners = [load(p, threads=threads) for p in paths]
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    return round_times([partial(r.forward, x) for r in runners], runs)


def _builds(model: Any, t: str, d: Path, calib: Any, s: QuantBenchSettings, qat_data: list[Path]) -> dict:
    """variant -> a call building that artifact, from what target ``t``'s module offers."""
    from edge_sr import quantize as q
    from edge_sr.convert import ExportSpec, export

    mod = target_module(t)
    builds: dict[str, Callable[[], Any]] = {
        "float": lambda: export(model, t, d / "fp32", ExportSpec(input_size=s.input_size)),
        "fp16": lambda: q.fp16_export(model, t, calib, out=d / "fp16"),
        "int8-ptq": lambda: q.ptq(model, t, calib, out=d / "ptq"),
    }
    if "weights" in mod.QUANT_MODES:
        builds["int8-weights"] = lambda: q.ptq(model, t, calib, q.QuantSpec(mode="weights"), out=d / "w8")
    if mod.PT2E_MODES and s.qat_iters > 0:
        kw = dict(calib=calib, iters=s.qat_iters, lr=s.qat_lr, batch_size=s.qat_batch)
        builds["int8-qat"] = lambda: q.qat(model, t, qat_data, out=d / "qat", **kw)
        if s.compare_qat_forms:
            # QAT on the multi-branch train form, converted as it is (no fusion possible afterwards)
            builds["int8-qat-trainform"] = lambda: q.qat(
                model, t, qat_data, form="train", out=d / "qat_train", **kw
            )
    return builds


def bench_model(ckpt: Path, s: QuantBenchSettings, out: Path) -> tuple[list[Row], dict[str, float]]:
    """Every variant of every target for one checkpoint, and the latency pair."""
    from edge_sr import quantize as q
    from edge_sr.models import card_of, load_checkpoint
    from edge_sr.verify import verify

    model = load_checkpoint(ckpt)
    card = card_of(model)
    name = f"{card.arch} x{card.scale}"
    rows: list[Row] = []
    if s.latency != "only":
        sets = {n: data_dir(s.benchmarks, "benchmarks") / n for n in s.sets}
        qat_data: list[Path] = []
        if s.qat_iters > 0 and any(target_module(t).PT2E_MODES for t in s.targets):
            qat_data = [data_dir(p) for p in s.qat_data] or [data_dir(None, "train", n) for n in QAT_SETS]
        folder = data_dir(s.calib, "train", "General100")
        calib = q.load_calibration(folder, count=s.calib_count, input_size=s.input_size, scale=card.scale)
        for t in s.targets:
            for variant, build in _builds(model, t, out / f"{ckpt.stem}_{t}", calib, s, qat_data).items():
                row = Row(name, t, variant)
                try:
                    art = build()
                    row.size_bytes = art.size_bytes
                    for i, (set_name, path) in enumerate(sets.items()):
                        rep = verify(art.path, reference=model, data=path, record=i == 0)
                        row.psnr[set_name], row.psnr_float[set_name] = rep.psnr, rep.psnr_float
                except Exception as e:  # one row says why instead of stopping the table
                    row.note = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    logger.warning("%s %s %s: %s", name, t, variant, row.note)
                rows.append(row)
    lat = int8_latency(model, name, card.scale, s, out) if s.latency != "no" else {}
    return rows, lat


def int8_latency(model: Any, name: str, scale: int, s: QuantBenchSettings, out: Path) -> dict[str, float]:
    """FP32 and INT8 (PTQ) programs of the latency target: medians and their ratio, from one run."""
    from edge_sr import quantize as q
    from edge_sr.convert import ExportSpec, export

    t, size = s.latency_target, s.latency_size
    lat: dict[str, float] = {}
    try:  # the images as LR patches: few HR photos give a large enough LR patch
        folder = data_dir(s.latency_calib, "train", "BSD200")
        cal = q.load_calibration(
            folder, count=min(8, s.calib_count), input_size=size, scale=scale, lr_input=True
        )
        suffix = target_module(t).SUFFIX
        fp32 = export(model, t, out / "lat" / f"fp32{suffix}", ExportSpec(input_size=size))
        int8 = q.ptq(model, t, cal, out=out / "lat" / f"int8{suffix}")
        r32, r8 = latency_rounds([fp32.path, int8.path], size, s.runs, s.threads)
        t32, t8 = statistics.median(r32), statistics.median(r8)
        # the ratio within each round as well: a burst of load on a shared machine hits one round's pair
        per_round = statistics.median(a / b for a, b in zip(r32, r8))
        lat = {"fp32_ms": t32, "int8_ms": t8, "speed-up": t32 / t8, "speed-up per round": per_round}
    except Exception as e:  # the quality rows still get written
        logger.warning("%s latency: %s", name, e)
    return {f"{name} {k}": v for k, v in lat.items()}


def bench_quantize(
    checkpoints: Sequence[str | os.PathLike[str]] | None = None,
    settings: QuantBenchSettings | None = None,
    *,
    doc: str | os.PathLike[str] | None = None,
    section: str = "quantization",
    command: str | None = None,
) -> dict[str, Any]:
    """Measure every variant; optionally rewrite section ``section`` of ``doc``.

    Returns:
        ``{"rows": [...], "latency": {...}, "out": doc or None}``.
    """
    from edge_sr.weights import bundled_checkpoints

    s = settings or QuantBenchSettings()
    for t in (*s.targets, s.latency_target):
        target_module(t)  # ConfigError naming the choices
    ckpts = [Path(c) for c in checkpoints or ()] or [
        f for scales in bundled_checkpoints().values() for f in scales.values()
    ]
    rows: list[Row] = []
    lat: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ck in ckpts:
            r, l_ = bench_model(ck, s, Path(tmp))
            rows += r
            lat.update(l_)
    if doc is not None:
        from edge_sr.bench.quantize_md import render
        from edge_sr.bench.report import update_section

        env = environment(s.threads)
        update_section(
            doc, section, render(rows, lat, s, environment_block(env, command)), title="Benchmarks"
        )
    return {"rows": [asdict(r) for r in rows], "latency": lat, "out": None if doc is None else str(doc)}
