"""Video files in: ``VideoReader(path)`` streams a clip (any file FFmpeg demuxes, through PyAV, or a folder of
frames) as uint8 RGB (H, W, 3) frames, one at a time, so memory does not grow with the clip.

:class:`VideoInfo` is what a writer needs to reproduce the clip: the exact rational frame rate, the frame count
when the container declares it, the size, the display rotation, the first frame's time and the audio stream.
Video and audio are demuxed in one pass; the audio packets met on the way wait in a short queue
(:meth:`VideoReader.take_audio`) for the writer (``edge_sr.data.video.video_writer``), which muxes them
unchanged beside the new video.

Every problem is one ``InputError`` line naming the file: not a video, no video stream, no frames, a codec
this FFmpeg cannot decode, a truncated or corrupt file (fewer frames decoded than the container declares, or
undecodable data), frames of mixed sizes, an unreadable frame of a folder. The first frame is decoded when the
reader opens, so most of these come before any output exists.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.data.io import FORMATS, list_images, read_image
from edge_sr.errors import InputError

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".m2ts",
        ".mts",
        ".flv",
        ".wmv",
        ".3gp",
    }
)
"""Suffixes taken for video without probing (any other file that is not an image is probed)."""

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
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in FORMATS or not p.is_file():
        return False
    import av

    try:
        with av.open(str(p), "r") as c:
            return bool(c.streams.video) and "image2" not in c.format.name and "_pipe" not in c.format.name
    except (av.error.FFmpegError, ValueError, OSError):
        return False


def ffmpeg_message(e: BaseException) -> str:
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
        self.audio_stream: Any = None  # the PyAV stream of ``info.audio`` (None for folders / no audio)
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
                raise InputError(f, f"unreadable frame ({ffmpeg_message(e)})") from None
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
            raise InputError(p, f"not a video, or a truncated / corrupt one ({ffmpeg_message(e)})") from None
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
            self._v, self.audio_stream = v, a
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
                    self.path, f"corrupt video data after frame {self.decoded} ({ffmpeg_message(e)})"
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
