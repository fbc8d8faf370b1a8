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

__all__ = ["add_json_flag", "add_option_flag", "emit", "parse_hw", "parse_range", "target_options"]


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
