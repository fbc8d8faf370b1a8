"""BatchNorm for re-parameterizable SR nets, with RepSR's fix for the train / inference mismatch.

RepSR (Wang, Dong, Shan, 2022) finds that BatchNorm inside the training-time branches helps SR nets, but that
normalizing with mini-batch statistics while inference uses population statistics produces artifacts. Its
remedy: train with mini-batch statistics as usual, then for the final training period switch every BN to
its population statistics, so the net is fine-tuned in the very form that is folded into the deploy convs.

What edge-sr implements, exactly:

* ``FreezableBatchNorm2d`` is ``nn.BatchNorm2d`` plus a ``frozen`` flag. While frozen, the layer stays in
  eval behaviour even when the model is put in train mode: it normalizes with ``running_mean`` /
  ``running_var`` and no longer updates them; its affine ``weight`` / ``bias`` still receive gradients.
* ``freeze_batchnorm(model, frozen=True)`` sets that flag on every ``BatchNorm2d`` of a model (a plain
  ``nn.BatchNorm2d`` is switched to the subclass in place: same state, same keys). The trainer calls it at
  the start of the final stage; ``frozen=False`` undoes it.
* The statistics used while frozen are the running averages accumulated during the first stage (momentum
  0.1); no separate pass re-estimates them.

Freezing changes nothing about fusion: ``fuse_conv_bn`` always folds the running statistics, which are
the ones a frozen layer computes with, so the frozen train-form model and its deploy form agree.
"""

from __future__ import annotations

from typing import cast

from torch import nn


class FreezableBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can be frozen to its population statistics (see the module docstring)."""

    frozen: bool = False

    def train(self, mode: bool = True) -> FreezableBatchNorm2d:
        # A frozen layer ignores model.train(): it keeps normalizing with (and no longer updates) running stats.
        return super().train(mode and not self.frozen)


def freeze_batchnorm(model: nn.Module, frozen: bool = True) -> int:
    """Freeze (or unfreeze) every BatchNorm2d of ``model`` to its population statistics.

    Returns:
        The number of BatchNorm layers changed.
    """
    n = 0
    for m in model.modules():
        if not isinstance(m, nn.BatchNorm2d):
            continue
        if not isinstance(m, FreezableBatchNorm2d):
            m.__class__ = FreezableBatchNorm2d  # adds behaviour only: no new state, same state-dict keys
        bn = cast(FreezableBatchNorm2d, m)
        bn.frozen = frozen
        bn.train(model.training)
        n += 1
    return n
