"""Throughput of the transformer SR models on a GPU: tiles per second, FP32 against FP16 autocast.

``python -m edge_sr.gpu_bench [--models swinir_classical hat] [--tile 256] [--overlap 16] [--batch 4]
[--json] [--write-docs docs/BENCHMARKS.md]``

The job is a 1024x1024 LR image upscaled ×4 (a 4096x4096 output), cut into ``tile``-sized tiles with
``overlap`` pixels shared between neighbours, run ``batch`` tiles at a time with random (untrained) weights:
speed does not depend on the weight values. An FP16 tile whose output is not finite is recomputed in FP32
and counted, as the host upscaler does. Without CUDA the command stops with exit code 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edge_sr.models import create_model

JOB_SIZE, JOB_SCALE = 1024, 4


@dataclass(frozen=True)
class BenchResult:
    model: str
    precision: str
    tiles: int
    seconds: float
    tiles_per_s: float
    fp32_fallbacks: int
    tile: int
    batch: int
    device: str


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
    """Upscale one random 1024x1024 image tile by tile; return the timing of the whole job."""
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
    name = getattr(model, "edge_sr_arch", type(model).__name__)
    return BenchResult(name, precision, len(coords), dt, len(coords) / dt, fallbacks, tile, batch, device)


def bench(models: list[str], *, tile: int, overlap: int, batch: int, warmup: int = 1) -> list[BenchResult]:
    """FP32 and FP16 timings for each model (CUDA only)."""
    results = []
    for name in models:
        model = create_model(name, scale=JOB_SCALE).eval().cuda()
        for precision in ("fp32", "fp16"):
            for _ in range(warmup):  # cudnn autotuning, allocator growth
                run_job(model, tile=tile, overlap=0, batch=batch, precision=precision, device="cuda")
            results.append(
                run_job(model, tile=tile, overlap=overlap, batch=batch, precision=precision, device="cuda")
            )
        del model
        torch.cuda.empty_cache()
    return results


def to_markdown(results: list[BenchResult], command: str) -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"
    lines = [
        "## Transformer SR on the GPU host",
        "",
        f"{JOB_SIZE}x{JOB_SIZE} LR image ×{JOB_SCALE}, {gpu}, torch {torch.__version__}. Command: `{command}`",
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_sr.gpu_bench", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["swinir_classical", "hat"])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json", action="store_true")
    p.add_argument("--write-docs", metavar="MD", help="write the table into this file's gpu-bench section")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.stderr.write(
            "gpu_bench: no CUDA device; this benchmark measures GPU throughput, run it on a CUDA host\n"
        )
        return 2
    results = bench(args.models, tile=args.tile, overlap=args.overlap, batch=args.batch)
    command = "python -m edge_sr.gpu_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.write_docs:
        from edge_sr.report import update_section

        update_section(
            args.write_docs, "gpu-bench", to_markdown(results, command.strip()), title="Benchmarks"
        )
    payload: Any = [asdict(r) for r in results]
    sys.stdout.write((json.dumps(payload) if args.json else to_markdown(results, command.strip())) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
