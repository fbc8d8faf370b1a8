"""A video model's step exported to every target: all its tensors named as its StreamSpec names them, the
manifest's ``stream`` entry, and each artifact streamed over a few frames against the eager ``Stream``.

One tiny RRN (4 channels, 1 block, x4) at one 12x16 frame size; the conversions are made once per module.
Tolerances are ``edge_sr.verify``'s per precision: FP32 max abs diff <= 1e-4 (what is measured is ~2e-7:
the same float32 convolutions summed in another order, fed back four times), FP16 PSNR vs float >= 50 dB
(measured 70-80 dB: float16 weights / activations, fed back through the hidden state and the previous output).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from edge_sr.convert import TARGETS, ExportSpec, export, read_manifest, target_module

from edge_sr.errors import ConversionError
from edge_sr.models import create_model
from edge_sr.models.stream import Stream, stream_spec
from edge_sr.runtime import load
from edge_sr.runtime.stream import moving_frames

HW = (12, 16)
FRAMES = 4
# (target, precision, layout): every target in FP32 NCHW, FP16 on ONNX and TFLite, NHWC on both
CASES = [(t, "fp32", "NCHW") for t in TARGETS] + [("onnx", "fp16", "NHWC"), ("tflite", "fp16", "NHWC")]


def tiny_rrn() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("rrn_edge", scale=4, n_c=4, n_b=1).eval()
    with torch.no_grad():  # non-trivial biases, so a swapped state cannot hide
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def eager(model: torch.nn.Module, frames: list[np.ndarray]) -> list[np.ndarray]:
    s = Stream(model)
    return [s.push(torch.from_numpy(f.transpose(2, 0, 1))[None])[0].permute(1, 2, 0).numpy() for f in frames]


@pytest.fixture(scope="module")
def rrn() -> torch.nn.Module:
    return tiny_rrn()


@pytest.fixture(scope="module")
def artifacts(rrn, tmp_path_factory) -> dict[tuple[str, str, str], object]:
    out = tmp_path_factory.mktemp("stream")
    return {
        case: export(
            rrn,
            case[0],
            out / f"{'_'.join(case)}",
            ExportSpec(input_size=HW, precision=case[1], layout=case[2]),
        )
        for case in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_streamed_artifact_equals_the_eager_stream(artifacts, rrn, case) -> None:
    art = artifacts[case]
    frames = moving_frames(*HW, n=FRAMES)
    stream = load(art.path).stream()
    got = [stream.push(f) for f in frames]
    want = eager(rrn, frames)
    assert got[0].shape == (HW[0] * 4, HW[1] * 4, 3)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
    if case[1] == "fp32":
        assert diff <= 1e-4, diff
    else:
        mse = max(float(np.mean((a - b) ** 2)) for a, b in zip(got, want))
        assert 10 * np.log10(1.0 / mse) >= 50.0 and diff > 0  # FP16 really computed in half precision
    # the state is used: frame 3 of a fresh stream (no history) differs from frame 3 of the clip
    fresh = load(art.path).stream().push(frames[3])
    assert float(np.abs(fresh - got[3]).max()) > 1e-3


def _artifact_io(path, target: str) -> tuple[list, list]:
    """The artifact's own inputs / outputs: names where the format has them, else shapes in order."""
    if target == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        return [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]
    if target == "coreml":
        import coremltools as ct

        d = ct.utils.load_spec(os.fspath(path)).description
        return [i.name for i in d.input], [o.name for o in d.output]
    if target == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        sig = Interpreter(model_path=os.fspath(path)).get_signature_list()["serving_default"]
        return sorted(sig["inputs"]), sorted(sig["outputs"])
    if target == "executorch":
        from executorch.runtime import Runtime

        meta = Runtime.get().load_program(os.fspath(path)).metadata("forward")
        ins = [list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        return ins, [list(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())]
    with open(path, "rb") as f:
        ep = torch.export.load(f)
    vals = {n.name: n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder"}
    ins = [
        list(vals[s.arg.name].shape) for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"
    ]
    outs = [list(o.shape) for o in ep.module()(*(torch.rand(*s) for s in ins))]
    return ins, outs


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_manifest_names_every_tensor_as_the_artifact_does(artifacts, rrn, case) -> None:
    art = artifacts[case]
    target, _, layout = case
    m = read_manifest(art.path)
    assert m == json.loads(art.manifest_path.read_text())
    spec = stream_spec(rrn)
    st = m["stream"]
    assert st["frames"] == ["cur"] and st["output"] == "sr" and st["state_outputs"] == ["hidden_out"]
    assert [s["name"] for s in st["state"]] == ["prev", "hidden", "prev_sr"]
    assert {s["name"]: (s["next"], s["init"]) for s in st["state"]} == {
        "prev": ("cur", "frame"),
        "hidden": ("hidden_out", "zeros"),
        "prev_sr": ("sr", "zeros"),
    }
    assert [s["shape"] for s in st["state"]] == [[1, 3, 12, 16], [1, 4, 12, 16], [1, 3, 48, 64]]
    assert st["size"] == list(HW) and st["frame"] == {"value_range": [0.0, 1.0], "colors": 3}
    ins = sorted((t for t in st["tensors"] if t["io"] == "input"), key=lambda t: t["index"])
    outs = sorted((t for t in st["tensors"] if t["io"] == "output"), key=lambda t: t["index"])
    assert [t["name"] for t in ins] == spec.input_names and [t["name"] for t in outs] == spec.output_names
    assert [e["name"] for e in m["inputs"]] == spec.input_names
    assert all(
        t["layout"] == layout and t["dtype"] == "float32" and t["quant"] is None for t in st["tensors"]
    )
    nchw = [[1, 3, 12, 16], [1, 3, 12, 16], [1, 4, 12, 16], [1, 3, 48, 64]]
    want_in = [[s[0], s[2], s[3], s[1]] for s in nchw] if layout == "NHWC" else nchw
    assert [t["shape"] for t in ins] == want_in
    got_in, got_out = _artifact_io(art.path, target)
    if target in ("executorch", "pt2"):  # no names: the order and shapes the manifest records
        assert got_in == [t["shape"] for t in ins] and got_out == [t["shape"] for t in outs]
    elif target == "tflite":
        assert got_in == sorted(spec.input_names) and got_out == sorted(spec.output_names)
    else:
        assert got_in == spec.input_names and got_out == spec.output_names
    meta = target_module(target).read_embedded(art.path)
    if target != "executorch":  # ExecuTorch has no metadata section
        assert json.loads(meta["edge_sr.stream"])["frames"] == ["cur"]


@pytest.mark.parametrize("target", ["onnx", "executorch", "pt2"])
def test_a_dynamic_step_streams_every_size_of_its_range(rrn, tmp_path, target) -> None:
    art = export(rrn, target, tmp_path / "dyn", ExportSpec(dynamic=(8, 40)))
    assert art.manifest["input_shape"] == {"mode": "dynamic", "min": 8, "max": 40}
    assert all(t["shape"] is None for t in art.manifest["stream"]["tensors"])
    runner = load(art.path)
    for hw in ((12, 16), (20, 40)):
        frames = moving_frames(*hw, n=3, seed=hw[0])
        stream = runner.stream()
        got = [stream.push(f) for f in frames]
        assert stream.tiles == 1  # in range: whole frames, no tiles
        assert max(float(np.abs(a - b).max()) for a, b in zip(got, eager(rrn, frames))) <= 1e-4


def test_fixed_size_targets_refuse_a_dynamic_step(rrn, tmp_path) -> None:
    with pytest.raises(ConversionError, match="one fixed frame size"):
        export(rrn, "coreml", tmp_path / "d.mlpackage", ExportSpec(dynamic=(8, 32)))
    with pytest.raises(ConversionError, match="fixed shapes"):
        export(rrn, "tflite", tmp_path / "d.tflite", ExportSpec(dynamic=(8, 32)))
    with pytest.raises(ConversionError, match="no enumerated sizes"):
        export(rrn, "coreml", tmp_path / "e.mlpackage", ExportSpec(sizes=((12, 16), (16, 16))))
    with pytest.raises(ConversionError, match="tensor I/O"):
        export(rrn, "coreml", tmp_path / "i.mlpackage", ExportSpec(input_size=HW, io="image"))
    assert not list(tmp_path.iterdir())  # nothing half-written
