"""Structural re-parameterization: multi-branch training blocks folded into plain convolutions.

``reparameterize(model)`` replaces, outermost first, every submodule that has a ``fuse()`` method with the
module that method returns, and returns a model of plain ``Conv2d`` + activations + pixel shuffle. Fusion is
this explicit step only: no ``forward`` in edge-sr switches path on ``self.training``.

The fusion rules themselves live in :mod:`edge_sr.reparam.rules`, one small function each (BatchNorm
folding with the layer's own eps, 1x1 -> kxk and kxk -> 1x1 merges, identity, parallel sums, ECB's edge
filters, the RepSR block, SPAN's Conv3XC). :mod:`edge_sr.reparam.batchnorm` holds RepSR's remedy for the
BatchNorm train / inference mismatch (``freeze_batchnorm``). This package needs only torch: turning a
checkpoint into a checked deploy-form one lives with the checkpoints, in :mod:`edge_sr.models.deploy`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edge_sr.reparam.batchnorm import FreezableBatchNorm2d, freeze_batchnorm
from edge_sr.reparam.rules import (
    conv3xc,
    conv_from,
    depthwise_to_dense,
    edge_filter_branch,
    expand_squeeze_bn,
    fuse_conv_bn,
    identity_bn,
    identity_kernel,
    merge_1x1_kxk,
    merge_kxk_1x1,
    pad_kernel,
    pad_with_bias,
    repeat_identity_kernel,
    repsr_block,
    sum_branches,
)

CARD_ATTR = "edge_sr_card"
"""The attribute holding a model's card (``edge_sr.models.ModelCard``); fusion keeps it, with form "deploy"."""

__all__ = [
    "CARD_ATTR",
    "EquivalenceReport",
    "FreezableBatchNorm2d",
    "check_equivalent",
    "conv3xc",
    "conv_from",
    "depthwise_to_dense",
    "edge_filter_branch",
    "expand_squeeze_bn",
    "freeze_batchnorm",
    "fuse_conv_bn",
    "has_fusable",
    "identity_bn",
    "identity_kernel",
    "merge_1x1_kxk",
    "merge_kxk_1x1",
    "pad_kernel",
    "pad_with_bias",
    "repeat_identity_kernel",
    "reparameterize",
    "repsr_block",
    "sum_branches",
]


def has_fusable(model: nn.Module) -> bool:
    """True when any submodule (or the model itself) still has a ``fuse()`` method: a train-form model."""
    return any(callable(getattr(m, "fuse", None)) for m in model.modules())


def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if callable(getattr(child, "fuse", None)):
            setattr(module, name, child.fuse())  # type: ignore[operator]
        else:
            _fuse_children(child)


@torch.no_grad()
def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy form of ``model`` (a copy unless ``inplace``), in eval mode.

    BatchNorm layers are folded with their running statistics, so the result equals the eval-mode
    train-form model. The model card (attribute ``CARD_ATTR``) carries over with ``form="deploy"``.
    """
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    card = getattr(m, CARD_ATTR, None)
    if callable(getattr(m, "fuse", None)):
        m = m.fuse()  # type: ignore[operator]
    _fuse_children(m)
    if dataclasses.is_dataclass(card) and not isinstance(card, type):
        # the card is a frozen dataclass defined above this package: a changed copy, never an edit
        setattr(m, CARD_ATTR, dataclasses.replace(card, form="deploy"))
    return m.eval()


@dataclass(frozen=True)
class EquivalenceReport:
    max_abs_diff: float
    shapes: tuple[tuple[int, ...], ...]
    atol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol


@torch.no_grad()
def check_equivalent(a: nn.Module, b: nn.Module, inputs: Iterable[Tensor], atol: float) -> EquivalenceReport:
    """Run both models (eval mode) on every input and report the largest absolute output difference."""
    a.eval()
    b.eval()
    worst = 0.0
    shapes = []
    for x in inputs:
        ya, yb = a(x), b(x)
        if ya.shape != yb.shape:
            raise AssertionError(f"output shapes differ: {tuple(ya.shape)} vs {tuple(yb.shape)}")
        worst = max(worst, (ya - yb).abs().max().item())
        shapes.append(tuple(x.shape))
    return EquivalenceReport(worst, tuple(shapes), atol)
