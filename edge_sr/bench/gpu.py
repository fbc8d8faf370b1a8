"""Throughput of the transformer SR models on a GPU: tiles per second, FP32 against FP16 autocast.

``edge-sr bench gpu`` writes the ``gpu-bench`` section. The job is one ``JOB_SIZE`` square LR image
upscaled ×``JOB_SCALE``, cut into ``tile``-sized tiles with ``overlap`` pixels shared between neighbours,
run ``batch`` tiles at a time with random (untrained) weights: speed does not depend on the weight values.
An FP16 tile whose output is not finite is recomputed in FP32 and counted, as the host upscaler does.
Without CUDA it raises ``ConfigError`` (exit code 2 on the command line).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edge_sr.errors import ConfigError
from edge_sr.models import card_of, create_model, has_card

JOB_SIZE, JOB_SCALE = 1024, 4


@dataclass(frozen=True)
class BenchResult:
    """One model at one precision: the whole job's time."""

    model: str
    precision: str
    tiles: int
    seconds: float
    tiles_per_s: float
    fp32_fallbacks: int
    tile: int
    batch: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Top-left coordinates along one axis so tiles of ``tile`` px, stepping ``tile - overlap``, cover ``size``."""
    if tile >= size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def run_job(
    model: torch.nn.Module, *, tile: int, overlap: int, batch: int, precision: str, device: str
) -> BenchResult:
    """Upscale one random ``JOB_SIZE`` square image tile by tile; return the timing of the whole job."""
    image = torch.rand(1, 3, JOB_SIZE, JOB_SIZE, device=device)
    coords = [
        (y, x) for y in tile_origins(JOB_SIZE, tile, overlap) for x in tile_origins(JOB_SIZE, tile, overlap)
    ]
    fallbacks = 0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(coords), batch):
            tiles = torch.cat([image[:, :, y : y + tile, x : x + tile] for y, x in coords[i : i + batch]])
            if precision == "fp16":
                with torch.autocast("cuda", dtype=torch.float16):
                    out = model(tiles)
                bad = ~torch.isfinite(out).flatten(1).all(dim=1)  # per-tile guard
                if bool(bad.any()):
                    fallbacks += int(bad.sum())
                    out[bad] = model(tiles[bad]).to(out.dtype)
            else:
                out = model(tiles)
            out.float().clamp_(0, 1).cpu()  # the result leaves the GPU, as a real job's would
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    name = card_of(model).arch if has_card(model) else type(model).__name__
    return BenchResult(name, precision, len(coords), dt, len(coords) / dt, fallbacks, tile, batch, device)


def bench_gpu(
    models: list[str] | None = None,
    *,
    tile: int = 256,
    overlap: int = 16,
    batch: int = 4,
    warmup: int = 1,
    doc: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> list[BenchResult]:
    """FP32 and FP16 timings for each model on the CUDA device.

    Args:
        models: zoo names (default: ``swinir_classical``, ``hat``).
        tile: tile side in LR pixels.
        overlap: pixels shared between neighbouring tiles.
        batch: tiles per forward pass.
        warmup: untimed jobs first (cudnn autotuning, allocator growth).
        doc: markdown file whose ``gpu-bench`` section is rewritten.
        command: the command line quoted in the section.

    Raises:
        ConfigError: no CUDA device.
    """
    if not torch.cuda.is_available():
        raise ConfigError(
            None, "no CUDA device; this benchmark measures GPU throughput, run it on a CUDA host"
        )
    results = []
    for name in models or ["swinir_classical", "hat"]:
        model = create_model(name, scale=JOB_SCALE).eval().cuda()
        for precision in ("fp32", "fp16"):
            for _ in range(warmup):
                run_job(model, tile=tile, overlap=0, batch=batch, precision=precision, device="cuda")
            results.append(
                run_job(model, tile=tile, overlap=overlap, batch=batch, precision=precision, device="cuda")
            )
        del model
        torch.cuda.empty_cache()
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(doc, "gpu-bench", to_markdown(results, command), title="edge-sr benchmarks")
    return results


def to_markdown(results: list[BenchResult], command: str | None) -> str:
    """The markdown section."""
    from edge_sr.bench._env import environment, environment_block

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"
    lines = [
        "## Transformer SR on the GPU host",
        "",
        f"{JOB_SIZE}x{JOB_SIZE} LR image ×{JOB_SCALE} on {gpu}.",
        environment_block(environment(), command),
        "",
        "| model | precision | tile | batch | tiles | seconds | tiles/s | FP32 fallbacks |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.precision} | {r.tile} | {r.batch} | {r.tiles} | {r.seconds:.2f} | "
            f"{r.tiles_per_s:.2f} | {r.fp32_fallbacks} |"
        )
    return "\n".join(lines)
