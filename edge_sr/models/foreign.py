"""Models edge-sr did not build: ``--model-arg`` values, any ``nn.Module``, and importing foreign checkpoints.

* :func:`parse_model_args` turns ``KEY=VALUE`` strings into typed constructor arguments, checked against the
  architecture's (or the user class's) signature.
* :func:`adopt` gives any ``nn.Module`` mapping (N, C, H, W) in [0, 1] to (N, C, sH, sW) the model card every
  library call reads (scale and colours found by one small forward pass), so ``export``, ``ptq``, ``qat``,
  ``verify`` and ``profile`` take it like a zoo model::

      net = adopt(MyNet().eval())            # card: arch "MyNet", scale and colours measured
      export(net, "tflite", "mynet.tflite", ExportSpec(input_size=(180, 320)))

* :func:`load_module` builds a user's class (``package.module:Class``) and loads a weights file into it
  strictly: the user's own code runs (that is what was asked for); the weights file never executes anything.
* :func:`import_checkpoint` writes an edge-sr checkpoint (card in the metadata, zoo key names) from any file
  :func:`~edge_sr.models.checkpoint.load_checkpoint` reads, with the source file's name and sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models.card import COLORS, SCALES, ModelCard, check_args, has_card
from edge_sr.models.checkpoint import (
    check_shapes,
    inspect_checkpoint,
    load_detected,
    load_state_dict_file,
    save_checkpoint,
)
from edge_sr.reparam import has_fusable

__all__ = [
    "ImportResult",
    "adopt",
    "describe_checkpoint",
    "import_checkpoint",
    "load_module",
    "parse_model_args",
    "resolve_class",
]

PROBE_SIZE = 16  # the side of the probe input adopt() runs to measure scale and colours


def parse_model_args(
    pairs: Iterable[str], *, arch: str | None = None, cls: type | None = None
) -> dict[str, Any]:
    """``["num_feat=32", "depths=6,6,6,6", "upsampler=pixelshuffle"]`` -> typed keyword arguments.

    A value is read as JSON when it parses (``32``, ``0.1``, ``true``, ``[6, 6]``), as a list when it holds
    commas, else as a string. With ``arch`` (a zoo entry) or ``cls`` (a user class) each key must be a
    constructor keyword and each value of its annotated type.

    Raises:
        ConfigError: A pair without ``=``, an unknown keyword, or a value of the wrong type (one line).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(None, f"--model-arg {pair!r}: expected KEY=VALUE")
        out[key] = _value(raw.strip())
    if arch is not None:
        try:
            check_args(arch, out, "--model-arg", field="--model-arg")
        except CheckpointError as e:
            raise ConfigError(None, e.problem.replace("--model-arg: ", "")) from None
    elif cls is not None:
        _check_class_args(cls, out)
    return out


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        pass
    if "," in raw:
        return [_value(p.strip()) for p in raw.split(",") if p.strip()]
    return raw


def _check_class_args(cls: type, args: Mapping[str, Any]) -> None:
    """Each key a keyword of ``cls.__init__``; a value of the hinted (or the default's) scalar type."""
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # an unresolvable hint: the defaults say
        hints = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for key, value in args.items():
        if key not in named:
            if takes_any:
                continue
            raise ConfigError(
                None,
                f"--model-arg {key}: not a keyword of {cls.__name__}; it takes {', '.join(named) or 'none'}",
            )
        default = named[key].default
        kind = hints.get(key, type(default) if isinstance(default, bool | int | float | str) else None)
        if kind not in (bool, int, float, str):
            continue  # a hint this check does not know: the constructor decides
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind) and not isinstance(value, bool)
        )
        if not ok:
            raise ConfigError(None, f"--model-arg {key}={value!r}: {cls.__name__} expects {kind.__name__}")


def resolve_class(spec: str) -> type[nn.Module]:
    """``"package.module:Class"`` -> the class (importing the module: the user's own code).

    The current directory is searched first, as ``python -m`` does, so a model file beside the weights works.

    Raises:
        ConfigError: Malformed spec, module not importable, no such attribute, or not an ``nn.Module`` class.
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not re.fullmatch(r"[A-Za-z_][\w.]*", attr or ""):
        raise ConfigError(None, f"--module {spec!r}: expected package.module:Class")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # the user's module failed to import: say how
        raise ConfigError(
            None, f"--module {spec!r}: cannot import {mod_name} ({type(e).__name__}: {e})"
        ) from None
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(None, f"--module {spec!r}: {mod_name} has no {attr}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError(None, f"--module {spec!r}: {attr} is not an nn.Module class")
    return obj


def adopt(
    model: nn.Module,
    *,
    scale: int | None = None,
    colors: int | None = None,
    name: str | None = None,
    args: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> nn.Module:
    """Attach a model card to any ``nn.Module`` so every library call takes it; returns the model.

    The module must map (N, C, H, W) in [0, 1] to (N, C, H·s, W·s). ``scale`` and ``colors`` not given are
    measured with one forward pass on a small random input (3 channels, then 1). A module that already
    carries a card is returned unchanged unless something is given.

    Args:
        model: the network (any ``nn.Module``).
        scale: its upscaling factor (measured when None).
        colors: 3 for RGB, 1 for a Y-channel network (measured when None).
        name: the card's ``arch`` (default: the class name).
        args: constructor arguments, kept in the card and manifests (default: none).
        source: where the weights came from.

    Raises:
        ConfigError: The module does not map C channels to C channels at an integer scale 1-8.
    """
    if has_card(model) and scale is None and colors is None and name is None:
        return model
    if scale is None or colors is None:
        measured = _probe(model, colors)
        scale = scale or measured[0]
        colors = colors or measured[1]
    if scale not in SCALES or colors not in COLORS:
        raise ConfigError(None, f"{type(model).__name__}: scale {scale} / colours {colors} not supported")
    card = ModelCard(
        arch=name or type(model).__name__,
        args={**dict(args or {}), "scale": scale, **({"colors": colors} if colors != 3 else {})},
        scale=scale,
        form="train" if has_fusable(model) else "deploy",
        colors=colors,
        source=source,
    )
    return card.attach(model)


def _probe(model: nn.Module, colors: int | None) -> tuple[int, int]:
    """(scale, colours) of ``model`` from one forward pass on a PROBE_SIZE² random input."""
    first: Exception | None = None
    was_training = model.training
    model.eval()
    try:
        for c in (colors,) if colors else (3, 1):
            try:
                param = next(model.parameters(), None)
                x = torch.rand(1, c, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
                if param is not None:
                    x = x.to(device=param.device, dtype=param.dtype)
                with torch.no_grad():
                    y = model(x)
            except Exception as e:  # the other channel count may be the right one
                first = first or e
                continue
            if not isinstance(y, torch.Tensor) or y.dim() != 4 or y.shape[1] != c:
                raise ConfigError(
                    None,
                    f"{type(model).__name__} maps (1, {c}, {PROBE_SIZE}, {PROBE_SIZE}) to "
                    f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}; expected "
                    f"(1, {c}, {PROBE_SIZE}·s, {PROBE_SIZE}·s)",
                )
            s, rem = divmod(int(y.shape[-1]), PROBE_SIZE)
            if rem or s < 1 or y.shape[-2] != s * PROBE_SIZE:
                raise ConfigError(
                    None,
                    f"{type(model).__name__} output {tuple(y.shape)} is not an integer multiple of the input",
                )
            return s, c
    finally:
        model.train(was_training)
    raise ConfigError(
        None, f"{type(model).__name__} does not run on a (1, 3|1, {PROBE_SIZE}, {PROBE_SIZE}) input ({first})"
    )


def load_module(
    spec: str | type[nn.Module],
    weights: str | os.PathLike[str] | None,
    args: Mapping[str, Any] | None = None,
    *,
    scale: int | None = None,
    colors: int | None = None,
) -> nn.Module:
    """Build the user's class ``spec`` (``"package.module:Class"`` or the class) with the keyword arguments
    ``args`` and load ``weights`` into it strictly (read safely:
    :func:`~edge_sr.models.checkpoint.load_state_dict_file`).

    The result carries a card (:func:`adopt`; ``arch`` is the spec; ``scale`` / ``colors`` measured unless
    given), in eval mode.

    Raises:
        ConfigError: The class cannot be found or refuses the arguments.
        CheckpointError: Unreadable weights, or keys / shapes that do not fit the module.
    """
    cls = resolve_class(spec) if isinstance(spec, str) else spec
    name = spec if isinstance(spec, str) else f"{cls.__module__}:{cls.__qualname__}"
    kwargs = dict(args or {})
    try:
        net = cls(**kwargs)
    except Exception as e:  # the user's constructor refused
        raise ConfigError(None, f"{name}({_kw(kwargs)}) cannot be built: {type(e).__name__}: {e}") from None
    if weights is not None:
        state = load_state_dict_file(weights)
        check_shapes(net.state_dict(), state, weights, what=f"the weights do not fit {name}")
        net.load_state_dict(state, strict=True)
    net.eval()
    return adopt(
        net,
        scale=scale,
        colors=colors,
        name=name,
        args=kwargs,
        source=None if weights is None else str(weights),
    )


def _kw(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def describe_checkpoint(
    path: str | os.PathLike[str], *, model: str | None = None, scale: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """What ``edge-sr inspect`` prints: the detection (:func:`inspect_checkpoint`) as a dict, with the
    parameter count of the model it describes (counted on a ``meta``-device build: no memory)."""
    from edge_sr.models.detect import build_skeleton, detect

    det = inspect_checkpoint(path, model=model, scale=scale, **overrides)
    if det.layout == "edge-sr":  # the card has no value range / mean: the family's detector reads them
        try:
            found = detect(load_state_dict_file(path), path=path, family=det.family)
            det = dataclasses.replace(det, value_range=found.value_range, mean=found.mean)
        except CheckpointError:
            pass
    net = build_skeleton(det.arch, det.args, det.form, device="meta")
    return {"path": str(path), **det.to_dict(), "params": sum(p.numel() for p in net.parameters())}


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What :func:`import_checkpoint` wrote."""

    src: str
    out: str
    sha256: str
    detection: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def import_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
    scale: int | None = None,
    **overrides: Any,
) -> ImportResult:
    """Write ``src`` (any checkpoint ``load_checkpoint`` reads) as an edge-sr ``.safetensors`` checkpoint.

    The card is the detected one (with ``model`` / ``scale`` / ``overrides`` applied), the weights are under
    the zoo's key names and in the form the file was published in; the metadata also keeps the source file's
    name, its sha256, the layout recognised and the arguments that were assumed rather than read.

    Raises:
        CheckpointError: As ``load_checkpoint``. OutputError: ``out`` cannot be written.
    """
    from edge_sr.io_utils import check_output

    src_p, out_p = Path(src), Path(out)
    if out_p.suffix != ".safetensors":
        raise ConfigError(None, f"{out_p}: an edge-sr checkpoint is a .safetensors file")
    check_output(out_p)
    net, det = load_detected(src_p, model=model, scale=scale, **overrides)
    digest = _sha256(src_p)
    extra = {
        "source_file": src_p.name,
        "source_sha256": digest,
        "source_layout": det.layout,
        "assumed": json.dumps(dict(det.assumed), sort_keys=True),
    }
    save_checkpoint(net, out_p, arch=det.arch, args=dict(det.args), form=det.form, extra=extra)
    return ImportResult(str(src_p), str(out_p), digest, det.to_dict())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
