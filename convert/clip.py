"""Whole-clip and sliding-window video models as fixed windows of T frames (``ExportSpec.frames``).

BasicVSR, IconVSR and BasicVSR++ propagate over a whole clip; EDVR restores the centre frame of a window.
Neither carries a state from call to call, so an artifact is one call on a **fixed window** of T frames at
one LR size, and the runner (``edge_sr.runtime.clip.run_clip``) cuts a long clip into overlapping windows:

    kind "clip":   (1, T, 3, h, w) -> (1, T, 3, h·s, w·s)      (layout NTCHW; NTHWC: (1, T, h, w, 3) ...)
    kind "window": (1, T, 3, h, w) -> (1, 3, h·s, w·s), the centre frame T // 2   (NHWC: (1, h·s, w·s, 3))

:func:`clip_contract` says what a model takes (kind, default T, the fewest frames, side multiple and minimum,
the overlap a runner should use between chunks); :func:`clip_entry` is the manifest's ``clip`` entry
(``edge_sr.convert.manifest`` checks it). The flow warp (``grid_sample``) and the deformable convolution
(``edge_sr.models.deform``: ``grid_sample`` + conv) export as they are on ExecuTorch and TFLite; CoreML too (that
form has no tensor above rank 5, Core ML's limit), ONNX as its native
``DeformConv`` op or decomposed (``edge_sr.convert.onnx``); :func:`deform_convs_as` swaps the form in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from edge_sr.errors import ConversionError

__all__ = [
    "ClipContract",
    "check_window",
    "clip_contract",
    "clip_entry",
    "deform_convs_as",
]

CLIP_FRAMES = 15  # the default window of the whole-clip models (BasicVSR, IconVSR, BasicVSR++)
CLIP_OVERLAP = 5  # the most frames of context a runner keeps on each side of an inner cut
INPUT, OUTPUT = "frames", "sr"


@dataclass(frozen=True)
class ClipContract:
    """What a whole-clip or window model takes.

    Attributes:
        kind: ``clip`` (every frame out) or ``window`` (the centre frame out).
        frames: the default T of an export (a window model's own window).
        min_frames: the fewest frames a call takes (a window model: exactly ``frames``).
        multiple: frame sides must be multiples of this (the alignment pyramid).
        min_side: the smallest frame side the alignment takes.
        name: the model's name in messages.
    """

    kind: Literal["clip", "window"]
    frames: int
    min_frames: int
    multiple: int = 1
    min_side: int = 1
    name: str = ""

    def overlap(self, frames: int) -> int:
        """The frames a runner overlaps between chunks of ``frames``: for a clip window, the context kept on
        each side of an inner cut (``edge_sr.runtime.clip``'s default: 5, fewer for short windows so every
        chunk advances); for a sliding window, ``frames - 1`` (it moves one frame per output)."""
        if self.kind == "window":
            return frames - 1
        return max(0, min(CLIP_OVERLAP, (frames - 1) // 2))


def clip_contract(model: nn.Module) -> ClipContract | None:
    """The clip contract of a whole-clip / window video model, None for any other model.

    SpyNet (BasicVSR, IconVSR, BasicVSR++) builds a pyramid down to 1/32, so 32 px gives its coarsest level
    one pixel (the official BasicVSR++ asserts at least 64); EDVR's PCD pyramid has 3 levels (1/4): sides
    multiples of 4 (16 for its scale-1 ``hr_in`` form), at least 4 pixels at the coarsest level. These are
    the figures ``edge_sr.runtime.clip`` pads eager models' frames to.
    """
    from edge_sr.models.basicvsr import BasicVSR, IconVSR
    from edge_sr.models.basicvsrpp import BasicVSRPlusPlus
    from edge_sr.models.edvr import EDVR

    if isinstance(model, EDVR):
        n, m = int(model.num_frame), 16 if model.scale == 1 else 4
        return ClipContract("window", n, n, multiple=m, min_side=4 * m, name="EDVR")
    if isinstance(model, IconVSR):
        n = 2 * int(model.temporal_padding) + 1
        return ClipContract("clip", max(CLIP_FRAMES, n), n, min_side=32, name="IconVSR")
    if isinstance(model, BasicVSRPlusPlus):
        m = 4 if model.scale == 1 else 1
        return ClipContract("clip", CLIP_FRAMES, 2, multiple=m, min_side=64, name="BasicVSR++")
    if isinstance(model, BasicVSR):
        return ClipContract("clip", CLIP_FRAMES, 2, min_side=32, name="BasicVSR")
    return None


def check_window(contract: ClipContract, frames: int, size: tuple[int, int]) -> None:
    """Refuse a window the model cannot take: too few frames (a window model: not its own T), or sides
    below ``min_side`` or not multiples of ``multiple`` (``ConversionError``, one line)."""
    c = contract
    if c.kind == "window" and frames != c.frames:
        raise ConversionError(
            None, f"{c.name} takes a window of exactly {c.frames} frames, not --frames {frames}"
        )
    if frames < c.min_frames:
        raise ConversionError(
            None, f"{c.name} needs at least {c.min_frames} frames per window, not --frames {frames}"
        )
    h, w = size
    if min(h, w) < c.min_side or h % c.multiple or w % c.multiple:
        raise ConversionError(
            None,
            f"{c.name} needs frame sides of at least {c.min_side} and multiples of {c.multiple}, not {h}x{w}",
        )


def clip_entry(contract: ClipContract, frames: int, layout: str) -> dict[str, Any]:
    """The manifest's ``clip`` entry of a window of ``frames`` in the artifact's ``layout`` (NCHW / NHWC)."""
    return {
        "kind": contract.kind,
        "frames": int(frames),
        "overlap": contract.overlap(frames),
        "input": INPUT,
        "output": OUTPUT,
        "layout": "NTHWC" if layout == "NHWC" else "NTCHW",
        "min_side": contract.min_side,
        "multiple": contract.multiple,
    }


@contextlib.contextmanager
def deform_convs_as(model: nn.Module, fn: Callable[..., Tensor] | None) -> Iterator[int]:
    """``with deform_convs_as(model, fn) as n:``: every ``ModulatedDeformConv2d`` of ``model`` (``n`` of them)
    computes ``fn(x, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups)`` instead
    of its own method while exporting, restored on exit; ``fn`` None changes nothing (``n`` is 0)."""
    from edge_sr.models.deform import ModulatedDeformConv2d

    mods = [m for m in model.modules() if isinstance(m, ModulatedDeformConv2d)] if fn is not None else []
    for m in mods:

        def deform(x: Tensor, offset: Tensor, mask: Tensor, m: Any = m) -> Tensor:
            return fn(  # type: ignore[misc]
                x, offset, mask, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.deform_groups
            )

        m.deform = deform  # type: ignore[method-assign]  # an instance attribute shadows the method
    try:
        yield len(mods)
    finally:
        for m in mods:
            del m.deform
