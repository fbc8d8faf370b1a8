"""The benchmark matrix: models × targets × precisions × input sizes, each cell convert -> verify on Set5 ->
profile, written as one table (the ``matrix`` section of ``docs/BENCHMARKS.md``) and a Pareto plot of Set5
Y-PSNR against median latency.

Resumable: every finished cell is stored in a JSON cache beside the report (``BENCHMARKS.cache.json``),
keyed by the checkpoint's sha256 and the cell's settings, and it holds the artifact's sha256. A rerun
reuses a cell whose artifact is still on disk with that checksum (or re-exports to the same checksum),
so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_sr.bench._env import data_dir, environment, environment_block
from edge_sr.convert import TARGETS, target_module
from edge_sr.convert.manifest import sha256_path, size_bytes
from edge_sr.convert.spec import PRECISIONS
from edge_sr.errors import ConfigError, EdgeSRError, InputError
from edge_sr.io_utils import atomic_path

log = logging.getLogger(__name__)
INT8_SCHEME = "coreml-w8a8-affine"  # in the CoreML INT8 cache key: cells made with another scheme are redone


class Skip(Exception):
    """A cell that cannot run here (a missing input), with the reason."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How each cell is timed and calibrated."""

    runs: int = 20
    warmup: int = 3
    threads: int | None = None
    data: str | None = None
    calib: str | None = None
    calib_count: int = 16


# ---------------------------------------------------------------- one cell


def export_artifact(
    model: Any,
    ckpt: Path,
    target: str,
    precision: str,
    size: tuple[int, int],
    workdir: Path,
    calib: str | None,
    calib_count: int = 16,
) -> Path:
    """Convert (fp32 / fp16) or quantize (int8, post-training with ``calib_count`` LR-size patches cut
    from the images of ``calib``) the deploy-form ``model``; returns the artifact path."""
    from edge_sr.convert import ExportSpec, export

    stem = f"{ckpt.stem}_{target}_{precision}_{size[0]}x{size[1]}"
    out = workdir / (stem + target_module(target).SUFFIX)
    if precision == "int8":
        from edge_sr.models import card_of
        from edge_sr.quantize import QuantSpec, load_calibration, ptq

        if not target_module(target).QUANT_MODES:
            raise Skip(f"{target} holds float programs only (no INT8 mode)")
        if not calib:
            raise Skip("INT8 needs calibration images (--calib DIR)")
        scale = card_of(model).scale
        # the images are used as LR: calibration patches have the export size, which few HR sets reach at x4
        cset = load_calibration(calib, count=calib_count, input_size=size, scale=scale, lr_input=True)
        # each target's first quantization mode (w8a8 everywhere it quantizes activations); CoreML INT8 is
        # verified off macOS by the reference execution of its quantize / dequantize program
        art = ptq(model, target, cset, QuantSpec(), out=out, source=ckpt)
        return Path(art.path)
    spec = ExportSpec(input_size=size, precision=precision)  # type: ignore[arg-type]
    return Path(export(model, target, out, spec, source=ckpt).path)


def set5_psnr(artifact: Path, reference: Any, data: str | None) -> dict[str, Any]:
    """Set5 Y-PSNR of the artifact and of the float model, through ``edge_sr.verify``."""
    from edge_sr.verify import verify

    if data is None:
        raise Skip("no Set5 folder given (--data)")
    d = verify(artifact, reference=reference, data=data).to_dict()
    return {k: d.get(k) for k in ("psnr", "psnr_float", "psnr_vs_float", "passed")}


def run_cell(
    ckpt: Path,
    target: str,
    precision: str,
    size: tuple[int, int],
    settings: Settings,
    workdir: Path,
    cache: dict[str, Any],
) -> dict[str, Any]:
    """Convert -> verify -> profile one cell; a cached result is reused when its artifact checksum holds.

    Returns:
        The row; ``status`` is ``ok``, ``skipped: <why>`` or ``failed: <error>``.
    """
    from edge_sr.models import load_checkpoint
    from edge_sr.profile import profile
    from edge_sr.reparam import reparameterize

    row: dict[str, Any] = {
        "model": ckpt.stem,
        "target": target,
        "precision": precision,
        "input": f"{size[0]}x{size[1]}",
    }
    parts: list[Any] = [sha256_path(ckpt), target, precision, size, dataclasses.asdict(settings)]
    if target == "coreml" and precision == "int8":
        parts.append(INT8_SCHEME)
    key = json.dumps(parts)
    hit = cache.get(key)
    if hit and hit.get("status") == "ok" and Path(hit["artifact"]).exists():
        if sha256_path(hit["artifact"]) == hit["artifact_sha256"]:
            log.info("cached: %s %s %s", ckpt.stem, target, precision)
            return hit
    t0 = time.perf_counter()
    try:
        model = reparameterize(load_checkpoint(ckpt))
        artifact = export_artifact(
            model, ckpt, target, precision, size, workdir, settings.calib, settings.calib_count
        )
        row.update(artifact=str(artifact), artifact_sha256=sha256_path(artifact))
        if hit and hit.get("artifact_sha256") == row["artifact_sha256"] and hit.get("status") == "ok":
            return {**hit, "artifact": str(artifact)}
        row["size_bytes"] = size_bytes(artifact)
        try:
            row.update(set5_psnr(artifact, model, settings.data))
        except Skip as e:
            row["verify_note"] = str(e)
        try:
            rep = profile(artifact, runs=settings.runs, warmup=settings.warmup, threads=settings.threads)
            row.update(
                median_ms=rep.median_ms,
                min_ms=rep.min_ms,
                p90_ms=rep.p90_ms,
                gmacs=rep.gmacs,
                percent_of_theoretical_peak=rep.percent_of_theoretical_peak,
                percent_of_measured_peak=rep.percent_of_measured_peak,
                threads=rep.threads,
            )
        except EdgeSRError as e:
            row["profile_note"] = e.problem
        row["status"] = "ok"
    except Skip as e:
        row["status"] = f"skipped: {e}"
    except EdgeSRError as e:
        row["status"] = f"failed: {e}"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if row["status"] == "ok":
        cache[key] = row
    return row


# ---------------------------------------------------------------- the matrix


def resolve_models(models: Sequence[str] | None) -> list[Path]:
    """Checkpoint paths from ``--models``: files, or zoo names with bundled weights (``ecbsr_m4c16`` or
    ``ecbsr_m4c16_x4``); default every bundled checkpoint."""
    from edge_sr.weights import bundled_checkpoints

    bundled = {f"{a}_x{s}": p for a, by in bundled_checkpoints().items() for s, p in by.items()}
    if not models:
        if not bundled:
            raise ConfigError(None, "no bundled checkpoints in this build; pass --models CHECKPOINT...")
        return list(bundled.values())
    out = []
    for m in models:
        if Path(m).is_file():
            out.append(Path(m))
        elif m in bundled:
            out.append(bundled[m])
        elif any(k.startswith(m + "_x") for k in bundled):
            out.extend(p for k, p in bundled.items() if k.startswith(m + "_x"))
        else:
            raise InputError(m, "neither a checkpoint file nor a bundled model; see `edge-sr models`")
    return out


def bench_matrix(
    *,
    models: Sequence[str] | None = None,
    targets: Sequence[str] = tuple(TARGETS),
    precisions: Sequence[str] = PRECISIONS,
    input_sizes: Sequence[tuple[int, int]] = ((180, 320),),
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = "docs/BENCHMARKS.md",
    plot: str | os.PathLike[str] | None = "docs/pareto.png",
    workdir: str | os.PathLike[str] = "out/bench",
    settings: Settings | None = None,
    use_cache: bool = True,
    command: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every cell, write the table and the plot.

    Args:
        models: checkpoints or bundled names (default: every bundled checkpoint).
        targets: names of ``edge_sr.convert.TARGETS``.
        precisions: ``fp32``, ``fp16``, ``int8``.
        input_sizes: (height, width) of each exported artifact.
        data: the Set5 folder (default: ``benchmarks/Set5`` under ``EDGE_SR_DATA``).
        out: the markdown page whose ``matrix`` section is rewritten (None: no page).
        plot: the Pareto plot PNG (None: no plot).
        workdir: where artifacts are written.
        settings: timing and calibration (``calib`` defaults to ``train/BSD200`` under ``EDGE_SR_DATA``
            when INT8 is asked for).
        use_cache: reuse finished cells (the cache sits beside ``out``).
        command: the command line quoted in the section.
        progress: called with each finished row.

    Returns:
        ``{"rows", "environment", "out", "plot"}``.
    """
    for t in targets:
        target_module(t)  # ConfigError naming the choices
    for p in precisions:
        if p not in PRECISIONS:
            raise ConfigError(None, f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    settings = settings or Settings()
    calib = settings.calib
    if "int8" in precisions and calib is None:
        calib = str(data_dir(None, "train", "BSD200"))
    settings = dataclasses.replace(settings, data=str(data_dir(data, "benchmarks", "Set5")), calib=calib)
    ckpts = resolve_models(models)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    cache_path = Path(out).with_suffix(".cache.json") if out else work / "bench.cache.json"
    cache = _load_cache(cache_path) if use_cache else {}
    rows = []
    for ckpt in ckpts:
        for size in input_sizes:
            for target in targets:
                for precision in precisions:
                    row = run_cell(ckpt, target, precision, size, settings, work, cache)
                    rows.append(row)
                    if use_cache:  # after every cell: an interrupted run resumes here
                        _save_cache(cache_path, cache)
                    if progress:
                        progress(row)
    for r in rows:  # PSNR loss against the float model
        if r.get("psnr") is not None and r.get("psnr_float") is not None:
            r["psnr_loss"] = r["psnr_float"] - r["psnr"]
    env = environment(settings.threads or os.cpu_count())
    result: dict[str, Any] = {"rows": rows, "environment": env, "out": None, "plot": None}
    if out:
        from edge_sr.bench.report import update_section

        md = matrix_markdown(rows, env, command or "edge-sr bench matrix", settings)
        result["out"] = str(update_section(out, "matrix", md, title="Benchmarks"))
    if plot:
        from edge_sr.bench.plot import pareto_plot

        result["plot"] = str(pareto_plot(rows, plot))
    return result


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        log.warning("ignoring an unreadable cache %s", path)
        return {}


def _save_cache(path: Path, cache: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(cache, indent=1))


def _f(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def matrix_markdown(rows: list[dict[str, Any]], env: dict[str, Any], command: str, settings: Settings) -> str:
    """The one table, with the machine, versions and command it was measured with."""
    lines = [
        "## Benchmark matrix: convert → verify (Set5) → profile",
        "",
        environment_block(env, command),
        f"Latency: {settings.runs} runs after {settings.warmup} warm-up, median / p90. % of peak: achieved "
        "GMAC/s against the theoretical / measured peak of the cell's precision (`edge-sr profile`).",
        "",
        "| model | target | precision | input | size (KB) | Set5 Y-PSNR | loss vs float (dB) | median ms | p90 ms "
        "| % of peak (theoretical / measured) | status |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        notes = "; ".join(x for x in (r.get("verify_note"), r.get("profile_note")) if x)
        status = r["status"] if not notes else f"{r['status']} ({notes})"
        peak = f"{_f(r.get('percent_of_theoretical_peak'), '.1f')} / {_f(r.get('percent_of_measured_peak'), '.1f')}"
        lines.append(
            f"| {r['model']} | {r['target']} | {r['precision']} | {r['input']} | "
            f"{_f(r.get('size_bytes') and r['size_bytes'] / 1024, '.1f')} | {_f(r.get('psnr'), '.2f')} | "
            f"{_f(r.get('psnr_loss'), '.3f')} | {_f(r.get('median_ms'), '.2f')} | {_f(r.get('p90_ms'), '.2f')} | "
            f"{peak} | {status.replace('|', '/')} |"
        )
    return "\n".join(lines)
