"""edge_sr.data.video: reading and writing clips (frame rate, count, size, rotation, audio passthrough,
frame folders, odd sizes, memory) and every bad input as one ``InputError`` line."""

from __future__ import annotations

import inspect
import logging
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edge_sr.data.io import write_image
from edge_sr.data.video import VideoReader, is_video_file, output_kind, video_writer
from edge_sr.errors import ConfigError, InputError

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "clips"
RNG = np.random.default_rng(0)


@pytest.fixture(scope="session")
def realshort(data_root: Path) -> Path:
    p = data_root / "video" / "clips" / "realshort.mp4"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    return p


def audio_packets(path: Path) -> list[bytes]:
    """The payload of every audio packet of the first audio stream, in order."""
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


def small_clip(realshort: Path, dst: Path, *, step: int = 4) -> Path:
    """realshort.mp4 at 1/``step`` size (every ``step``-th pixel), all 36 frames, its AAC audio copied."""
    with VideoReader(realshort) as r:
        w, h = r.info.width // step, r.info.height // step
        with video_writer(dst, width=w, height=h, fps=r.info.fps, audio_from=r) as sink:
            for f in r:
                sink.write(np.ascontiguousarray(f[::step, ::step]))
    return dst


@pytest.fixture(scope="module")
def clip(realshort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_clip(realshort, tmp_path_factory.mktemp("clip") / "small.mp4")


def test_remux_keeps_rate_count_and_audio_packets(realshort: Path, clip: Path) -> None:
    with VideoReader(clip) as r:
        info = r.info
        frames = list(r)
    assert info.fps == Fraction(45000, 1499)  # exact, as in the input
    assert info.frames == 36 and len(frames) == 36
    assert (info.width, info.height, frames[0].shape, frames[0].dtype) == (80, 60, (60, 80, 3), np.uint8)
    assert info.audio is not None and info.audio.codec == "aac"
    src, out = audio_packets(realshort), audio_packets(clip)
    assert len(src) == 55 and out == src  # every packet, byte for byte: copied, not re-encoded


def test_reader_info_and_content(realshort: Path) -> None:
    with VideoReader(realshort, max_frames=3) as r:
        assert (r.info.width, r.info.height, r.info.codec, r.info.rotation) == (320, 240, "h264", 0)
        frames = list(r)
    assert len(frames) == 3 and frames[0].shape == (240, 320, 3)
    assert not np.array_equal(frames[0], frames[2]) and frames[0].std() > 10  # real pictures, in order
    assert is_video_file(realshort) and not is_video_file(realshort.with_suffix(".png"))


def test_reader_streams_memory_does_not_grow(realshort: Path) -> None:
    def peak(n: int | None) -> int:
        tracemalloc.start()
        with VideoReader(realshort, max_frames=n) as r:
            it = iter(r)
            assert inspect.isgenerator(it)
            count = sum(1 for _ in it)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == (n or 36)
        return top

    frame = 320 * 240 * 3
    short, long = peak(4), peak(None)
    assert long < short + 2 * frame, (short, long)  # 36 frames held would be 32 frames more


def test_frame_folder_round_trip_is_lossless(tmp_path: Path) -> None:
    frames = [RNG.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(5)]
    with video_writer(tmp_path / "frames", width=28, height=20, fps=Fraction(24)) as sink:
        for f in frames:
            sink.write(f)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir())[:2] == ["00000000.png", "00000001.png"]
    with VideoReader(tmp_path / "frames", fps=Fraction(24)) as r:
        back = list(r)
        assert (r.info.frames, r.info.fps, r.info.folder) == (5, Fraction(24), True)
    assert len(back) == 5 and all(np.array_equal(a, b) for a, b in zip(frames, back))


def test_video_to_folder_gives_the_decoded_frames(clip: Path, tmp_path: Path) -> None:
    with VideoReader(clip, max_frames=4) as r:
        with video_writer(tmp_path / "f", width=80, height=60, fps=r.info.fps, audio_from=r) as sink:
            decoded = []
            for f in r:
                decoded.append(f)
                sink.write(f)
    with VideoReader(tmp_path / "f") as r2:
        assert all(np.array_equal(a, b) for a, b in zip(decoded, r2, strict=True))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm"])
def test_containers_and_odd_size_padding(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    frames = [np.full((25, 33, 3), 40 * i, np.uint8) for i in range(4)]
    dst = tmp_path / f"odd{suffix}"
    with caplog.at_level(logging.INFO, logger="edge_sr.data.video"):
        with video_writer(dst, width=33, height=25, fps=Fraction(30000, 1001), rotation=90) as sink:
            for f in frames:
                sink.write(f)
    assert (sink.width, sink.height, sink.padded) == (34, 26, True)
    assert "padded to 34x26" in caplog.text
    with VideoReader(dst) as r:
        back = list(r)
        assert (r.info.width, r.info.height, r.info.rotation) == (34, 26, 90)
        if suffix in (".mp4", ".mov"):  # ISO BMFF keeps the rational rate; Matroska rounds to 1 ms
            assert r.info.fps == Fraction(30000, 1001)
        else:
            assert abs(float(r.info.fps) - 30000 / 1001) < 0.01
    assert len(back) == 4
    assert np.allclose([b[:25, :33].mean() for b in back], [0, 40, 80, 120], atol=2)  # lossy, in order
    # the padding repeats the edge: the added row and column look like their neighbours, not black
    assert abs(back[3][25].mean() - 120) < 3 and abs(back[3][:, 33].mean() - 120) < 3


def test_folder_output_is_turned_upright(tmp_path: Path) -> None:
    f = RNG.integers(0, 256, (10, 16, 3), dtype=np.uint8)
    with video_writer(tmp_path / "up", width=16, height=10, fps=Fraction(25), rotation=90) as sink:
        sink.write(f)
    with VideoReader(tmp_path / "up") as r:
        (g,) = list(r)
    assert np.array_equal(g, np.rot90(f, 1))  # counter-clockwise, as players show it


# ---- bad input: one line naming the file, InputError, nothing written


def _open_all(path: Path) -> None:
    with VideoReader(path) as r:
        for _ in r:
            pass


def _expect(path: Path, words: str) -> None:
    with pytest.raises(InputError) as e:
        _open_all(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and words in msg, msg


def test_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    _expect(tmp_path / "notes.mp4", "not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    _expect(tmp_path / "empty.mp4", "empty")
    _expect(tmp_path / "missing.mp4", "no such file")


def test_truncated_file(realshort: Path, tmp_path: Path) -> None:
    data = realshort.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the index (moov) is at the end: gone
    _expect(cut, "truncated")


def test_truncated_after_the_index(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()  # our writer puts the index first (faststart): the frames go, not the index
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    _expect(cut, "of the 36 frames")


def test_no_video_stream(realshort: Path, tmp_path: Path) -> None:
    dst = tmp_path / "sound.m4a"
    with av.open(str(realshort)) as src, av.open(str(dst), "w", format="mp4") as out:
        a = out.add_stream_from_template(src.streams.audio[0])
        for p in src.demux(src.streams.audio[0]):
            if p.dts is not None:
                p.stream = a
                out.mux(p)
    _expect(dst, "no video stream")


@pytest.mark.parametrize(("suffix", "words"), [(".mkv", "no video frames"), (".mp4", "no video stream")])
def test_zero_frames(tmp_path: Path, suffix: str, words: str) -> None:
    dst = tmp_path / f"zero{suffix}"  # a video stream declared, no frame written (MP4 then drops the track)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        out.start_encoding()
    _expect(dst, words)


def test_undecodable_codec(realshort: Path, tmp_path: Path) -> None:
    dst = tmp_path / "evc.mp4"  # the H.264 sample entry renamed to EVC, which this FFmpeg cannot decode
    dst.write_bytes(realshort.read_bytes().replace(b"avc1", b"evc1"))
    _expect(dst, "cannot be decoded")


def _no_audio_decoder(realshort: Path, dst: Path) -> Path:
    """realshort.mp4 with its audio entry renamed to AC-4, a codec this FFmpeg cannot read."""
    dst.write_bytes(realshort.read_bytes().replace(b"mp4a", b"ac-4").replace(b"esds", b"xsds"))
    return dst


def test_missing_audio_decoder(realshort: Path, tmp_path: Path) -> None:
    src = _no_audio_decoder(realshort, tmp_path / "ac4.mp4")
    with VideoReader(src) as r:
        assert r.info.audio is not None and r.info.audio.codec is None
        with pytest.raises(InputError, match="--audio none"):
            with video_writer(tmp_path / "o.mp4", width=320, height=240, fps=r.info.fps, audio_from=r):
                pass
    assert not list(tmp_path.glob("o*"))
    with VideoReader(src, max_frames=2) as r:  # dropping the sound works
        with video_writer(
            tmp_path / "o.mp4", width=320, height=240, fps=r.info.fps, audio_from=r, audio="none"
        ):
            pass
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert not c.streams.audio


def test_audio_the_container_cannot_take(clip: Path, tmp_path: Path) -> None:
    with VideoReader(clip) as r:
        with pytest.raises(InputError, match="--audio encode"):
            with video_writer(tmp_path / "o.webm", width=80, height=60, fps=r.info.fps, audio_from=r):
                pass
    assert not list(tmp_path.iterdir())
    with VideoReader(clip) as r:  # asked for: re-encoded to Opus
        with video_writer(
            tmp_path / "o.webm", width=80, height=60, fps=r.info.fps, audio_from=r, audio="encode"
        ) as sink:
            for f in r:
                sink.write(f)
    assert sink.audio == "encoded" and sink.audio_packets > 0
    with av.open(str(tmp_path / "o.webm")) as c:
        assert c.streams.audio[0].codec_context.name == "opus"


def test_frame_folders_bad(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "no frames")
    mixed = tmp_path / "mixed"
    write_image(mixed / "00000000.png", np.zeros((8, 8, 3)))
    write_image(mixed / "00000001.png", np.zeros((8, 10, 3)))
    with pytest.raises(InputError, match="00000001.png: is 10x8 but the first frame is 8x8"):
        VideoReader(mixed)
    broken = tmp_path / "broken"
    write_image(broken / "00000000.png", np.zeros((8, 8, 3)))
    (broken / "00000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="00000001.png: unreadable frame"):
        VideoReader(broken)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"):
        with video_writer(tmp_path / "x.mp4", width=16, height=16, fps=Fraction(25)) as sink:
            sink.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("stop")
    assert not list(tmp_path.iterdir())


def test_image_name_is_not_a_clip_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image name"):
        output_kind(tmp_path / "out.png")
    assert output_kind(tmp_path / "out.mkv").codec == "libx264"  # type: ignore[union-attr]
    assert output_kind(tmp_path / "frames") is None


def test_start_time_is_kept(tmp_path: Path) -> None:
    """A clip whose first frame is at 0.4 s (frame 10 at 25 fps) keeps it through a rewrite (its audio stays in sync)."""
    with video_writer(tmp_path / "late.mp4", width=16, height=16, fps=Fraction(25), start=0.4) as sink:
        for i in range(3):
            sink.write(np.full((16, 16, 3), 50 * i, np.uint8))
    with VideoReader(tmp_path / "late.mp4") as r:
        assert r.info.start == pytest.approx(0.4) and r.info.frames == 3
        with video_writer(
            tmp_path / "again.mkv", width=16, height=16, fps=r.info.fps, start=r.info.start
        ) as sink:
            for f in r:
                sink.write(f)
    with VideoReader(tmp_path / "again.mkv") as r2:
        assert r2.info.start == pytest.approx(0.4, abs=0.002) and sum(1 for _ in r2) == 3
