"""Small pieces of the training loop: losses, learning-rate schedule, EMA."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from edge_sr.train.config import OptimConfig


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def charbonnier_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """sqrt((x - y)² + eps²), the smooth L1 used by LapSRN / SwinIR's real-world recipes."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def lr_factor(it: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the base LR at iteration ``it``: linear warm-up, then cosine / multistep / constant."""
    if cfg.warmup_iters and it < cfg.warmup_iters:
        return (it + 1) / cfg.warmup_iters
    if cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_iters)
        t = min(1.0, (it - cfg.warmup_iters) / span)
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(it >= m for m in cfg.milestones)
    return 1.0


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


class EMA:
    """Exponential moving average of a model's parameters and buffers (``decay`` per step)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_sd = self.model.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema_sd[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                ema_sd[k].copy_(v)
