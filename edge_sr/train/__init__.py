"""Training: configs, the loop, losses, EMA, checkpoints, resume, DDP."""

from __future__ import annotations

from edge_sr.train.config import TrainConfig, apply_overrides, load_config, save_config
from edge_sr.train.ddp import launch
from edge_sr.train.init import InitReport, init_from
from edge_sr.train.loop import TrainResult, export_run_summary, train

__all__ = [
    "InitReport",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "export_run_summary",
    "init_from",
    "launch",
    "load_config",
    "save_config",
    "train",
]
