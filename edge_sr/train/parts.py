"""Small pieces of the training loop: losses, learning-rate schedule, EMA."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError
from edge_sr.metrics import YCBCR_MATRIX
from edge_sr.train.config import OptimConfig


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def charbonnier_loss(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """sqrt((x - y)² + eps²), the smooth L1 used by LapSRN / SwinIR's real-world recipes."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def ycbcr_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor], weights: tuple[float, float, float]
) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn`` on the Y, Cb and Cr planes of RGB tensors (channels at dim -3), weighted and summed.

    The SR benchmarks score the Y channel: a small RGB model trained with more weight on Y spends more of
    its capacity where it is measured, while Cb / Cr (which the eye resolves less) are still learnt.
    """

    def loss(pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape[-3] != 3:
            raise ConfigError(
                None, f"loss_ycbcr needs an RGB model; its output has {pred.shape[-3]} channels"
            )
        m = torch.from_numpy(YCBCR_MATRIX).to(pred.device, pred.dtype)  # the offsets cancel in a difference
        p, t = (torch.einsum("ij,...jhw->...ihw", m, x) for x in (pred, target.to(pred.dtype)))
        terms = [w * loss_fn(p[..., c, :, :], t[..., c, :, :]) for c, w in enumerate(weights) if w]
        return torch.stack(terms).sum()

    return loss


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
    """Adam / AdamW over the trainable parameters; with ``cfg.train_only``, only those whose names start
    with one of its prefixes (DDP's ``module.`` ignored), the others frozen (``requires_grad`` off).

    Raises:
        ConfigError: ``train_only`` names no parameter of the model.
    """
    if cfg.train_only:
        named = [(n.removeprefix("module."), p) for n, p in model.named_parameters()]
        hit = [p for n, p in named if any(n == k or n.startswith(k + ".") for k in cfg.train_only)]
        if not hit:
            raise ConfigError(
                None,
                f"optim.train_only {cfg.train_only} names no parameter of the model "
                f"(its names start with {sorted({n.split('.')[0] for n, _ in named})})",
            )
        keep = {id(p) for p in hit}
        for _, p in named:
            p.requires_grad_(id(p) in keep)
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


class Unrolled(nn.Module):
    """A streaming (video) model run over whole clips: ``(N, T, C, h, w) -> (N, T, C, h·s, w·s)``.

    Starts from the model's initial state (:func:`edge_sr.models.stream.initial_state`), feeds each step's
    state outputs to the next step, and detaches the state every ``tbptt`` frames (truncated
    back-propagation through time; 0: through the whole clip). One forward per optimizer step, so DDP
    sees the recurrent model as one module call.
    """

    def __init__(self, model: nn.Module, *, tbptt: int = 0) -> None:
        super().__init__()
        from edge_sr.models.card import card_of
        from edge_sr.models.stream import stream_spec

        spec = stream_spec(model)
        if spec is None:
            raise TypeError(f"{type(model).__name__} is not a streaming (video) model")
        card = card_of(model)
        self.model, self.spec, self.tbptt = model, spec, tbptt
        self.scale, self.colors = card.scale, card.colors

    def forward(self, clip: Tensor) -> Tensor:
        from edge_sr.models.stream import advance, initial_state

        spec = self.spec
        state = initial_state(spec, clip[:, 0], colors=self.colors, scale=self.scale)
        outs = []
        for t in range(clip.shape[1]):
            if self.tbptt and t and t % self.tbptt == 0:
                state = {k: v.detach() for k, v in state.items()}
            frames = dict(zip(spec.frames, (clip[:, t],)))
            named = dict(
                zip(spec.output_names, self.model(*frames.values(), *(state[s.name] for s in spec.state)))
            )
            state = advance(spec, frames, named)
            outs.append(named[spec.output])
        return torch.stack(outs, dim=1)
