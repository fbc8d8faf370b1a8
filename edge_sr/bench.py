"""The benchmark matrix: models × targets × precisions × input sizes, each cell convert -> verify on Set5
-> profile, written as one table (the ``matrix`` section of ``docs/BENCHMARKS.md``) and a Pareto plot of
Set5 Y-PSNR against median latency.

Resumable: every finished cell is stored in a JSON cache beside the report (``BENCHMARKS.cache.json``),
keyed by the checkpoint's sha256 and the cell's settings, and it holds the artifact's sha256. A rerun
reuses a cell whose artifact is still on disk with that checksum (or re-exports to the same checksum),
so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_sr.errors import ConfigError, EdgeSRError, InputError
from edge_sr.io_utils import atomic_path

log = logging.getLogger(__name__)
INT8_SCHEME = "coreml-w8a8-affine"  # in the CoreML INT8 cache key: cells made with another scheme are redone

TARGETS = ("executorch", "tflite", "onnx", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
_VERSIONS = ("torch", "executorch", "onnxruntime", "ai-edge-litert", "litert-torch", "coremltools", "edge-sr")


class Skip(Exception):
    """A cell that cannot run here (a missing capability), with the reason."""


@dataclasses.dataclass(frozen=True)
class Settings:
    runs: int = 20
    warmup: int = 3
    threads: int | None = None
    data: str | None = None
    calib: str | None = None
    calib_count: int = 16


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder artifact (``.mlpackage``) over its sorted files."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def environment() -> dict[str, Any]:
    """The machine and library versions a table was measured with."""
    from importlib import metadata

    from edge_sr.profile import cpu_model

    versions = {}
    for lib in _VERSIONS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


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
    try:
        from edge_sr.convert import ExportSpec, export
    except ImportError as e:
        raise Skip(f"edge_sr.convert is not available ({e})") from None
    stem = f"{ckpt.stem}_{target}_{precision}_{size[0]}x{size[1]}"
    out = workdir / (stem + _suffix(target))
    if precision == "int8":
        try:
            from edge_sr.quantize import QuantSpec, load_calibration, ptq
        except ImportError:
            raise Skip("INT8 needs edge_sr.quantize, which this build does not have") from None
        if not calib:
            raise Skip("INT8 needs calibration images (--calib DIR)")
        scale = int(getattr(model, "scale", 0) or 4)
        # the images are used as LR: calibration patches have the export size, which few HR sets reach at x4
        cset = load_calibration(calib, count=calib_count, input_size=size, scale=scale, lr_input=True)
        # CoreML: W8A8 (int8 weights and activations, the PT2E CoreML quantizer); off macOS it is verified by
        # the reference execution of its quantize / dequantize program
        spec = QuantSpec(coreml_mode="w8a8")
        art = ptq(model, target, cset, spec, out=out, source=ckpt)
        return Path(art.path)
    art = export(model, target, out, ExportSpec(input_size=size, precision=precision), source=ckpt)  # type: ignore[arg-type]
    return Path(art.path)


def _suffix(target: str) -> str:
    return {"executorch": ".pte", "tflite": ".tflite", "onnx": ".onnx", "coreml": ".mlpackage"}[target]


def set5_psnr(artifact: Path, reference: Any, data: str | None, scale: int) -> dict[str, Any]:
    """Set5 Y-PSNR of the artifact and of the float model, through ``edge_sr.verify`` when present, else
    through ``edge_sr.runtime.load`` and ``edge_sr.evaluate``."""
    if data is None:
        raise Skip("no --data folder (Set5) given")
    try:
        from edge_sr.verify import verify
    except ImportError:
        verify = None  # type: ignore[assignment]
    if verify is not None:
        rep = verify(artifact, reference=reference, data=data)
        d = rep.to_dict() if hasattr(rep, "to_dict") else dict(rep)
        return {
            "psnr": d.get("psnr"),
            "psnr_float": d.get("psnr_float"),
            "psnr_vs_float": d.get("psnr_vs_float"),
            "passed": d.get("passed"),
        }
    try:
        from edge_sr.runtime import load
    except ImportError:
        raise Skip("verification needs edge_sr.runtime / edge_sr.verify, not in this build yet") from None
    import torch

    from edge_sr.evaluate import evaluate

    runner = load(artifact)
    art = evaluate(data, scale, lambda x: torch.from_numpy(runner.run(x.numpy())))
    flt = evaluate(data, scale, reference)
    return {"psnr": art.psnr, "psnr_float": flt.psnr, "psnr_vs_float": None, "passed": None}


def run_cell(
    ckpt: Path,
    target: str,
    precision: str,
    size: tuple[int, int],
    settings: Settings,
    workdir: Path,
    cache: dict[str, Any],
) -> dict[str, Any]:
    """Convert -> verify -> profile one cell; a cached result is reused when its artifact checksum holds."""
    from edge_sr.models import load_checkpoint
    from edge_sr.profile import profile
    from edge_sr.reparam import reparameterize

    row: dict[str, Any] = {
        "model": ckpt.stem,
        "target": target,
        "precision": precision,
        "input": f"{size[0]}x{size[1]}",
    }
    parts: list[Any] = [sha256_file(ckpt), target, precision, size, dataclasses.asdict(settings)]
    if target == "coreml" and precision == "int8":
        parts.append(INT8_SCHEME)
    key = json.dumps(parts)
    hit = cache.get(key)
    if hit and hit.get("status") == "ok" and Path(hit["artifact"]).exists():
        if sha256_file(hit["artifact"]) == hit["artifact_sha256"]:
            log.info("cached: %s %s %s", ckpt.stem, target, precision)
            return hit
    t0 = time.perf_counter()
    try:
        model = reparameterize(load_checkpoint(ckpt))
        scale = int(getattr(model, "scale", 0) or load_checkpoint(ckpt).edge_sr_args.get("scale", 4))
        artifact = export_artifact(
            model, ckpt, target, precision, size, workdir, settings.calib, settings.calib_count
        )
        row.update(artifact=str(artifact), artifact_sha256=sha256_file(artifact))
        if hit and hit.get("artifact_sha256") == row["artifact_sha256"] and hit.get("status") == "ok":
            return {**hit, "artifact": str(artifact)}
        from edge_sr.profile import artifact_size

        row["size_bytes"] = artifact_size(artifact)
        try:
            row.update(set5_psnr(artifact, model, settings.data, scale))
        except Skip as e:
            row["verify_note"] = str(e)
        try:
            rep = profile(artifact, runs=settings.runs, warmup=settings.warmup, threads=settings.threads)
            row.update(
                median_ms=rep.median_ms,
                min_ms=rep.min_ms,
                p90_ms=rep.p90_ms,
                gmacs=rep.gmacs,
                percent_of_peak=rep.percent_of_peak,
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
    targets: Sequence[str] = TARGETS,
    precisions: Sequence[str] = PRECISIONS,
    input_sizes: Sequence[tuple[int, int]] = ((180, 320),),
    data: str | None = None,
    out: str | os.PathLike[str] | None = "docs/BENCHMARKS.md",
    plot: str | os.PathLike[str] | None = "docs/pareto.png",
    workdir: str | os.PathLike[str] = "out/bench",
    settings: Settings | None = None,
    use_cache: bool = True,
    command: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every cell, write the table and the plot; returns ``{"rows", "environment", "out", "plot"}``."""
    for t in targets:
        if t not in TARGETS:
            raise ConfigError(None, f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    for p in precisions:
        if p not in PRECISIONS:
            raise ConfigError(None, f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    settings = dataclasses.replace(settings or Settings(), data=str(data) if data else None)
    ckpts = resolve_models(models)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    cache_path = _cache_path(out, work)
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
    _fill_loss(rows)
    env = environment()
    result: dict[str, Any] = {"rows": rows, "environment": env, "out": None, "plot": None}
    if out:
        from edge_sr.report import update_section

        md = matrix_markdown(rows, env, command or "edge-sr bench", settings)
        result["out"] = str(update_section(out, "matrix", md, title="Benchmarks"))
    if plot:
        result["plot"] = str(pareto_plot(rows, plot))
    return result


def _cache_path(out: str | os.PathLike[str] | None, work: Path) -> Path:
    return Path(out).with_suffix(".cache.json") if out else work / "bench.cache.json"


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        log.warning("ignoring an unreadable cache %s", path)
        return {}


def _save_cache(path: Path, cache: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(cache, indent=1))


def _fill_loss(rows: list[dict[str, Any]]) -> None:
    """PSNR loss against the float model: from the verify result, else psnr_float - psnr."""
    for r in rows:
        if r.get("psnr") is not None and r.get("psnr_float") is not None:
            r["psnr_loss"] = r["psnr_float"] - r["psnr"]


def _f(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def matrix_markdown(rows: list[dict[str, Any]], env: dict[str, Any], command: str, settings: Settings) -> str:
    """The one table, with the machine, versions and command it was measured with."""
    vers = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        "## Benchmark matrix: convert → verify (Set5) → profile",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['os']}, Python {env['python']}. Versions: {vers}.",
        f"Latency: {settings.runs} runs after {settings.warmup} warm-up, "
        f"{settings.threads or env['cores']} threads, median / p90. Command: `{command}`",
        "",
        "| model | target | precision | input | size (KB) | Set5 Y-PSNR | loss vs float (dB) | median ms | p90 ms "
        "| % of FP32 peak | status |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        notes = "; ".join(x for x in (r.get("verify_note"), r.get("profile_note")) if x)
        status = r["status"] if not notes else f"{r['status']} ({notes})"
        lines.append(
            f"| {r['model']} | {r['target']} | {r['precision']} | {r['input']} | "
            f"{_f(r.get('size_bytes') and r['size_bytes'] / 1024, '.1f')} | {_f(r.get('psnr'), '.2f')} | "
            f"{_f(r.get('psnr_loss'), '.3f')} | {_f(r.get('median_ms'), '.2f')} | {_f(r.get('p90_ms'), '.2f')} | "
            f"{_f(r.get('percent_of_peak'), '.1f')} | {status.replace('|', '/')} |"
        )
    return "\n".join(lines)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points (lower latency, higher PSNR), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _row_scale(r: dict[str, Any]) -> int | None:
    if r.get("scale"):
        return int(r["scale"])
    m = re.search(r"_x(\d+)(?:$|_)", str(r.get("model", "")))
    return int(m.group(1)) if m else None


def pareto_plot(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """PNG: Set5 Y-PSNR against median latency, one marker per target / precision, one panel per scale
    (PSNRs of different scales are not comparable), each with its Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("psnr") is not None and r.get("median_ms") is not None]
    markers = {"executorch": "o", "tflite": "s", "onnx": "^", "coreml": "D"}
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for r in pts:
        groups.setdefault(_row_scale(r), []).append(r)
    keys = sorted(groups, key=lambda k: (k is None, k or 0)) or [None]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 1.2, 4.2), dpi=120, squeeze=False)
    handles: dict[str, Any] = {}
    for ax, key in zip(axes[0], keys):
        group = groups.get(key, [])
        for r in group:
            label = f"{r['target']} {r['precision']}"
            h = ax.scatter(
                r["median_ms"],
                r["psnr"],
                marker=markers.get(r["target"], "x"),
                color=colors.get(r["precision"], "gray"),
                s=48,
                zorder=3,
            )
            handles.setdefault(label, h)
        if group:
            front = pareto_front([(r["median_ms"], r["psnr"]) for r in group])
            xs, ys = [group[i]["median_ms"] for i in front], [group[i]["psnr"] for i in front]
            (line,) = ax.step(xs, ys, where="post", color="black", lw=1, ls="--", zorder=2)
            handles.setdefault("Pareto front", line)
            models = sorted({r["model"] for r in group})
            ax.set_title(f"x{key}: {', '.join(models)}" if key else ", ".join(models), fontsize=9)
        else:
            ax.text(0.5, 0.5, "no cell has both a PSNR and a latency", ha="center", transform=ax.transAxes)
        ax.set_xlabel("median latency on this CPU (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Set5 Y-PSNR (dB)")
    fig.suptitle("quality against latency, per scale")
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / (4.2 * len(keys) + 1.2), 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
