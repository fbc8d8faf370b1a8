"""Backends behind ``edge_sr.runtime.load``: which runner opens which file.

Artifact runners come from the target modules of ``edge_sr.convert`` (each format's module owns its runner);
checkpoints run in torch. Every backend exposes ``forward(x) -> y`` on arrays in the artifact's own layout
and dtype; ``edge_sr.runtime.Runner`` adds layout, value range, int8 quantization and tiling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sr.errors import RuntimeBackendError
from edge_sr.models.checkpoint import CHECKPOINT_SUFFIXES


class TorchBackend:
    """An eager model (from a checkpoint, or given) as a backend: NCHW float32 in and out."""

    def __init__(self, model: torch.nn.Module, *, path: str | os.PathLike[str] | None = None) -> None:
        self.model = model.eval()
        self.path = Path(path) if path else None
        self.input_names = ["input"]
        self.output_names = ["output"]

    @torch.no_grad()
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def open_backend(
    path: Path,
    target: str | None,
    *,
    threads: int | None = None,
    scale: int | None = None,
    model: str | None = None,
) -> Any:
    """The backend for ``path``: a target module's runner, or torch for a checkpoint."""
    from edge_sr.convert import suffixes, target_module

    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        from edge_sr.models import load_checkpoint

        return TorchBackend(load_checkpoint(path, model=model, scale=scale), path=path)
    if target is None:
        kinds = ", ".join([*sorted(suffixes()), *CHECKPOINT_SUFFIXES])
        raise RuntimeBackendError(path, f"unknown artifact kind; expected one of {kinds}")

    return target_module(target).Runner(path, threads=threads)
