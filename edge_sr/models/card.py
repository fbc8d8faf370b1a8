"""The model card: what a model is, carried on the module as one frozen value.

``create_model`` and ``load_checkpoint`` attach a :class:`ModelCard`; ``edge_sr.reparam.reparameterize`` keeps
it (with ``form="deploy"``); checkpoints store it in their metadata and manifests copy it. Readers ask
``card_of(model)`` instead of guessing the scale from an attribute or a forward pass::

    card = card_of(model)                                   # ConfigError when the module has none
    deploy_card = dataclasses.replace(card, form="deploy")  # a changed copy; cards never change in place
    deploy_card.attach(fused)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from edge_sr.errors import ConfigError
from edge_sr.reparam import CARD_ATTR

Form = Literal["train", "deploy"]

__all__ = ["CARD_ATTR", "Form", "ModelCard", "card_of", "carry_card", "has_card"]


@dataclass(frozen=True)
class ModelCard:
    """The identity of a model: enough to rebuild it (``create_model(card.arch, **card.args)``) and use it.

    Attributes:
        arch: The registry name, e.g. ``"ecbsr_m4c16"``.
        args: The constructor keyword arguments, ``scale`` included (a private copy; treat it as read-only).
        scale: The upscaling factor: (N, C, H, W) -> (N, C, H·scale, W·scale).
        form: ``"train"`` (multi-branch blocks) or ``"deploy"`` (fused, plain convolutions).
        colors: Colour channels in and out: 3 for RGB models, 1 for Y-channel ones.
        source: The checkpoint the weights came from, or None.
    """

    arch: str
    args: Mapping[str, Any]
    scale: int
    form: Form = "train"
    colors: int = 3
    source: str | None = None

    def __post_init__(self) -> None:
        # a private copy: the caller's dict can change without changing the card (a plain dict, so models
        # that carry the card still deep-copy and pickle)
        object.__setattr__(self, "args", dict(self.args))

    @classmethod
    def from_args(
        cls, arch: str, args: Mapping[str, Any], *, form: Form = "train", source: str | None = None
    ) -> ModelCard:
        """The card of ``create_model(arch, **args)``: scale and colour channels read from ``args``."""
        return cls(
            arch=arch,
            args=args,
            scale=int(args.get("scale", 4)),
            form=form,
            colors=int(args.get("colors", 3)),
            source=source,
        )

    def attach(self, model: nn.Module) -> nn.Module:
        """Store this card on ``model`` (replacing any earlier one) and return the model."""
        setattr(model, CARD_ATTR, self)
        return model


def has_card(model: object) -> bool:
    """True when ``model`` carries a :class:`ModelCard`."""
    return isinstance(getattr(model, CARD_ATTR, None), ModelCard)


def card_of(model: object) -> ModelCard:
    """The card ``model`` carries.

    Raises:
        ConfigError: The module has none (build it with ``create_model`` / ``load_checkpoint``, or attach a
            ``ModelCard``).
    """
    card = getattr(model, CARD_ATTR, None)
    if not isinstance(card, ModelCard):
        raise ConfigError(
            None,
            f"{type(model).__name__} has no model card; build it with create_model or load_checkpoint, "
            "or attach one with ModelCard(...).attach(model)",
        )
    return card


def carry_card(src: object, dst: nn.Module) -> nn.Module:
    """Copy the card of ``src`` (when it has one) onto ``dst`` and return ``dst``."""
    if has_card(src):
        card_of(src).attach(dst)
    return dst
