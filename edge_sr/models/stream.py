"""The streaming (recurrent video) model contract: one call per frame, the state carried between calls.

A video model in the zoo is an ``nn.Module`` whose ``forward`` is **one step**: it takes the current LR frame
and the state tensors, and returns the SR frame and the state outputs. Its class attribute ``STREAM`` (a
:class:`StreamSpec`) names every tensor, so that the exported step, the manifest, the runners and the apps
that feed it agree without reading the model's code::

    forward(*frame_inputs, *state_inputs) -> (output, *state_outputs)

    # RRN: forward(cur, prev, hidden, prev_sr) -> (sr, hidden_out)
    #   cur      (N, C, h, w)         the current LR frame, [0, 1]
    #   prev     (N, C, h, w)         state: the previous LR frame; initially the first frame itself
    #   hidden   (N, n_c, h, w)       state: the hidden features; initially zeros
    #   prev_sr  (N, C, h·s, w·s)     state: the previous SR output; initially zeros
    #   sr       (N, C, h·s, w·s)     the SR frame, [0, 1] (not clamped inside the graph)
    #   hidden_out                    the next ``hidden``

Each :class:`StateTensor` says where its next value comes from (``next``: the name of an output or of a frame
input of the same step) and what it starts as (``init``: ``"zeros"`` or ``"frame"``, a copy of the first
frame). Everything else (an app, ``edge_sr.runtime``'s streaming runner, the eager :class:`Stream` below)
follows from this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

Resolution = Literal["lr", "hr"]
Init = Literal["zeros", "frame"]

__all__ = [
    "StateTensor",
    "Stream",
    "StreamSpec",
    "advance",
    "initial_state",
    "is_stream_model",
    "stream_spec",
]


@dataclass(frozen=True)
class StateTensor:
    """One state tensor of a step.

    Attributes:
        name: the step's input name.
        next: the output (or frame input) of the same step whose value becomes this state at the next frame.
        channels: its channel count; ``"colors"`` means the card's colour channels.
        resolution: ``"lr"`` (h, w) or ``"hr"`` (h·scale, w·scale).
        init: ``"zeros"`` or ``"frame"`` (the first LR frame itself).
    """

    name: str
    next: str
    channels: int | Literal["colors"]
    resolution: Resolution
    init: Init

    def shape(
        self, colors: int, hw: tuple[int, int], scale: int, batch: int = 1
    ) -> tuple[int, int, int, int]:
        c = colors if self.channels == "colors" else int(self.channels)
        s = scale if self.resolution == "hr" else 1
        return (batch, c, hw[0] * s, hw[1] * s)


@dataclass(frozen=True)
class StreamSpec:
    """The names of a step's tensors (see the module docstring).

    Attributes:
        frames: the frame inputs, in call order (usually ``("cur",)``).
        state: the state tensors, in call order after the frames.
        output: the name of the SR output (the step's first output).
        state_outputs: the names of the step's further outputs, in order.
    """

    frames: tuple[str, ...]
    state: tuple[StateTensor, ...]
    output: str
    state_outputs: tuple[str, ...]

    @property
    def input_names(self) -> list[str]:
        return [*self.frames, *(s.name for s in self.state)]

    @property
    def output_names(self) -> list[str]:
        return [self.output, *self.state_outputs]

    def with_channels(self, name: str, channels: int) -> StreamSpec:
        """The same contract with state ``name``'s channel count set (a model's hidden width)."""
        return replace(
            self, state=tuple(replace(s, channels=channels) if s.name == name else s for s in self.state)
        )

    def manifest_entry(self, colors: int, hw: tuple[int, int], scale: int) -> dict[str, Any]:
        """The manifest's ``stream`` entry for an LR frame of ``hw`` (dtype / quant added by the target)."""
        return {
            "frames": list(self.frames),
            "output": self.output,
            "state_outputs": list(self.state_outputs),
            "state": [
                {
                    "name": s.name,
                    "next": s.next,
                    "shape": list(s.shape(colors, hw, scale)),
                    "resolution": s.resolution,
                    "init": s.init,
                }
                for s in self.state
            ],
        }


def stream_spec(model: nn.Module) -> StreamSpec | None:
    """The model's :class:`StreamSpec` (its ``stream`` property, which fills in sizes known only per
    instance, else its class's ``STREAM``), or None for an image model."""
    base = getattr(type(model), "STREAM", None)
    if not isinstance(base, StreamSpec):
        return None
    spec = getattr(model, "stream", None)
    return spec if isinstance(spec, StreamSpec) else base


def is_stream_model(model: nn.Module) -> bool:
    return stream_spec(model) is not None


def initial_state(spec: StreamSpec, first: Tensor, *, colors: int, scale: int) -> dict[str, Tensor]:
    """The state before the first frame ``first`` (N, C, h, w), from each tensor's ``init``."""
    n, _, h, w = first.shape
    state: dict[str, Tensor] = {}
    for s in spec.state:
        if s.init == "frame":
            state[s.name] = first.clone()
        else:
            state[s.name] = first.new_zeros(s.shape(colors, (h, w), scale, batch=n))
    return state


def advance(spec: StreamSpec, frames: dict[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state for the next frame: each tensor takes the value named by its ``next``."""
    known = {**frames, **outputs}
    return {s.name: known[s.next] for s in spec.state}


class Stream:
    """Eager streaming over a video model: ``push(frame) -> sr``, the state kept between calls.

    ``frame`` is (N, C, h, w) float in [0, 1]; a frame of a new size (or ``reset()``) starts a new state.
    The SR output is returned as the step gives it (unclamped); the state takes the unclamped value too,
    exactly as an exported step fed back by an app.
    """

    def __init__(self, model: nn.Module) -> None:
        from edge_sr.models.card import card_of

        spec = stream_spec(model)
        if spec is None:
            raise TypeError(f"{type(model).__name__} is not a streaming (video) model")
        card = card_of(model)
        self.model, self.spec, self.scale, self.colors = model, spec, card.scale, card.colors
        self.state: dict[str, Tensor] | None = None

    def reset(self) -> None:
        self.state = None

    @torch.no_grad()
    def push(self, frame: Tensor) -> Tensor:
        if self.state is not None and next(iter(self.state.values())).shape[0] != frame.shape[0]:
            self.state = None
        if self.state is not None:
            first_lr = next((s for s in self.spec.state if s.resolution == "lr"), None)
            if first_lr is not None and self.state[first_lr.name].shape[-2:] != frame.shape[-2:]:
                self.state = None
        if self.state is None:
            self.state = initial_state(self.spec, frame, colors=self.colors, scale=self.scale)
        frames = dict(zip(self.spec.frames, (frame,)))
        outs = self.model(*frames.values(), *(self.state[s.name] for s in self.spec.state))
        named = dict(zip(self.spec.output_names, outs))
        self.state = advance(self.spec, frames, named)
        return named[self.spec.output]

    def run(self, frames: Iterable[Tensor]) -> Iterator[Tensor]:
        """SR frames of a sequence, in order (a fresh state first)."""
        self.reset()
        for f in frames:
            yield self.push(f)
