"""A streaming step's INT8 as the artifact holds it: the scale / zero point of every input and output read
back from the file itself, and onnxruntime's QDQ quantization of the step with shared state parameters.

:func:`artifact_qparams` answers, for each named input and output of a ``.pte`` / ``.tflite`` / ``.onnx``
step, the int8 parameters the program quantizes it with (an int8 tensor's own, or those of the first
quantize of a float input / the last dequantize of a float output), or None where it stays float:

- ``.pte``: the XNNPACK delegate's serialized graph (``XNNGraph`` flatbuffer, decoded by ExecuTorch's
  ``flatc``): the ``XNNConvert`` nodes next to each external tensor (through transposes / reshapes);
- ``.tflite``: the interpreter's tensor details and its ``QUANTIZE`` / ``DEQUANTIZE`` nodes;
- ``.onnx``: the ``QuantizeLinear`` reading a graph input, the ``DequantizeLinear`` writing a graph output;
- ``.mlpackage``: the MIL program read back from disk (off macOS too): its ``quantize`` after each input
  (through concatenations and reshapes), the ``dequantize`` giving each output.

Tensors are named from the manifest's ``stream`` entry (its ``index`` for ExecuTorch and TFLite, whose
files keep positional names).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edge_sr.errors import InputError

__all__ = ["artifact_qparams", "quantize_onnx_step"]

QParams = tuple[float, int] | None


def _stream_names(path: Path) -> tuple[list[str], list[str]]:
    from edge_sr.convert import read_manifest

    st = (read_manifest(path) or {}).get("stream")
    if not st:
        raise InputError(path, "its manifest has no stream entry (not a video step)")
    ins = [t["name"] for t in sorted(st["tensors"], key=lambda t: t["index"]) if t["io"] == "input"]
    outs = [t["name"] for t in sorted(st["tensors"], key=lambda t: t["index"]) if t["io"] == "output"]
    return ins, outs


def artifact_qparams(path: str | os.PathLike[str]) -> dict[str, QParams]:
    """``{tensor name: (scale, zero_point) or None}`` for every input and output of a step artifact."""
    p = Path(path)
    ins, outs = _stream_names(p)
    readers: dict[str, Callable[[Path], tuple[list[QParams], list[QParams]]]] = {
        ".pte": _pte,
        ".tflite": lambda q: _tflite(q, ins, outs),  # by name: its signature lists tensors sorted
        ".onnx": _onnx,
        ".mlpackage": _coreml,
    }
    if p.suffix not in readers:
        raise InputError(p, f"reads {', '.join(readers)} step artifacts")
    qin, qout = readers[p.suffix](p)
    return {**dict(zip(ins, qin)), **dict(zip(outs, qout))}


# ---------------------------------------------------------------- ExecuTorch (XNNPACK delegate)

_MOVES = ("XNNStaticTranspose", "XNNStaticReshape")


def xnn_graph(path: Path) -> dict[str, Any]:
    """The XNNPACK delegate's graph of a ``.pte`` as a dict (the first XNNPACK delegate)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import _get_schema_bytes
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import _extract_delegate_payload

    blob = _extract_delegate_payload(path.read_bytes(), "xnnpack")
    if blob is None:
        raise InputError(path, "has no XNNPACK delegate")
    # XNNHeader: magic at 4:8, flatbuffer offset 10:14 and size 14:18 (little endian)
    off, size = int.from_bytes(blob[10:14], "little"), int.from_bytes(blob[14:18], "little")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "schema.fbs").write_bytes(_get_schema_bytes())
        (Path(d) / "graph.bin").write_bytes(blob[off : off + size])
        _flatc_decompile(d, str(Path(d) / "schema.fbs"), str(Path(d) / "graph.bin"))
        text = (Path(d) / "graph.json").read_text()
    return json.loads(re.sub(r"(?<=[:\[,\s])(-?)inf\b", r"\1Infinity", text))  # flatc writes bare inf


def _pte(path: Path) -> tuple[list[QParams], list[QParams]]:
    g = xnn_graph(path)
    values = {}
    for v in g["xvalues"]:
        u = v["xvalue_union"]
        t = u.get("tensor_value", u)
        qp = u.get("quant_params") if u.get("quant_params_type") == "PerTensorQuant" else None  # not weights
        values[t["id_out"]] = (float(qp["scale"]), int(qp["zero_point"])) if qp else None
    nodes = [(n["xnode_union_type"], n["xnode_union"]) for n in g["xnodes"]]

    def forward(i: int) -> QParams:  # first quantized value downstream of i through moves / converts
        todo = [i]
        while todo:
            j = todo.pop()
            if values.get(j):
                return values[j]
            todo += [u["output_id"] for k, u in nodes if k in (*_MOVES, "XNNConvert") and u["input_id"] == j]
        return None

    def backward(i: int) -> QParams:
        j: int | None = i
        while j is not None:
            if values.get(j):
                return values[j]
            j = next(
                (u["input_id"] for k, u in nodes if k in (*_MOVES, "XNNConvert") and u["output_id"] == j),
                None,
            )
        return None

    return [forward(i) for i in g["input_ids"]], [backward(i) for i in g["output_ids"]]


# ---------------------------------------------------------------- TFLite


def _tflite(path: Path, ins: list[str], outs: list[str]) -> tuple[list[QParams], list[QParams]]:
    """The step's inputs / outputs in the order ``ins`` / ``outs`` name them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=os.fspath(path))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()

    def own(i: int) -> QParams:
        scale, zp = tensors[i].get("quantization", (0.0, 0))
        return (float(scale), int(zp)) if scale else None

    def of_input(i: int) -> QParams:
        q = next(
            (int(o["outputs"][0]) for o in ops if o["op_name"] == "QUANTIZE" and int(o["inputs"][0]) == i),
            None,
        )
        return own(i) or (own(q) if q is not None else None)

    def of_output(i: int) -> QParams:
        d = next(
            (int(o["inputs"][0]) for o in ops if o["op_name"] == "DEQUANTIZE" and int(o["outputs"][0]) == i),
            None,
        )
        return own(i) or (own(d) if d is not None else None)

    runner = it.get_signature_runner()
    ind, outd = runner.get_input_details(), runner.get_output_details()
    return [of_input(ind[n]["index"]) for n in ins], [of_output(outd[n]["index"]) for n in outs]


# ---------------------------------------------------------------- ONNX

_ONNX_MOVES = ("Reshape", "Transpose", "SpaceToDepth", "DepthToSpace", "Identity", "Squeeze", "Unsqueeze")


def _onnx(path: Path) -> tuple[list[QParams], list[QParams]]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(os.fspath(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def qp(node: Any) -> QParams:
        return float(consts[node.input[1]].reshape(-1)[0]), int(consts[node.input[2]].reshape(-1)[0])

    def of_input(name: str) -> QParams:  # through reshapes / transposes (pixel_unshuffle) to the quantize
        todo = [name]
        while todo:
            t = todo.pop()
            for n in g.node:
                if n.input and n.input[0] == t:
                    if n.op_type == "QuantizeLinear":
                        return qp(n)
                    if n.op_type in _ONNX_MOVES:
                        todo.append(n.output[0])
        return None

    def of_output(name: str) -> QParams:
        t: str | None = name
        while t is not None:
            n = next((n for n in g.node if t in n.output), None)
            if n is None or n.op_type not in (*_ONNX_MOVES, "DequantizeLinear"):
                return None
            if n.op_type == "DequantizeLinear":
                return qp(n)
            t = n.input[0]
        return None

    return [of_input(i.name) for i in g.input], [of_output(o.name) for o in g.output]


# ---------------------------------------------------------------- CoreML (MIL program)

_MIL_MOVES = (
    "concat",
    "reshape",
    "transpose",
    "pixel_unshuffle",
    "pixel_shuffle",
    "space_to_depth",
    "identity",
)


def _mil_qp(op: Any) -> QParams:
    zp = op.inputs.get("zero_point")
    return float(np.asarray(op.inputs["scale"].val).reshape(-1)[0]), int(
        np.asarray(zp.val).reshape(-1)[0] if zp is not None else 0
    )


def _coreml(path: Path) -> tuple[list[QParams], list[QParams]]:
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = ct.utils.load_spec(os.fspath(path))
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    main = load(spec, specification_version=spec.specificationVersion, file_weights_dir=os.fspath(weights))
    fn = main.functions["main"]

    def of_input(var: Any) -> QParams:
        todo = [var]
        while todo:
            for op in todo.pop().child_ops:
                if op.op_type == "quantize":
                    return _mil_qp(op)
                if op.op_type in _MIL_MOVES:
                    todo.append(op.outputs[0])
        return None

    def of_output(var: Any) -> QParams:
        op = var.op
        while op is not None and op.op_type in _MIL_MOVES:
            first = next(iter(op.inputs.values()))
            op = (first[0] if isinstance(first, tuple | list) else first).op
        return _mil_qp(op) if op is not None and op.op_type == "dequantize" else None

    return [of_input(v) for v in fn.inputs.values()], [of_output(v) for v in fn.outputs]


# ---------------------------------------------------------------- onnxruntime QDQ of a step


def _shared_uint8(values: list[np.ndarray], percentile: float) -> tuple[float, int]:
    """One uint8 scale / zero point covering every tensor of a state group (0 included)."""
    lo = min(0.0, *(float(np.percentile(v, 100 - percentile)) for v in values))
    hi = max(0.0, *(float(np.percentile(v, percentile)) for v in values))
    scale = max((hi - lo) / 255.0, 1e-8)
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def quantize_onnx_step(
    model: nn.Module,
    seqs: Any,
    spec: Any = None,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
) -> Any:
    """onnxruntime's static QDQ (the target's image scheme) of a step exported at ``seqs.input_size``, fed the
    streamed step inputs; each state, the tensor feeding it and their frame partners share one uint8 scale /
    zero point (``TensorQuantOverrides``) from the union of their percentile ranges."""
    import shutil

    import torch
    from edge_sr.convert import Artifact, ExportSpec, export, target_module
    from edge_sr.convert.manifest import (
        embedded_metadata,
        manifest_path,
        sha256_path,
        size_bytes,
        write_manifest,
    )
    from edge_sr.quantize import deploy_form
    from edge_sr.quantize.sequences import step_inputs
    from edge_sr.quantize.stream import _for_model

    from edge_sr.io_utils import atomic_path
    from edge_sr.models.stream import stream_spec

    onnx_mod: Any = target_module("onnx")
    deploy = deploy_form(model)
    sspec = stream_spec(deploy)
    if sspec is None:
        raise InputError(None, f"{type(model).__name__} is not a streaming (video) model")
    seqs = _for_model(seqs, deploy)
    steps = [tuple(t.numpy() for t in s) for s in step_inputs(deploy, seqs)]
    with torch.no_grad():
        outs = [tuple(o.numpy() for o in deploy(*(torch.from_numpy(t) for t in s))) for s in steps]
    values = {n: [s[i] for s in steps] for i, n in enumerate(sspec.input_names)}
    values.update({n: [o[i] for o in outs] for i, n in enumerate(sspec.output_names)})
    groups = _groups(sspec)
    overrides: dict[str, list[dict[str, Any]]] = {}
    entries = []
    for names in groups:
        scale, zp = _shared_uint8(
            [np.concatenate([v.ravel() for v in values[n]]) for n in names], onnx_mod.CALIB_PERCENTILE
        )
        for n in names:
            overrides[n] = [{"scale": np.array(scale, np.float32), "zero_point": np.array(zp, np.uint8)}]
        entries.append({"tensors": sorted(names), "scale": scale, "zero_point": zp, "qmin": 0, "qmax": 255})
    outp = Path(out)
    scratch = outp.parent / f".{outp.stem}-float-export" if outp.suffix else outp / ".step-float-export"
    try:
        float_art = export(deploy, "onnx", scratch, ExportSpec(input_size=seqs.input_size), source=source)
        path = outp if outp.suffix else outp / float_art.path.name.replace("_fp32", "_int8")
        manifest = {**float_art.manifest, "artifact": path.name, "precision": "int8"}
        manifest["quantization"] = {
            "scheme": onnx_mod.quant_scheme("qdq"),
            "mode": "qdq",
            "method": "ptq",
            "calibration": seqs.manifest_entry(),
            "keep_float": [],
            "float_input_layers": [],
            "int8_io": False,
            "state": entries,
        }
        with atomic_path(manifest_path(path)) as tmp_m, atomic_path(path) as tmp:
            facts = _quantize_static(
                float_art.path, tmp, steps, sspec.input_names, overrides, embedded_metadata(manifest)
            )
            manifest["quantization"]["reduced_range_weights"] = facts["reduced_range_weights"]
            manifest.update(artifact_sha256=sha256_path(tmp), size_bytes=size_bytes(tmp))
            write_manifest(tmp_m, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Artifact(path, manifest_path(path), manifest)


def _groups(sspec: Any) -> list[set[str]]:
    """Each state with the tensor feeding it, joined where they meet (``prev`` / ``cur`` with the frames)."""
    groups: list[set[str]] = []
    for s in sspec.state:
        pair = {s.name, s.next}
        hit = [g for g in groups if g & pair]
        merged = pair.union(*hit)
        groups = [g for g in groups if g not in hit] + [merged]
    return groups


def _aliases(graph: Any, name: str) -> list[str]:
    """``name`` and the tensors holding its values after (input) or before (output) reshapes / transposes."""
    found, todo = [name], [name]
    while todo:
        t = todo.pop()
        for n in graph.node:
            if n.op_type in _ONNX_MOVES and (n.input[0] == t or t in n.output):
                other = n.output[0] if n.input[0] == t else n.input[0]
                if other not in found:
                    found.append(other)
                    todo.append(other)
    return found


def _quantize_static(
    float_path: Path,
    out_path: Path,
    steps: list[tuple[np.ndarray, ...]],
    names: list[str],
    overrides: dict[str, list[dict[str, Any]]],
    metadata: dict[str, str],
) -> dict[str, Any]:
    """The target's static QDQ quantization fed the streamed step inputs one sample at a time, with the
    shared state parameters as overrides; returns its facts."""
    import onnx
    from edge_sr.convert import target_module

    def feeds() -> Iterator[dict[str, np.ndarray]]:
        return (
            {n: np.ascontiguousarray(s[k][b : b + 1]) for k, n in enumerate(names)}
            for s in steps
            for b in range(s[0].shape[0])
        )

    graph = onnx.load(os.fspath(float_path), load_external_data=False).graph
    # the quantize of an input may sit after a reshape / transpose (pixel_unshuffle): override those too
    overrides = {a: v for n, v in overrides.items() for a in _aliases(graph, n)}
    facts: dict[str, Any] = target_module("onnx").quantize_file(  # type: ignore[attr-defined]
        float_path, out_path, feeds, overrides=overrides, metadata=metadata
    )
    return facts
