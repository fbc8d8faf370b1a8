"""INT8 / FP16 of a video step: calibration sequences, one scale / zero point per state pair read back from
each artifact (ONNX, TFLite, ExecuTorch, CoreML), the INT8 stream against the float stream, FP16 over sequences, and
``edge-sr quantize`` of a video checkpoint.

One tiny RRN (4 channels, 1 block) at 16x24 LR frames; one INT8 artifact per target serves the module. The
CoreML one is read back, not run (that needs macOS), and its conversion takes 100 s here: ``--run-slow``.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from edge_sr.quantize.sequences import load_sequences, step_inputs, synthetic_sequences
from edge_sr.quantize.stream import quantize_step, stream_fp16_check, stream_fp16_export, stream_ptq
from edge_sr.quantize.stream_io import artifact_qparams
from test_stream_export import eager, tiny_rrn

from edge_sr.cli import main
from edge_sr.errors import ConfigError, InputError
from edge_sr.models import save_checkpoint
from edge_sr.models.stream import stream_spec

HW = (16, 24)
TARGETS = ("onnx", "tflite", "executorch")  # run here; CoreML programs are read, not run, off macOS


@pytest.fixture(scope="module")
def rrn() -> torch.nn.Module:
    return tiny_rrn()


@pytest.fixture(scope="module")
def seqs():
    return synthetic_sequences(count=3, frames=5, input_size=HW, seed=1)


@pytest.fixture(scope="module")
def int8(rrn, seqs, tmp_path_factory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("int8")
    return {t: stream_ptq(rrn, t, seqs, out=out / t) for t in TARGETS}


def _frames(n: int, seed: int = 5) -> list[np.ndarray]:
    """(h, w, 3) float32 frames of a moving texture, as an app pushes them."""
    clip = synthetic_sequences(count=1, frames=n, input_size=HW, seed=seed).clips[0]
    return [f.permute(1, 2, 0).numpy() for f in clip]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


# ---------------------------------------------------------------- calibration sequences


def test_sequences_from_vid4_and_synthetic(data_root, seqs):
    vid4 = data_root / "video" / "Vid4"
    s = load_sequences(vid4, input_size=(24, 32), scale=4, clips=5, frames=3, seed=0)
    assert s.clips.shape == (5, 3, 3, 24, 32) and s.source == "lr-frames"
    assert s.names[:4] == ("calendar", "city", "foliage", "walk") and s.names[4] == "calendar"
    assert not torch.equal(s.clips[0], s.clips[4])  # the reused clip at another window
    assert 0.0 <= float(s.clips.min()) and float(s.clips.max()) <= 1.0
    # consecutive synthetic frames move: different, but close (a sub-pixel to 1.5 px step)
    d01 = float((seqs.clips[:, 1] - seqs.clips[:, 0]).abs().mean())
    assert 0.0 < d01 < 0.2
    with pytest.raises(InputError, match="frames"):
        load_sequences(vid4, input_size=(24, 32), scale=4, clips=1, frames=1000)


def test_step_inputs_carry_real_state(rrn, seqs):
    steps = list(step_inputs(rrn, seqs))
    assert len(steps) == seqs.frames
    hidden0, hidden3 = steps[0][2], steps[3][2]
    assert float(hidden0.abs().max()) == 0.0 and float(hidden3.abs().max()) > 0.0  # zeros, then real state
    assert torch.equal(steps[2][1], seqs.clips[:, 1])  # prev is the frame before


# ---------------------------------------------------------------- shared scale / zero point, from the file


@pytest.mark.parametrize(
    "target",
    (*TARGETS, pytest.param("coreml", marks=pytest.mark.slow)),  # CoreML: 100 s of conversion
)
def test_state_pairs_share_scale_in_artifact(int8, rrn, seqs, target, tmp_path):
    art = int8[target] if target in int8 else stream_ptq(rrn, target, seqs, out=tmp_path)
    qp = artifact_qparams(art.path)
    spec = stream_spec(rrn)
    for s in spec.state:
        a, b = qp[s.name], qp[s.next]
        if s.name in ("hidden", "prev_sr"):  # quantized on both sides on every target
            assert a is not None and b is not None, (s.name, qp)
        if a is not None and b is not None:
            assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-6), (s.name, s.next, a, b)
    # the manifest says what the file holds
    groups = art.manifest["quantization"]["state"]
    for g in groups:
        for name in g["tensors"]:
            if qp[name] is not None:
                # flatc prints the XNNPACK graph's floats with 6-7 digits
                assert qp[name][0] == pytest.approx(g["scale"], rel=1e-4) and qp[name][1] == g["zero_point"]
    if target == "tflite":  # state tensors are int8 in the file, described in the stream entry
        tensors = {t["name"]: t for t in art.manifest["stream"]["tensors"]}
        assert tensors["hidden"]["dtype"] == tensors["hidden_out"]["dtype"] == "int8"
        assert tensors["hidden"]["quant"] == tensors["hidden_out"]["quant"]


def _hidden_scales(gm) -> tuple[float, float]:
    """(scale hidden is quantized with, scale hidden_out is dequantized with) in a converted PT2E graph."""
    todo = [[n for n in gm.graph.nodes if n.op == "placeholder"][2]]  # cur, prev, hidden, prev_sr
    q_in = None
    while todo and q_in is None:
        node = todo.pop(0)
        for u in node.users:
            if "quantize_per_tensor" in str(u.target) and "dequantize" not in str(u.target):
                q_in = float(u.args[1])
            todo.append(u)
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0][1]  # (sr, hidden_out)
    assert q_in is not None and "dequantize" in str(out.target)
    return q_in, float(out.args[1])


def test_left_alone_pairs_differ(rrn, seqs, monkeypatch):
    """Without joining the observers the quantizer gives hidden and hidden_out different scales (what the
    issue measured on TFLite): the artifact check above is one that can fail."""
    import edge_sr.quantize.stream as qs

    gm, _, _ = quantize_step(rrn, "tflite", seqs)
    q_in, q_out = _hidden_scales(gm)
    assert q_in == pytest.approx(q_out, rel=1e-6)
    monkeypatch.setattr(qs, "share_state_qparams", lambda gm, spec: [])
    q_in, q_out = _hidden_scales(qs.quantize_step(rrn, "tflite", seqs)[0])
    assert abs(q_in - q_out) > 0.05 * max(q_in, q_out), (q_in, q_out)


# ---------------------------------------------------------------- INT8 stream against the float stream


@pytest.mark.parametrize("target", TARGETS)
def test_int8_stream_close_to_float(int8, rrn, target):
    from edge_sr.runtime import load

    frames = _frames(6)
    ref = eager(rrn, frames)
    stream = load(int8[target].path).stream()
    got = [np.asarray(stream.push(f)) for f in frames]
    psnr = [_psnr(g, r) for g, r in zip(got, ref, strict=True)]
    # the image INT8 criterion is 0.2 dB of PSNR against HR; with a float output near HR that allows an
    # error of about 40 dB PSNR against float: every frame, no drift along the clip
    assert min(psnr) > 38.0, psnr
    assert psnr[-1] > psnr[0] - 3.0, psnr


# ---------------------------------------------------------------- FP16 over sequences


def test_fp16_check_over_state_and_export(rrn, seqs, tmp_path):
    from edge_sr.runtime import load

    report = stream_fp16_check(rrn, seqs)
    names = [r.name for r in report.layers]
    assert "neuro.conv_h" in names and "neuro.conv_1" in names and report.ok
    # a state value FP16 cannot hold is found: scale the hidden path up past 65504
    big = tiny_rrn()
    with torch.no_grad():
        big.neuro.conv_h.weight.mul_(2e5)
        big.neuro.conv_h.bias.add_(7e4)
    assert "neuro.conv_h" in stream_fp16_check(big, seqs).offenders
    art = stream_fp16_export(rrn, "onnx", seqs, out=tmp_path)
    assert art.manifest["precision"] == "fp16" and art.manifest["stream"]
    frames = _frames(4)
    got = [np.asarray(load(art.path).stream().push(f)) for f in frames[:1]]
    assert _psnr(got[0], eager(rrn, frames[:1])[0]) > 50.0  # the image FP16 threshold


# ---------------------------------------------------------------- edge-sr quantize of a video checkpoint


def test_cli_quantize_video_checkpoint(rrn, data_root, tmp_path):
    ckpt = save_checkpoint(rrn, tmp_path / "rrn_tiny.safetensors")
    buf = io.StringIO()
    argv = ["quantize", str(ckpt), "--target", "onnx", "--calib", str(data_root / "video" / "Vid4")]
    argv += ["--calib-count", "2", "--calib-frames", "3", "--input-size", "16x24", "--no-verify"]
    with contextlib.redirect_stdout(buf):
        code = main([*argv, "-o", str(tmp_path / "out"), "--json"])
    lines = buf.getvalue().splitlines()
    assert code == 0 and len(lines) == 1, lines
    obj = json.loads(lines[0])
    assert obj["stream"] is True and obj["precision"] == "int8"
    assert {n for g in obj["state_quant"] for n in g["tensors"]} >= {"hidden", "hidden_out", "prev_sr", "sr"}
    qp = artifact_qparams(obj["path"])
    assert qp["hidden"] == qp["hidden_out"] and qp["prev_sr"] == qp["sr"]
    with pytest.raises(ConfigError, match="QAT"):
        from edge_sr.quantize.checkpoint import quantize_checkpoint

        quantize_checkpoint(
            rrn, "tflite", calib=str(data_root / "video" / "Vid4"), out=tmp_path, qat=True, data=["x"]
        )


# ---------------------------------------------------------------- QAT: the quantize half a video loop drives


def test_stream_qat_through_unrolled_clips(rrn, seqs, tmp_path):
    """The fake-quant step runs in the training loop's ``Unrolled`` (truncated BPTT over clips) like the float
    step, trains, and exports with its state pairs sharing one scale / zero point."""
    import torch.nn.functional as F
    from edge_sr.quantize.stream import finish_stream_qat, prepare_stream_qat
    from torchao.quantization.pt2e import disable_observer

    from edge_sr.train.parts import Unrolled

    step = prepare_stream_qat(rrn, "executorch", seqs)
    net = Unrolled(step, tbptt=2).train()
    hr = synthetic_sequences(count=2, frames=4, input_size=(HW[0] * 4, HW[1] * 4), seed=3).clips
    lr = F.interpolate(hr.flatten(0, 1), scale_factor=0.25, mode="area").unflatten(0, (2, 4))
    before = [p.detach().clone() for p in step.parameters()]
    opt = torch.optim.Adam([p for p in step.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for i in range(6):
        if i == 4:
            step.apply(disable_observer)
        loss = (net(lr) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, step.parameters(), strict=True))
    art = finish_stream_qat(step.eval(), out=tmp_path, qat={"iters": 6, "loss_first": losses[0]})
    q = art.manifest["quantization"]
    assert q["method"] == "qat" and q["qat"]["iters"] == 6
    qp = artifact_qparams(art.path)
    assert qp["hidden"] == qp["hidden_out"] and qp["prev_sr"] == qp["sr"]
