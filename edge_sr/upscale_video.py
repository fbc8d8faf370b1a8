"""Upscale a video: ``upscale_video(src, out, ...) -> VideoReport``, the library function behind
``edge-sr upscale clip.mp4``.

Frames stream from ``edge_sr.data.video.VideoReader`` to ``video_writer`` one at a time (memory follows the
frame, not the clip); the output has the input's frame rate and frame count, and its audio packets copied
unchanged. The model decides how a frame is upscaled:

- an **image** model runs frame by frame through the image path's tiled runner (``edge_sr.upscale``:
  :class:`~edge_sr.upscale.TileRunner` and :func:`~edge_sr.upscale.upscale_array`; Y-channel models
  included, FP16 / BF16 guard included);
- a **streaming video** model (``edge_sr.models.stream``) carries its state from frame to frame. Large frames
  are tiled on a grid fixed for the whole clip, and each tile position keeps its own state (one
  :class:`~edge_sr.models.stream.Stream` per tile), so every tile sees the same window of every frame and
  its recurrence stays aligned; the tiles meet as ``edge_sr.tiling`` joins them. Inside a tile, away from
  its cut edges, the result equals the untiled stream (a recurrent state widens the context with every
  frame, so near the cuts the two drift apart slowly; a larger ``tile`` keeps more of the frame untiled);
- a **whole-clip** model (BasicVSR, IconVSR, BasicVSR++) or a **sliding-window** one (EDVR) runs through
  :func:`edge_sr.runtime.clip.run_clip`: temporal chunks of ``chunk`` frames overlapping by ``chunk_overlap``
  frames on each side of a cut (the shared frames' outputs blended), or one window per frame, in spatial tiles; memory follows the
  chunk and the tile, not the clip. A CUDA out-of-memory error halves the tile (then the chunk) and says so
  in the report's notes; an FP16 / BF16 chunk whose output is not finite is recomputed in FP32;
- an **artifact** (``.onnx``, ``.tflite``, ``.pte``, ...) runs through ``edge_sr.runtime.load(path)``: an image
  model's with ``run(frame)``, a video step's with ``stream().push(frame)`` (one state per tile there too),
  a clip / window model's with ``clip_fn()`` through ``run_clip`` as above, tiled at the artifact's own size.

Without a checkpoint the bundled video model of the scale is used (``edge_sr.weights.bundled_video_checkpoint``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.data.video import VIDEO_FORMATS, AudioMode, VideoReader, output_kind, video_writer
from edge_sr.errors import CheckpointError, ConfigError, InputError, OutputError
from edge_sr.io_utils import check_output
from edge_sr.models.stream import Stream, is_stream_model
from edge_sr.runtime.clip import ClipFn, chunking, clip_fn, is_clip_model, run_clip
from edge_sr.upscale import Precision, TileRunner, check_tile, load_model, upscale_array

__all__ = ["TileStreams", "VideoReport", "default_output", "upscale_video"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class VideoReport:
    """What ``upscale_video`` did (``to_dict()`` is the ``--json`` object).

    ``fps_in`` / ``fps_out`` are the clips' frame rates, exact (``"45000/1499"``); ``speed_fps`` the frames
    upscaled per second of wall time; sizes are [width, height].
    """

    input: str
    output: str
    frames: int
    fps_in: str
    fps_out: str
    size_in: list[int]
    size_out: list[int]
    scale: int
    model: str
    kind: str
    checkpoint: str
    device: str
    precision: str
    tile: int
    audio: str | None
    audio_copied: bool
    audio_packets: int
    seconds: float = 0.0
    speed_fps: float = 0.0
    notes: list[str] = field(default_factory=list)
    chunk: int | None = None
    chunk_overlap: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TileStreams:
    """The tile function of a streaming model with one state per tile position.

    ``edge_sr.tiling`` visits a frame's tiles in the same order every frame, so the k-th call after
    :meth:`next_frame` is always the same tile (or batch of tiles): it gets the k-th :class:`Stream`.

    Args:
        model: a streaming model carrying its card.
        device: where the steps run; tiles come and go as float32 CPU tensors.
        precision: ``fp32``, or ``fp16`` / ``bf16`` autocast on the device.
    """

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: Precision = "fp32") -> None:
        from edge_sr.models import card_of

        if precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(None, f"unknown precision {precision!r}; choose from fp32, fp16, bf16")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.colors = int(card_of(model).colors)
        self.streams: list[Stream] = []
        self._k = 0

    def next_frame(self) -> None:
        """Start a frame: the next call is the first tile again."""
        self._k = 0

    def __call__(self, x: Tensor) -> Tensor:
        """(B, C, h, w) float32 -> (B, C, h·s, w·s) float32 on the CPU, the state of this tile carried."""
        if self._k == len(self.streams):
            self.streams.append(Stream(self.model))
        stream = self.streams[self._k]
        self._k += 1
        x = x.to(self.device)
        if self.precision == "fp32":
            return stream.push(x).float().cpu()
        with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
            return stream.push(x).float().cpu()


def default_output(src: Path, scale: int) -> Path:
    """Beside the input: ``clip.mp4`` -> ``clip_x4.mp4``; a frame folder ``frames/`` -> ``frames_x4/``; a clip
    in a container this writer does not make (``.avi``, ``.gif``, ...) -> ``clip_x4.mp4``."""
    if src.is_dir():
        return src.with_name(f"{src.name}_x{scale}")
    suffix = src.suffix if src.suffix.lower() in VIDEO_FORMATS else ".mp4"
    return src.with_name(f"{src.stem}_x{scale}{suffix}")


def _load(
    checkpoint: str | os.PathLike[str] | nn.Module | None, model: str | None, scale: int | None
) -> tuple[Any, str]:
    """(an nn.Module with its card, or an image artifact's runtime runner; what to call it)."""
    from edge_sr.runtime.backends import CHECKPOINT_SUFFIXES
    from edge_sr.weights import DEFAULT_VIDEO_ARCH, bundled_video_checkpoint

    if checkpoint is None:
        s = scale or 4
        path = bundled_video_checkpoint(s)
        if path is None:
            raise CheckpointError(
                None, f"no bundled x{s} video model ({DEFAULT_VIDEO_ARCH}_x{s}.safetensors) in this build; "
                "pass --checkpoint CKPT (a video or an image model)",
            )  # fmt: skip
        checkpoint = path
    if isinstance(checkpoint, nn.Module) or Path(checkpoint).suffix.lower() in CHECKPOINT_SUFFIXES:
        if not isinstance(checkpoint, nn.Module) and model is None and not _has_card(checkpoint):
            from edge_sr.models import load_checkpoint

            # a foreign checkpoint (an official BasicVSR / EDVR .pth ...): its architecture detected
            return load_checkpoint(checkpoint, scale=scale), str(checkpoint)
        net, name = load_model(checkpoint, model=model, scale=scale)
        return net, str(name)
    from edge_sr import runtime

    runner = runtime.load(checkpoint, scale=scale)
    if scale is not None and runner.scale != scale:
        raise CheckpointError(checkpoint, f"is a x{runner.scale} artifact and cannot upscale x{scale}")
    return runner, str(checkpoint)


def _has_card(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an edge-sr checkpoint (a ``.safetensors`` file carrying its model card)."""
    from edge_sr.models.checkpoint import read_metadata

    try:
        read_metadata(path)
    except CheckpointError:
        return False
    return True


def _frame_fn(net: Any, *, tile: int, overlap: int, batch: int, device: str, precision: Precision) -> Any:
    """uint8 (H, W, 3) -> uint8 (H·s, W·s, 3) for one frame, the model's state (if any) carried."""
    from edge_sr.models import card_of

    if not isinstance(net, nn.Module):  # an artifact's runtime runner: tiles of its own size
        # a video step: one StreamRunner (state per tile, edge_sr.runtime.stream) for the clip
        push = (
            net.stream(overlap=overlap).push
            if "stream" in net.manifest
            else partial(net.run, overlap=overlap)
        )

        def run_artifact(rgb: np.ndarray) -> np.ndarray:
            return _to_uint8(push(rgb))

        return run_artifact
    scale = card_of(net).scale
    check_tile(net, tile, overlap)
    kw = dict(scale=scale, tile=tile, tile_overlap=overlap, tile_batch=batch)
    if is_stream_model(net):
        streams = TileStreams(net, device=device, precision=precision)

        def run_stream(rgb: np.ndarray) -> np.ndarray:
            streams.next_frame()
            return upscale_array(rgb, streams, **kw)[0]  # type: ignore[arg-type]

        return run_stream
    runner = TileRunner(net, device=device, precision=precision)
    return lambda rgb: upscale_array(rgb, runner, **kw)[0]  # type: ignore[arg-type]


def _clip_fn(net: Any, *, device: str, precision: Precision) -> ClipFn | None:
    """The :class:`~edge_sr.runtime.clip.ClipFn` of a whole-clip / window model or artifact, else None."""
    if isinstance(net, nn.Module):
        return clip_fn(net, device=device, precision=precision) if is_clip_model(net) else None
    model = getattr(getattr(net, "backend", None), "model", None)  # an eager runner over a checkpoint
    if isinstance(model, nn.Module) and is_clip_model(model):
        return clip_fn(model, device=device, precision=precision)
    if "clip" in getattr(net, "manifest", {}) and callable(getattr(net, "clip_fn", None)):
        return net.clip_fn()  # type: ignore[no-any-return]
    return None


def _to_uint8(sr: np.ndarray) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> uint8, rounded."""
    return np.clip(np.rint(sr * 255.0), 0, 255).astype(np.uint8)


def _refuse_input_as_output(src: Path, dst: Path) -> None:
    if output_kind(dst) is not None:  # a file (a frame folder is checked by its writer: new or empty)
        check_output(dst)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(dst, "is the input itself; choose another -o (nothing written)")


def upscale_video(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    checkpoint: str | os.PathLike[str] | nn.Module | None = None,
    model: str | None = None,
    scale: int | None = None,
    tile: int = 256,
    tile_overlap: int = 16,
    tile_batch: int = 1,
    device: str = "cpu",
    precision: Precision = "fp32",
    crf: int | None = None,
    audio: AudioMode = "copy",
    fps: Fraction | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    chunk: int | None = None,
    chunk_overlap: int | None = None,
) -> VideoReport:
    """Upscale a video file (mp4, mov, mkv, webm, ...) or a folder of frames into ``out``.

    Args:
        src: the clip, or a folder of frames sorted by name.
        out: a video file (container from its suffix: H.264 ``.mp4`` / ``.mov`` / ``.mkv``, VP9 ``.webm``) or
            a new folder of PNG frames (a path without a video suffix); default beside the input,
            ``<name>_x<scale><suffix>``.
        checkpoint: a checkpoint (video or image model), a loaded model carrying its card, an image artifact,
            or None for the bundled video model of ``scale``.
        model: the zoo architecture of a foreign checkpoint.
        scale: the factor (picks the bundled model; checked against a checkpoint).
        tile, tile_overlap, tile_batch: the tiling (a streaming model keeps one state per tile).
        device, precision: where and how the model runs.
        crf: the encoder's quality (lower is better; default 18 for H.264, 24 for VP9).
        audio: ``copy`` the input's audio packets, ``encode`` them to the container's usual codec, or ``none``.
        fps: the frame rate of a frame folder (default 25); files keep theirs.
        max_frames: upscale only the first frames (a preview); the audio stops there too.
        progress: a progress bar over frames (frames per second) on stderr when it is a terminal.
        chunk, chunk_overlap: a whole-clip model's temporal chunks (frames; 0: the whole clip at once) and the
            frames of context on each side of an inner cut (default: ``edge_sr.runtime.clip``'s
            ``DEFAULT_CHUNK`` / ``default_overlap``; an artifact's fixed T).

    Raises:
        InputError: the input is not a readable clip, or shorter than the model's window (one line naming the
            file and the problem).
        CheckpointError / ConfigError: no such model, a wrong scale, a tile too small (or not fitting a
            model's alignment), no CUDA device, an unsupported artifact.
        RuntimeBackendError: out of device memory even at the smallest tile and chunk.
        OutputError: the output cannot be written, or is the input. Nothing is left half-written.
    """
    from edge_sr.models import card_of

    src = Path(src)
    net, name = _load(checkpoint, model, scale)
    cf = _clip_fn(net, device=device, precision=precision)
    kind: str
    if cf is not None:
        s, kind = cf.scale, cf.kind
        arch = card_of(net).arch if isinstance(net, nn.Module) else str(net.manifest.get("arch", cf.name))
    elif isinstance(net, nn.Module):
        card = card_of(net)
        s, arch, kind = card.scale, card.arch, "video" if is_stream_model(net) else "image"
    else:
        s, arch = net.scale, str(net.manifest.get("arch", net.kind))
        kind = "video" if "stream" in net.manifest else "image"
    dst = Path(out) if out is not None else default_output(src, s)
    _refuse_input_as_output(src, dst)  # an image name too, before the clip is opened
    notes: list[str] = []
    frames_of: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
    if cf is not None:
        if chunk_overlap is None and cf.kind == "clip" and not isinstance(net, nn.Module):
            chunk_overlap = (net.manifest.get("clip") or {}).get("overlap")  # what the artifact was made for
        chunk, chunk_overlap = chunking(cf, chunk, chunk_overlap)
        frames_of = partial(
            run_clip,
            cf,
            chunk=chunk,
            overlap=chunk_overlap,
            tile=tile,
            tile_overlap=tile_overlap,
            notes=notes,
        )
    else:
        chunk = chunk_overlap = None
        fn = _frame_fn(
            net, tile=tile, overlap=tile_overlap, batch=tile_batch, device=device, precision=precision
        )
        frames_of = partial(map, fn)
    t0 = time.perf_counter()
    with VideoReader(src, fps=fps, max_frames=max_frames) as reader:
        info = reader.info
        with (
            video_writer(
                dst,
                width=info.width * s,
                height=info.height * s,
                fps=info.fps,
                rotation=info.rotation,
                start=info.start,
                crf=crf,
                audio_from=reader,
                audio=audio,
            ) as sink,  # fmt: skip
            _bar(progress and sys.stderr.isatty(), info.frames, src.name) as bar,
        ):
            try:
                for sr in frames_of(reader):
                    sink.write(sr if sr.dtype == np.uint8 else _to_uint8(sr))
                    bar.update(1)
            except InputError as e:  # a clip shorter than the model's window: name the clip
                if e.path is not None:
                    raise
                raise InputError(src, e.problem) from None
    seconds = time.perf_counter() - t0
    fallbacks = int(getattr(cf.fn, "fallbacks", 0)) if cf is not None else 0
    if fallbacks:
        notes.append(f"{fallbacks} chunks recomputed in FP32 ({precision} output not finite or out of range)")
    if sink.padded:
        notes.append(
            f"{dst}: padded to an even size {sink.width}x{sink.height} (yuv420p) by repeating the edge"
        )
    ain = info.audio
    return VideoReport(
        input=str(src), output=str(dst), frames=sink.frames, fps_in=str(info.fps), fps_out=str(info.fps),
        size_in=[info.width, info.height],
        size_out=[sink.width, sink.height], scale=s, model=arch,
        kind=kind, checkpoint=name, device=device, precision=precision, tile=tile,
        audio=None if ain is None else ain.codec, audio_copied=sink.audio == "copied",
        audio_packets=sink.audio_packets, seconds=round(seconds, 3),
        speed_fps=round(sink.frames / seconds, 3) if seconds > 0 else 0.0, notes=notes,
        chunk=chunk, chunk_overlap=chunk_overlap,
    )  # fmt: skip


def _bar(enabled: bool, total: int | None, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, unit="frame", desc=name, disable=not enabled, file=sys.stderr, dynamic_ncols=True
    )
