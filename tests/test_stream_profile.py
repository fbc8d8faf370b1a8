"""``edge-sr profile`` of a video step artifact: per-frame latency and fps with the state fed back between the
timed calls (one ONNX FP32 export of a tiny RRN at 16x24), and the feeding itself (int8 state back as is)."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
from edge_sr.convert import ExportSpec, export
from edge_sr.convert.target import time_calls
from test_stream_export import tiny_rrn

from edge_sr.cli import main
from edge_sr.profile.stream import initial_feeds, profile_stream


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export(tiny_rrn(), "onnx", tmp_path_factory.mktemp("prof"), ExportSpec(input_size=(16, 24)))


def test_profile_json_for_a_stream_artifact(artifact):
    buf = io.StringIO()
    argv = ["profile", str(artifact.path), "--threads", "1", "--runs", "6", "--warmup", "1", "--no-peak"]
    with contextlib.redirect_stdout(buf):
        code = main([*argv, "--json"])
    lines = buf.getvalue().splitlines()
    assert code == 0 and len(lines) == 1, lines
    r = json.loads(lines[0])
    assert r["stream"] is True and r["threads"] == 1 and r["runs"] == 6
    assert r["input_shape"] == [1, 3, 16, 24]  # the LR frame
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["fps"] == pytest.approx(1e3 / r["median_ms"])
    assert r["gmacs"] > 0  # counted on the step with its state inputs


class _Spy:
    """Records the feeds of each call; returns outputs that change every call."""

    def __init__(self, entry):
        self.entry, self.calls = entry, []

    def run(self, feeds):
        self.calls.append({k: v.copy() for k, v in feeds.items()})
        n = len(self.calls)
        outs = {
            t["name"]: np.full(t["shape"], n, t["dtype"])
            for t in self.entry["tensors"]
            if t["io"] == "output"
        }
        return outs


def test_state_fed_back_between_timed_calls(artifact, monkeypatch):
    entry = artifact.manifest["stream"]
    spy = _Spy(entry)
    import edge_sr.profile.stream as ps

    monkeypatch.setattr(ps, "target_module", lambda kind: type("M", (), {"Runner": lambda *a, **k: spy}))
    timed = profile_stream(
        artifact.path, "onnx", artifact.manifest, runs=3, warmup=1, threads=1, timer=time_calls
    )
    assert len(timed.times_ms) == 3 and len(spy.calls) == 4
    first = spy.calls[0]
    assert not first["hidden"].any() and not first["prev_sr"].any()  # init zeros
    assert np.array_equal(first["prev"], first["cur"])  # init: the first frame
    for i in range(1, 4):  # each state takes what its `next` gave in the call before
        assert (spy.calls[i]["hidden"] == i).all() and (spy.calls[i]["prev_sr"] == i).all()
        assert np.array_equal(spy.calls[i]["prev"], spy.calls[i - 1]["cur"])
        assert not np.array_equal(spy.calls[i]["cur"], spy.calls[i - 1]["cur"])  # a new frame each call


def test_int8_state_starts_at_its_zero_point():
    entry = {
        "frames": ["cur"],
        "state": [{"name": "h", "next": "h_out", "init": "zeros"}],
        "tensors": [
            {"name": "cur", "io": "input", "dtype": "float32", "shape": [1, 3, 2, 2], "quant": None},
            {
                "name": "h",
                "io": "input",
                "dtype": "int8",
                "shape": [1, 2, 2, 2],
                "quant": {"scale": 0.1, "zero_point": -7},
            },
        ],
    }
    feeds = initial_feeds(entry, {"cur": np.zeros((1, 3, 2, 2), np.float32)})
    assert feeds["h"].dtype == np.int8 and (feeds["h"] == -7).all()


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_coreml_step_is_not_timed_off_macos(tmp_path):
    # off macOS the CoreML runner is the MIL reference executor: its time would be reported as Core ML's
    from edge_sr.errors import RuntimeBackendError

    with pytest.raises(RuntimeBackendError, match="needs macOS"):
        profile_stream(
            tmp_path / "step.mlpackage",
            "coreml",
            {"stream": {"tensors": []}},
            runs=1,
            warmup=0,
            threads=1,
            timer=time_calls,
        )
