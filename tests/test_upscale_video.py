"""`upscale_video` / `edge-sr upscale clip.mp4`: image and streaming models, one state per tile, audio kept,
the default output name, bad inputs (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_video_io import audio_packets, small_clip

from edge_sr.cli import main
from edge_sr.data.video import VideoReader, video_writer
from edge_sr.models import create_model, save_checkpoint
from edge_sr.models.stream import Stream
from edge_sr.tiling import tiled_apply
from edge_sr.upscale_video import TileStreams, upscale_video


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """Tiny frames: one intra-op thread (two threads spinning on a shared two-core machine made each
    40x30 convolution 100x slower, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    return {
        "image": save_checkpoint(create_model("ecbsr_m4c8", scale=2, blocks=1), d / "img_x2.safetensors"),
        "video": save_checkpoint(create_model("rrn_edge", scale=2, n_c=8, n_b=1), d / "rrn_x2.safetensors"),
    }


@pytest.fixture(scope="module")
def clip(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = data_root / "video" / "clips" / "realshort.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return small_clip(src, tmp_path_factory.mktemp("clip") / "small.mp4", step=8)  # 40x30, 36 frames, audio


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["upscale", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_image_model_whole_clip_keeps_rate_count_audio(
    clip: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "up.mp4"
    code, out, _ = _cli(capsys, clip, "-o", dst, "--checkpoint", models["image"], "--json")
    assert code == 0
    rep = json.loads(out)  # exactly one JSON object on stdout
    assert rep["frames"] == 36 and rep["fps_in"] == rep["fps_out"] == "45000/1499"
    assert rep["size_in"] == [40, 30] and rep["size_out"] == [80, 60] and rep["kind"] == "image"
    assert rep["audio"] == "aac" and rep["audio_copied"] and rep["audio_packets"] == 55
    with VideoReader(dst) as r:
        assert (r.info.width, r.info.height, r.info.fps, r.info.frames) == (80, 60, Fraction(45000, 1499), 36)
        assert sum(1 for _ in r) == 36
    assert audio_packets(dst) == audio_packets(clip)  # the same packets, byte for byte


def test_stream_model_frames_and_default_output(
    clip: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    code, out, _ = _cli(
        capsys, src, "--checkpoint", models["video"], "--frames", 4, "--tile", 24, "--tile-overlap", 4
    )
    assert code == 0, out
    dst = tmp_path / "clip_x2.mp4"  # beside the input, like the image path
    assert dst.is_file() and "video model rrn_edge x2" in out and "4 frames 40x30 -> 80x60" in out
    with VideoReader(dst) as r:
        assert r.info.frames == 4 and (r.info.width, r.info.height) == (80, 60)
    n_audio = len(audio_packets(dst))
    assert 0 < n_audio < 55  # the preview's audio stops with its frames


def test_stream_model_equals_untiled_inside_the_tiles(models: dict[str, Path]) -> None:
    """One state per tile: the tiled stream equals the untiled stream away from the tile cuts (its context
    grows by the step's reach every frame), and the state is really carried (a fresh state differs)."""
    from edge_sr.models import load_checkpoint

    net = load_checkpoint(
        models["video"]
    )  # RRN n_b=1: reach 4 LR pixels per step (conv, 2 in the block, conv)
    reach, frames = 4, 3
    x = torch.rand(frames, 1, 3, 24, 96)
    tiles = TileStreams(net)
    full = Stream(net)
    for t in range(frames):
        tiles.next_frame()
        y_tiled = tiled_apply(
            tiles, x[t], scale=2, tile=64, overlap=16
        )  # columns [0, 64) and [32, 96), cut at 48
        y_full = full.push(x[t])
        fresh = Stream(net).push(x[t])
        d = (t + 1) * reach + 1  # + 1: the bilinear base reads one pixel further
        left, right = 64 - d, 32 + d  # far enough from each tile's inner edge
        assert torch.allclose(y_tiled[..., : left * 2], y_full[..., : left * 2], atol=1e-5)
        assert torch.allclose(y_tiled[..., right * 2 :], y_full[..., right * 2 :], atol=1e-5)
        if t > 0:
            assert (y_full - fresh).abs().max() > 1e-3
    assert len(tiles.streams) == 2


def test_video_model_in_upscale_video_matches_stream(models: dict[str, Path], tmp_path: Path) -> None:
    """Through files: a frame folder in, a frame folder out (lossless), equal to the eager Stream untiled."""
    from edge_sr.models import load_checkpoint

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(3)]
    with video_writer(tmp_path / "in", width=16, height=12, fps=Fraction(25)) as sink:
        for f in frames:
            sink.write(f)
    rep = upscale_video(tmp_path / "in", tmp_path / "out", checkpoint=models["video"], progress=False)
    assert rep.frames == 3 and rep.kind == "video" and rep.size_out == [32, 24] and rep.audio is None
    stream = Stream(load_checkpoint(models["video"]))
    with VideoReader(tmp_path / "out") as r:
        for f, got in zip(frames, r, strict=True):
            want = stream.push(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255)
            want = (want.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            assert np.abs(want.astype(int) - got).max() <= 1


def _bad(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, src: Path, ckpt: Path, words: str, *extra: str
) -> None:
    dst = tmp_path / "out" / "up.mp4"
    dst.parent.mkdir(exist_ok=True)
    code, out, err = _cli(capsys, src, "-o", dst, "--checkpoint", ckpt, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(src) in lines[0] and words in lines[0], err
    assert not list(dst.parent.iterdir())  # nothing written, no temporary left


def test_bad_inputs_exit_2_one_line_nothing_written(
    clip: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = models["image"]
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 50)
    _bad(capsys, tmp_path, notes, img, "not a video")
    data = clip.read_bytes()
    half = tmp_path / "half.mp4"  # the index first, half of the frames gone: found at the end, nothing kept
    half.write_bytes(data[: len(data) // 2])
    _bad(capsys, tmp_path, half, img, "truncated")
    evc = tmp_path / "evc.mp4"
    evc.write_bytes(data.replace(b"avc1", b"evc1"))
    _bad(capsys, tmp_path, evc, img, "cannot be decoded")
    ac4 = tmp_path / "ac4.mp4"
    ac4.write_bytes(data.replace(b"mp4a", b"ac-4").replace(b"esds", b"xsds"))
    _bad(capsys, tmp_path, ac4, img, "--audio none")
    folder = tmp_path / "frames"
    folder.mkdir()
    _bad(capsys, tmp_path, folder, img, "no frames", "--video")


def test_audio_the_output_cannot_take_is_refused(
    clip: Path, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, clip, "-o", tmp_path / "up.webm", "--checkpoint", models["image"])
    assert code == 2 and "aac audio cannot go into .webm" in err and not list(tmp_path.iterdir())


def test_no_bundled_video_model_names_the_flag(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_sr.weights

    monkeypatch.setattr(edge_sr.weights, "bundled_video_checkpoint", lambda scale=4: None)
    code, _, err = _cli(capsys, clip, "-o", tmp_path / "up.mp4")
    assert code == 2 and "no bundled x4 video model" in err and "--checkpoint" in err
    assert not list(tmp_path.iterdir())


def test_output_that_is_the_input_is_refused(clip: Path, models: dict[str, Path], tmp_path: Path) -> None:
    from edge_sr.errors import OutputError

    src = tmp_path / "c.mp4"
    src.write_bytes(clip.read_bytes())
    with pytest.raises(OutputError, match="is the input itself"):
        upscale_video(src, src, checkpoint=models["image"], progress=False)
    with av.open(str(src)) as c:  # untouched
        assert c.streams.video[0].frames == 36


@pytest.mark.parametrize("which", ["video", "image"])
def test_artifact_upscales_like_its_checkpoint(models: dict[str, Path], tmp_path: Path, which: str) -> None:
    """An ONNX export (a video step through runtime.load(...).stream(), one state per tile of its own size;
    an image model through run()) gives the frames its checkpoint gives when tiled the same way."""
    from edge_sr.convert import ExportSpec, export

    from edge_sr.models import load_checkpoint

    art = export(load_checkpoint(models[which]), "onnx", tmp_path / "a", ExportSpec(input_size=(16, 16)))
    rng = np.random.default_rng(2)
    with video_writer(tmp_path / "in", width=32, height=24, fps=Fraction(25)) as sink:
        for _ in range(3):
            sink.write(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    kw = dict(tile=16, tile_overlap=4, progress=False)
    a = upscale_video(tmp_path / "in", tmp_path / "out_a", checkpoint=art.path, **kw)  # type: ignore[arg-type]
    c = upscale_video(tmp_path / "in", tmp_path / "out_c", checkpoint=models[which], **kw)  # type: ignore[arg-type]
    assert a.kind == c.kind == which and a.frames == c.frames == 3 and a.size_out == [64, 48]
    with VideoReader(tmp_path / "out_a") as ra, VideoReader(tmp_path / "out_c") as rc:
        for fa, fc in zip(ra, rc, strict=True):
            assert np.abs(fa.astype(int) - fc).max() <= 1


def test_other_containers_are_probed_and_default_to_mp4(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suffix the writer does not make (.avi) is recognised by probing, and the default output is .mp4."""
    src = tmp_path / "old.avi"
    with av.open(str(src), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 60 * i, np.uint8), format="rgb24")
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    code, out_text, _ = _cli(capsys, src, "--checkpoint", models["image"], "--json")
    rep = json.loads(out_text)
    assert code == 0 and rep["output"] == str(tmp_path / "old_x2.mp4") and rep["frames"] == 3
    assert rep["size_out"] == [64, 48] and rep["audio"] is None and rep["fps_out"] == "25"
