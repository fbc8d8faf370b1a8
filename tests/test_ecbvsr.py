"""ECB-VSR: started from an ECBSR checkpoint it is that image model frame by frame; its deploy form (one head
conv over [cur, prev, hidden]) equals the train form; both forms are recognised from their keys; its cost; the
step exported to every target streams like the eager step (CoreML through the MIL reference executor off macOS);
in INT8 each state pair shares one scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_sr.convert import TARGETS, ExportSpec, export
from edge_sr.quantize.sequences import synthetic_sequences
from edge_sr.quantize.stream import stream_ptq
from edge_sr.quantize.stream_io import artifact_qparams
from test_stream_export import eager

from edge_sr.models import create_model, load_checkpoint, save_checkpoint
from edge_sr.models.detect import detect
from edge_sr.models.stream import Stream, initial_state, stream_spec
from edge_sr.profile.compute import count_macs
from edge_sr.reparam import reparameterize
from edge_sr.runtime import load
from edge_sr.train import init_from

HW = (16, 24)


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model("ecbvsr_m4c16", scale=4, channels=4, blocks=1).eval()
    with torch.no_grad():  # state_in off zero and non-trivial biases, so a swapped input cannot hide
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return _tiny()


def _frames(n: int, seed: int = 5) -> list[np.ndarray]:
    clip = synthetic_sequences(count=1, frames=n, input_size=HW, seed=seed).clips[0]
    return [f.permute(1, 2, 0).numpy() for f in clip]


def test_started_from_ecbsr_it_is_the_image_model_frame_by_frame(tmp_path) -> None:
    torch.manual_seed(1)
    img = create_model("ecbsr_m4c16", scale=4, channels=8, blocks=2, act="relu").eval()
    with torch.no_grad():
        for p in img.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(img, tmp_path / "img.safetensors")
    vid = create_model("ecbvsr_m4c16", scale=4, channels=8, blocks=2).eval()
    report = init_from(vid, str(tmp_path / "img.safetensors"))
    assert sorted(report.new) == ["conv_h.bias", "conv_h.weight", "state_in.bias", "state_in.weight"]
    assert report.ignored == []
    s = Stream(vid)
    with torch.no_grad():
        for i in range(4):
            x = torch.rand(1, 3, 10, 12)
            sr = s.push(x)
            assert torch.allclose(sr, img(x)[0], atol=1e-6), i
            assert s.state["hidden"].abs().sum() > 0  # the state is carried, only not yet used
    # the step draws on its state once state_in is trained away from zero
    with torch.no_grad():
        vid.state_in.weight.normal_(0, 0.1)
        x = torch.rand(1, 3, 10, 12)
        st = initial_state(stream_spec(vid), x, colors=3, scale=4)
        a = vid(x, *st.values())[0]
        b = vid(x, torch.rand_like(x), torch.rand_like(st["hidden"]))[0]
    assert (a - b).abs().max() > 1e-3


def test_deploy_form_equals_train_form_and_both_are_detected(tiny, tmp_path) -> None:
    m = tiny.double()
    d = reparameterize(m)
    assert type(d).__name__ == "ECBVSRPlain" and d.head.in_channels == 3 + 3 + 4
    x, p, h = (
        torch.rand(2, 3, 9, 13).double(),
        torch.rand(2, 3, 9, 13).double(),
        torch.rand(2, 4, 9, 13).double(),
    )
    with torch.no_grad():
        (a, ha), (b, hb) = m(x, p, h), d(x, p, h)
    assert (a - b).abs().max() < 1e-12 and (ha - hb).abs().max() < 1e-12
    tiny.float()
    want = {"scale": 4, "colors": 3, "blocks": 1, "channels": 4, "act": "relu"}
    for form, net in (("train", tiny), ("deploy", reparameterize(tiny))):
        det = detect(net.state_dict())
        assert (det.arch, det.args, det.form) == ("ecbvsr_m4c16", want, form)
        # a bare state dict (no edge-sr metadata) loads as the same step
        path = tmp_path / f"{form}.pth"
        torch.save({k: v.float() for k, v in net.state_dict().items()}, path)
        loaded = load_checkpoint(path)
        with torch.no_grad():
            got = loaded(x.float(), p.float(), h.float())
            ref = tiny(x.float(), p.float(), h.float())
        assert torch.allclose(got[0], ref[0], atol=1e-5) and torch.allclose(got[1], ref[1], atol=1e-5)
    # the image model's keys alone are not this family (no state_in / conv_h)
    img = create_model("ecbsr_m4c16", scale=4, channels=4, blocks=1)
    assert detect(img.state_dict()).arch.startswith("ecbsr_m4c")


def test_cost_per_frame() -> None:
    """21.6 K MACs per LR pixel at M4C16 x4: head 22·16·9, body 4·16·16·9, tail 16·48·9, conv_h 16·16·9."""
    m = reparameterize(create_model("ecbvsr_m4c16", scale=4))

    class FirstStep(torch.nn.Module):  # count_macs feeds one (1, 3, h, w) frame: run the first step on it
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x, *initial_state(stream_spec(self.net), x, colors=3, scale=4).values())[0]

    macs = count_macs(FirstStep(m), 180, 320)
    per_px = (22 * 16 * 9 + 4 * 16 * 16 * 9 + 16 * 48 * 9 + 16 * 16 * 9) + 3 * 48  # + the residual's 1x1
    assert macs == pytest.approx(per_px * 180 * 320, rel=0.01)


@pytest.mark.parametrize("target", TARGETS)
def test_fp32_step_streams_like_the_eager_step(tiny, target, tmp_path) -> None:
    frames = _frames(4)
    art = export(tiny, target, tmp_path / target, ExportSpec(input_size=HW, precision="fp32"))
    names = {t["name"] for t in art.manifest["stream"]["tensors"]}
    assert names == {"cur", "prev", "hidden", "sr", "hidden_out"}
    ref = eager(tiny, frames)
    s = load(art.path).stream()
    got = [np.asarray(s.push(f)) for f in frames]
    assert max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True)) < 1e-4


# ONNX's QDQ path is the same for every step (tests/test_stream_quantize.py runs it); these two read the
# artifact's own tensors by name, where TFLite's signature order differs from the step's
@pytest.mark.parametrize("target", ["tflite", "executorch"])
def test_int8_state_pairs_share_scale_and_stream_close_to_float(tiny, target, tmp_path) -> None:
    seqs = synthetic_sequences(count=3, frames=5, input_size=HW, seed=1)
    art = stream_ptq(tiny, target, seqs, out=tmp_path / target)
    qp = artifact_qparams(art.path)
    # read by name: TFLite's signature lists hidden / hidden_out / prev ... sorted, not in step order
    assert qp["hidden"] is not None and qp["hidden_out"] is not None, qp
    assert qp["hidden"][1] == qp["hidden_out"][1] and qp["hidden"][0] == pytest.approx(qp["hidden_out"][0])
    if qp["prev"] is not None and qp["cur"] is not None:
        assert qp["prev"] == pytest.approx(qp["cur"])
    frames = _frames(6)
    ref = eager(tiny, frames)
    s = load(art.path).stream()
    got = [np.asarray(s.push(f)) for f in frames]
    mse = [float(np.mean((np.clip(g, 0, 1) - np.clip(r, 0, 1)) ** 2)) for g, r in zip(got, ref, strict=True)]
    psnr = [10 * np.log10(1 / max(e, 1e-12)) for e in mse]
    assert min(psnr) > 33.0 and psnr[-1] > psnr[0] - 3.0, psnr


def test_onnx_int8_step_gives_the_convs_reading_its_inputs_7bit_weights(tiny, tmp_path) -> None:
    """The head conv reads [cur, prev, hidden] on full uint8 grids: 7-bit weights keep onnxruntime's u8 x s8
    int16 pair sums from saturating on x86 without VNNI (with 8-bit weights it lost 0.44 dB on Vid4 there)."""
    import onnx
    from onnx import numpy_helper

    seqs = synthetic_sequences(count=3, frames=5, input_size=HW, seed=1)
    art = stream_ptq(tiny, "onnx", seqs, out=tmp_path / "onnx")
    reduced = art.manifest["quantization"]["reduced_range_weights"]
    assert "head.weight" in reduced and not any(w.startswith("body.") for w in reduced), reduced
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(art.path)).graph.initializer}
    head = inits["head.weight_quantized"]
    assert int(np.abs(head).max()) == 64  # symmetric 7-bit: 255 x 64 x 2 < 2^15
    assert int(np.abs(inits["body.0.0.weight_quantized"]).max()) == 127  # the rest keep all 8 bits
    frames = _frames(6)
    ref = eager(tiny, frames)
    s = load(art.path).stream()
    got = [np.asarray(s.push(f)) for f in frames]
    mse = [float(np.mean((np.clip(g, 0, 1) - np.clip(r, 0, 1)) ** 2)) for g, r in zip(got, ref, strict=True)]
    assert min(10 * np.log10(1 / max(e, 1e-12)) for e in mse) > 33.0
