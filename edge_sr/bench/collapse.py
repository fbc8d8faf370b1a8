"""Collapsed versus multi-branch training of a re-parameterizable net: speed and reached PSNR.

``edge-sr bench collapse`` writes the ``train-collapsed`` section. Both runs start from the same weights and
see the same batches; the collapsed one computes the fused 3x3 kernel from the branch weights on every
forward (SESR-style), so a step costs what the deploy net costs. Step time is process CPU time, so other
work on the machine does not count.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from edge_sr.bench._env import data_dir, environment, environment_block
from edge_sr.data.datasets import HRFolderDataset
from edge_sr.models.registry import create_model
from edge_sr.train.validate import load_val_dir, validate

TRAIN_SETS = ("T91", "BSD200")  # default training folders under train/ of the data root


def compare(
    model: str,
    scale: int,
    steps: int,
    data: Sequence[str | os.PathLike[str]],
    val_dir: str | os.PathLike[str],
    batch: int = 16,
    patch: int = 48,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` Adam steps in both forms; median step time and validation PSNR of each."""
    ds = HRFolderDataset([str(d) for d in data], scale=scale, patch_size=patch, skip_small=True, seed=0)
    val = load_val_dir(str(val_dir), scale)
    torch.manual_seed(0)
    ref = create_model(model, scale=scale)
    results: dict[bool, dict[str, Any]] = {}
    for collapsed in (False, True):
        m = create_model(model, scale=scale, collapsed=collapsed)
        m.load_state_dict(ref.state_dict())
        opt = torch.optim.Adam(m.parameters(), lr=5e-4)
        times = []
        for step in range(steps):
            items = [ds[step * batch + j] for j in range(batch)]
            lr = torch.stack([a for a, _ in items])
            hr = torch.stack([b for _, b in items])
            t = time.process_time()  # CPU time: with one thread the work itself, whatever else runs
            loss = (m(lr) - hr).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.process_time() - t)
        results[collapsed] = {
            "ms": statistics.median(times) * 1e3,
            "val": validate(m, val, scale)["psnr"],
            "model": m,
        }
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(
            results[False]["model"].state_dict().values(), results[True]["model"].state_dict().values()
        )
    )
    return {
        "multi_branch_ms": results[False]["ms"],
        "collapsed_ms": results[True]["ms"],
        "speedup": results[False]["ms"] / results[True]["ms"],
        "multi_branch_psnr": results[False]["val"],
        "collapsed_psnr": results[True]["val"],
        "max_weight_diff": diff,
    }


def bench_collapse(
    model: str = "ecbsr_m4c16",
    scale: int = 2,
    steps: int = 300,
    *,
    data: Sequence[str | os.PathLike[str]] | None = None,
    val: str | os.PathLike[str] | None = None,
    threads: int = 1,
    batch: int = 16,
    patch: int = 48,
    doc: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run :func:`compare` and optionally write the ``train-collapsed`` section of ``doc``.

    Args:
        model: a re-parameterizable zoo name.
        scale: the model's scale.
        steps: Adam steps per form.
        data: training image folders (default: ``train/T91`` and ``train/BSD200`` under ``EDGE_SR_DATA``).
        val: the validation set (default: ``benchmarks/Set5`` under ``EDGE_SR_DATA``).
        threads: torch threads.
        batch: batch size.
        patch: LR patch side.
        doc: markdown file to update.
        command: the command line quoted in the section.

    Returns:
        The comparison (``multi_branch_ms``, ``collapsed_ms``, ``speedup``, PSNRs, ``max_weight_diff``).
    """
    folders = [data_dir(d) for d in data] if data else [data_dir(None, "train", n) for n in TRAIN_SETS]
    val_dir = data_dir(val, "benchmarks", "Set5")
    torch.set_num_threads(threads)
    r = compare(model, scale, steps, folders, val_dir, batch=batch, patch=patch)
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(doc, "train-collapsed", render(r, model, scale, steps, batch, patch, command))
    return r


def render(
    r: dict[str, Any], model: str, scale: int, steps: int, batch: int, patch: int, command: str | None
) -> str:
    """The markdown section."""
    return (
        f"### Training step: collapsed vs multi-branch ({model} x{scale}, batch {batch}, LR patch {patch})\n\n"
        f"{environment_block(environment(torch.get_num_threads()), command)}\n\n"
        f"{steps} Adam steps from the same weights on the same batches (step time = process CPU time, so other "
        "work on the machine does not count); Y-PSNR on Set5 after them.\n\n"
        "| form | median ms / step | Set5 PSNR after the run |\n| --- | --- | --- |\n"
        f"| multi-branch | {r['multi_branch_ms']:.1f} | {r['multi_branch_psnr']:.3f} |\n"
        f"| collapsed | {r['collapsed_ms']:.1f} | {r['collapsed_psnr']:.3f} |\n\n"
        f"Speed-up {r['speedup']:.2f}x; largest weight difference after the run {r['max_weight_diff']:.2e}. "
        "The two forms compute the same function and their gradients agree to float rounding; Adam's "
        "normalized updates let those rounding differences grow over the run, so the two runs end at "
        "different but equally good points. The recipes train collapsed."
    )
