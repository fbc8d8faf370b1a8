"""The video SR evaluation protocol: ``evaluate_video(model, "…/Vid4", scale=4, degradation="BI")``.

The protocol of the BasicVSR / IconVSR / BasicVSR++ papers and mmagic (see the video data README): each SR
frame taken as uint8 (clip, round), Y of BT.601 as MATLAB ``rgb2ycbcr`` (unrounded), PSNR / SSIM per frame
(SSIM as BasicSR's ``calculate_ssim``: 11x11 Gaussian, sigma 1.5, 'valid'), ``crop`` pixels shaved at every
border (0 in those tables; 8 in RRN's and DUF's), the mean over the frames of each clip, then the mean over
the clips. Every frame of every clip is used.

The model runs in clip order with a fresh state per clip: a streaming (video) model through its
:class:`~edge_sr.models.stream.Stream`, an image model frame by frame as ``edge-sr eval`` runs it, ``"bicubic"``
as MATLAB ``imresize`` (:func:`bicubic_frames`, equal to it value for value). A whole-clip model (BasicVSR,
IconVSR, BasicVSR++) sees the whole clip at once by default, as the papers test it (``chunk`` bounds the
memory: :func:`edge_sr.runtime.clip.run_clip`), a window model (EDVR) one window per frame with BasicSR's
``reflection_circle`` padding; an artifact runner with ``clip_fn()`` runs the same way (:class:`ClipVideo`).
Anything with ``stream()`` returning an object with ``push(frame) -> sr`` runs the same way, as
``edge_sr.runtime``'s streaming runners do: ``frame`` is an (h, w, C) float32 array in [0, 1], ``sr`` its
(h·s, w·s, C) output, unclipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.data.imresize import contributions, imresize
from edge_sr.data.sequences import Clip, open_sequences
from edge_sr.errors import CheckpointError, ConfigError, InputError
from edge_sr.evaluate import measure, resolve_model_colors, super_resolve, super_resolve_y, y_input
from edge_sr.runtime.clip import ClipFn, clip_fn, is_clip_model, run_clip

log = logging.getLogger(__name__)

__all__ = [
    "ClipScore",
    "ClipVideo",
    "EagerVideo",
    "ImageFrames",
    "VideoEvalResult",
    "VideoRunner",
    "as_video",
    "evaluate_video",
    "frame_input",
]


class FrameStream(Protocol):
    def push(self, frame: np.ndarray) -> Any:
        """(h, w, C) float32 in [0, 1] -> (h·s, w·s, C), the state carried to the next call."""


class VideoRunner(Protocol):
    """What the evaluation and ``verify`` run: a fresh :class:`FrameStream` per clip."""

    scale: int
    colors: int

    def stream(self) -> FrameStream: ...


class _EagerStream:
    def __init__(self, model: nn.Module, device: str) -> None:
        from edge_sr.models.stream import Stream

        self._stream, self._device = Stream(model), device

    def push(self, frame: np.ndarray) -> np.ndarray:
        x = _nchw(frame).to(self._device)
        return self._stream.push(x)[0].float().cpu().permute(1, 2, 0).numpy()


class EagerVideo:
    """A streaming model run eagerly (``edge_sr.models.stream.Stream``) behind the :class:`VideoRunner` face
    (what ``edge_sr.runtime.from_model(model).stream()`` runs, without the runtime's tiling).

    Attributes:
        model: the step module (carrying its card), ``scale`` / ``colors``: its card's, ``precision``: what
        ``verify`` judges it as (``fp32`` unless told: a stand-in for an artifact), ``path`` / ``kind``: None /
        ``"torch"``, as an eager runtime runner has them.
    """

    def __init__(self, model: nn.Module, *, precision: str = "fp32", device: str = "cpu") -> None:
        from edge_sr.models import card_of

        card = card_of(model)
        self.model, self.scale, self.colors = model.eval().to(device), card.scale, card.colors
        self.precision, self.device = precision, device
        self.path: Path | None = None
        self.kind = "torch"
        self.manifest: dict[str, Any] = {}

    def stream(self) -> FrameStream:
        return _EagerStream(self.model, self.device)


class ClipVideo:
    """A whole-clip or window model (:class:`~edge_sr.runtime.clip.ClipFn`: an eager model's, or an artifact
    runner's ``clip_fn()``) behind the evaluation: :meth:`frames` gives a clip's SR frames in order.

    Attributes:
        clip: the model's call; ``scale`` its; ``colors``: 3 (these models are RGB); ``chunk`` / ``overlap`` /
        ``tile`` / ``tile_overlap``: as :func:`~edge_sr.runtime.clip.run_clip` takes them.
    """

    def __init__(
        self,
        clip: ClipFn,
        *,
        chunk: int | None = 0,
        overlap: int | None = None,
        tile: int = 0,
        tile_overlap: int = 0,
    ) -> None:
        self.clip, self.scale, self.colors = clip, clip.scale, 3
        self.chunk, self.overlap, self.tile, self.tile_overlap = chunk, overlap, tile, tile_overlap

    def stream(self) -> FrameStream:
        raise ConfigError(
            None,
            f"{self.clip.name or 'this model'} is a {self.clip.kind} model: run it with frames(), not frame by frame",
        )

    def frames(self, lr: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """(h, w, 3) uint8 / float32 LR frames -> float32 (h·s, w·s, 3) SR frames, in order, one per frame."""
        return run_clip(
            self.clip,
            lr,
            chunk=self.chunk,
            overlap=self.overlap,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
        )


class ImageFrames:
    """An image model (a function (1, C, h, w) tensor -> (1, C, h·s, w·s)) as a state-less stream."""

    def __init__(self, fn: Callable[[Tensor], Tensor], *, scale: int, colors: int) -> None:
        self.fn, self.scale, self.colors = fn, scale, colors

    def stream(self) -> FrameStream:
        return self

    def push(self, frame: np.ndarray) -> np.ndarray:
        return self.fn(_nchw(frame))[0].permute(1, 2, 0).numpy()


def _nchw(frame: np.ndarray) -> Tensor:
    """(h, w, C) -> (1, C, h, w) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(frame).transpose(2, 0, 1), dtype=np.float32))[
        None
    ]


def as_video(
    model: Any,
    scale: int,
    device: str = "cpu",
    *,
    chunk: int | None = 0,
    chunk_overlap: int | None = None,
) -> tuple[VideoRunner | ClipVideo | None, str]:
    """``model`` as a :class:`VideoRunner` or a :class:`ClipVideo` (None for ``"bicubic"``) and a display name.

    ``model``: ``"bicubic"``; None (the bundled video model of ``scale`` when there is one, else the bundled
    image model frame by frame); a checkpoint or an artifact path (``edge_sr.runtime.load``); an ``nn.Module``
    carrying its card (a streaming, whole-clip, window or image model); an ``edge_sr.runtime.Runner`` (one with
    ``clip_fn()`` runs as a :class:`ClipVideo`); anything with ``stream()``; a function as ``edge-sr eval``
    takes one. ``chunk`` / ``chunk_overlap``: a whole-clip model's temporal chunks (0: the whole clip).

    Raises:
        CheckpointError: a model of another scale.
    """
    from edge_sr.models import card_of, has_card, load_checkpoint
    from edge_sr.models.checkpoint import CHECKPOINT_SUFFIXES
    from edge_sr.models.stream import is_stream_model
    from edge_sr.runtime import load
    from edge_sr.weights import bundled_video_checkpoint

    if isinstance(model, str) and model == "bicubic":
        return None, "bicubic"
    if model is None:
        model = bundled_video_checkpoint(scale) or model  # else the bundled image model, frame by frame
    name = ""
    if isinstance(model, str | os.PathLike):
        p = Path(model)
        name = p.name
        model = load_checkpoint(p) if p.suffix.lower() in CHECKPOINT_SUFFIXES else load(p)
    runtime_model = getattr(getattr(model, "backend", None), "model", None)
    if isinstance(runtime_model, nn.Module) and is_clip_model(runtime_model):
        model = runtime_model  # an eager runtime runner over a whole-clip / window checkpoint
    clip = _clip_of(model, device)
    if clip is not None:
        if clip.scale != scale:
            raise ConfigError(
                None, f"{name or clip.name} is x{clip.scale}; --scale {scale} needs a x{scale} one"
            )
        source = card_of(model).source if isinstance(model, nn.Module) and has_card(model) else None
        if chunk_overlap is None and not isinstance(model, nn.Module):  # the overlap an artifact was made for
            chunk_overlap = ((getattr(model, "manifest", None) or {}).get("clip") or {}).get("overlap")
        return ClipVideo(clip, chunk=chunk, overlap=chunk_overlap), name or (
            Path(source).name if source else clip.name
        )
    if not isinstance(model, nn.Module) and callable(getattr(model, "stream", None)) and _streams(model):
        if int(model.scale) != scale:
            raise ConfigError(
                None, f"{name or 'the runner'} is x{model.scale}; --scale {scale} needs a x{scale} one"
            )
        video: VideoRunner = model
        return video, name or str(getattr(model, "path", "") or type(model).__name__)
    if isinstance(runtime_model, nn.Module) and is_stream_model(runtime_model):
        model = runtime_model  # an eager runtime runner over a checkpoint: the same model, streamed
    if isinstance(model, nn.Module) and is_stream_model(model):
        card = card_of(model)
        if card.scale != scale:
            raise CheckpointError(
                card.source, f"is a x{card.scale} model; --scale {scale} needs a x{scale} model"
            )
        return EagerVideo(model, device=device), name or (
            Path(card.source).name if card.source else card.arch
        )
    if hasattr(model, "run") and hasattr(model, "colors") and not isinstance(model, nn.Module):
        runner = model
        if int(runner.scale) != scale:
            raise ConfigError(None, f"the artifact is x{runner.scale}; --scale {scale} needs a x{scale} one")

        def run(x: Tensor) -> Tensor:
            return torch.from_numpy(np.asarray(runner.run(x.numpy()), dtype=np.float32))

        return ImageFrames(run, scale=scale, colors=int(runner.colors)), name or str(
            runner.path or runner.kind
        )
    fn, label, colors = resolve_model_colors(model, scale, device)
    assert fn is not None
    colors = int(card_of(model).colors) if isinstance(model, nn.Module) and has_card(model) else colors
    return ImageFrames(fn, scale=scale, colors=colors), name or label


def _clip_of(model: Any, device: str) -> ClipFn | None:
    """The ClipFn of an eager whole-clip / window model or of an artifact runner with ``clip_fn()``, else None."""
    if isinstance(model, nn.Module):
        return clip_fn(model, device=device) if is_clip_model(model) else None
    if isinstance(model, ClipFn):
        return model
    if "clip" in (getattr(model, "manifest", None) or {}) and callable(getattr(model, "clip_fn", None)):
        return model.clip_fn()  # type: ignore[no-any-return]
    return None


def _streams(obj: Any) -> bool:
    """Whether a runner's ``stream()`` is a video stream (a runtime runner of an image model is not)."""
    return getattr(obj, "stream_spec", True) is not None


def frame_input(lr: np.ndarray, colors: int) -> np.ndarray:
    """uint8 LR (h, w, 3) -> the (h, w, C) float32 frame a stream takes (C = 1: the Y ``edge-sr eval`` feeds)."""
    if colors == 1:
        return y_input(lr, gray=False)[0].transpose(1, 2, 0)
    return lr.astype(np.float32) / 255.0


@dataclass(frozen=True)
class ClipScore:
    """One clip's means, with the per-frame values they come from."""

    name: str
    psnr: float
    ssim: float
    frames: int
    frame_psnr: list[float] = field(default_factory=list)
    frame_ssim: list[float] = field(default_factory=list)


@dataclass
class VideoEvalResult:
    """The mean of the clip means and the clip rows (``--json``: ``{"psnr", "ssim", "clips": [...], ...}``)."""

    psnr: float
    ssim: float
    scale: int
    degradation: str
    crop: int
    model: str
    clips: list[ClipScore] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.clips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "scale": self.scale,
            "degradation": self.degradation,
            "crop": self.crop,
            "channel": "y",
            "model": self.model,
            "frames": self.frames,
            "clips": [
                {
                    "name": c.name,
                    "psnr": c.psnr,
                    "ssim": c.ssim,
                    "frames": c.frames,
                    "frame_psnr": c.frame_psnr,
                    "frame_ssim": c.frame_ssim,
                }
                for c in self.clips
            ],
        }


def _phases(n: int, scale: int) -> list[list[tuple[int, float]]] | None:
    """``imresize``'s taps for upscaling an axis of length ``n`` by the integer ``scale``, per output phase.

    Output ``s·i + r`` is ``sum(w · x[i + offset] for offset, w in taps[r])``, indices mirrored at the borders
    (symmetric padding, as ``imresize``). None when the weights are not periodic (then use ``imresize``).
    """
    w, idx = contributions(n, n * scale, float(scale), True)  # (n·s, P) weights and 0-based input indices
    mid = n // 2
    taps = [[(int(idx[scale * mid + r, p]) - mid, float(w[scale * mid + r, p])) for p in range(w.shape[1])]
            for r in range(scale)]  # fmt: skip
    i = np.arange(n)[:, None]
    for r, tr in enumerate(taps):
        virtual = i + np.array([o for o, _ in tr])[None]  # (n, P) before mirroring
        mirrored = np.where(virtual < 0, -virtual - 1, np.where(virtual >= n, 2 * n - 1 - virtual, virtual))
        rows = slice(r, None, scale)
        if not (
            np.array_equal(mirrored, idx[rows])
            and np.array_equal(np.array([v for _, v in tr])[None].repeat(n, 0), w[rows])
        ):
            return None
    return taps


def _upscale_axis(x: Tensor, axis: int, scale: int, taps: list[list[tuple[int, float]]]) -> Tensor:
    """One MATLAB bicubic pass along ``axis`` of a uint8-valued float64 tensor, rounded as ``imresize`` rounds.

    Output ``s·i + r`` takes phase ``r``'s taps (:func:`_phases`) as shifted views of the mirror-padded input,
    the products summed in ``imresize``'s order (its zero-weight taps skipped).
    """
    n = x.shape[axis]
    pad = max(abs(o) for tr in taps for o, _ in tr) + 1
    i = torch.arange(-pad, n + pad)
    xp = x.index_select(axis, torch.where(i < 0, -i - 1, torch.where(i >= n, 2 * n - 1 - i, i)))
    out = x.new_empty(x.shape[:axis] + (n * scale,) + x.shape[axis + 1 :])
    phases = out.unflatten(axis, (n, scale))  # (..., n, s, ...): phase r of every input position
    for r, tr in enumerate(taps):
        acc = phases.select(axis + 1, r)
        nonzero = [(o, w) for o, w in tr if w != 0.0]
        o, w = nonzero[0]
        acc.copy_(xp.narrow(axis, pad + o, n)).mul_(w)
        for o, w in nonzero[1:]:
            acc.add_(xp.narrow(axis, pad + o, n), alpha=w)
    return out.add_(0.5).floor_().clamp_(0, 255)


def bicubic_frames(lr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (T, h, w, 3) -> uint8 (T, h·s, w·s, 3): MATLAB ``imresize(lr, s, 'bicubic')`` on each frame.

    ``edge_sr.data.imresize``'s taps and order (rows first, then columns, rounding to uint8 after each pass) as
    whole-frame tensor operations: about 3x faster than ``imresize`` (12 against 36 ms of CPU for a 176x144
    frame) and equal to it (for x4 every weight is a dyadic fraction, so every sum is exact).
    """
    _, h, w, _ = lr.shape
    th, tw = _phases(h, scale), _phases(w, scale)
    if th is None or tw is None:
        return np.stack([imresize(f, float(scale)) for f in lr])
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(0, 3, 1, 2).to(torch.float64)  # (T, 3, h, w)
    y = _upscale_axis(_upscale_axis(x, 2, scale, th), 3, scale, tw)
    return y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _score_clip(
    clip: Clip, video: VideoRunner | ClipVideo | None, scale: int, crop: int, reset_state: bool = False
) -> ClipScore:
    psnrs: list[float] = []
    ssims: list[float] = []
    colors = 3 if video is None else int(video.colors)
    if isinstance(video, ClipVideo):  # the outputs run ahead of the GT frames by up to a chunk
        for i, sr in enumerate(video.frames(clip.read_lr(i) for i in range(len(clip)))):
            p, s = measure(_to_uint8(sr), clip.read_gt(i), crop)
            psnrs.append(p)
            ssims.append(s)
    elif video is None:
        for lr, gt in clip.pairs():  # one frame at a time: a frame's arrays stay in cache
            p, s = measure(bicubic_frames(lr[None], scale)[0], gt, crop)
            psnrs.append(p)
            ssims.append(s)
    else:
        stream = video.stream()  # a fresh state for every clip

        def step(x: Tensor) -> Tensor:  # (1, C, h, w) -> (1, C, h·s, w·s), through the (h, w, C) stream face
            nonlocal stream
            if reset_state:  # every frame its own first frame: what the model gets without the others
                stream = video.stream()
            return _nchw(np.asarray(stream.push(x[0].permute(1, 2, 0).numpy()), dtype=np.float32))

        for lr, gt in clip.pairs():
            if colors == 1:
                sr = super_resolve_y(step, lr, scale, gray=False)
            else:
                sr = super_resolve(step, lr, scale)
            p, s = measure(sr, gt, crop, colors=colors)
            psnrs.append(p)
            ssims.append(s)
    score = ClipScore(clip.name, float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs), psnrs, ssims)
    log.info("%s: %.4f dB / %.4f (%d frames)", score.name, score.psnr, score.ssim, score.frames)
    return score


def _warn_degradation(model: Any, scale: int, degradation: str) -> None:
    """Log a warning when a checkpoint says it was trained for another degradation (its ``degradation``
    metadata, which ``python -m edge_sr.zoo bundle`` writes for a video model): BI weights score under bicubic
    on BD frames."""
    from edge_sr.models import card_of, has_card
    from edge_sr.models.checkpoint import has_edge_sr_metadata, read_metadata
    from edge_sr.weights import bundled_video_checkpoint

    path = bundled_video_checkpoint(scale) if model is None else model
    if isinstance(model, nn.Module) and has_card(model):  # loaded from a file: the card names it
        path = card_of(model).source or None
    # an edge-sr .safetensors file (not a bare state dict, an artifact or "bicubic")
    if not isinstance(path, str | os.PathLike) or not has_edge_sr_metadata(path):
        return
    trained = read_metadata(path).get("degradation")
    if trained and trained != degradation:
        log.warning("%s was trained for %s LR frames; these are %s", Path(path).name, trained, degradation)


def _to_uint8(sr: np.ndarray) -> np.ndarray:
    """float (H, W, 3) -> uint8 as :func:`~edge_sr.evaluate.super_resolve` quantizes: clip, round."""
    return np.round(np.clip(sr.astype(np.float64), 0, 1) * 255.0).astype(np.uint8)


def evaluate_video(
    model_or_runner: Any,
    data: str | os.PathLike[str],
    *,
    scale: int = 4,
    degradation: str = "BI",
    crop: int = 0,
    clips: Sequence[str] | None = None,
    frames: int | None = None,
    device: str = "cpu",
    chunk: int | None = 0,
    chunk_overlap: int | None = None,
    reset_state: bool = False,
) -> VideoEvalResult:
    """Score a model on a sequence root (``GT/<clip>/`` + ``<degradation>x<scale>/<clip>/``).

    Args:
        model_or_runner: what :func:`as_video` takes (``"bicubic"``, a checkpoint, a model, a runner, None).
        data: the sequence root (e.g. ``…/video/Vid4``).
        scale: the LR folder's factor and the model's.
        degradation: ``"BI"`` or ``"BD"``.
        crop: border pixels shaved before measuring (0: BasicVSR / mmagic; 8: RRN / DUF).
        clips: clip names (default all).
        frames: use only the first ``frames`` frames of each clip.
        device: where a PyTorch model runs.
        chunk, chunk_overlap: a whole-clip model's temporal chunks; 0 (default): the whole clip at once, as
            the papers test (an artifact runs chunks of its fixed T).
        reset_state: a streaming model starts every frame from its initial state, as if each frame were the
            first of its clip; the score it loses against the stream is what it draws from the other frames.

    Raises:
        InputError: a folder not in the sequence layout (see ``edge_sr.data.sequences``).
        ConfigError: a negative crop, or one that leaves nothing to measure; ``reset_state`` for a model
            without a state (bicubic, a whole-clip or window model).
    """
    if crop < 0:
        raise ConfigError(None, f"--crop must be >= 0, got {crop}")
    seqs = [c.head(frames) for c in open_sequences(data, scale=scale, degradation=degradation, clips=clips)]
    small = min(seqs, key=lambda c: min(c.size))
    if 2 * crop + 11 > min(small.size):  # SSIM's 11x11 window must fit what the crop leaves
        raise ConfigError(
            None,
            f"--crop {crop} leaves less than 11 pixels of clip {small.name} ({small.size[1]}x{small.size[0]})",
        )
    _warn_degradation(model_or_runner, scale, degradation)
    video, name = as_video(model_or_runner, scale, device, chunk=chunk, chunk_overlap=chunk_overlap)
    if reset_state and (video is None or isinstance(video, ClipVideo)):
        raise ConfigError(None, f"--reset-state is for a streaming model; {name} has no state to reset")
    if reset_state:
        name += ", state reset every frame"
    scores = []
    for c in seqs:
        try:
            scores.append(_score_clip(c, video, scale, crop, reset_state))
        except InputError as e:  # a clip shorter than a clip model's window: name the clip
            if e.path is not None:
                raise
            raise InputError(c.gt[0].parent, e.problem) from None
    return VideoEvalResult(
        psnr=float(np.mean([c.psnr for c in scores])),
        ssim=float(np.mean([c.ssim for c in scores])),
        scale=scale,
        degradation=degradation,
        crop=crop,
        model=name,
        clips=scores,
    )
