"""Video files in and out with PyAV: mp4 / mov / mkv / webm and frame folders, audio copied through.

``VideoReader(path)`` (``edge_sr.data.video_reader``, re-exported here) streams a clip as uint8 RGB (H, W, 3)
frames, one at a time (memory does not grow with the clip), and exposes what a writer needs to reproduce it
(:class:`VideoInfo`: exact rational frame rate, frame count when the container knows it, size, display
rotation, the audio stream). It demuxes video and audio in one pass; the audio packets it meets wait in a
short queue for :func:`video_writer`, which muxes them into the output unchanged (no re-encoding) beside the
new video stream, so picture and sound stay interleaved.

``video_writer(path, ...)`` writes the container named by the suffix (``.mp4`` / ``.m4v`` / ``.mov`` /
``.mkv``: H.264 yuv420p, ``crf`` 18 by default; ``.webm``: VP9 yuv420p, ``crf`` 24) or, for a path without a
video suffix, a folder of PNG frames (``00000000.png`` ...; upright: the display rotation applied). The same
frame rate and frame count come out; everything goes to a temporary name renamed at the end
(``edge_sr.io_utils.atomic_path``), so an error leaves nothing half-written. yuv420p needs an even width
and height: an odd output size is padded by one row / column copying the edge (logged; the padded size
is what the writer reports), which keeps every upscaled pixel and shows no seam.

Every problem with an input is one ``InputError`` line naming the file: not a video, no video stream, a
codec this FFmpeg cannot decode, a truncated or corrupt file (fewer frames decoded than the container
declares, or undecodable data), frames of mixed sizes, an unreadable frame of a folder. An audio stream that
the output container cannot carry, or that this FFmpeg cannot read, is refused before anything is encoded
(``audio="none"`` drops it, ``audio="encode"`` re-encodes it to the container's usual codec).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_sr.data.io import FORMATS, write_image
from edge_sr.data.video_reader import (
    DEFAULT_FOLDER_FPS,
    VIDEO_SUFFIXES,
    AudioInfo,
    VideoInfo,
    VideoReader,
    ffmpeg_message,
    is_video_file,
)
from edge_sr.errors import ConfigError, EdgeSRError, InputError, OutputError
from edge_sr.io_utils import atomic_path, check_output, disk_error

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "VIDEO_FORMATS",
    "VIDEO_SUFFIXES",
    "AudioInfo",
    "AudioMode",
    "Container",
    "VideoInfo",
    "VideoReader",
    "VideoSink",
    "is_video_file",
    "output_kind",
    "video_writer",
]

log = logging.getLogger(__name__)

AudioMode = Literal["copy", "encode", "none"]


@dataclass(frozen=True)
class Container:
    """How one output suffix is written: the FFmpeg muxer, video encoder, its options and the audio encoder
    used when re-encoding is asked for."""

    muxer: str
    codec: str
    crf: int
    options: tuple[tuple[str, str], ...] = ()
    audio_codec: str = "aac"
    muxer_options: tuple[tuple[str, str], ...] = ()


_H264 = (("preset", "medium"),)
_FASTSTART = (("movflags", "+faststart"),)  # the index first: phones and browsers start playing at once
VIDEO_FORMATS: dict[str, Container] = {
    ".mp4": Container("mp4", "libx264", 18, _H264, muxer_options=_FASTSTART),
    ".m4v": Container("mp4", "libx264", 18, _H264, muxer_options=_FASTSTART),
    ".mov": Container("mov", "libx264", 18, _H264, muxer_options=_FASTSTART),
    ".mkv": Container("matroska", "libx264", 18, _H264),
    ".webm": Container("webm", "libvpx-vp9", 24, (("b", "0"), ("row-mt", "1"), ("cpu-used", "4")), "libopus"),
}
"""Video suffix -> how it is written (read: anything FFmpeg demuxes)."""


def output_kind(path: str | os.PathLike[str]) -> Container | None:
    """The container an output path names, or None for a frame folder (a path without a video suffix);
    an image suffix is a ``ConfigError`` (a clip is not one picture)."""
    suffix = Path(path).suffix.lower()
    if suffix in FORMATS:
        raise ConfigError(
            path, f"is an image name; write the clip to a video ({', '.join(VIDEO_FORMATS)}) or a folder"
        )
    return VIDEO_FORMATS.get(suffix)


class VideoSink:
    """What :func:`video_writer` yields: ``write(rgb)`` per frame, in order, and what was written.

    Attributes:
        width, height: the written size (after padding an odd size to even for yuv420p; a frame folder's
            frames turned upright).
        frames: frames written; audio_packets / audio_bytes: audio packets (and their payload bytes) muxed.
        audio: ``"copied"``, ``"encoded"``, or None when the output has no audio.
        padded: the output was padded by one row and / or column to an even size.
    """

    def __init__(self, write: Any, width: int, height: int, padded: bool) -> None:
        self._write = write
        self.width, self.height, self.padded = width, height, padded
        self.frames = 0
        self.audio_packets = 0
        self.audio_bytes = 0
        self.audio: str | None = None

    def write(self, rgb: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) frame of the size the writer was opened with."""
        self._write(rgb)
        self.frames += 1


@contextlib.contextmanager
def video_writer(
    path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    fps: Fraction,
    rotation: int = 0,
    start: float = 0.0,
    crf: int | None = None,
    audio_from: VideoReader | None = None,
    audio: AudioMode = "copy",
) -> Iterator[VideoSink]:
    """Write a clip atomically: a video container by suffix, or a folder of PNG frames (see the module
    docstring). Frames are (``height``, ``width``, 3) uint8 RGB.

    Args:
        rotation: the display rotation to record (counter-clockwise degrees); a frame folder gets the frames
            turned upright instead.
        start: the first frame's time in seconds (the input's ``info.start``); frames follow at ``fps``.
        crf: the encoder's constant-quality value (lower is better; default per codec).
        audio_from: the reader of the input, whose audio packets are muxed as frames are written.
        audio: ``copy`` the packets, ``encode`` them again to the container's usual codec, or ``none``.

    Raises:
        InputError: the audio cannot be carried (a codec this FFmpeg cannot read, or one the container
            does not take; the message says which flag helps). OutputError: the destination cannot be
            written.
    """
    p = Path(path)
    kind = output_kind(p)
    if kind is None:
        with _folder_writer(p, rotation, width, height) as sink:
            if audio_from is not None and audio_from.info.audio is not None and audio != "none":
                log.warning("%s: a frame folder has no sound; the audio of the input is not written", p)
            yield sink
        return
    with atomic_path(p) as tmp:
        try:
            with _container_writer(
                tmp, p, kind, width, height, fps, rotation, start, crf, audio_from, audio
            ) as sink:
                yield sink
        except OSError as e:
            if isinstance(e, EdgeSRError):
                raise
            raise OutputError(p, f"cannot write the video ({disk_error(e) or ffmpeg_message(e)})") from None


@contextlib.contextmanager
def _folder_writer(p: Path, rotation: int, width: int, height: int) -> Iterator[VideoSink]:
    if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
        p.rmdir()  # an empty folder made for the frames: the finished one takes its place
    check_output(p)
    if p.exists():
        raise OutputError(p, "exists; frames go to a new folder (nothing written)")
    k = (rotation // 90) % 4
    with atomic_path(p) as tmp:
        tmp.mkdir()
        count = [0]

        def put(rgb: np.ndarray) -> None:
            write_image(tmp / f"{count[0]:08d}.png", np.rot90(rgb, k) if k else rgb)
            count[0] += 1

        yield VideoSink(put, *((height, width) if k % 2 else (width, height)), False)


@contextlib.contextmanager
def _container_writer(
    tmp: Path,
    p: Path,
    kind: Container,
    width: int,
    height: int,
    fps: Fraction,
    rotation: int,
    start: float,
    crf: int | None,
    audio_from: VideoReader | None,
    audio: AudioMode,
) -> Iterator[VideoSink]:
    import av

    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        log.info(
            "%s: yuv420p needs an even size; %dx%d padded to %dx%d by repeating the last row / column",
            p, width, height, width + pad_w, height + pad_h,
        )  # fmt: skip
    out = av.open(str(tmp), "w", format=kind.muxer, options=dict(kind.muxer_options))
    try:
        opts = {"crf": str(crf if crf is not None else kind.crf), **dict(kind.options)}
        vs = out.add_stream(kind.codec, rate=Fraction(fps), options=opts)
        assert isinstance(vs, av.video.stream.VideoStream)
        vs.width, vs.height, vs.pix_fmt = width + pad_w, height + pad_h, "yuv420p"
        if rotation:
            vs.set_display_rotation(rotation)
        audio_in = audio_from.audio_stream if audio_from is not None else None
        if audio == "none":
            audio_in = None
        astream = _audio_stream(out, audio_in, audio_from, kind, p, audio)
        try:
            out.start_encoding()
        except (av.error.FFmpegError, ValueError) as e:
            raise InputError(
                audio_from.path if audio_from is not None else p,
                f"cannot be written as {p.suffix} ({ffmpeg_message(e)})",
            ) from None
        sink = VideoSink(None, width + pad_w, height + pad_h, bool(pad_h or pad_w))
        sink.audio = None if astream is None else ("copied" if audio == "copy" else "encoded")
        tb = vs.codec_context.time_base  # 1 / fps: one tick per frame, constant rate
        first = round(start / float(tb)) if tb else 0
        decoder = audio_in.codec_context if audio_in is not None and audio == "encode" else None

        def mux_audio(rest: bool = False) -> None:
            if astream is None or audio_from is None:
                return
            for pkt in audio_from.take_audio(rest):
                if decoder is None:
                    sink.audio_packets += 1
                    sink.audio_bytes += pkt.size
                    pkt.stream = astream
                    out.mux(pkt)
                    continue
                for fr in decoder.decode(pkt):
                    fr.pts = None  # the encoder counts samples itself
                    _mux_counted(out, astream.encode(fr), sink)

        def put(rgb: np.ndarray) -> None:
            if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"{p}: frame {rgb.shape} {rgb.dtype}, expected ({height}, {width}, 3) uint8")
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = first + sink.frames, tb
            out.mux(vs.encode(frame))
            mux_audio()

        sink._write = put
        yield sink
        out.mux(vs.encode(None))
        mux_audio(rest=True)
        if decoder is not None and astream is not None:
            for fr in decoder.decode(None):
                fr.pts = None
                _mux_counted(out, astream.encode(fr), sink)
            _mux_counted(out, astream.encode(None), sink)
    finally:
        out.close()


def _mux_counted(out: Any, packets: list[Any], sink: VideoSink) -> None:
    for pkt in packets:
        sink.audio_packets += 1
        sink.audio_bytes += pkt.size
        out.mux(pkt)


def _audio_stream(
    out: Any, src: Any, reader: VideoReader | None, kind: Container, p: Path, audio: AudioMode
) -> Any:
    """The output's audio stream for ``src`` (None: no audio), or an ``InputError`` naming the fix."""
    if src is None or reader is None:
        return None
    name = reader.path
    if src.codec_context is None:
        raise InputError(
            name, "its audio codec cannot be read by this build's FFmpeg (PyAV), so it can be neither "
            "copied nor re-encoded; pass --audio none to drop the sound",
        )  # fmt: skip
    codec = src.codec_context.name
    if audio == "copy":
        if codec not in out.supported_codecs:
            raise InputError(
                name, f"its {codec} audio cannot go into {p.suffix} without re-encoding; "
                f"pass --audio encode (to {kind.audio_codec}), --audio none, or another -o suffix (.mkv takes most)",
            )  # fmt: skip
        return out.add_stream_from_template(src)
    import av

    try:
        av.codec.Codec(codec, "r")
        enc = out.add_stream(kind.audio_codec, rate=48000 if kind.audio_codec == "libopus" else src.rate)
    except (av.error.FFmpegError, ValueError) as e:
        raise InputError(name, f"its {codec} audio cannot be re-encoded ({ffmpeg_message(e)})") from None
    enc.layout = src.codec_context.layout
    return enc
