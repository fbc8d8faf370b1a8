"""The target contract: what a module of ``edge_sr.convert`` must provide to be a deployment target.

Every target is one module (``convert/<name>.py``) listed once in ``edge_sr.convert.TARGETS``; everything
else (CLI choices, bench, profile, sensitivity, the demo, ``edge_sr.runtime.load``) derives from that table.
A module satisfies :class:`Target` structurally, the way ``typing.Protocol`` allows modules to:

    NAME, SUFFIX, FP16_BY_CAST                       what it is
    QUANT_MODES, PT2E_MODES, INT8_IO, ...            what INT8 it offers (no modes: float artifacts only)
    Options                                          its typed export options (a frozen dataclass)
    check_spec(spec)                                 refuse what the format does not offer
    export(model, io, spec, path, metadata, options) -> manifest I/O entries (one per named tensor)
    read_embedded(path)                              the metadata stored inside the artifact
    Runner(path, threads=)                           load it; ``forward(x)`` (one input, one output) and
                                                     ``run({name: array}) -> {name: array}`` (every tensor)
    profile(path, ...)                               latency + per-operator table with its runtime's profiler
    quantizer(qat=, mode=)                           the PT2E quantizer it wants (None: no PT2E path)
    quant_scheme(mode), quant_options(q, mode)       the manifest's scheme line; options for a quantized export
    quantize_artifact(model, calib, mode=, ...)      only for modes outside PT2E_MODES: its own INT8 path

A graph has one input and one output (an image model: ``input`` -> ``output``) or several (a video model's
step: frame and state tensors in, SR frame and state tensors out, named by its ``StreamSpec``).
:class:`GraphIO` carries the example tensors, already in the artifact's layout, and the names; each target
gives those names to the artifact (ONNX input / output names, CoreML feature names, TFLite signature names)
or, where the format has none (ExecuTorch, PT2), keeps their order, which the manifest records.

The types shared by targets and the profiler (:class:`OpTime`, :class:`Timed`) live here, below both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from edge_sr.convert.spec import ExportSpec
from torch import Tensor, nn

log = logging.getLogger(__name__)
Size = tuple[int, int] | None


@dataclass(frozen=True)
class GraphIO:
    """The tensors an exported graph takes and gives.

    Attributes:
        examples: one example per input, in call order and in the artifact's layout (NHWC when asked).
        input_names: the artifact's name of each input.
        output_names: the artifact's name of each output, in the order the model returns them.
        dynamic_shapes: ``torch.export`` dynamic shapes of the exported module's arguments (None: fixed
            shapes): one ``{axis: Dim}`` per input, nested in one tuple when the module takes ``*xs``. A
            video step's LR tensors share the H / W dims and its HR tensors take them times the scale.
    """

    examples: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_shapes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.input_names) or not self.output_names:
            raise ValueError("GraphIO needs one name per example and at least one output name")

    @classmethod
    def single(cls, example: Tensor, dynamic_shapes: tuple[Any, ...] | None = None) -> GraphIO:
        """An image model's graph: ``input`` -> ``output``."""
        return cls((example,), ("input",), ("output",), dynamic_shapes)

    @property
    def example(self) -> Tensor:
        """The first input's example (an image model's only one)."""
        return self.examples[0]


def io_entries(
    names: Sequence[str], tensors: Sequence[Tensor], spec: ExportSpec, dtypes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The manifest's ``inputs`` / ``outputs`` entries: name, dtype (``dtypes``, else the tensor's), layout,
    value range ([0, 1]: the frames, and every state, which is fed back as the model computes it) and, for
    a fixed-size export, the shape in the artifact's layout."""
    out = []
    for i, (name, t) in enumerate(zip(names, tensors, strict=True)):
        dtype = dtypes[i] if dtypes is not None else str(t.dtype).replace("torch.", "")
        entry: dict[str, Any] = {
            "name": name,
            "dtype": dtype,
            "layout": spec.layout,
            "value_range": [0.0, 1.0],
        }
        if spec.dynamic is None and not spec.sizes:
            entry["shape"] = [int(d) for d in t.shape]
        out.append(entry)
    return out


@dataclass
class OpTime:
    """One operator: its name, median time per run in ms (None where the runtime gives none), and
    whether a delegate (XNNPACK, CoreML, ...) ran it rather than the portable / CPU kernels."""

    name: str
    ms: float | None
    delegated: bool | None


@dataclass
class Timed:
    """What a target's profiler measured: per-run latencies, the input shape fed, the operator table."""

    times_ms: list[float]
    input_shape: list[int]
    ops: list[OpTime] = field(default_factory=list)
    ops_note: str | None = None


Timer = Callable[[Callable[[], object], int, int], list[float]]


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """``warmup`` untimed calls, then the wall time of each of ``runs`` calls in ms (the one timer)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


OPS_RUNS = 10  # profiled passes for a per-operator breakdown
DEFAULT_INPUT = (180, 320)  # (H, W) fed to a dynamic-size artifact when no size is asked for


def fill_shape(shape: list[int | None], size: Size, layout: str | None) -> list[int]:
    """Concrete 4-D input shape: dynamic dims (None / -1) become ``size``; layout NCHW unless NHWC."""
    hw = size or DEFAULT_INPUT
    nhwc = (layout or "").upper() == "NHWC" or (layout is None and len(shape) == 4 and shape[-1] == 3)
    h_i, w_i = (1, 2) if nhwc else (2, 3)
    fixed = [None if (d is None or d < 0) else int(d) for d in shape]
    if size is not None and fixed[h_i] is not None and (fixed[h_i], fixed[w_i]) != tuple(size):
        log.warning(
            "the artifact has a fixed %sx%s input; --input-size %sx%s ignored", fixed[h_i], fixed[w_i], *size
        )
    fixed[0] = fixed[0] or 1
    fixed[h_i] = fixed[h_i] or hw[0]
    fixed[w_i] = fixed[w_i] or hw[1]
    return [int(d or 3) for d in fixed]


def random_input(shape: list[int], dtype: Any) -> np.ndarray:
    """A reproducible input of ``shape`` in the dtype's natural range (0-1 float, full-range ints)."""
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)
    return rng.random(shape, dtype=np.float32).astype(dt)


def profile_torch(
    fn: Callable[[Any], object], x: Any, *, runs: int, warmup: int, threads: int, want_ops: bool, timer: Timer
) -> tuple[list[float], list[OpTime], str | None]:
    """Time ``fn(x)`` in eager PyTorch at ``threads`` intra-op threads; ``torch.profiler``'s self CPU time per
    operator over ``OPS_RUNS`` extra runs when ``want_ops``. Returns (times in ms, operators, note)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    ops: list[OpTime] = []
    try:
        with torch.inference_mode():
            times = timer(lambda: fn(x), runs, warmup)
            if want_ops:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as torch_profile

                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(OPS_RUNS):
                        fn(x)
                for evt in prof.key_averages():
                    if evt.self_cpu_time_total > 0:
                        ops.append(OpTime(evt.key, evt.self_cpu_time_total / OPS_RUNS / 1e3, False))
    finally:
        torch.set_num_threads(old)
    note = f"operator times: torch.profiler self CPU time per run, averaged over {OPS_RUNS} runs"
    return times, ops, note if want_ops else None


class TargetRunner(Protocol):
    """A loaded artifact: ``forward`` takes and returns arrays in the artifact's own layout and dtype."""

    path: Path
    input_names: list[str]
    output_names: list[str]

    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Target(Protocol):
    """A deployment target module (see the module docstring)."""

    NAME: str
    SUFFIX: str
    # fp16 = a float16 graph inside float32 I/O casts (else the converter's own FP16); such targets can also
    # keep single layers in FP32 (mixed precision)
    FP16_BY_CAST: bool
    # INT8 modes a user can choose, first the default (w8a8: static int8 weights and activations; weights:
    # weight-only int8; palettize: a k-means weight LUT; qdq: a runtime's own QDQ quantization)
    QUANT_MODES: tuple[str, ...]
    PT2E_MODES: tuple[str, ...]  # the modes that run the PT2E flow with :meth:`quantizer` (PTQ and QAT)
    INT8_IO: bool  # an int8 input tensor on request (scale / zero point in the manifest)
    FLOAT_IO_CLAMP: bool  # float I/O needs an unannotated clamp in front (the converter quantizes inputs)
    FOLD_QUANTIZE: bool  # convert_pt2e folds the quantized weights (False: the converter does it)
    Options: type
    Runner: Callable[..., TargetRunner]

    def check_spec(self, spec: ExportSpec) -> None: ...

    def export(
        self,
        model: nn.Module,
        io: GraphIO,
        spec: ExportSpec,
        path: Path,
        metadata: dict[str, str],
        options: Any,
    ) -> dict[str, Any]: ...

    def read_embedded(self, path: str | os.PathLike[str]) -> dict[str, str]: ...

    def profile(
        self,
        path: Path,
        *,
        size: Size,
        runs: int,
        warmup: int,
        threads: int,
        want_ops: bool,
        layout: str | None,
        timer: Timer,
    ) -> Timed: ...

    def quantizer(self, *, qat: bool = False, mode: str | None = None) -> Any: ...

    def quant_scheme(self, mode: str | None = None) -> str: ...

    def quant_options(self, quantizer: Any, mode: str | None = None) -> Any: ...
