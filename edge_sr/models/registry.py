"""The model registry: ``register_model`` / ``create_model`` / ``list_models``.

A registered entry is a factory ``fn(**overrides) -> nn.Module`` whose keyword arguments are the model's
constructor arguments; the registry records which family (architecture class) it builds so checkpoints can
store ``arch`` (the entry name) plus ``args`` (the overrides) and rebuild it exactly.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import nn

from edge_sr.errors import ConfigError

Kind = Literal["edge", "heavy", "video"]
F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    kind: Kind
    reparameterizable: bool


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    fn: F | None = None, *, family: str | None = None, kind: Kind = "edge", reparameterizable: bool = False
) -> Any:
    """Register a factory under its function name. Usable as ``@register_model`` or ``@register_model(...)``."""

    def deco(f: F) -> F:
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        fam = family or (f.__module__.rsplit(".", 1)[-1])
        _REGISTRY[name] = ModelEntry(name, f, fam, kind, reparameterizable)
        return f

    return deco(fn) if fn is not None else deco


def _ensure_loaded() -> None:
    # Importing the package registers every family (explicit imports, no filesystem scan).
    import edge_sr.models  # noqa: F401


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(None, f"unknown model {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(name: str, *, scale: int = 4, **overrides: Any) -> nn.Module:
    """Build a registered model carrying its :class:`~edge_sr.models.card.ModelCard`.

    The card's form is "train" while the model has blocks to fuse, "deploy" for plain architectures.

    Raises:
        ConfigError: Unknown name or keyword argument.
    """
    from edge_sr.models.card import Form, ModelCard
    from edge_sr.reparam import has_fusable

    entry = get_entry(name)
    try:
        model = entry.fn(scale=scale, **overrides)
    except TypeError as e:
        raise ConfigError(None, f"model {name!r}: {e}") from None
    form: Form = "train" if has_fusable(model) else "deploy"
    return ModelCard.from_args(name, {"scale": scale, **overrides}, form=form).attach(model)


@dataclass(frozen=True)
class ModelParam:
    """One keyword parameter of a model's constructor.

    Attributes:
        name: The keyword.
        annotation: Its type hint, resolved (``int``, ``float``, ``tuple[int, int]``, a ``Literal``...), or
            ``Any`` when the hint cannot be resolved.
        default: Its default, or ``inspect.Parameter.empty``.
    """

    name: str
    annotation: Any
    default: Any


def model_parameters(name: str) -> dict[str, ModelParam]:
    """The constructor keywords of the class the registered factory ``name`` builds.

    A factory is ``fn(**overrides) -> Class``; its return annotation names the class, whose ``__init__``
    signature says which keywords a checkpoint's ``args`` may hold and of which type.

    Raises:
        ConfigError: Unknown name.
    """
    entry = get_entry(name)
    target: Any = entry.fn
    try:
        ret = typing.get_type_hints(entry.fn).get("return")
    except Exception:  # an unresolvable hint: fall back to the factory's own signature
        ret = None
    if isinstance(ret, type) and issubclass(ret, nn.Module):
        target = ret.__init__
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    out = {}
    for p in inspect.signature(target).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = ModelParam(p.name, hints.get(p.name, Any), p.default)
    return out


def list_models(kind: Kind | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)
