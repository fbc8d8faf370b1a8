"""One timing function per runtime for ``edge_sr.profile``: each opens the artifact, times ``runs`` calls
after ``warmup``, then (if asked) runs a few profiled passes for the per-operator breakdown.

Every function returns ``Timed(times_ms, input_shape, ops, ops_note)``; runtimes are imported lazily.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.errors import RuntimeBackendError
from edge_sr.profile import OPS_RUNS, OpTime, _fill_shape, _random_input, _time

log = logging.getLogger(__name__)

Size = tuple[int, int] | None


@dataclasses.dataclass
class Timed:
    times_ms: list[float]
    input_shape: list[int]
    ops: list[OpTime]
    ops_note: str | None = None


# ---------------------------------------------------------------- ExecuTorch


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


def bench_executorch(path: Path, size: Size, runs: int, warmup: int, threads: int, want_ops: bool, layout):
    import torch
    from executorch.extension.pybindings import portable_lib as pl

    pl._unsafe_reset_threadpool(threads)
    try:
        mod = pl._load_for_executorch(str(path))
        meta = mod.method_meta("forward").input_tensor_meta(0)
    except Exception as e:  # the pybindings raise RuntimeError with the ExecuTorch error code
        raise RuntimeBackendError(path, f"ExecuTorch cannot load it ({e})") from None
    # a .pte input has concrete sizes: its fixed shape, or the upper bound of a bounded-dynamic export
    shape = _fill_shape(list(meta.sizes()), size, layout)
    x = torch.from_numpy(_random_input(shape, _et_dtype(meta.dtype())))
    times = _time(lambda: mod.forward([x]), runs, warmup)
    ops: list[OpTime] = []
    note = None
    if want_ops:
        prof = pl._load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
        for _ in range(OPS_RUNS):
            prof.forward([x])
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "profile.etdp"
            prof.write_etdump_result_to_file(str(f))
            ops = etdump_ops(f)
        note = f"operator times: ETDump median over {OPS_RUNS} profiled runs"
    return Timed(times, shape, ops, note)


# ---------------------------------------------------------------- onnxruntime

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def ort_profile_ops(profile_json: str | os.PathLike[str]) -> list[OpTime]:
    """Operators from an onnxruntime profile: the median ``*_kernel_time`` per node, in run order."""
    events = json.loads(Path(profile_json).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        per_node[node].append(float(e["dur"]) / 1e3)  # us -> ms
        args = e.get("args", {})
        meta[node] = (args.get("op_name", "?"), args.get("provider", "CPUExecutionProvider"))
    return [
        OpTime(f"{meta[n][0]} {n}", statistics.median(v), meta[n][1] != "CPUExecutionProvider")
        for n, v in per_node.items()
    ]


def bench_onnx(path: Path, size: Size, runs: int, warmup: int, threads: int, want_ops: bool, layout):
    import onnxruntime as ort

    def session(profile_prefix: str | None = None) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise RuntimeBackendError(path, f"onnxruntime cannot load it ({e})") from None

    sess = session()
    inp = sess.get_inputs()[0]
    dims = [d if isinstance(d, int) else None for d in inp.shape]
    shape = _fill_shape(dims, size, layout)
    x = _random_input(shape, _ORT_DTYPES.get(inp.type, np.float32))
    feed = {inp.name: x}
    times = _time(lambda: sess.run(None, feed), runs, warmup)
    ops: list[OpTime] = []
    note = None
    if want_ops:
        with tempfile.TemporaryDirectory() as d:
            prof = session(str(Path(d) / "ort"))
            for _ in range(OPS_RUNS):
                prof.run(None, feed)
            ops = ort_profile_ops(prof.end_profiling())
        note = f"operator times: onnxruntime profiler median over {OPS_RUNS} runs (CPU execution provider)"
    return Timed(times, shape, ops, note)


# ---------------------------------------------------------------- TFLite / LiteRT


def tflite_delegated(ops_details: list[dict[str, Any]]) -> list[OpTime]:
    """Which TFLite nodes a delegate took. The interpreter lists every original node plus one ``DELEGATE``
    node per partition, without saying which nodes it replaced. A node runs on the CPU iff something
    outside the partitions needs its output: a ``DELEGATE`` node's input, or an input of another CPU node
    (producers that are also ``DELEGATE`` outputs count as delegated). Walk that backwards from the uses."""
    delegates = [o for o in ops_details if o["op_name"] == "DELEGATE"]
    plain = [o for o in ops_details if o["op_name"] != "DELEGATE"]
    if not delegates:
        return [OpTime(o["op_name"], None, False) for o in plain]
    from_delegate = {int(t) for d in delegates for t in d["outputs"]}
    producer = {int(t): o["index"] for o in plain for t in o["outputs"] if int(t) not in from_delegate}
    needed = [int(t) for d in delegates for t in d["inputs"]]
    cpu: set[int] = set()
    by_index = {o["index"]: o for o in plain}
    while needed:
        t = needed.pop()
        i = producer.get(t)
        if i is not None and i not in cpu:
            cpu.add(i)
            needed.extend(int(u) for u in by_index[i]["inputs"])
    # nodes after the partitions (consuming delegate outputs) also run on the CPU
    avail = set(from_delegate)
    for o in plain:
        if any(int(t) in avail for t in o["inputs"]) and not set(map(int, o["outputs"])) & from_delegate:
            cpu.add(o["index"])
            avail.update(int(t) for t in o["outputs"])
    return [OpTime(o["op_name"], None, o["index"] not in cpu) for o in plain]


def bench_tflite(path: Path, size: Size, runs: int, warmup: int, threads: int, want_ops: bool, layout):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older runtime, where it imports
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    try:
        it = Interpreter(model_path=str(path), num_threads=threads)
        det = it.get_input_details()[0]
        shape = _fill_shape([int(d) for d in det["shape_signature"]], size, layout)
        if list(det["shape"]) != shape:
            it.resize_tensor_input(det["index"], shape)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise RuntimeBackendError(path, f"the TFLite interpreter cannot load it ({e})") from None
    x = _random_input(shape, det["dtype"])

    def call() -> None:
        it.set_tensor(det["index"], x)
        it.invoke()

    times = _time(call, runs, warmup)
    ops = tflite_delegated(it._get_ops_details()) if want_ops else []
    note = (
        "the TFLite Python interpreter gives no per-operator times (operators listed with their delegation); "
        "benchmark_model --enable_op_profiling=true gives them (edge-sr profile --adb)"
    )
    return Timed(times, shape, ops, note if want_ops else None)


# ---------------------------------------------------------------- PyTorch checkpoint


def bench_checkpoint(path: Path, size: Size, runs: int, warmup: int, threads: int, want_ops: bool, layout):
    import torch

    from edge_sr.models import load_checkpoint

    model = load_checkpoint(path)
    hw = size or (180, 320)
    shape = [1, 3, *hw]
    x = torch.rand(*shape)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            times = _time(lambda: model(x), runs, warmup)
            ops: list[OpTime] = []
            if want_ops:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(OPS_RUNS):
                        model(x)
                for evt in prof.key_averages():
                    if evt.self_cpu_time_total > 0:
                        ops.append(OpTime(evt.key, evt.self_cpu_time_total / OPS_RUNS / 1e3, False))
    finally:
        torch.set_num_threads(old)
    note = (
        f"operator times: torch.profiler self CPU time per run, averaged over {OPS_RUNS} runs"
        if want_ops
        else None
    )
    return Timed(times, shape, ops, note)


# ---------------------------------------------------------------- CoreML (macOS only)


def bench_coreml(path: Path, size: Size, runs: int, warmup: int, threads: int, want_ops: bool, layout):
    import sys

    if sys.platform != "darwin":
        raise RuntimeBackendError(
            path,
            "CoreML latency needs macOS (coremltools cannot run a model on this OS); profile it on a Mac, "
            "or profile the ExecuTorch / TFLite / ONNX artifact here",
        )
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    inp = model.get_spec().description.input[0]
    dims = [int(d) for d in inp.type.multiArrayType.shape] or [1, 3, *(size or (180, 320))]
    shape = _fill_shape(dims, size, layout)
    feed = {inp.name: _random_input(shape, np.float32)}
    times = _time(lambda: model.predict(feed), runs, warmup)
    note = "CoreML gives no per-operator times through coremltools" if want_ops else None
    return Timed(times, shape, [], note)


BACKENDS = {
    "executorch": bench_executorch,
    "onnx": bench_onnx,
    "tflite": bench_tflite,
    "checkpoint": bench_checkpoint,
    "coreml": bench_coreml,
}
