"""The model zoo: a registry of SR architectures, checkpoints, and bundled weights.

Every model maps (N, 3, H, W) float in [0, 1] to (N, 3, H·scale, W·scale).
"""

from __future__ import annotations

# Explicit imports register every family (no filesystem scan).
from edge_sr.models import (  # noqa: F401
    carn,
    ecbsr,
    edsr,
    espcn,
    fsrcnn,
    hat,
    rcan,
    repsr,
    span,
    srcnn,
    srvgg,
    swinir,
)
from edge_sr.models.checkpoint import load_checkpoint, load_state_dict_file, save_checkpoint
from edge_sr.models.registry import ModelEntry, create_model, get_entry, list_models, register_model

__all__ = [
    "ModelEntry",
    "create_model",
    "get_entry",
    "list_models",
    "load_checkpoint",
    "load_state_dict_file",
    "register_model",
    "save_checkpoint",
]
