"""Latency of a checkpoint in eager PyTorch, with ``torch.profiler`` for the per-operator table."""

from __future__ import annotations

from pathlib import Path

from edge_sr.convert.target import DEFAULT_INPUT, OPS_RUNS, OpTime, Timed, Timer, time_calls


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
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    ops: list[OpTime] = []
    try:
        with torch.inference_mode():
            times = timer(lambda: model(x), runs, warmup)
            if want_ops:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as torch_profile

                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(OPS_RUNS):
                        model(x)
                for evt in prof.key_averages():
                    if evt.self_cpu_time_total > 0:
                        ops.append(OpTime(evt.key, evt.self_cpu_time_total / OPS_RUNS / 1e3, False))
    finally:
        torch.set_num_threads(old)
    note = f"operator times: torch.profiler self CPU time per run, averaged over {OPS_RUNS} runs"
    return Timed(times, shape, ops, note if want_ops else None)
