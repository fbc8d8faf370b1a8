"""ExecuTorch target: ``.pte`` lowered with the XNNPACK partitioner (or the CoreML delegate).

torch.export -> ``to_edge_transform_and_lower(partitioner=[...])`` -> ``to_executorch()``. A dynamic H / W
range goes through :mod:`.dynamic` (window attention's shape assumptions proven for every size). FP16 artifacts
compute in float16 inside and keep float32 I/O. The CoreML delegate lowers on Linux but runs only on Apple
hardware. ExecuTorch has no free-form metadata section: the manifest beside the file is the only record.
A method's tensors have no names, only an order: a graph with several inputs / outputs (a video step) takes
and gives them in the order of the manifest's ``inputs`` / ``outputs``, which the runner reads back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.manifest import io_names
from edge_sr.convert.spec import ExportSpec
from edge_sr.convert.target import (
    OPS_RUNS,
    GraphIO,
    OpTime,
    Size,
    Timed,
    Timer,
    fill_shape,
    io_entries,
    random_input,
    time_calls,
)
from torch import nn

from edge_sr.errors import ConfigError, ConversionError, RuntimeBackendError

NAME = "executorch"
SUFFIX = ".pte"
FP16_BY_CAST = True
QUANT_MODES: tuple[str, ...] = ("w8a8",)
PT2E_MODES: tuple[str, ...] = ("w8a8",)
INT8_IO = False
FLOAT_IO_CLAMP = False
FOLD_QUANTIZE = True
DELEGATES = ("xnnpack", "coreml")
SCHEME = "xnnpack-pt2e: int8 per-channel symmetric weights, int8 per-tensor affine activations (static)"


@dataclass(frozen=True)
class Options:
    """ExecuTorch export options.

    Attributes:
        delegate: ``xnnpack`` (CPU, Android and iOS) or ``coreml`` (lowers on Linux, runs on Apple only).
        partitioners: explicit partitioner objects instead of the delegate's default one.
    """

    delegate: str = "xnnpack"
    partitioners: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.delegate not in DELEGATES:
            raise ConfigError(None, f"unknown delegate {self.delegate!r}; choose from {', '.join(DELEGATES)}")


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what ExecuTorch export does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "executorch has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.sizes:
        raise ConversionError(
            None, "executorch has no enumerated shapes; use a bounded dynamic range (--dynamic MIN:MAX)"
        )


def partitioners(spec: ExportSpec, options: Options) -> list[Any]:
    """The partitioner list of ``options.delegate``."""
    if options.partitioners:
        return list(options.partitioners)
    if options.delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        precision = ct.precision.FLOAT16 if spec.precision == "fp16" else ct.precision.FLOAT32
        specs = CoreMLBackend.generate_compile_specs(compute_precision=precision)
        return [CoreMLPartitioner(compile_specs=specs)]
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def export(
    model: nn.Module,
    io: GraphIO,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """Export, lower and serialize ``model`` to ``path``; returns the manifest's I/O entries (method order)."""
    import contextlib

    from edge_sr.convert.dynamic import export_proven, lowering_without_asserts
    from executorch.exir import to_edge_transform_and_lower

    if spec.dynamic is None:
        ep = torch.export.export(model, io.examples, dynamic_shapes=None)
        lowering: Any = contextlib.nullcontext()
    elif len(io.examples) > 1:  # a video step: plain convs and resamplings, no shape assumptions to prove
        ep = torch.export.export(model, io.examples, dynamic_shapes=io.dynamic_shapes)
        lowering = contextlib.nullcontext()
    else:  # shape assumptions (window padding) proven for the whole range, then dropped: see .dynamic
        ep = export_proven(model, io.example, spec.dynamic_shapes(), axes=spec.hw_axes)
        lowering = lowering_without_asserts()
    parts = partitioners(spec, options)
    with lowering:
        edge = to_edge_transform_and_lower(ep, partitioner=parts)
    delegated, portable = lowered_ops(edge.exported_program().graph)
    program = edge.to_executorch()
    path.write_bytes(program.buffer)
    with torch.no_grad():
        outs = model(*io.examples)
    outs = outs if isinstance(outs, tuple | list) else (outs,)
    return {
        "inputs": io_entries(io.input_names, io.examples, spec),
        "outputs": io_entries(io.output_names, outs, spec),
        "target_info": {"delegate": options.delegate, "delegate_calls": delegated, "portable_ops": portable},
    }


def lowered_ops(graph: Any) -> tuple[int, dict[str, int]]:
    """(delegate calls: the partitions, non-delegated op -> count) of a lowered edge graph.

    Every op a partitioner did not take runs on ExecuTorch's portable kernels between the partitions; a flow
    warp's ``grid_sampler_2d`` (XNNPACK has no kernel for it) splits the graph there. ``getitem`` (tuple
    unpacking of a delegate's outputs) is no op.
    """
    delegated, portable = 0, dict[str, int]()
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        name = getattr(n.target, "__name__", str(n.target))
        if "call_delegate" in name:
            delegated += 1
        elif name != "getitem":
            parts = name.split(".")  # namespace.op.overload: aten.grid_sampler_2d.default
            op = parts[-2] if len(parts) >= 2 else name
            portable[op] = portable.get(op, 0) + 1
    return delegated, dict(sorted(portable.items()))


# ---------------------------------------------------------------- quantization


def quantizer(*, qat: bool = False, mode: str | None = None) -> Any:
    """The XNNPACK quantizer, per-channel symmetric, for PTQ (observers) or QAT (fake-quant).

    The converted PT2E graph is lowered by :func:`export`: the XNNPACK partitioner takes the quantize /
    dequantize pairs around each conv and runs the conv in int8. The ``.pte`` keeps float32 input and output
    (the first quantize and the last dequantize run inside the delegate).
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def quant_scheme(mode: str | None = None) -> str:
    """The manifest's description of the INT8 scheme."""
    return SCHEME


def quant_options(quantizer: Any, mode: str | None = None) -> Options:
    """Export options for a PT2E-quantized graph (the default XNNPACK partitioner lowers int8)."""
    return Options()


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """ExecuTorch programs carry no free-form metadata: always empty."""
    return {}


class Runner:
    """``executorch.runtime`` over one ``.pte``; ``forward`` takes arrays in the model's own layout.

    ``threads`` sizes the CPU threadpool XNNPACK runs on. That pool is one per process, so the last runner
    created sets it for all.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        from executorch.runtime import Runtime

        if threads is not None:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))
        self.path = Path(path)
        try:
            self.method = Runtime.get().load_program(os.fspath(path)).load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError with a code
            raise RuntimeBackendError(path, f"executorch cannot load it ({str(e).splitlines()[0]})") from None
        self.input_names, self.output_names = io_names(path)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])
        return out[0].numpy()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for inputs by name, in the method's order (the manifest's)."""
        if set(feeds) != set(self.input_names):
            raise RuntimeBackendError(self.path, f"the method takes {self.input_names}, not {sorted(feeds)}")
        xs = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        return {n: y.numpy() for n, y in zip(self.output_names, self.method.execute(xs), strict=True)}


# ---------------------------------------------------------------- profiling


class EtdumpRunner:
    """``run(feeds)`` like :class:`Runner` on a program loaded with ETDump enabled; :meth:`ops` gives the
    operator times of the calls so far (a video step profiled with its state fed back, for one)."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        from executorch.extension.pybindings import portable_lib as pl

        pl._unsafe_reset_threadpool(int(threads))
        self.path = Path(path)
        try:
            self.module = pl._load_for_executorch(os.fspath(path), enable_etdump=True, debug_buffer_size=0)
        except Exception as e:  # the pybindings raise RuntimeError with the ExecuTorch error code
            raise RuntimeBackendError(path, f"ExecuTorch cannot load it ({e})") from None
        self.input_names, self.output_names = io_names(path)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        return {n: y.numpy() for n, y in zip(self.output_names, self.module.forward(xs), strict=True)}

    def ops(self) -> list[OpTime]:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "profile.etdp"
            self.module.write_etdump_result_to_file(str(f))
            return etdump_ops(f)


def _et_dtype(code: int) -> Any:
    # c10::ScalarType codes: 0 uint8, 1 int8, 5 half, 6 float
    return {0: np.uint8, 1: np.int8, 5: np.float16, 6: np.float32}.get(int(code), np.float32)


def etdump_ops(etdump_path: str | os.PathLike[str]) -> list[OpTime]:
    """Operators from an ETDump file (``executorch.devtools.Inspector``): median ms per run, delegated or
    not. The wrappers (``Method::execute``, ``DELEGATE_CALL``, load / init events) are left out so the
    rows add up to the method's time without double counting."""
    from executorch.devtools import Inspector

    df = Inspector(etdump_path=str(etdump_path)).to_dataframe()
    ops = []
    for _, row in df.iterrows():
        name = str(row["event_name"])
        if row.get("event_block_name") != "Execute" or name.startswith(("Method::", "Program::")):
            continue
        if name == "DELEGATE_CALL":
            continue
        ms = row.get("p50 (ms)")
        ops.append(OpTime(name, None if ms is None or ms != ms else float(ms), bool(row["is_delegated_op"])))
    return ops


def profile(
    path: Path,
    *,
    size: Size,
    runs: int,
    warmup: int,
    threads: int,
    want_ops: bool,
    layout: str | None,
    timer: Timer = time_calls,
) -> Timed:
    """Latency through the pybindings; operators from an ETDump of ``OPS_RUNS`` extra profiled runs."""
    from executorch.extension.pybindings import portable_lib as pl

    pl._unsafe_reset_threadpool(threads)
    try:
        mod = pl._load_for_executorch(str(path))
        meta = mod.method_meta("forward").input_tensor_meta(0)
    except Exception as e:  # the pybindings raise RuntimeError with the ExecuTorch error code
        raise RuntimeBackendError(path, f"ExecuTorch cannot load it ({e})") from None
    # a .pte input has concrete sizes: its fixed shape, or the upper bound of a bounded-dynamic export
    shape = fill_shape(list(meta.sizes()), size, layout)
    x = torch.from_numpy(random_input(shape, _et_dtype(meta.dtype())))
    times = timer(lambda: mod.forward([x]), runs, warmup)
    ops: list[OpTime] = []
    note = None
    if want_ops:
        prof = EtdumpRunner(path, threads=threads)
        for _ in range(OPS_RUNS):
            prof.module.forward([x])
        ops = prof.ops()
        note = f"operator times: ETDump median over {OPS_RUNS} profiled runs"
    return Timed(times, shape, ops, note)
