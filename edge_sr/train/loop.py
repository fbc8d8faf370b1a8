"""The training loop: one function, ``train(cfg)``, deterministic and resumable.

Sample ``k`` of the whole run is ``dataset[k]`` (image, crop and flips are a function of the seed and
``k``), the batch augmentations of step ``t`` draw from a generator seeded with ``(seed, t)``, so a run
stopped and resumed at any saved step produces the same weights as one run straight through. Under
``torchrun`` each rank takes its own slice of every global batch and DDP averages the gradients.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from edge_sr.data.augment import augment_batch
from edge_sr.data.datasets import HRFolderDataset, PairedFolderDataset, find_images
from edge_sr.errors import ConfigError
from edge_sr.io_utils import atomic_path
from edge_sr.models.checkpoint import save_checkpoint
from edge_sr.models.registry import create_model
from edge_sr.train.config import TrainConfig, save_config, to_dict
from edge_sr.train.init import init_from
from edge_sr.train.parts import EMA, charbonnier_loss, l1_loss, lr_factor, make_optimizer
from edge_sr.train.state import load_training_state, save_training_state
from edge_sr.train.validate import holdout_split, load_val_dir, make_val_images, validate

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_psnr: float | None
    best_step: int | None
    seconds: float
    interrupted: bool = False
    ranks_in_sync: bool | None = None  # under DDP: every rank ended with identical weights


class _StepSampler(Sampler[int]):
    """Indices of this rank's share of global batches ``start .. stop - 1``."""

    def __init__(self, start: int, stop: int, batch: int, rank: int, world: int) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self):  # type: ignore[no-untyped-def]
        for step in range(self.start, self.stop):
            base = (step * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _build_data(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    d, scale = cfg.data, cfg.model.scale
    common = {
        "scale": scale,
        "patch_size": d.patch_size,
        "augment": d.augment,
        "seed": cfg.seed,
        "skip_small": d.skip_small,
    }
    held: list[Path] = []
    if d.paired:
        dataset: Any = PairedFolderDataset(d.paired, length=1 << 62, **common)
    else:
        if not d.train_folders:
            raise ConfigError(None, "data.train_folders is empty (or set data.paired)")
        files = [f for folder in d.train_folders for f in find_images(folder)]
        _, held = holdout_split(files, d.holdout)
        dataset = HRFolderDataset(d.train_folders, length=1 << 62, exclude=held, **common)
    if d.val_dir:
        val = load_val_dir(d.val_dir, scale, d.val_max_size)
    else:
        val = make_val_images(held, scale, d.val_max_size)
    return dataset, val


def _loss_fn(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    if cfg.loss == "charbonnier":
        return lambda a, b: charbonnier_loss(a, b, cfg.charbonnier_eps)
    return l1_loss


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    init: str | None = None,
    progress: bool = True,
    until: int | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; checkpoints, logs and the resolved config go to ``cfg.out_dir``.

    Args:
        resume: continue from ``out_dir``'s last checkpoint (bit-exact: same weights as an uninterrupted run).
        init: start from the matching tensors of this checkpoint (ignored on resume).
        until: stop (and save) after this step, keeping the schedule of ``cfg.iters``.
    """
    rank, world = _dist_info()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.out_dir)
    device = torch.device(cfg.device)
    model = create_model(cfg.model.name, scale=cfg.model.scale, **cfg.model.args)  # validates the name first
    dataset, val_images = _build_data(cfg)  # every data error is raised before training starts
    init_report = None
    if init and not resume:
        init_report = init_from(model, init)
        logger.info(
            "init from %s: loaded %d tensors, new %d", init, len(init_report.loaded), len(init_report.new)
        )
    model.to(device).train()
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    optimizer = make_optimizer(model, cfg.optim)
    step, best = 0, {"psnr": None, "step": None}
    if resume:
        step, best = load_training_state(
            run, model=model, ema_model=ema.model if ema else None, optimizer=optimizer
        )
    arch, args = cfg.model.name, {"scale": cfg.model.scale, **cfg.model.args}
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run / "config.yaml")
        if init_report is not None:  # which tensors came from --init and which started fresh
            with atomic_path(run / "init.json") as tmp:
                tmp.write_text(
                    json.dumps(
                        {
                            "init": str(init),
                            "loaded": init_report.loaded,
                            "new": init_report.new,
                            "ignored": init_report.ignored,
                        },
                        indent=1,
                    )
                )
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    loss_fn = _loss_fn(cfg)
    stop = min(cfg.iters, until) if until else cfg.iters
    sampler = _StepSampler(step, stop, cfg.data.batch_size, rank, world)
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=cfg.data.workers,
        persistent_workers=False,
        drop_last=False,
    )
    log_path = run / "metrics.jsonl"
    bar = _progress(step, cfg.iters, enabled=progress and rank == 0)
    t0, interrupted, last_val = time.time(), False, best.get("psnr")
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None

    def save() -> None:
        if rank == 0:
            save_training_state(
                run,
                model=model,
                ema_model=ema.model if ema else None,
                optimizer=optimizer,
                step=step,
                best=best,
                arch=arch,
                args=args,
            )

    try:
        for lr, hr in loader:
            if cfg.bn_freeze_at and step == cfg.bn_freeze_at:
                _freeze_bn(model)
            for group in optimizer.param_groups:
                group["lr"] = cfg.optim.lr * lr_factor(step, cfg.iters, cfg.optim)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            lr, hr = augment_batch(lr, hr, cfg.model.scale, cfg.data.augment, g)
            lr, hr = lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
                loss = loss_fn(net(lr), hr)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            record: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.iters:
                record = {
                    "step": step,
                    "loss": loss.item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_s": round(time.time() - t0, 1),
                }
            if val_images and rank == 0 and (step % cfg.val_every == 0 or step == cfg.iters):
                metrics = validate(ema.model if ema else model, val_images, cfg.model.scale, cfg.device)
                last_val = metrics["psnr"]
                record.update({"step": step, "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"]})
                if best["psnr"] is None or metrics["psnr"] > best["psnr"]:
                    best = {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "step": step}
                    save_checkpoint(
                        ema.model if ema else model,
                        run / "best.safetensors",
                        arch=arch,
                        args=args,
                        form="train",
                        extra={"step": str(step), "val_psnr": f"{metrics['psnr']:.4f}"},
                    )
            if record and rank == 0:
                _append_jsonl(log_path, record)
            if step % cfg.save_every == 0 or step == stop:
                save()
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss.item():.4f}", val=f"{last_val:.2f}" if last_val else "-", refresh=False
            )
    except KeyboardInterrupt:
        interrupted = True
        save()
        logger.warning("interrupted at step %d: checkpoint saved in %s (continue with --resume)", step, run)
    finally:
        bar.close()
    in_sync = _ranks_in_sync(model) if world > 1 else None
    return TrainResult(run, step, best.get("psnr"), best.get("step"), time.time() - t0, interrupted, in_sync)


def _ranks_in_sync(model: nn.Module) -> bool:
    """All-gather the flattened weights and compare them bit for bit across ranks."""
    flat = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _freeze_bn(model: nn.Module) -> None:
    from edge_sr import reparam

    freeze = getattr(reparam, "freeze_batchnorm", None)
    if freeze is not None:
        freeze(model, True)
    else:  # population statistics from here on
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _progress(start: int, total: int, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(
        total=total, initial=start, disable=not enabled, unit="it", dynamic_ncols=True, smoothing=0.05
    )


def export_run_summary(result: TrainResult, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "best_psnr": result.best_psnr,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 1),
        "interrupted": result.interrupted,
        "ranks_in_sync": result.ranks_in_sync,
        "config": to_dict(cfg),
    }
