"""Train versus deploy form of every re-parameterizable zoo model: parameters, MACs, CPU latency.

``edge-sr bench reparam`` writes the ``reparam`` section of the benchmarks page. Latency is the median of
``runs`` timed forward passes on one input (by default a 720p frame at x4), after one warm-up; the two forms
alternate within one loop so both see the same machine load, and the ratio is taken from that same run.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sr.bench._env import environment, environment_block

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReparamBenchRow:
    name: str
    params_train: int
    params_deploy: int
    macs_train: float  # per LR pixel
    macs_deploy: float
    ms_train: float  # median latency
    ms_deploy: float

    @property
    def speedup(self) -> float:
        return self.ms_train / self.ms_deploy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


@torch.inference_mode()
def _latencies(models: list[nn.Module], x: torch.Tensor, runs: int, cpu_time: bool = False) -> list[float]:
    clock = time.process_time if cpu_time else time.perf_counter
    for m in models:  # warm-up (allocator, oneDNN primitive cache)
        m(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for i, m in enumerate(models):  # alternate, so both forms see the same load
            t0 = clock()
            m(x)
            times[i].append((clock() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def bench_reparam(
    models: list[str] | None = None,
    input_size: tuple[int, int] = (180, 320),
    runs: int = 5,
    scale: int = 4,
    threads: int | None = None,
    doc: str | Path | None = None,
    command: str | None = None,
    cpu_time: bool = False,
) -> list[ReparamBenchRow]:
    """Measure train and deploy form of each model; optionally write the ``reparam`` section of ``doc``.

    Args:
        models: zoo names (default: every re-parameterizable model).
        input_size: LR input height and width.
        runs: timed runs per form (median reported).
        scale: the models' scale.
        threads: torch intra-op threads (default: leave as is).
        doc: markdown file whose ``reparam`` section is replaced (``edge_sr.bench.report.update_section``).
        command: the command line to quote in the section.
        cpu_time: time with the process CPU clock instead of the wall clock. On a shared machine the wall
            clock measures the scheduler; with one thread, CPU time is the compute the forward pass needs.
    """
    from edge_sr.models import create_model, get_entry, list_models
    from edge_sr.models.stats import count_params, macs_per_lr_pixel
    from edge_sr.reparam import reparameterize

    if threads:
        torch.set_num_threads(threads)
    names = models or [n for n in list_models() if get_entry(n).reparameterizable]
    x = torch.rand(1, 3, *input_size)
    rows = []
    for name in names:
        torch.manual_seed(0)
        train = create_model(name, scale=scale).eval()
        deploy = reparameterize(train)
        ms_t, ms_d = _latencies([train, deploy], x, runs, cpu_time)
        row = ReparamBenchRow(
            name,
            count_params(train),
            count_params(deploy),
            macs_per_lr_pixel(train),
            macs_per_lr_pixel(deploy),
            ms_t,
            ms_d,
        )
        log.info("%s: train %.1f ms, deploy %.1f ms (x%.2f)", name, ms_t, ms_d, row.speedup)
        rows.append(row)
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(
            doc,
            "reparam",
            render(rows, input_size, scale, runs, command, cpu_time),
            title="edge-sr benchmarks",
        )
    return rows


def render(
    rows: list[ReparamBenchRow],
    input_size: tuple[int, int],
    scale: int,
    runs: int,
    command: str | None,
    cpu_time: bool = False,
) -> str:
    """The markdown section."""
    h, w = input_size
    clock = (
        "process CPU time per forward pass (the machine was shared, so wall-clock time would measure the "
        "scheduler; with one thread, CPU time is the work itself)"
        if cpu_time
        else "wall-clock time"
    )
    lines = [
        "## Re-parameterization: train versus deploy form",
        "",
        f"Input 1x3x{h}x{w} (x{scale}), float32, eager PyTorch on the CPU; latency = median of {runs} runs after one "
        "warm-up, the two forms alternating in one loop (ratio from that same run), measured as "
        f"{clock}. MACs per LR pixel count convolutions and matrix products (`edge_sr.models.stats`); "
        "untrained weights (the cost does not depend on their values).",
        "",
        environment_block(environment(torch.get_num_threads()), command),
        "",
        "| model | params train | params deploy | MACs/px train | MACs/px deploy | ms train | ms deploy | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.params_train:,} | {r.params_deploy:,} | {r.macs_train / 1e3:,.1f}K | "
            f"{r.macs_deploy / 1e3:,.1f}K | {r.ms_train:,.1f} | {r.ms_deploy:,.1f} | {r.speedup:.2f}x |"
        )
    from edge_sr.models import get_entry, list_models

    missing = [n for n in list_models() if get_entry(n).reparameterizable and n not in {r.name for r in rows}]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    return "\n".join(lines)
