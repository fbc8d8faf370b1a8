"""Video files in and out with PyAV: mp4 / mov / mkv / webm and frame folders, audio copied through.

``VideoReader(path)`` streams a clip as uint8 RGB (H, W, 3) frames, one at a time (memory does not grow with
the clip), and exposes what a writer needs to reproduce it (:class:`VideoInfo`: exact rational frame rate,
frame count when the container knows it, size, display rotation, the audio stream). It demuxes video and
audio in one pass; the audio packets it meets wait in a short queue for :func:`video_writer`, which muxes them
into the output unchanged (no re-encoding) beside the new video stream, so picture and sound stay
interleaved.

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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_sr.data.io import FORMATS, list_images, read_image, write_image
from edge_sr.errors import ConfigError, EdgeSRError, InputError, OutputError
from edge_sr.io_utils import atomic_path, check_output, disk_error

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

DEFAULT_FOLDER_FPS = Fraction(25)
"""The frame rate of a frame folder when none is given (PAL; Vid4's clips come without one)."""

_AUDIO_QUEUE_MAX = 4096  # packets of audio read ahead of the video before the input is called broken


@dataclass(frozen=True)
class AudioInfo:
    """The input's first audio stream.

    Attributes:
        index: its stream index in the container.
        codec: the FFmpeg codec name, or None when this FFmpeg has no decoder for it (then it cannot be
            copied either: PyAV needs the codec's parameters).
        sample_rate: Hz (None when unknown).
        packets: the packet count the container declares (0 when it does not say).
    """

    index: int
    codec: str | None
    sample_rate: int | None
    packets: int


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about its clip before decoding it all.

    Attributes:
        path: the file or frame folder.
        width, height: the stored frame size (before the display rotation).
        fps: the frame rate, exact (``45000/1499``); a folder's is the one it was opened with.
        frames: the frame count the container declares, or the number of files of a folder; None when
            unknown.
        rotation: the display rotation, counter-clockwise degrees (0, 90, 180, 270): players turn the
            stored frames by it.
        codec: the video codec (``png`` ... for a folder: the first frame's format).
        audio: the first audio stream, or None.
        folder: the input is a frame folder.
        start: the first frame's time in seconds (a writer keeps it, so the copied audio stays in sync).
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None
    rotation: int
    codec: str
    audio: AudioInfo | None
    folder: bool = False
    start: float = 0.0


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with a video suffix, or with no image suffix that FFmpeg opens as a clip (not a
    single picture). Folders are frame sequences only when the caller says so."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in VIDEO_FORMATS:
        return True
    if suffix in FORMATS or not p.is_file():
        return False
    import av

    try:
        with av.open(str(p), "r") as c:
            return bool(c.streams.video) and "image2" not in c.format.name and "_pipe" not in c.format.name
    except (av.error.FFmpegError, ValueError, OSError):
        return False


def _ffmpeg_message(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split()) or type(e).__name__


class VideoReader:
    """Stream a clip (a video file or a folder of frames) as uint8 RGB (H, W, 3) frames.

    Use as a context manager; iterate once. ``info`` is known as soon as it is opened: the first frame is
    decoded there, so a file that cannot give one fails before any output exists.

    Args:
        path: a video file (anything FFmpeg demuxes) or a folder of png / jpg / webp / tif frames, sorted
            by name.
        fps: a folder's frame rate (default :data:`DEFAULT_FOLDER_FPS`); ignored for files.
        max_frames: stop after this many frames (the audio stops there too).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fps: Fraction | None = None, max_frames: int | None = None
    ) -> None:
        self.path = Path(path)
        self.max_frames = max_frames
        self._audio: deque[Any] = deque()
        self._container: Any = None
        self._packets: Iterator[Any] | None = None
        self._first: np.ndarray | None = None
        self._done = False
        self._t0 = 0.0  # the first frame's time (s)
        self._end: float | None = None  # where a stop after max_frames cut the clip (s)
        self.decoded = 0
        if not self.path.exists():
            raise InputError(self.path, "no such file or folder")
        if self.path.is_dir():
            self.info = self._open_folder(fps or DEFAULT_FOLDER_FPS)
        else:
            self.info = self._open_file()

    # ---- frame folders
    def _open_folder(self, fps: Fraction) -> VideoInfo:
        from PIL import Image as PILImage

        try:
            self._files = list_images([self.path])
        except OSError as e:
            raise InputError(self.path, f"cannot list the frame folder ({e.strerror})") from None
        if not self._files:
            known = ", ".join(sorted({e.lstrip(".") for e in FORMATS}))
            raise InputError(self.path, f"no frames ({known}) in the folder")
        sizes: tuple[int, int] | None = None
        for f in self._files:  # headers only: a bad or odd-sized frame is found before any work
            try:
                with PILImage.open(f) as im:
                    size, fmt = im.size, str(im.format).lower()
            except (OSError, SyntaxError, ValueError) as e:
                raise InputError(f, f"unreadable frame ({_ffmpeg_message(e)})") from None
            if sizes is None:
                sizes, codec = size, fmt
            elif size != sizes:
                raise InputError(
                    f, f"is {size[0]}x{size[1]} but the first frame is {sizes[0]}x{sizes[1]}; "
                    "a clip needs one frame size",
                )  # fmt: skip
        assert sizes is not None
        n = len(self._files) if self.max_frames is None else min(len(self._files), self.max_frames)
        return VideoInfo(self.path, sizes[0], sizes[1], Fraction(fps), n, 0, codec, None, folder=True)

    def _folder_frames(self) -> Iterator[np.ndarray]:
        for f in self._files[: self.info.frames]:
            img = read_image(f, native=True)
            v = img.rgb
            if img.bit_depth == 16:
                v = ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)
            if v.shape[-1] == 1:
                v = np.repeat(v, 3, axis=-1)
            if v.shape[:2] != (self.info.height, self.info.width):  # EXIF orientation turned it
                raise InputError(
                    f, f"is {v.shape[1]}x{v.shape[0]} once turned upright; a clip needs one size"
                )
            yield np.ascontiguousarray(v)

    # ---- video files
    def _open_file(self) -> VideoInfo:
        import av

        p = self.path
        if p.stat().st_size == 0:
            raise InputError(p, "file is empty (0 bytes)")
        try:
            c = av.open(str(p), "r")
        except av.error.EOFError:
            raise InputError(
                p, "has no video frames (the file ends before any; empty or truncated)"
            ) from None
        except av.error.FFmpegError as e:
            raise InputError(p, f"not a video, or a truncated / corrupt one ({_ffmpeg_message(e)})") from None
        self._container = c
        try:
            if not c.streams.video:
                raise InputError(p, "has no video stream")
            v = c.streams.video[0]
            if v.codec_context is None:
                raise InputError(p, "its video codec cannot be decoded by this build's FFmpeg (PyAV)")
            v.thread_type = "AUTO"
            a = c.streams.audio[0] if c.streams.audio else None
            audio = None
            if a is not None:
                ctx = a.codec_context
                rate = getattr(ctx, "sample_rate", None) if ctx is not None else None
                audio = AudioInfo(a.index, ctx.name if ctx is not None else None, rate, int(a.frames or 0))
            fps = v.average_rate or v.guessed_rate or v.base_rate
            if not fps:
                raise InputError(p, "has no frame rate")
            self._v, self._a = v, a
            self._packets = iter(c.demux(*(s for s in (v, a) if s is not None)))
            frames = self._decode()
            first = next(frames, None)
            if first is None:
                raise InputError(p, "has no video frames")
            self._frames_iter = frames
            rotation = int(round(self._rotation)) % 360
            declared = int(v.frames or 0) or None
            if declared is not None and self.max_frames is not None:
                declared = min(declared, self.max_frames)
            name = v.codec_context.name
            self._first = first
            w, h = int(v.width), int(v.height)
            return VideoInfo(p, w, h, Fraction(fps), declared, rotation, name, audio, start=self._t0)
        except BaseException:
            self.close()
            raise

    def _decode(self) -> Iterator[np.ndarray]:
        """Decoded RGB frames; audio packets met on the way go to the queue."""
        import av

        assert self._packets is not None
        self._rotation = 0.0
        size: tuple[int, int] | None = None
        while True:
            try:
                packet = next(self._packets, None)
                if packet is None:  # demux has sent each stream its flush packet: the decoder is drained
                    return
                elif packet.stream.index != self._v.index:
                    if packet.dts is not None:
                        self._audio.append(packet)
                        if len(self._audio) > _AUDIO_QUEUE_MAX:
                            raise InputError(self.path, "audio runs far ahead of the video (a broken file)")
                    continue
                else:
                    frames = self._v.decode(packet)
            except av.error.FFmpegError as e:
                raise InputError(
                    self.path, f"corrupt video data after frame {self.decoded} ({_ffmpeg_message(e)})"
                ) from None
            for f in frames:
                if size is None:
                    size, self._rotation = (f.width, f.height), float(f.rotation or 0)
                    self._t0 = float(f.time or 0.0)
                elif (f.width, f.height) != size:
                    raise InputError(
                        self.path, f"frame {self.decoded} is {f.width}x{f.height} but the first is "
                        f"{size[0]}x{size[1]}; a clip needs one frame size",
                    )  # fmt: skip
                self.decoded += 1
                yield f.to_ndarray(format="rgb24")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.info.folder:
            yield from self._folder_frames()
            return
        limit = self.max_frames
        n = 0
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError("a VideoReader is iterated once")
        for frame in _chain(first, self._frames_iter):
            yield frame
            n += 1
            if limit is not None and n >= limit:
                self._end = self._t0 + n / float(self.info.fps)  # the audio of a preview stops here too
                return
        declared = self.info.frames
        if declared is not None and n < declared:
            raise InputError(
                self.path, f"truncated or corrupt: {n} of the {declared} frames it declares could be decoded"
            )
        self._done = True

    def take_audio(self, rest: bool = False) -> list[Any]:
        """The audio packets demuxed so far (in file order), emptying the queue; ``rest``: read the rest of the
        file's audio first (after the last frame; after a stop at ``max_frames``, up to that frame's end)."""
        if rest and self._packets is not None and (self._done or self._end is not None):
            for packet in self._packets:
                if packet.stream.index == self._v.index or packet.dts is None:
                    continue
                if self._end is not None and packet.pts is not None and packet.time_base is not None:
                    if float(packet.pts * packet.time_base) >= self._end:
                        break
                self._audio.append(packet)
        out = list(self._audio)
        self._audio.clear()
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


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
            raise OutputError(p, f"cannot write the video ({disk_error(e) or _ffmpeg_message(e)})") from None


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
        audio_in = audio_from._a if audio_from is not None and not audio_from.info.folder else None
        if audio == "none":
            audio_in = None
        astream = _audio_stream(out, audio_in, audio_from, kind, p, audio)
        try:
            out.start_encoding()
        except (av.error.FFmpegError, ValueError) as e:
            raise InputError(
                audio_from.path if audio_from is not None else p,
                f"cannot be written as {p.suffix} ({_ffmpeg_message(e)})",
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
        raise InputError(name, f"its {codec} audio cannot be re-encoded ({_ffmpeg_message(e)})") from None
    enc.layout = src.codec_context.layout
    return enc
