"""Quantization-aware training of a video model's step inside ``edge-sr train`` (the ``qat`` section).

The float step (its ``--init`` weights loaded) is replaced by its fake-quant PT2E graph for the target
(:func:`edge_sr.quantize.stream.prepare_stream_qat`: every state output annotated, observers calibrated on
``qat.calib`` streamed in order at the training patch size), and the loop trains that graph through the same
unrolled recurrence, loss and schedule as the float model. The observers stop after
``qat.freeze_observers_after`` of the steps. At the end the graph is traced again at the artifact's frame size
(``qat.input_size``; the training patch is smaller and the traced graph fixes the size) with the trained
weights and scales, its state pairs share one scale and zero point, and it is exported in INT8
(:func:`edge_sr.quantize.stream.finish_stream_qat`).

A QAT run writes no float checkpoints (``last`` / ``best`` would hold fake-quant graph weights); it cannot be
resumed, has no EMA, and runs in one process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from edge_sr.errors import ConfigError
from edge_sr.train.config import TrainConfig

__all__ = ["check_qat", "finish_qat", "freeze_step", "prepare_qat"]


def check_qat(cfg: TrainConfig, *, video: bool, resume: bool, world: int, init: str | None) -> None:
    """Refuse what a QAT run cannot do, before anything is built.

    Raises:
        ConfigError: an image model (``edge-sr quantize --qat`` trains those), ``--resume``, DDP, AMP, EMA,
            no calibration source, no ``--init`` weights, or a freeze share outside (0, 1].
    """
    q = cfg.qat
    if not video:
        raise ConfigError(
            None,
            "qat.target is for video (streaming) models; QAT an image model with `edge-sr quantize --qat`",
        )
    if resume:
        raise ConfigError(None, "a QAT run cannot be resumed (its graph is not a checkpoint); start it again")
    if world > 1 or cfg.amp:
        raise ConfigError(None, "QAT runs in one process in float32: no torchrun, amp: false")
    if cfg.ema_decay:
        raise ConfigError(None, "QAT trains the fake-quant graph itself: set ema_decay: 0")
    if not q.calib:
        raise ConfigError(None, "qat.calib is required: a Vid4-style root, LR clip folders or a video file")
    if not init:
        raise ConfigError(None, "QAT fine-tunes a trained model: pass --init CKPT")
    if not 0 < q.freeze_observers_after <= 1:
        raise ConfigError(
            None, f"qat.freeze_observers_after must be in (0, 1], not {q.freeze_observers_after}"
        )


def _spec(cfg: TrainConfig) -> Any:
    from edge_sr.quantize import QuantSpec

    q = cfg.qat
    return QuantSpec(int8_io=q.int8_io, keep_float=tuple(q.keep_float), mode=q.mode)


def _sequences(cfg: TrainConfig, model: nn.Module, size: tuple[int, int]) -> Any:
    from edge_sr.models import card_of
    from edge_sr.quantize.sequences import load_sequences

    q, card = cfg.qat, card_of(model)
    assert q.calib is not None
    return load_sequences(
        q.calib,
        input_size=size,
        scale=card.scale,
        clips=q.calib_clips,
        frames=q.calib_frames,
        seed=cfg.seed,
        colors=card.colors,
    )


def prepare_qat(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """The step's fake-quant graph for ``cfg.qat.target`` at the training patch size, calibrated."""
    from edge_sr.quantize.stream import prepare_stream_qat

    p = cfg.data.patch_size
    assert cfg.qat.target is not None
    return prepare_stream_qat(model.eval(), cfg.qat.target, _sequences(cfg, model, (p, p)), _spec(cfg))


def freeze_step(cfg: TrainConfig) -> int:
    """The step after which the observers stop."""
    return math.ceil(cfg.iters * cfg.qat.freeze_observers_after)


def finish_qat(
    cfg: TrainConfig, step: nn.Module, model: nn.Module, *, init: str | None, losses: dict[str, float]
) -> Any:
    """Trace the trained step at ``qat.input_size``, share the state pairs' scales, export INT8."""
    from edge_sr.quantize.stream import finish_stream_qat, retarget_stream_qat

    q = cfg.qat
    fresh = retarget_stream_qat(step, model, _sequences(cfg, model, tuple(q.input_size)))  # type: ignore[arg-type]
    record = {
        "iters": cfg.iters,
        "lr": cfg.optim.lr,
        "batch_size": cfg.data.batch_size,
        "patch_size": cfg.data.patch_size,
        "frames": cfg.data.video.frames,
        "freeze_observers_after": q.freeze_observers_after,
        "init": init,
        "run_dir": cfg.out_dir,
        **losses,
    }
    out = Path(q.output) if q.output else Path(cfg.out_dir)
    return finish_stream_qat(fresh.eval(), out=out, source=init, qat=record)  # type: ignore[arg-type]
