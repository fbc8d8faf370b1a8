"""Helpers shared by the verb modules: the ``--json`` flag and one way to print results."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


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
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(_clean(obj)) + "\n")
    elif text is not None:
        sys.stdout.write(text.rstrip("\n") + "\n")
