"""Run ``train`` as one rank of a process group when launched by ``torchrun``.

Under ``torchrun --nproc_per_node N -m edge_sr.cli train ...`` (``WORLD_SIZE`` > 1) the process group is set up
here, gloo on CPU and NCCL on CUDA (each rank on its ``LOCAL_RANK`` device), and each rank trains its share of
every global batch. A plain process trains alone.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from edge_sr.train.config import TrainConfig
from edge_sr.train.loop import TrainResult, train


def world_size() -> int:
    """The number of ranks ``torchrun`` started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch(
    cfg: TrainConfig, *, resume: bool = False, init: str | None = None, progress: bool = True
) -> TrainResult:
    """Train ``cfg``, inside a process group when launched by ``torchrun``.

    Under NCCL ``cfg.device`` becomes this rank's ``cuda:LOCAL_RANK``. The group is torn down afterwards,
    also when training fails.

    Args:
        cfg: The run's configuration.
        resume: Continue from ``cfg.out_dir``'s last checkpoint.
        init: Start from the matching tensors of this checkpoint.
        progress: Show a progress bar (rank 0).
    """
    if world_size() <= 1:
        return train(cfg, resume=resume, init=init, progress=progress)
    backend = "nccl" if cfg.device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        cfg.device = f"cuda:{local}"
    try:
        return train(cfg, resume=resume, init=init, progress=progress)
    finally:
        dist.destroy_process_group()
