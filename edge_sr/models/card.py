"""The model card: what a model is, carried on the module as one frozen value.

``create_model`` and ``load_checkpoint`` attach a :class:`ModelCard`; ``edge_sr.reparam.reparameterize`` keeps
it (with ``form="deploy"``); checkpoints store it in their metadata and manifests copy it. Readers ask
``card_of(model)`` instead of guessing the scale from an attribute or a forward pass::

    card = card_of(model)                                   # ConfigError when the module has none
    deploy_card = dataclasses.replace(card, form="deploy")  # a changed copy; cards never change in place
    deploy_card.attach(fused)
"""

from __future__ import annotations

import collections.abc
import difflib
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.reparam import CARD_ATTR

Form = Literal["train", "deploy"]

__all__ = [
    "CARD_ATTR",
    "COLORS",
    "FORMS",
    "MAX_COUNT",
    "SCALES",
    "Form",
    "ModelCard",
    "card_of",
    "carry_card",
    "check_args",
    "check_metadata",
    "has_card",
]

FORMS: tuple[Form, ...] = ("train", "deploy")
SCALES = range(1, 9)  # the factors any card may name; an architecture's constructor may allow fewer
COLORS = (1, 3)
MAX_COUNT = 4096  # channels, features, blocks, heads, window and kernel sizes: 1 .. MAX_COUNT
_MAX_FLOAT = 1e6  # ratios, ranges and multipliers: finite, 0 .. _MAX_FLOAT
_MAX_ITEMS = 64  # entries of a list argument (depths, num_heads, kernel_sizes)
_MAX_STR = 64


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


# ---- validation of a card read from a file (checkpoint metadata), before any torch call


def check_metadata(meta: Mapping[str, str], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate the card fields of a checkpoint's string metadata and decode them.

    ``arch`` must be a registered model, ``args`` a JSON object of that architecture's constructor
    keywords with values of the annotated type and a sane range (:func:`check_args`), ``scale`` an integer
    in ``SCALES`` that agrees with ``args['scale']``, ``form`` one of ``FORMS`` (default ``train``) and
    ``colors`` one of ``COLORS``. Other keys (``step``, ``val_psnr``...) pass through unchanged.

    Args:
        meta: The metadata as stored (string keys and values).
        path: The file, for the messages.

    Returns:
        A copy with ``args`` a dict, ``scale`` and ``colors`` ints.

    Raises:
        CheckpointError: One line naming the file, the field, its value and what is allowed.
    """
    from edge_sr.models.registry import list_models

    out: dict[str, Any] = dict(meta)
    arch = meta.get("arch")
    if not isinstance(arch, str) or arch not in list_models():
        close = difflib.get_close_matches(str(arch), list_models(), n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise CheckpointError(
            path,
            f"metadata 'arch' is {_show(arch)}; expected a registered model{hint} (see `edge-sr models`)",
        )
    raw = meta.get("args", "{}")
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except (json.JSONDecodeError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        raise CheckpointError(path, f"metadata 'args' is not JSON ({msg}); expected a JSON object") from None
    out["args"] = args = check_args(arch, args, path)
    scale = _meta_int(meta, "scale", path, SCALES, "an integer 1-8")
    if scale is None:
        if "scale" not in args:
            raise CheckpointError(path, "metadata has no 'scale'; expected an integer 1-8")
        scale = int(args["scale"])
    elif "scale" in args and args["scale"] != scale:
        raise CheckpointError(
            path, f"metadata 'scale' is {scale} but 'args' says scale {args['scale']}; expected them equal"
        )
    out["scale"] = scale
    form = meta.get("form", "train")
    if form not in FORMS:
        raise CheckpointError(path, f"metadata 'form' is {_show(form)}; expected train or deploy")
    out["form"] = form
    colors = _meta_int(meta, "colors", path, COLORS, "1 or 3")
    arg_colors = int(args.get("colors", 3))
    if colors is not None and colors != arg_colors:
        raise CheckpointError(
            path, f"metadata 'colors' is {colors} but 'args' says colors {arg_colors}; expected them equal"
        )
    out["colors"] = arg_colors
    return out


def check_args(
    arch: str, args: object, path: str | os.PathLike[str], *, field: str = "metadata 'args'"
) -> dict[str, Any]:
    """Check ``args`` against the constructor of the registered ``arch`` (its keywords and their types).

    Integers are counts or sizes (``1 .. MAX_COUNT``), except ``scale`` (``SCALES``) and ``colors``
    (``COLORS``); numbers are finite and non-negative; lists have ``1 .. 64`` entries. A value the
    architecture itself refuses (a scale it does not support, an unknown activation) is left to its
    constructor, whose error ``load_checkpoint`` reports.

    Raises:
        CheckpointError: ``args`` is not a mapping, names a keyword the architecture does not take, or a
            value of the wrong type or range.
    """
    from edge_sr.models.registry import model_parameters

    if not isinstance(args, dict):
        raise CheckpointError(
            path,
            f"{field} is a JSON {_json_kind(args)}; expected a JSON object of {arch}'s constructor keywords",
        )
    params = model_parameters(arch)
    for key, value in args.items():
        if key not in params:
            raise CheckpointError(
                path,
                f"{field} has {_show(key)}, not a keyword of {arch}; expected some of {', '.join(params)}",
            )
        p = params[key]
        want = _problem(key, value, p.annotation, p.default)
        if want is not None:
            raise CheckpointError(path, f"{field} {key!r} is {_show(value)}; expected {want}")
    return dict(args)


def _meta_int(
    meta: Mapping[str, str], key: str, path: str | os.PathLike[str], allowed: typing.Container[int], what: str
) -> int | None:
    """``meta[key]`` as an int in ``allowed`` (None when absent)."""
    if key not in meta:
        return None
    raw = meta[key]
    if not isinstance(raw, str) or not re.fullmatch(r"\s*\d{1,4}\s*", raw) or int(raw) not in allowed:
        raise CheckpointError(path, f"metadata {key!r} is {_show(raw)}; expected {what}")
    return int(raw)


def _problem(key: str, value: Any, ann: Any, default: Any) -> str | None:
    """What ``value`` should have been (None: it is fine) for a parameter annotated ``ann``."""
    if ann is Any:  # unresolved hint: the default's type says
        ann = _type_of(default)
        if ann is Any:
            return None if isinstance(value, str | int | float | bool | list) else "a JSON scalar or list"
    if not _matches(value, ann):
        return _describe(ann)
    return _out_of_range(key, value)


def _type_of(default: Any) -> Any:
    if isinstance(default, bool | int | float | str):
        return type(default)
    if isinstance(default, tuple | list) and default and isinstance(default[0], int | float | str):
        return list[type(default[0])]  # type: ignore[misc]
    return Any


def _matches(value: Any, ann: Any) -> bool:
    """Whether a JSON value fits the type hint ``ann`` (a JSON list stands for any sequence)."""
    origin, targs = typing.get_origin(ann), typing.get_args(ann)
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in targs)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in targs)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and targs and targs[-1] is not Ellipsis:
            return len(value) == len(targs) and all(_matches(v, a) for v, a in zip(value, targs, strict=True))
        elem = targs[0] if targs else Any
        return all(elem is Any or _matches(v, elem) for v in value)
    return True  # a hint this check does not know: the constructor decides


def _describe(ann: Any) -> str:
    origin, targs = typing.get_origin(ann), typing.get_args(ann)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if ann in names:
        return names[ann]
    if origin is Literal:
        return "one of " + ", ".join(map(str, targs))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in targs)
    if origin in (tuple, list, collections.abc.Sequence):
        if origin is tuple and targs and targs[-1] is not Ellipsis:
            return f"a list of {len(targs)} ({', '.join(_describe(a) for a in targs)})"
        return f"a list of {_describe(targs[0]) if targs else 'values'}"
    return str(ann)


def _out_of_range(key: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if key == "scale":
            return None if value in SCALES else "an integer 1-8"
        if key == "colors":
            return None if value in COLORS else "1 or 3"
        return None if 1 <= value <= MAX_COUNT else f"an integer 1-{MAX_COUNT}"
    if isinstance(value, float):
        ok = math.isfinite(value) and 0.0 <= value <= _MAX_FLOAT
        return None if ok else f"a finite number 0-{_MAX_FLOAT:g}"
    if isinstance(value, str):
        return None if 0 < len(value) <= _MAX_STR else f"a name of 1-{_MAX_STR} characters"
    if isinstance(value, list | tuple):
        if not 1 <= len(value) <= _MAX_ITEMS:
            return f"a list of 1-{_MAX_ITEMS} entries"
        return next((p for v in value if (p := _out_of_range(key + "[]", v)) is not None), None)
    return None


def _json_kind(value: object) -> str:
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _show(value: object, limit: int = 40) -> str:
    """A value as the message shows it: JSON-like, one line, cut at ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else json.dumps(value) if _jsonable(value) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
