"""Streaming runners: ``edge-sr convert`` of a video checkpoint, ``runtime.load(...).stream()`` over an artifact
and a checkpoint, one state per tile position (against a per-tile eager stream), padding of small frames,
and the one-line refusals (wrong frames, a damaged ``stream`` entry, image / video misuse).

One ONNX conversion of a tiny RRN (through the CLI) serves the module.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_stream_export import eager, tiny_rrn

from edge_sr.cli import main
from edge_sr.errors import EdgeSRError, InputError
from edge_sr.models import create_model, save_checkpoint
from edge_sr.models.stream import Stream
from edge_sr.runtime import from_model, load
from edge_sr.runtime.stream import moving_frames
from edge_sr.tiling import plan_axis

HW = (12, 16)


@pytest.fixture(scope="module")
def rrn() -> torch.nn.Module:
    return tiny_rrn()


@pytest.fixture(scope="module")
def ckpt(rrn, tmp_path_factory):
    return save_checkpoint(rrn, tmp_path_factory.mktemp("ck") / "rrn_tiny.safetensors")


@pytest.fixture(scope="module")
def converted(ckpt, tmp_path_factory):
    """``edge-sr convert CKPT --target onnx --input-size 12x16 --json``: (exit code, JSON, artifact path)."""
    out = tmp_path_factory.mktemp("cli")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            ["convert", str(ckpt), "--target", "onnx", "--input-size", "12x16", "-o", str(out), "--json"]
        )
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, lines
    obj = json.loads(lines[0])
    return code, obj, obj["path"]


def test_cli_converts_a_video_checkpoint_and_reports_the_stream(converted) -> None:
    code, obj, path = converted
    assert code == 0 and path.endswith(".onnx")
    st = obj["stream"]
    assert st["size"] == list(HW) and [s["name"] for s in st["state"]] == ["prev", "hidden", "prev_sr"]
    v = obj["verify"]
    assert (
        v["passed"]
        and v["frames"] == 4
        and v["max_abs_diff"] <= 1e-4
        and len(v["per_frame_max_abs_diff"]) == 4
    )


def test_checkpoint_and_model_stream_like_the_eager_stream(rrn, ckpt) -> None:
    frames = moving_frames(*HW, n=3)
    want = eager(rrn, frames)
    for runner in (load(ckpt), from_model(rrn)):
        s = runner.stream()
        got = [s.push(f) for f in frames]
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
        s.reset()  # a new clip: the first frame again gives the first output
        assert np.array_equal(s.push(frames[0]), want[0])


def test_uint8_frames_are_scaled(converted) -> None:
    f = (moving_frames(*HW, n=1)[0] * 255).round().astype(np.uint8)
    a = load(converted[2]).stream().push(f)
    b = load(converted[2]).stream().push(f.astype(np.float32) / 255)
    assert np.array_equal(a, b)


def _per_tile_eager(model, frames, tile, overlap, scale=4):
    """Each tile position streamed on its own eager ``Stream`` and the kept parts pasted, written out
    with ``plan_axis`` (exact tiles), independently of the runtime's tiling."""
    h, w = frames[0].shape[:2]
    rows, cols = plan_axis(h, tile[0], overlap, exact=True), plan_axis(w, tile[1], overlap, exact=True)
    streams = {(i, j): Stream(model) for i in range(len(rows)) for j in range(len(cols))}
    outs = []
    for f in frames:
        x = torch.from_numpy(f.transpose(2, 0, 1))[None]
        y = np.zeros((h * scale, w * scale, 3), np.float32)
        for (i, j), s in streams.items():
            r, c = rows[i], cols[j]
            t = (
                s.push(x[..., r.start : r.start + r.size, c.start : c.start + c.size])[0]
                .permute(1, 2, 0)
                .numpy()
            )
            y[r.keep0 * scale : r.keep1 * scale, c.keep0 * scale : c.keep1 * scale] = t[
                (r.keep0 - r.start) * scale : (r.keep1 - r.start) * scale,
                (c.keep0 - c.start) * scale : (c.keep1 - c.start) * scale,
            ]
        outs.append(y)
    return outs, len(streams)


def test_large_frames_are_tiled_with_one_state_per_tile(converted, rrn) -> None:
    frames = moving_frames(20, 40, n=3, seed=1)  # 2 x 3 tiles of 12x16 with overlap 2
    s = load(converted[2]).stream(overlap=2)
    got = [s.push(f) for f in frames]
    want, n = _per_tile_eager(rrn, frames, HW, 2)
    assert s.tiles == n == 6
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) <= 1e-4
    # the same tiles without their history differ: the states are used, one per tile
    fresh = load(converted[2]).stream(overlap=2).push(frames[2])
    assert float(np.abs(fresh - got[2]).max()) > 1e-3


def test_small_frames_are_padded_and_cropped(converted, rrn) -> None:
    frames = moving_frames(9, 16, n=2, seed=2)
    s = load(converted[2]).stream()
    got = [s.push(f) for f in frames]
    assert got[0].shape == (36, 64, 3) and s.tiles == 1
    # what the eager stream gives on the reflect-padded frames, cropped
    padded = [np.pad(f, ((0, 3), (0, 0), (0, 0)), mode="reflect") for f in frames]
    want = [y[:36] for y in eager(rrn, padded)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) <= 1e-4


def test_wrong_frames_are_refused_in_one_line(converted) -> None:
    s = load(converted[2]).stream(overlap=2)
    with pytest.raises(InputError, match=r"expected an \(H, W, 3\) RGB frame") as e:
        s.push(np.zeros((*HW, 4), np.float32))
    assert "\n" not in str(e.value)
    s.push(np.zeros((*HW, 3), np.float32))
    with pytest.raises(InputError, match="a clip keeps one size"):
        s.push(np.zeros((24, 32, 3), np.float32))
    s.reset()
    assert s.push(np.zeros((24, 32, 3), np.float32)).shape == (96, 128, 3)
    with pytest.raises(InputError, match="'hidden' has shape"):  # the raw step checks every tensor
        load(converted[2]).step(
            {
                "cur": np.zeros((1, 3, *HW), np.float32),
                "prev": np.zeros((1, 3, *HW), np.float32),
                "hidden": np.zeros((1, 5, *HW), np.float32),
                "prev_sr": np.zeros((1, 3, 48, 64), np.float32),
            }
        )


def test_image_and_video_misuse_is_refused(converted, tmp_path) -> None:
    with pytest.raises(InputError, match=r"\.stream\(\)\.push\(frame\)"):
        load(converted[2]).run(np.zeros((*HW, 3), np.float32))
    torch.manual_seed(0)
    image_model = create_model("espcn", scale=2).eval()
    with pytest.raises(InputError, match="an image model has no stream"):
        from_model(image_model).stream()


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda st: st["state"][1].update(next="nowhere"), "stream.state[1].next"),
        (lambda st: st["state"][0].update(init="ones"), "stream.state[0].init"),
        (lambda st: st["state"][2].update(shape=[1, 3, 0, 64]), "stream.state[2].shape"),
        (lambda st: st["tensors"].pop(), "stream.tensors"),
        (lambda st: st["tensors"][0].update(dtype="float64"), "stream.tensors[0].dtype"),
        (lambda st: st.update(frames=[]), "stream.frames"),
    ],
)
def test_a_damaged_stream_entry_is_refused_in_one_line(converted, tmp_path, capfd, damage, field) -> None:
    art = tmp_path / "m.onnx"
    shutil.copy(converted[2], art)
    m = json.loads(open(converted[2] + ".json").read())
    damage(m["stream"])
    (tmp_path / "m.onnx.json").write_text(json.dumps(m))
    with pytest.raises(EdgeSRError, match=field.replace("[", r"\[").replace("]", r"\]")) as e:
        load(art)
    assert "\n" not in str(e.value)
    capfd.readouterr()
    assert main(["profile", str(art), "--runs", "1", "--warmup", "0"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_a_manifest_that_does_not_fit_the_artifact_is_one_line(converted, tmp_path) -> None:
    """A consistent stream entry whose names are not the artifact's: the runtime's refusal, one line."""
    from edge_sr.errors import RuntimeBackendError

    art = tmp_path / "m.onnx"
    shutil.copy(converted[2], art)
    m = json.loads(open(converted[2] + ".json").read())
    m["stream"]["state"][1]["name"] = "hid"
    next(t for t in m["stream"]["tensors"] if t["name"] == "hidden")["name"] = "hid"
    (tmp_path / "m.onnx.json").write_text(json.dumps(m))
    with pytest.raises(RuntimeBackendError, match="refused the step") as e:
        load(art, check_sha256=False).stream().push(np.zeros((*HW, 3), np.float32))
    assert "\n" not in str(e.value)
