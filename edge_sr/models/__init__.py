"""The model zoo: a registry of SR architectures, checkpoints, the model card, and bundled weights.

Every model maps (N, C, H, W) float in [0, 1] to (N, C, H·scale, W·scale), C being its card's ``colors``.
"""

from __future__ import annotations

# Explicit imports register every family (no filesystem scan).
from edge_sr.models import (  # noqa: F401
    act,
    basicvsr,
    basicvsrpp,
    carn,
    craft,
    dat,
    deform,
    dipnet,
    ecbsr,
    ecbvsr,
    edsr,
    edvr,
    espcn,
    esrt,
    fsrcnn,
    hat,
    imdn,
    lbnet,
    liif,
    pan,
    rcan,
    repsr,
    rlfn,
    rrn,
    safmn,
    span,
    spynet,
    srcnn,
    srformer,
    srvgg,
    swinfir,
    swinir,
)
from edge_sr.models.card import ModelCard, card_of, carry_card, has_card
from edge_sr.models.checkpoint import load_checkpoint, load_state_dict_file, save_checkpoint
from edge_sr.models.deploy import ReparamResult, reparameterize_checkpoint
from edge_sr.models.registry import ModelEntry, create_model, get_entry, list_models, register_model

__all__ = [
    "ModelCard",
    "ModelEntry",
    "ReparamResult",
    "card_of",
    "carry_card",
    "create_model",
    "get_entry",
    "has_card",
    "list_models",
    "load_checkpoint",
    "load_state_dict_file",
    "register_model",
    "reparameterize_checkpoint",
    "save_checkpoint",
]
