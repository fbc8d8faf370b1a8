"""Latency of a checkpoint in eager PyTorch, with ``torch.profiler`` for the per-operator table."""

from __future__ import annotations

from pathlib import Path

from torch import nn

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
    model: nn.Module | None = None,
) -> Timed:
    """Time ``runs`` forward passes of the checkpoint's model on a (1, C, H, W) input, after ``warmup``.

    ``layout`` is accepted for the target profilers' signature; a checkpoint always takes NCHW. ``model``:
    the model already loaded from ``path`` (default: ``load_checkpoint(path)``).
    """
    import torch

    from edge_sr.models import card_of, has_card, load_checkpoint

    model = model if model is not None else load_checkpoint(path)
    colors = card_of(model).colors if has_card(model) else 3
    shape = [1, colors, *(size or DEFAULT_INPUT)]
    x = torch.rand(*shape)
    times, ops, note = profile_torch(
        model, x, runs=runs, warmup=warmup, threads=threads, want_ops=want_ops, timer=timer
    )
    return Timed(times, shape, ops, note)
