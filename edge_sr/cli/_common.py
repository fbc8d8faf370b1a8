"""Helpers shared by the verb modules: the ``--json`` flag, one way to print results, the size parsers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any

from edge_sr.convert.spec import parse_hw, parse_range
from edge_sr.errors import ConfigError
from edge_sr.io_utils import console

__all__ = [
    "add_json_flag",
    "add_option_flag",
    "checkpoint_path",
    "emit",
    "parse_hw",
    "parse_range",
    "target_options",
]


def checkpoint_path(value: str) -> str:
    """A checkpoint argument: a path as given, or the name of a bundled file (``ecbsr_m4c16_x2``, as
    ``edge-sr models`` lists them) when no file of that name exists here; argparse ``type=``."""
    from pathlib import Path

    from edge_sr.weights import bundled_checkpoints

    if Path(value).exists() or "/" in value or "\\" in value:
        return value
    arch, _, scale = value.removesuffix(".safetensors").rpartition("_x")
    found = bundled_checkpoints(None).get(arch, {}).get(int(scale)) if scale.isdigit() else None
    return str(found) if found is not None else value


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")


def _clean(obj: Any) -> Any:
    # JSON has no inf / nan: write them as null (a PSNR of identical images is inf).
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def emit(args: argparse.Namespace, obj: Any, text: str | None = None) -> None:
    """With ``--json`` print ``obj`` as one JSON object; otherwise print ``text`` (if any)."""
    out = console()
    if getattr(args, "json", False):
        out.write(json.dumps(_clean(obj)) + "\n")
    elif text is not None:
        out.write(text.rstrip("\n") + "\n")
    out.flush()


def target_options(target: str, pairs: list[str] | None) -> Any:
    """``--option KEY=VALUE`` pairs as the target's typed ``Options`` (None when no pair is given).

    Each value is converted to the type of the field's default (int, float, bool, str); an unknown key
    names the fields the target has.
    """
    from edge_sr.convert import target_module

    if not pairs:
        return None
    cls = target_module(target).Options
    fields = {f.name: f for f in dataclasses.fields(cls) if isinstance(f.default, bool | int | float | str)}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            choices = ", ".join(sorted(fields)) or "none"
            raise ConfigError(
                None, f"--option {pair!r}: {target} options are KEY=VALUE with KEY one of {choices}"
            )
        kind: type = type(fields[key].default)
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1", "yes")
            else:
                values[key] = kind(raw)
        except ValueError:
            raise ConfigError(None, f"--option {pair!r}: {key} takes a {kind.__name__}") from None
    return cls(**values)


def add_option_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a target option (onnx opset=19, coreml deployment_target=iOS17, executorch delegate=coreml)",
    )


def add_model_flags(p: argparse.ArgumentParser, *, scale: bool = True, model: bool = True) -> None:
    """``--model NAME``, ``--model-arg KEY=VALUE``, ``--module PKG.MOD:CLASS`` (and ``--scale``) for verbs
    that read a checkpoint: how to build a foreign one when detection is not wanted or not possible."""
    g = p.add_argument_group(
        "foreign checkpoints (.pth / .pt / .ckpt / .safetensors without edge-sr metadata)"
    )
    if model:
        g.add_argument(
            "--model",
            metavar="NAME",
            help="zoo architecture (default: detected from the keys; see `edge-sr models`)",
        )
    g.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a constructor argument over the detected ones (num_feat=64, depths=6,6,6,6)",
    )
    g.add_argument(
        "--module",
        metavar="PKG.MOD:CLASS",
        help="build your own nn.Module class (its code runs; the weights file never executes anything)",
    )
    if scale:
        g.add_argument(
            "--scale", type=int, default=None, help="the model's scale (checked against the weights)"
        )


def model_source(args: argparse.Namespace, path: str | None) -> Any:
    """The model the verb's flags describe: ``path`` loaded (detected unless ``--model`` / ``--module``
    says), or ``path`` itself when no flag asks for anything (the library loads it, or it is an artifact).

    Returns:
        An ``nn.Module`` with its card, or ``path`` unchanged.
    """
    from edge_sr.models.foreign import load_module, parse_model_args, resolve_class

    pairs = list(getattr(args, "model_arg", None) or [])
    module = getattr(args, "module", None)
    name = getattr(args, "model", None)
    scale = getattr(args, "scale", None)
    if path is None:
        if module or name or pairs:
            raise ConfigError(None, "--model / --model-arg / --module need a checkpoint")
        return None
    if module:
        if name:
            raise ConfigError(None, "--model and --module name two architectures; pass one")
        cls = resolve_class(module)
        kwargs = parse_model_args(pairs, cls=cls)
        return load_module(module, path, kwargs, scale=scale)
    if not (name or pairs or scale):
        return path
    from edge_sr.models import load_checkpoint

    overrides = parse_model_args(pairs)
    return load_checkpoint(path, model=name, scale=scale, **overrides)
