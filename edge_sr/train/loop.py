"""The training loop: one function, ``train(cfg)``, deterministic and resumable.

Sample ``k`` of the whole run is ``dataset[k]`` (image, crop and flips are a function of the seed and
``k``), the batch augmentations of step ``t`` draw from a generator seeded with ``(seed, t)``, so a run
stopped and resumed at any saved step produces the same weights as one run straight through. Under
``torchrun`` each rank takes its own slice of every global batch and DDP averages the gradients.

A video (streaming) model trains on the same loop: samples are clips (:class:`edge_sr.data.clips.ClipDataset`,
``data.video``), the model runs unrolled over each clip from its initial state
(:class:`edge_sr.train.parts.Unrolled`, the state detached every ``data.video.tbptt`` frames), the loss
covers every frame, and validation streams synthetic sequences of the held-out still images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from edge_sr.data.augment import augment_batch
from edge_sr.data.clips import ClipDataset, FrameFolderSource, Motion, SyntheticMotionSource, VideoFileSource
from edge_sr.data.datasets import HRFolderDataset, PairedFolderDataset, RandomScaleDataset, find_images
from edge_sr.errors import ConfigError
from edge_sr.io_utils import atomic_path
from edge_sr.models.card import card_of
from edge_sr.models.registry import create_model
from edge_sr.models.stream import is_stream_model
from edge_sr.train.config import TrainConfig, save_config, to_dict
from edge_sr.train.config_checks import check_config
from edge_sr.train.distill import Distiller
from edge_sr.train.init import init_from
from edge_sr.train.parts import (
    EMA,
    Unrolled,
    charbonnier_loss,
    l1_loss,
    lr_factor,
    make_optimizer,
    ycbcr_loss,
)
from edge_sr.train.qat import check_qat, finish_qat, freeze_step, prepare_qat
from edge_sr.train.runlog import append_jsonl, ctrl_c_between_steps, progress_bar, truncate_metrics
from edge_sr.train.state import (
    disk_errors,
    load_training_state,
    remove_stale_temps,
    save_best,
    save_training_state,
)
from edge_sr.train.validate import (
    holdout_split,
    load_val_dir,
    make_val_images,
    make_val_sequences,
    validate,
)

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
    artifact: str | None = None  # a QAT run's INT8 export


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


def _build_data(cfg: TrainConfig, *, video: bool = False):  # type: ignore[no-untyped-def]
    d, scale = cfg.data, cfg.model.scale
    if video:
        return _build_video_data(cfg)
    common: dict[str, Any] = {
        "scale": scale,
        "patch_size": d.patch_size,
        "augment": d.augment,
        "seed": cfg.seed,
        "skip_small": d.skip_small,
    }
    held: list[Path] = []
    if d.scale_range:
        return _build_random_scale_data(cfg)
    if d.paired:
        dataset: Any = PairedFolderDataset(d.paired, length=1 << 62, **common)
    else:
        if not d.train_folders:
            raise ConfigError(None, "data.train_folders is empty (or set data.paired)")
        files = [f for folder in d.train_folders for f in find_images(folder)]
        _, held = holdout_split(files, d.holdout)
        dataset = HRFolderDataset(
            d.train_folders, length=1 << 62, exclude=held, hr_scales=d.hr_scales, **common
        )
    if d.val_dir:
        val = load_val_dir(d.val_dir, scale, d.val_max_size)
    else:
        val = make_val_images(held, scale, d.val_max_size)
    return dataset, val


def _build_random_scale_data(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    """Arbitrary-scale samples (:class:`RandomScaleDataset`) and validation images at the model's scale."""
    d = cfg.data
    if len(d.scale_range) != 2:
        raise ConfigError(None, f"data.scale_range is {d.scale_range}; give [min, max], e.g. [1, 4]")
    if d.paired or not d.train_folders:
        raise ConfigError(None, "data.scale_range makes LR from HR: set data.train_folders, not data.paired")
    files = [f for folder in d.train_folders for f in find_images(folder)]
    _, held = holdout_split(files, d.holdout)
    dataset = RandomScaleDataset(
        d.train_folders, scale_range=(d.scale_range[0], d.scale_range[1]), sample_q=d.sample_q,
        patch_size=d.patch_size, length=1 << 62, augment=d.augment, seed=cfg.seed, skip_small=d.skip_small,
        exclude=held,
    )  # fmt: skip
    scale = cfg.model.scale
    val = (
        load_val_dir(d.val_dir, scale, d.val_max_size)
        if d.val_dir
        else make_val_images(held, scale, d.val_max_size)
    )
    return dataset, val


def _build_video_data(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    """Clips from the weighted sources of ``data.video``; validation on synthetic sequences of held-out stills."""
    d, v, scale = cfg.data, cfg.data.video, cfg.model.scale
    batch_level = {k: getattr(d.augment, k) for k in ("mixup", "cutmix", "cutmixup", "blend", "rgb_shuffle")}
    used = [k for k, p in batch_level.items() if p]
    if used:
        raise ConfigError(None, f"data.augment.{used[0]} is not applied to video clips; set it to 0")
    if d.paired:
        raise ConfigError(None, "data.paired is for image models; a video model takes data.video sources")
    motion = Motion(**dataclasses.asdict(v.motion))
    hp = d.patch_size * scale
    files = [f for folder in d.train_folders for f in find_images(folder)]
    train_files, held = holdout_split(files, d.holdout) if files else ([], [])
    sources: list[Any] = []
    weights: list[float] = []
    if v.synthetic > 0:
        if not train_files:
            raise ConfigError(None, "data.video.synthetic > 0 needs still images in data.train_folders")
        sources.append(SyntheticMotionSource([], min_size=hp, scale=scale, motion=motion, files=train_files))
        weights.append(v.synthetic)
    if v.frame_folders_weight > 0:
        if not v.frame_folders:
            raise ConfigError(None, "data.video.frame_folders_weight > 0 needs data.video.frame_folders")
        sources.append(FrameFolderSource(v.frame_folders, min_size=hp, scale=scale))
        weights.append(v.frame_folders_weight)
    if v.video_files_weight > 0:
        if not v.video_files:
            raise ConfigError(None, "data.video.video_files_weight > 0 needs data.video.video_files")
        sources.append(
            VideoFileSource(
                v.video_files,
                min_size=hp,
                scale=scale,
                max_frames=v.video_max_frames,
                downscale=v.video_downscale,
            )
        )
        weights.append(v.video_files_weight)
    if not sources:
        raise ConfigError(
            None, "no video training source: give data.video.synthetic (or a folder / file weight) > 0"
        )
    dataset = ClipDataset(
        sources,
        weights,
        scale=scale,
        patch_size=d.patch_size,
        frames=v.frames,
        degradation=v.degradation,
        flip=d.augment.flip,
        rot90=d.augment.rot90,
        reverse=v.reverse,
        seed=cfg.seed,
    )
    if d.val_dir:
        raise ConfigError(
            None, "data.val_dir is for image models; a video model validates on data.holdout stills"
        )
    val = make_val_sequences(
        held, scale, frames=v.val_frames, max_size=d.val_max_size, degradation=v.degradation, motion=motion
    )
    return dataset, val


def _loss_fn(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    if cfg.loss == "charbonnier":
        fn = lambda a, b: charbonnier_loss(a, b, cfg.charbonnier_eps)  # noqa: E731
    else:
        fn = l1_loss
    return fn if cfg.loss_ycbcr is None else ycbcr_loss(fn, cfg.loss_ycbcr)


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
    check_config(cfg)  # every field in range before anything is built or written
    rank, world = _dist_info()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, scale=cfg.model.scale, **cfg.model.args)  # validates the name first
    video = is_stream_model(model)
    qat = cfg.qat.target is not None
    if qat:
        check_qat(cfg, video=video, resume=resume, world=world, init=init)
    dataset, val_images = _build_data(cfg, video=video)  # every data error is raised before training starts
    distiller = None
    if cfg.distill.teacher is not None:  # the teacher is read (and refused) before the run folder is written
        if video:
            raise ConfigError(None, "distill.teacher: distillation is for image models, not a video step")
        distiller = Distiller(cfg.distill, model, scale=cfg.model.scale, device=torch.device(cfg.device))
    run = _start_run(cfg, model, rank, resume=resume, init=init)
    run.distiller = distiller
    float_model = model
    if qat:  # the step's fake-quant graph trains in its place (edge_sr.train.qat)
        model = prepare_qat(cfg, model).train()
        run.model, run.qat, run.optimizer = model, True, make_optimizer(model, cfg.optim)
        val_images = []  # the graph is traced at the patch size; `edge-sr verify` judges the artifact
    freeze_at, losses = freeze_step(cfg), []
    # a video model trains on whole clips: the unrolled recurrence is the module DDP wraps
    net: nn.Module = Unrolled(model, tbptt=cfg.data.video.tbptt) if video else model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    stop = min(cfg.iters, until) if until else cfg.iters
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        sampler=_StepSampler(run.step, stop, cfg.data.batch_size, rank, world),
        num_workers=cfg.data.workers,
        persistent_workers=False,
        drop_last=False,
    )
    bar = progress_bar(run.step, cfg.iters, enabled=progress and rank == 0)
    t0, interrupted, last_val = time.time(), False, run.best.get("psnr")
    loss_fn = _loss_fn(cfg)
    try:
        with ctrl_c_between_steps() as asked:
            for lr, hr in loader:
                loss = _train_step(run, net, lr, hr, loss_fn)
                if qat:
                    losses.append(loss.item())
                    if run.step == freeze_at:
                        from torchao.quantization.pt2e import disable_observer

                        model.apply(disable_observer)
                val = _after_step(run, loss, val_images, stop, t0)
                last_val = val if val is not None else last_val
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss.item():.4f}", val=f"{last_val:.2f}" if last_val else "-", refresh=False
                )
                if asked:  # Ctrl-C: the step is complete, so the checkpoint is one of the straight run
                    interrupted = True
                    run.save()
                    logger.warning(
                        "interrupted at step %d: checkpoint saved in %s (continue with --resume)",
                        run.step,
                        run.dir,
                    )
                    break
    finally:
        bar.close()
    in_sync = _ranks_in_sync(model) if world > 1 else None
    artifact = None
    if qat and not interrupted and run.step == cfg.iters:
        n = max(1, len(losses) // 10)
        record = {"loss_first": float(np.mean(losses[:n])), "loss_last": float(np.mean(losses[-n:]))}
        artifact = str(finish_qat(cfg, model, float_model, init=init, losses=record).path)
    best = run.best
    return TrainResult(
        run.dir,
        run.step,
        best.get("psnr"),
        best.get("step"),
        time.time() - t0,
        interrupted,
        in_sync,
        artifact,
    )


@dataclass
class _Run:
    """What one run trains and where it writes; ``step`` and ``best`` advance as it goes."""

    cfg: TrainConfig
    dir: Path
    device: torch.device
    model: nn.Module
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    rank: int
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"psnr": None, "step": None})
    qat: bool = False  # the model is a fake-quant graph: no checkpoints (edge_sr.train.qat)
    distiller: Distiller | None = None  # the teacher's terms of the loss (edge_sr.train.distill)

    @property
    def arch_args(self) -> tuple[str, dict[str, Any]]:
        """The registry name and constructor arguments the checkpoints store."""
        card = card_of(self.model)
        return card.arch, dict(card.args)

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and ``best.safetensors`` keeps: the EMA when on."""
        return self.ema.model if self.ema else self.model

    def save(self) -> None:
        """``last*`` checkpoints and the resume state (rank 0 only; none for a QAT graph)."""
        if self.rank == 0 and not self.qat:
            arch, args = self.arch_args
            save_training_state(
                self.dir,
                model=self.model,
                ema_model=self.ema.model if self.ema else None,
                optimizer=self.optimizer,
                scaler=self.scaler,
                step=self.step,
                best=self.best,
                arch=arch,
                args=args,
            )


def _start_run(cfg: TrainConfig, model: nn.Module, rank: int, *, resume: bool, init: str | None) -> _Run:
    """Initial weights (``init``), EMA, optimizer and resumed state; rank 0 writes the run folder's header."""
    init_report = None
    if init and not resume:
        init_report = init_from(model, init)
        logger.info(
            "init from %s: loaded %d tensors, new %d", init, len(init_report.loaded), len(init_report.new)
        )
    device = torch.device(cfg.device)
    model.to(device).train()
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    run = _Run(cfg, Path(cfg.out_dir), device, model, ema, make_optimizer(model, cfg.optim), scaler, rank)
    stale_exports = False
    if resume:
        arch, args = run.arch_args
        state = load_training_state(
            run.dir,
            model=model,
            ema_model=ema.model if ema else None,
            optimizer=run.optimizer,
            scaler=scaler,
            arch=arch,
            args=args,
        )
        run.step, run.best, stale_exports = state.step, state.best, state.exports_stale
        if cfg.bn_freeze_at and run.step > cfg.bn_freeze_at:  # frozen before the save; the step hook is past
            _freeze_bn(model)
    if rank == 0:
        with disk_errors(run.dir, "the run folder"):
            run.dir.mkdir(parents=True, exist_ok=True)
            gone = remove_stale_temps(run.dir)
            if gone:
                logger.info(
                    "removed %d temporary files of an interrupted save: %s", len(gone), ", ".join(gone)
                )
            save_config(cfg, run.dir / "config.yaml")
            truncate_metrics(run.dir / "metrics.jsonl", run.step)  # what a killed run logged past its save
        if stale_exports:  # a kill between resume.pt and last*.safetensors: write them from the restored step
            run.save()
        if init_report is not None:  # which tensors came from --init and which started fresh
            with disk_errors(run.dir / "init.json", "init.json"), atomic_path(run.dir / "init.json") as tmp:
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
    return run


def _train_step(
    run: _Run,
    net: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One optimizer step on a (LR, HR) batch: schedule, augmentation, forward, backward, EMA; returns the loss."""
    cfg, model, optimizer, step, scaler = run.cfg, run.model, run.optimizer, run.step, run.scaler
    if cfg.bn_freeze_at and step == cfg.bn_freeze_at:
        _freeze_bn(model)
    for group in optimizer.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(step, cfg.iters, cfg.optim)
    if hr.dim() == 3:  # query points of an arbitrary-scale model (N, Q, centre 2 + cell 2 + RGB 3)
        lr, hr = lr.to(run.device), hr.to(run.device)
        with torch.autocast(run.device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = loss_fn(net(lr, coord=hr[..., :2], cell=hr[..., 2:4]), hr[..., 4:])
        return _optimize(run, loss)
    if lr.dim() == 4:  # image batches; clips (N, T, C, h, w) are augmented per clip by the dataset
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        lr, hr = augment_batch(lr, hr, cfg.model.scale, cfg.data.augment, g)
    lr, hr = lr.to(run.device, non_blocking=True), hr.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=scaler is not None):
        if run.distiller is not None:
            loss = run.distiller.loss(net, lr, hr, loss_fn)
        else:
            loss = loss_fn(net(lr), hr)
    return _optimize(run, loss)


def _optimize(run: _Run, loss: torch.Tensor) -> torch.Tensor:
    """Backward, clip, step, EMA and the step count for ``loss``; returns it."""
    cfg, model, optimizer, scaler = run.cfg, run.model, run.optimizer, run.scaler
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
    if run.ema is not None:
        run.ema.update(model)
    run.step += 1
    return loss


def _after_step(run: _Run, loss: torch.Tensor, val_images: list[Any], stop: int, t0: float) -> float | None:
    """Log, validate (keeping the best weights) and save as the schedule says; the validation PSNR or None."""
    cfg, step = run.cfg, run.step
    record: dict[str, Any] = {}
    if step % cfg.log_every == 0 or step == cfg.iters:
        record = {
            "step": step,
            "loss": loss.item(),
            "lr": run.optimizer.param_groups[0]["lr"],
            "elapsed_s": round(time.time() - t0, 1),
        }
    val = None
    if val_images and run.rank == 0 and (step % cfg.val_every == 0 or step == cfg.iters):
        metrics = validate(run.eval_model, val_images, cfg.model.scale, cfg.device)
        val = metrics["psnr"]
        record.update({"step": step, "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"]})
        if run.best["psnr"] is None or metrics["psnr"] > run.best["psnr"]:
            run.best = {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "step": step}
            arch, args = run.arch_args
            save_best(run.dir, run.eval_model, arch=arch, args=args, step=step, psnr=metrics["psnr"])
    if record and run.rank == 0:
        append_jsonl(run.dir / "metrics.jsonl", record)
    if step % cfg.save_every == 0 or step == stop:
        run.save()
    return val


def _ranks_in_sync(model: nn.Module) -> bool:
    """All-gather the flattened weights and compare them bit for bit across ranks."""
    flat = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _freeze_bn(model: nn.Module) -> None:
    """BatchNorm uses its population statistics from here on (RepSR's remedy, ``freeze_batchnorm``)."""
    from edge_sr.reparam import freeze_batchnorm

    freeze_batchnorm(model, True)


def export_run_summary(result: TrainResult, cfg: TrainConfig) -> dict[str, Any]:
    """The JSON summary of a run (``edge-sr train --json``): the result and the resolved config."""
    return {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "best_psnr": result.best_psnr,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 1),
        "interrupted": result.interrupted,
        "ranks_in_sync": result.ranks_in_sync,
        "artifact": result.artifact,
        "config": to_dict(cfg),
    }
