"""Training checkpoints: weights as ``.safetensors`` plus a state file for an exact resume.

``<run>/last.safetensors``   model weights (arch, args, scale, form in the metadata)
``<run>/last_ema.safetensors`` EMA weights (when EMA is on)
``<run>/last.state.pt``      optimizer, EMA, step, RNG state, best score: tensors and plain values only,
                             read back with ``torch.load(weights_only=True)``
``<run>/best.safetensors``   the weights (EMA if on) with the best validation PSNR
Every file is written to a temporary name, then renamed; the state file is renamed last, so a kill in the
middle of a save leaves the previous complete checkpoint in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sr.errors import CheckpointError
from edge_sr.io_utils import atomic_path
from edge_sr.models.checkpoint import load_into, load_state_dict_file, save_checkpoint


def save_training_state(
    run: Path,
    *,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    step: int,
    best: dict[str, Any],
    arch: str,
    args: dict[str, Any],
) -> None:
    save_checkpoint(
        model, run / "last.safetensors", arch=arch, args=args, form="train", extra={"step": str(step)}
    )
    if ema_model is not None:
        save_checkpoint(
            ema_model,
            run / "last_ema.safetensors",
            arch=arch,
            args=args,
            form="train",
            extra={"step": str(step)},
        )
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "best": best,
    }
    with atomic_path(run / "last.state.pt") as tmp:
        torch.save(state, tmp)


def load_training_state(
    run: Path, *, model: nn.Module, ema_model: nn.Module | None, optimizer: torch.optim.Optimizer
) -> tuple[int, dict[str, Any]]:
    """Restore a run saved by ``save_training_state``; returns (step, best)."""
    state_path = run / "last.state.pt"
    if not state_path.is_file():
        raise CheckpointError(run, "nothing to resume: no last.state.pt in the run folder")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(state_path, f"cannot read training state ({e})") from None
    load_into(model, load_state_dict_file(run / "last.safetensors"), run / "last.safetensors")
    if ema_model is not None:
        ema_path = run / "last_ema.safetensors"
        load_into(ema_model, load_state_dict_file(ema_path), ema_path)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), dict(state["best"])
