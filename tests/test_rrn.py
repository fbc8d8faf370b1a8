"""RRN: the official key layout (``module.`` prefix) loaded and detected, the step against a hand-written
reference, the stream's use of its state, the published parameter counts and the edge configuration's cost."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.models import create_model, load_checkpoint
from edge_sr.models.detect import detect
from edge_sr.models.stream import Stream, initial_state, stream_spec
from edge_sr.profile.compute import count_macs


def _seeded(name: str, **args) -> nn.Module:
    torch.manual_seed(0)
    m = create_model(name, **args).eval()
    with torch.no_grad():  # non-trivial biases too, so a swapped input or channel cannot hide
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_official_layout_with_module_prefix_is_detected_and_loaded(tmp_path) -> None:
    ref = _seeded("rrn_s", scale=4)
    official = {f"module.{k}": v.clone() for k, v in ref.state_dict().items()}  # DataParallel's names
    assert "module.neuro.recon_trunk.4.conv2.weight" in official
    path = tmp_path / "RRN-5L.pth"
    torch.save(official, path)
    net = load_checkpoint(path)
    assert type(net).__name__ == "RRN"
    d = detect({k.removeprefix("module."): v for k, v in official.items()})
    assert d.arch == "rrn_s" and d.args == {"scale": 4, "colors": 3, "n_c": 128, "n_b": 5}
    x = torch.rand(1, 3, 6, 5)
    state = initial_state(stream_spec(ref), x, colors=3, scale=4)
    with torch.no_grad():
        a, b = ref(x, *state.values()), net(x, *state.values())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_detector_reads_sizes_and_refuses_other_families() -> None:
    for name, args in (
        ("rrn", {"scale": 4}),
        ("rrn_edge", {"scale": 2, "colors": 1}),
        ("rrn_edge", {"scale": 3}),
    ):
        with torch.device("meta"):
            m = create_model(name, **args)
        d = detect(m.state_dict())
        assert d.arch == name
        assert d.scale == args["scale"] and d.colors == args.get("colors", 3)
        assert (d.args["n_c"], d.args["n_b"]) == (m.n_c, len(m.neuro.recon_trunk))
    with torch.device("meta"):
        odd = create_model("rrn_edge", scale=4, n_c=12, n_b=5)
    d = detect(odd.state_dict())
    assert d.args["n_c"] == 12 and d.args["n_b"] == 5  # a configuration of its own: every size passed


def _reference_step(m: nn.Module, cur: Tensor, prev: Tensor, hidden: Tensor, prev_sr: Tensor, s: int):
    """The RRN step written out from the paper / official code, conv by conv."""
    n, c, h, w = prev_sr.shape
    # space-to-depth as the official pixel_unshuffle: (N, C, h, s, w, s) -> channel c·s² + i·s + j
    folded = (
        prev_sr.reshape(n, c, h // s, s, w // s, s)
        .permute(0, 1, 3, 5, 2, 4)
        .reshape(n, c * s * s, h // s, w // s)
    )
    sd = m.state_dict()

    def conv(x: Tensor, key: str) -> Tensor:
        return F.conv2d(x, sd[f"neuro.{key}.weight"], sd[f"neuro.{key}.bias"], padding=1)

    x = F.relu(conv(torch.cat([prev, cur, hidden, folded], dim=1), "conv_1"))
    for i in range(len(m.neuro.recon_trunk)):
        x = x + conv(F.relu(conv(x, f"recon_trunk.{i}.conv1")), f"recon_trunk.{i}.conv2")
    hid = F.relu(conv(x, "conv_h"))
    res = conv(x, "conv_o")  # (N, C·s², h, w) -> depth-to-space
    nn_, cs, hh, ww = res.shape
    res = (
        res.reshape(nn_, cs // (s * s), s, s, hh, ww)
        .permute(0, 1, 4, 2, 5, 3)
        .reshape(nn_, cs // (s * s), hh * s, ww * s)
    )
    base = F.interpolate(cur, scale_factor=s, mode="bilinear", align_corners=False)
    return res + base, hid


def test_step_equals_hand_written_reference() -> None:
    m = _seeded("rrn_edge", scale=3, n_c=8, n_b=2)
    g = torch.Generator().manual_seed(1)
    cur, prev = torch.rand(2, 3, 7, 5, generator=g), torch.rand(2, 3, 7, 5, generator=g)
    hidden, prev_sr = torch.rand(2, 8, 7, 5, generator=g), torch.rand(2, 3, 21, 15, generator=g)
    with torch.no_grad():
        sr, hid = m(cur, prev, hidden, prev_sr)
        ref_sr, ref_hid = _reference_step(m, cur, prev, hidden, prev_sr, 3)
    assert sr.shape == (2, 3, 21, 15) and hid.shape == (2, 8, 7, 5)
    torch.testing.assert_close(sr, ref_sr, rtol=0, atol=1e-5)
    torch.testing.assert_close(hid, ref_hid, rtol=0, atol=1e-5)
    # swapping the two frames changes the step: the order of the concatenation matters
    with torch.no_grad():
        assert not torch.allclose(m(cur, cur, hidden, prev_sr)[0], m(cur, prev, hidden, prev_sr)[0])


def test_stream_is_deterministic_and_uses_its_state() -> None:
    m = _seeded("rrn_edge", scale=4, n_c=8, n_b=1)
    g = torch.Generator().manual_seed(2)
    frames = [torch.rand(1, 3, 6, 8, generator=g) for _ in range(4)]
    a = list(Stream(m).run(frames))
    b = list(Stream(m).run(frames))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # the first step starts from prev = the frame itself and zero hidden / output
    with torch.no_grad():
        first = m(frames[0], frames[0], torch.zeros(1, 8, 6, 8), torch.zeros(1, 3, 24, 32))[0]
    assert torch.equal(a[0], first)
    changed = [frames[0] + 0.2, *frames[1:]]
    c = list(Stream(m).run(changed))
    assert (c[2] - a[2]).abs().max() > 1e-4  # frame 0 reaches frame 2 through hidden and prev_sr
    assert not torch.equal(c[3], a[3])


def test_published_parameter_counts_and_edge_cost() -> None:
    counts = {
        n: sum(p.numel() for p in create_model(n, scale=4).parameters()) for n in ("rrn", "rrn_s", "rrn_edge")
    }
    # RRN-L: the official log's "Model size: 12.83417M" (float32 bytes / 2^20) is 3,364,400 parameters
    assert counts["rrn"] == 3_364_400 and round(counts["rrn"] * 4 / 2**20, 5) == 12.83417
    assert counts["rrn_s"] == 1_888_560
    assert 30_000 < counts["rrn_edge"] < 36_000  # MobileRRN's 16-channel baseline: 35.7 K

    class FirstStep(nn.Module):  # count_macs feeds one (1, 3, h, w) frame: run the first step on it
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            state = initial_state(stream_spec(self.net), x, colors=3, scale=4)
            return self.net(x, *state.values())[0]

    macs = count_macs(FirstStep(create_model("rrn_edge", scale=4)), 180, 320)
    assert 1.8e9 < macs <= 2.05e9  # within MobileRRN's 2.05 GMAC per 180x320 frame


def test_official_initialisation() -> None:
    torch.manual_seed(0)
    m = create_model("rrn", scale=4)
    for name, conv in m.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.bias is not None and not conv.bias.any(), name
            fan_in = conv.weight[0].numel()
            want = 0.1 * (2.0 / fan_in) ** 0.5  # Kaiming normal (ReLU gain, fan in), scaled by 0.1
            assert abs(conv.weight.std().item() / want - 1) < 0.15, name
