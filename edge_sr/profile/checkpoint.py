"""Latency of a checkpoint in eager PyTorch, with ``torch.profiler`` for the per-operator table."""

from __future__ import annotations

from pathlib import Path

from edge_sr.convert.target import DEFAULT_INPUT, Timed, Timer, profile_torch, time_calls


def profile(
    path: Path,
    *,
    size: tuple[int, int] | None,
    runs: int,
    warmup: int,
    threads: int,
    want_ops: bool,
    layout: str | None = None,
    timer: Timer = time_calls,
) -> Timed:
    """Time ``runs`` forward passes of the checkpoint's model on a (1, 3, H, W) input, after ``warmup``.

    ``layout`` is accepted for the target profilers' signature; a checkpoint always takes NCHW.
    """
    import torch

    from edge_sr.models import load_checkpoint

    model = load_checkpoint(path)
    shape = [1, 3, *(size or DEFAULT_INPUT)]
    x = torch.rand(*shape)
    times, ops, note = profile_torch(
        model, x, runs=runs, warmup=warmup, threads=threads, want_ops=want_ops, timer=timer
    )
    return Timed(times, shape, ops, note)
