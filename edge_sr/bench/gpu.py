"""Throughput of the heavy SR models on a GPU: tiles per second, FP32 against FP16 autocast.

``edge-sr bench gpu`` writes the ``gpu-bench`` section for :data:`IMAGE_MODELS` (the transformers and the big
CNNs, each at its published x4 configuration). The job is one ``JOB_SIZE`` square LR image
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
IMAGE_MODELS = (
    "swinir_classical", "hat", "srformer", "dat", "craft", "swinfir", "act", "esrt", "lbnet", "edsr", "rcan",
)  # fmt: skip
# tiny configurations (the code path proven on a CPU before a GPU session runs it)
IMAGE_TINY: dict[str, dict[str, Any]] = {
    "swinir_classical": {"embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8},
    "srformer": {"embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8},
    "dat": {"embed_dim": 32, "depths": (1,), "num_heads": (2,), "split_size": (2, 4), "num_feat": 8},
    "esrt": {"n_feats": 16, "n_blocks": 1},
    "edsr": {"n_feats": 8, "n_resblocks": 1},
}


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
    size: int = JOB_SIZE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(device: str) -> None:
    """Raises ConfigError: ``device`` is CUDA and there is none."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            None, "no CUDA device; this benchmark measures GPU throughput, run it on a CUDA host"
        )


def _device_name(device: str) -> str:
    """The GPU's name for a CUDA run, else the device string."""
    return (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() and device.startswith("cuda") else device
    )


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Top-left coordinates along one axis so tiles of ``tile`` px, stepping ``tile - overlap``, cover ``size``."""
    if tile >= size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def run_job(
    model: torch.nn.Module,
    *,
    tile: int,
    overlap: int,
    batch: int,
    precision: str,
    device: str,
    size: int = JOB_SIZE,
) -> BenchResult:
    """Upscale one random ``size`` square image tile by tile; return the timing of the whole job."""
    image = torch.rand(1, 3, size, size, device=device)
    coords = [(y, x) for y in tile_origins(size, tile, overlap) for x in tile_origins(size, tile, overlap)]
    fallbacks = 0
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(coords), batch):
            tiles = torch.cat([image[:, :, y : y + tile, x : x + tile] for y, x in coords[i : i + batch]])
            if precision == "fp16":
                with torch.autocast(torch.device(device).type, dtype=torch.float16):
                    out = model(tiles)
                bad = ~torch.isfinite(out).flatten(1).all(dim=1)  # per-tile guard
                if bool(bad.any()):
                    fallbacks += int(bad.sum())
                    out[bad] = model(tiles[bad]).to(out.dtype)
            else:
                out = model(tiles)
            out.float().clamp_(0, 1).cpu()  # the result leaves the GPU, as a real job's would
    _sync(device)
    dt = time.perf_counter() - t0
    name = card_of(model).arch if has_card(model) else type(model).__name__
    return BenchResult(
        name, precision, len(coords), dt, len(coords) / dt, fallbacks, tile, batch, device, size
    )


def bench_gpu(
    models: list[str] | None = None,
    *,
    tile: int = 256,
    overlap: int = 16,
    batch: int = 4,
    warmup: int = 1,
    doc: str | os.PathLike[str] | None = None,
    command: str | None = None,
    device: str = "cuda",
    tiny: bool = False,
    size: int = JOB_SIZE,
    precisions: tuple[str, ...] = ("fp32", "fp16"),
) -> list[BenchResult]:
    """FP32 and FP16 timings for each model on the CUDA device.

    Args:
        models: zoo names (default: :data:`IMAGE_MODELS`).
        tile: tile side in LR pixels.
        overlap: pixels shared between neighbouring tiles.
        batch: tiles per forward pass.
        warmup: untimed jobs first (cudnn autotuning, allocator growth).
        doc: markdown file whose ``gpu-bench`` section is rewritten.
        command: the command line quoted in the section.
        device: ``cuda``; ``cpu`` runs the same code path (with ``tiny`` and a small ``size``, a test of the
            benchmark itself).
        tiny: small configurations (:data:`IMAGE_TINY`; the others at their defaults).
        size: the LR image side.
        precisions: what to time.

    Raises:
        ConfigError: ``device`` is CUDA and there is none.
    """
    _require(device)
    results = []
    for name in models or IMAGE_MODELS:
        args = IMAGE_TINY.get(name, {}) if tiny else {}
        model = create_model(name, scale=JOB_SCALE, **args).eval().to(device)
        for precision in precisions:
            kw = dict(tile=tile, batch=batch, precision=precision, device=device, size=size)
            for _ in range(warmup):
                run_job(model, overlap=0, **kw)  # type: ignore[arg-type]
            results.append(run_job(model, overlap=overlap, **kw))  # type: ignore[arg-type]
        del model
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(doc, "gpu-bench", to_markdown(results, command), title="edge-sr benchmarks")
    return results


def to_markdown(results: list[BenchResult], command: str | None) -> str:
    """The markdown section."""
    from edge_sr.bench._env import environment, environment_block

    dev = results[0].device if results else "cuda"
    gpu = _device_name(dev)
    size = results[0].size if results else JOB_SIZE
    fp32 = {r.model: r.seconds for r in results if r.precision == "fp32"}
    lines = [
        "## Heavy image SR on the GPU host",
        "",
        f"One {size}x{size} LR image ×{JOB_SCALE} (random weights, published configurations) on {gpu}; "
        "FP16 is autocast, a non-finite FP16 tile is recomputed in FP32 and counted.",
        environment_block(environment(), command),
        "",
        "| model | precision | tile | batch | tiles | seconds | tiles/s | FP32 / this time | FP32 fallbacks |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ratio = f"{fp32[r.model] / r.seconds:.2f}x" if r.model in fp32 and r.seconds > 0 else "-"
        lines.append(
            f"| {r.model} | {r.precision} | {r.tile} | {r.batch} | {r.tiles} | {r.seconds:.2f} | "
            f"{r.tiles_per_s:.2f} | {ratio} | {r.fp32_fallbacks} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# whole-clip / window video models (``edge-sr bench gpu --video``)

VIDEO_MODELS = ("basicvsr", "iconvsr", "basicvsrpp", "edvr_m", "edvr_l")
VIDEO_LR = (180, 320)  # LR (h, w): x4 gives 720x1280
VIDEO_FRAMES = 50  # more than one default chunk (30, overlap 5): the chunking's cost is in the figure
# tiny configurations of each family (the code path proven on a CPU before a GPU session runs it)
VIDEO_TINY: dict[str, dict[str, Any]] = {
    "basicvsr": {"num_feat": 8, "num_block": 1},
    "iconvsr": {"num_feat": 8, "num_block": 1, "temporal_padding": 1, "deformable_groups": 2,
                "num_extract_block": 1, "keyframe_stride": 2},
    "basicvsrpp": {"mid_channels": 8, "num_blocks": 1, "deform_groups": 2},
    "edvr_m": {"num_feat": 8, "num_frame": 3, "deformable_groups": 2, "num_extract_block": 1,
               "num_reconstruct_block": 1},
    "edvr_l": {"num_feat": 8, "num_frame": 3, "deformable_groups": 2, "num_extract_block": 1,
               "num_reconstruct_block": 1},
}  # fmt: skip


@dataclass(frozen=True)
class VideoBenchResult:
    """One video model at one precision: the median of ``runs`` timed passes over the same clip."""

    model: str
    precision: str
    frames: int
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    runs: int
    seconds: float
    fps: float
    peak_mem_mib: float
    fp32_fallbacks: int
    chunk: int | None
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_video_job(
    model: torch.nn.Module,
    *,
    frames: int,
    size: tuple[int, int],
    precision: str,
    device: str,
    chunk: int | None,
    runs: int,
    warmup: int,
) -> VideoBenchResult:
    """Upscale one random clip of ``frames`` LR frames through ``edge_sr.runtime.clip.run_clip`` (the path
    ``edge-sr upscale`` takes: frames in and out through host memory); the median of ``runs`` timed passes."""
    import numpy as np

    from edge_sr.runtime.clip import chunking, clip_fn, run_clip

    cf = clip_fn(model, device=device, precision=precision)
    lr = np.random.default_rng(0).random((frames, *size, 3), dtype=np.float32)
    cuda = torch.device(device).type == "cuda"
    times = []
    for i in range(warmup + runs):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        n = sum(1 for _ in run_clip(cf, iter(lr), chunk=chunk))
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if n != frames:
        raise RuntimeError(f"{cf.name}: {n} frames out for {frames} in")
    seconds = float(np.median(times))
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    s = cf.scale
    return VideoBenchResult(
        cf.name, precision, frames, size, (size[0] * s, size[1] * s), runs, seconds, frames / seconds,
        peak, int(getattr(cf.fn, "fallbacks", 0)), chunking(cf, chunk, None)[0], device,
    )  # fmt: skip


def bench_gpu_video(
    models: list[str] | None = None,
    *,
    frames: int = VIDEO_FRAMES,
    size: tuple[int, int] = VIDEO_LR,
    chunk: int | None = None,
    runs: int = 3,
    warmup: int = 1,
    device: str = "cuda",
    tiny: bool = False,
    precisions: tuple[str, ...] = ("fp32", "fp16"),
    doc: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> list[VideoBenchResult]:
    """Frames per second of the whole-clip / window video models, FP32 against FP16 autocast.

    Random (untrained) weights: speed does not depend on their values; every run upscales the same random
    ``frames``-frame clip of ``size`` LR pixels x4 with the default temporal chunk (EDVR: one window per frame).

    Args:
        models: zoo names (default :data:`VIDEO_MODELS`).
        frames, size: the clip (default 50 frames of 180x320 -> 720x1280).
        chunk: a whole-clip model's temporal chunk (default ``edge_sr.runtime.clip.DEFAULT_CHUNK``).
        runs, warmup: timed passes (the median is reported) and untimed ones before them.
        device: ``cuda``; ``cpu`` runs the same code path (with ``tiny``, a test of the benchmark itself).
        tiny: the families' tiny configurations (:data:`VIDEO_TINY`).
        precisions: what to time (FP16 / BF16 as autocast with the FP32 guard, as ``edge-sr upscale``).
        doc, command: the markdown file whose ``gpu-video-bench`` section is rewritten, the command quoted.

    Raises:
        ConfigError: ``device`` is CUDA and there is none; an unknown model.
    """
    _require(device)
    names = list(models or VIDEO_MODELS)
    unknown = [m for m in names if m not in VIDEO_TINY]
    if unknown:
        raise ConfigError(None, f"unknown video model {unknown[0]!r}; choose from {', '.join(VIDEO_MODELS)}")
    results = []
    for name in names:
        model = create_model(name, scale=4, **(VIDEO_TINY[name] if tiny else {})).eval()
        for precision in precisions:
            results.append(
                run_video_job(
                    model,
                    frames=frames,
                    size=size,
                    precision=precision,
                    device=device,
                    chunk=chunk,
                    runs=runs,
                    warmup=warmup,
                )  # fmt: skip
            )
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(doc, "gpu-video-bench", video_markdown(results, command), title="edge-sr benchmarks")
    return results


def video_markdown(results: list[VideoBenchResult], command: str | None) -> str:
    """The markdown section of :func:`bench_gpu_video`."""
    from edge_sr.bench._env import environment, environment_block

    dev = results[0].device if results else "cuda"
    name = _device_name(dev)
    r0 = results[0] if results else None
    clip = (
        f"{r0.frames} frames {r0.size_in[1]}x{r0.size_in[0]} -> {r0.size_out[1]}x{r0.size_out[0]}"
        if r0
        else ""
    )
    lines = [
        "## Video SR on the GPU host (BasicVSR, IconVSR, BasicVSR++, EDVR)",
        "",
        f"{clip} on {name}, random weights, through `run_clip` (frames in and out through host memory); "
        "the median of the timed runs; peak = `torch.cuda.max_memory_allocated`.",
        environment_block(environment(), command),
        "",
        "| model | precision | chunk | frames/s | s per clip | peak GPU MiB | FP32 fallbacks |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        chunk = "window" if r.chunk is None else str(r.chunk)
        lines.append(
            f"| {r.model} | {r.precision} | {chunk} | {r.fps:.2f} | {r.seconds:.2f} | {r.peak_mem_mib:.0f} | "
            f"{r.fp32_fallbacks} |"
        )
    return "\n".join(lines)
