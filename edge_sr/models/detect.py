"""Architecture detection: which zoo model a bare state dict is, with which constructor arguments.

Every family registers one detector, ``fn(state) -> Detection | None``, that reads key names and tensor
shapes (never values, never code) and returns the architecture, its full constructor arguments (scale and
colour channels included), the form (train / deploy), the value range and mean handling, and the published
key layout it recognised. A detector returns ``None`` when the keys are not its family's.

:func:`detect` runs them all, then proves each answer: the model the detection describes is built on the
``meta`` device (no memory) and its keys and shapes must equal the file's, after the detection's ``adapt``
(a layout's renaming to the zoo's keys). One proven answer is the result; two are an ambiguity error listing
both and how to choose (``--model NAME``); none is an error naming the closest family by key overlap and the
keys that did not fit. ::

    from edge_sr.models import load_state_dict_file
    from edge_sr.models.detect import detect
    state = load_state_dict_file("realesr-general-x4v3.pth")    # unwrapped, weights_only
    d = detect(state, path="RealESRGAN_x4plus_anime_6B.pth")
    d.arch, d.args, d.form                                  # ("...", {"scale": 4, ...}, "train")

A detector is a plain function in the family's module, registered with :func:`register_detector`::

    @register_detector("fsrcnn")
    def _detect(state: StateDict) -> Detection | None:
        if "first_part.0.weight" not in state:
            return None
        d, colors = state["first_part.0.weight"].shape[:2]
        ...
        return Detection("fsrcnn", {"scale": s, "colors": colors, "d": d, ...})

Helpers for detectors: :func:`shape`, :func:`indices` (the block numbers under a prefix), :func:`has`,
:func:`strip_prefix`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, EdgeSRError
from edge_sr.models.card import Form, ModelCard

StateDict = dict[str, Tensor]
Detector = Callable[[StateDict], "Detection | None"]

__all__ = [
    "Detection",
    "Detector",
    "StateDict",
    "build_skeleton",
    "detect",
    "detect_candidates",
    "detectors",
    "has",
    "indices",
    "register_detector",
    "shape",
    "strip_prefix",
]


@dataclass(frozen=True)
class Detection:
    """What a state dict is.

    Attributes:
        arch: The registry name to build (``create_model(arch, **args)``).
        args: The full constructor arguments, ``scale`` included, and ``colors`` where the family takes it.
        form: ``"train"`` (multi-branch blocks, as trained) or ``"deploy"`` (published already fused).
        value_range: The pixel range the weights compute on (1 or 255); the zoo model converts at its
            boundary, so it always takes and returns [0, 1].
        mean: The per-channel mean the network subtracts inside (in [0, 1] units), or None.
        layout: The published key layout recognised (``"official"``, ``"basicsr"``, ``"mmagic"``,
            ``"deploy"`` ...).
        assumed: Arguments the weights do not determine (an activation, a residual scale) and why the
            value was chosen; ``--model-arg KEY=VALUE`` overrides them.
        adapt: Maps the file's state dict to the zoo's key names (None: the file's names are the zoo's).
        rescale: For a file that holds several scales (one upsampler each), the detection of scale ``s``;
            ``load_checkpoint(path, scale=s)`` uses it (None: one scale, read from the shapes).
    """

    arch: str
    args: Mapping[str, Any]
    form: Form = "train"
    value_range: float = 1.0
    mean: tuple[float, ...] | None = None
    layout: str = "official"
    assumed: Mapping[str, str] = field(default_factory=dict)
    adapt: Callable[[StateDict], StateDict] | None = field(default=None, compare=False, repr=False)
    rescale: Callable[[int], Detection] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", dict(self.args))
        object.__setattr__(self, "assumed", dict(self.assumed))

    @property
    def scale(self) -> int:
        return int(self.args.get("scale", 4))

    @property
    def colors(self) -> int:
        return int(self.args.get("colors", 3))

    @property
    def family(self) -> str:
        from edge_sr.models.registry import get_entry

        return get_entry(self.arch).family

    def card(self, source: str | None = None) -> ModelCard:
        return ModelCard.from_args(self.arch, self.args, form=self.form, source=source)

    def state(self, state: StateDict) -> StateDict:
        """``state`` under the zoo's key names."""
        return dict(self.adapt(state)) if self.adapt is not None else dict(state)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "family": self.family,
            "args": dict(self.args),
            "scale": self.scale,
            "colors": self.colors,
            "form": self.form,
            "value_range": self.value_range,
            "mean": list(self.mean) if self.mean is not None else None,
            "layout": self.layout,
            "assumed": dict(self.assumed),
        }


_DETECTORS: dict[str, Detector] = {}


def register_detector(family: str) -> Callable[[Detector], Detector]:
    """Register ``fn`` as the detector of ``family`` (one per family)."""

    def deco(fn: Detector) -> Detector:
        if family in _DETECTORS:
            raise ValueError(f"family {family!r} already has a detector")
        _DETECTORS[family] = fn
        return fn

    return deco


def detectors() -> dict[str, Detector]:
    """Family -> detector, for every registered family (importing the zoo registers them)."""
    import edge_sr.models  # noqa: F401

    return dict(_DETECTORS)


# ---- helpers for detectors


def shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...] | None:
    """The shape of ``state[key]``, or None when absent."""
    t = state.get(key)
    return tuple(t.shape) if t is not None else None


def has(state: Mapping[str, Tensor], *keys: str) -> bool:
    """All ``keys`` present."""
    return all(k in state for k in keys)


def indices(state: Iterable[str], prefix: str) -> list[int]:
    """The sorted distinct integers ``i`` of keys ``{prefix}{i}.…`` (``prefix`` ends with a dot)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pat.match(k))})


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> StateDict:
    """The keys under ``prefix`` without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# ---- building and proving


def build_skeleton(arch: str, args: Mapping[str, Any], form: Form | None, *, device: str | None) -> nn.Module:
    """``create_model(arch, **args)``, fused for the deploy form, on ``device`` (``"meta"``: no memory)."""
    from edge_sr.models.registry import create_model
    from edge_sr.reparam import reparameterize

    with torch.device(device) if device else contextlib.nullcontext():
        net = create_model(arch, **dict(args))
        return reparameterize(net) if form == "deploy" else net


def _fit(det: Detection, state: StateDict) -> str | None:
    """None when the model ``det`` describes has exactly the keys and shapes of ``state``; else why not."""
    try:
        want = build_skeleton(det.arch, det.args, det.form, device="meta").state_dict()
    except Exception as e:  # a constructor refusing the arguments
        return f"{det.arch} cannot be built with {det.args}: {_first_line(e)}"
    try:
        have = det.state(state)
    except Exception as e:
        return f"the {det.layout} layout cannot be mapped: {_first_line(e)}"
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        return f"missing {_short(missing)}; unexpected {_short(unexpected)}"
    bad = [k for k in want if tuple(want[k].shape) != tuple(have[k].shape)]
    if bad:
        k = bad[0]
        return f"{len(bad)} shapes differ, e.g. {k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}"
    return None


def detect_candidates(
    state: StateDict, *, families: Iterable[str] | None = None
) -> tuple[list[Detection], dict[str, str]]:
    """Every detection whose model fits ``state`` exactly, and, per family that answered but did not fit
    (or whose detector failed), the reason."""
    found: list[Detection] = []
    rejected: dict[str, str] = {}
    table = detectors()
    for fam in families if families is not None else table:
        fn = table.get(fam)
        if fn is None:
            continue
        try:
            det = fn(state)
        except (KeyError, IndexError, ValueError, TypeError, ArithmeticError, EdgeSRError) as e:
            rejected[fam] = f"detector failed: {_first_line(e)}"
            continue
        if det is None:
            continue
        why = _fit(det, state)
        if why is None:
            found.append(det)
        else:
            rejected[fam] = why
    return found, rejected


def detect(
    state: StateDict, *, path: str | os.PathLike[str] | None = None, family: str | None = None
) -> Detection:
    """The one architecture ``state`` fits exactly (see the module docstring).

    Args:
        state: A bare state dict (``load_state_dict_file`` reads and unwraps files).
        path: The file, for the messages.
        family: Only ask this family's detector (``--model NAME`` names one).

    Raises:
        CheckpointError: No family fits (naming the closest one and the keys that did not fit), or two do
            (naming both and how to choose).
    """
    fams = [family] if family is not None else None
    found, rejected = detect_candidates(state, families=fams)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = " and ".join(f"{d.arch}({_args_text(d.args)})" for d in found)
        raise CheckpointError(path, f"the weights fit both {names}; choose one with --model NAME")
    if family is not None:
        why = rejected.get(family, "its detector does not recognise these keys")
        raise CheckpointError(path, f"not a {family} state dict: {why}")
    fam, why = closest_family(state, rejected)
    raise CheckpointError(
        path, f"no zoo architecture fits these weights ({len(state)} tensors); closest is {fam}: {why}"
    )


def closest_family(state: StateDict, rejected: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The family whose default model shares the most key names with ``state`` (block numbers ignored),
    and the file's keys it lacks / its keys the file lacks (or the detector's reason)."""
    from edge_sr.models.registry import _REGISTRY, _ensure_loaded

    _ensure_loaded()

    def norm(keys: Iterable[str]) -> set[str]:
        return {re.sub(r"\.\d+(?=\.)", ".#", k) for k in keys}

    have = norm(state)
    best: tuple[float, str, set[str], set[str]] = (-1.0, "none", set(), set())
    seen: set[str] = set()
    for _name, entry in sorted(_REGISTRY.items()):
        if entry.family in seen:
            continue
        seen.add(entry.family)
        try:
            with torch.device("meta"):
                want = norm(entry.fn(scale=4).state_dict())
        except Exception:
            continue
        score = len(have & want) / max(len(have | want), 1)
        if score > best[0]:
            best = (score, entry.family, have - want, want - have)
    score, fam, extra, lack = best
    if rejected and fam in rejected:
        return fam, rejected[fam]
    if score <= 0:
        return "none", f"no key name in common with any family (first keys: {_short(sorted(state), 4)})"
    return fam, f"keys it does not have {_short(sorted(extra), 4)}; keys missing {_short(sorted(lack), 4)}"


def _short(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _args_text(args: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(args.items()))
    return text if len(text) <= 100 else text[:97] + "..."


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
