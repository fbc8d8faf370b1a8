"""Fuse a train-form checkpoint into a deploy-form one, checking that both compute the same function.

The fusion rules are :mod:`edge_sr.reparam`'s; this module adds the checkpoint around them (``edge-sr reparam``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edge_sr.errors import CheckpointError, ConversionError
from edge_sr.models.card import card_of
from edge_sr.models.checkpoint import inspect_checkpoint, load_checkpoint, save_checkpoint
from edge_sr.models.registry import get_entry
from edge_sr.models.stats import count_params
from edge_sr.reparam import check_equivalent, has_fusable, reparameterize

# Random inputs of the equivalence check: odd sizes and a batch of two, so borders and batching are covered.
CHECK_SIZES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 17, 23), (2, 3, 32, 24), (1, 3, 9, 40))


@dataclass(frozen=True)
class ReparamResult:
    """What ``reparameterize_checkpoint`` did."""

    src: str
    out: str
    arch: str
    scale: int
    params_train: int
    params_deploy: int
    checked: bool
    max_abs_diff: float | None
    atol: float


def reparameterize_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    check: bool = True,
    atol: float = 1e-9,
    model: str | None = None,
    scale: int | None = None,
    **overrides: Any,
) -> ReparamResult:
    """Read a train-form checkpoint, fuse it, check equivalence, write a deploy-form ``.safetensors``.

    The check runs both forms in float64 on random inputs (``CHECK_SIZES``) and fails when the largest
    absolute difference exceeds ``atol``; then nothing is written. The output is written atomically.

    Args:
        src: train-form checkpoint: edge-sr, or any file ``load_checkpoint`` reads (detected).
        out: where the deploy-form checkpoint goes.
        check: run the equivalence check before writing.
        atol: tolerance of the float64 check.
        model: zoo name, to choose among architectures for a foreign checkpoint.
        scale: the model's scale (checked against the weights).
        overrides: constructor arguments over the checkpoint's (``load_checkpoint``).

    Raises:
        CheckpointError: the checkpoint is already in deploy form or cannot be read.
        ConversionError: the fused model differs from the train-form one.
    """
    src_p = Path(src)
    det = inspect_checkpoint(src_p, model=model, scale=scale, **overrides)
    if not get_entry(det.arch).reparameterizable:
        raise CheckpointError(src_p, f"{det.arch} has no re-parameterizable blocks; nothing to fuse")
    if det.form == "deploy":
        raise CheckpointError(src_p, "already fused (form: deploy); use it as it is")
    net = load_checkpoint(src_p, model=model, scale=scale, **overrides)
    card = card_of(net)
    if not has_fusable(net):
        raise CheckpointError(src_p, f"{card.arch} has no re-parameterizable blocks; nothing to fuse")
    # Fuse in float64 (the kernel products lose nothing), check there, store float32.
    net64 = copy.deepcopy(net).double()
    deploy64 = reparameterize(net64)
    diff: float | None = None
    if check:
        gen = torch.Generator().manual_seed(0)
        sizes = [(n, card.colors, h, w) for n, _, h, w in CHECK_SIZES]
        xs = [torch.rand(s, generator=gen, dtype=torch.float64) for s in sizes]
        rep = check_equivalent(net64, deploy64, xs, atol)
        diff = rep.max_abs_diff
        if not rep.passed:
            raise ConversionError(src_p, f"deploy form differs by {diff:.3g} > {atol:g}; nothing was written")
    deploy = deploy64.float()  # the card came along with form "deploy"
    save_checkpoint(deploy, out)
    return ReparamResult(
        src=str(src_p),
        out=str(out),
        arch=card.arch,
        scale=card.scale,
        params_train=count_params(net),
        params_deploy=count_params(deploy),
        checked=check,
        max_abs_diff=diff,
        atol=atol,
    )
