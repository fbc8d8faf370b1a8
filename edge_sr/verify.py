"""Prove an artifact still does SR: run it and the float model over LR/HR pairs and compare.

Per image and on average: Y-PSNR / SSIM of the artifact and of the float model against HR (BasicSR
convention: border shave = scale), the artifact's PSNR against the float output (RGB, raw floats in [0, 1]),
and the max absolute difference. The verdict depends on the artifact's precision:

- fp32: max abs difference <= 1e-4
- fp16: PSNR against float >= 50 dB
- int8: mean Y-PSNR against HR within 0.2 dB of the float model's

A streaming (video) artifact is verified on a sequence set (:func:`verify_video`, ``--data …/Vid4``): both run
over every frame of every clip with a fresh state per clip (a whole-clip / window artifact and its float model
through ``edge_sr.runtime.clip.run_clip``, the same chunks of the artifact's T frames and the same tiles), scored per clip as ``edge-sr eval`` scores video
(Y, border ``crop``, mean per clip, then mean of clips) under the same criteria, plus a drift check: whether the
artifact's error against the float model grows along the sequence (see :func:`drift`).

A 1-colour (Y-channel) artifact and its float model both run on the Y of the LR image (MATLAB
``rgb2ycbcr``, as ``edge-sr eval`` feeds them; a gray image straight): "vs float" and the max difference
compare their Y outputs, and the scores against HR are on the HR's Y, as ``edge-sr eval`` measures.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edge_sr.data.io import BT601_LUMA
from edge_sr.data.paths import data_path
from edge_sr.errors import ConfigError, InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from edge_sr.data.sequences import Clip

logger = logging.getLogger(__name__)

Pair = tuple[str, np.ndarray, np.ndarray]  # (name, LR uint8 (h, w, 3), HR uint8 (h·s, w·s[, 3]); gray: 2-D)


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria per precision."""

    fp32_max_abs_diff: float = 1e-4
    fp16_psnr_vs_float: float = 50.0
    int8_psnr_drop: float = 0.2
    drift_db: float = 1.0  # video: the largest fall of PSNR vs float from a clip's first half to its second


@dataclass(frozen=True)
class ImageResult:
    name: str
    psnr: float
    psnr_float: float
    ssim: float
    ssim_float: float
    psnr_vs_float: float
    max_abs_diff: float


@dataclass(frozen=True)
class VerifyReport:
    """Means over the images, the verdict and the per-image rows."""

    passed: bool
    precision: str
    criterion: str
    psnr: float
    psnr_float: float
    ssim: float
    ssim_float: float
    psnr_vs_float: float
    max_abs_diff: float
    images: list[ImageResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``edge-sr verify --json``)."""
        d = asdict(self)
        d["images"] = [asdict(r) for r in self.images]
        return d


def _psnr_float(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float images in [0, 1] (peak 1), no rounding: resolves differences far below 1/255."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1).astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _is_gray(hr: np.ndarray) -> bool:
    """An HR kept single-channel by :func:`load_pairs`: a grayscale file, such as Set14's ``bridge``."""
    return hr.ndim == 2


def _as_measured(y: np.ndarray, gray: bool) -> np.ndarray:
    """Float SR output -> the uint8 image ``edge-sr eval`` scores: clipped, rounded; a gray image as the
    BT.601 luma of the output, measured on its gray values (no Y conversion), as the published tables do."""
    out = np.clip(y.astype(np.float64), 0.0, 1.0) * 255.0
    if gray:
        out = out @ np.array(BT601_LUMA)
    return np.round(out).astype(np.uint8)


def load_pairs(data: str | os.PathLike[str], scale: int, *, limit: int | None = None) -> list[Pair]:
    """LR/HR pairs of a benchmark folder (``HR/`` + ``LR_bicubic/X{s}/``); HR cropped to ``s`` × LR size."""
    from edge_sr.data.datasets import load_rgb_uint8, pair_lr_files, resolve_paired_layout
    from edge_sr.evaluate import read_benchmark_u8

    hr_dir, lr_dir = resolve_paired_layout(data, scale)
    if not lr_dir.is_dir():
        raise InputError(lr_dir, f"no LR folder for scale {scale}")
    pairs = []
    for hr_path, lr_path in pair_lr_files(hr_dir, lr_dir, scale)[:limit]:
        # a gray HR stays single-channel: measured on its gray values, as `edge-sr eval` does
        lr, hr = load_rgb_uint8(lr_path), read_benchmark_u8(hr_path)
        h, w = lr.shape[:2]
        if hr.shape[0] < h * scale or hr.shape[1] < w * scale:
            raise InputError(hr_path, f"HR {hr.shape[1]}x{hr.shape[0]} is smaller than {scale} x LR {w}x{h}")
        pairs.append((hr_path.stem, lr, hr[: h * scale, : w * scale]))
    return pairs


def default_set5() -> Path | None:
    """The Set5 benchmark under the data root (``EDGE_SR_DATA``/benchmarks/Set5), or None.

    None when the variable is unset or the folder has no ``HR/``: callers then fall back to
    :func:`builtin_pairs`' synthetic images rather than fail.
    """
    try:
        root = data_path("benchmarks", "Set5")
    except ConfigError:
        return None
    return root if (root / "HR").is_dir() else None


def _synthetic_hr(seed: int, size: int) -> np.ndarray:
    """A deterministic (size, size, 3) uint8 test picture: gradients, rings, stripes and a soft edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    f1, f2 = rng.uniform(3, 9, size=2)
    rings = 0.5 + 0.5 * np.cos(2 * np.pi * f1 * np.hypot(xx - 0.5, yy - 0.5))
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * f2 * (xx + 0.3 * yy))
    edge = 1.0 / (1.0 + np.exp(-40 * (xx - yy)))
    img = np.stack(
        [0.6 * rings + 0.4 * xx, 0.5 * stripes + 0.5 * edge, 0.7 * yy + 0.3 * rings * edge], axis=-1
    )
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def builtin_pairs(scale: int, *, count: int = 3, lr_size: int = 48) -> list[Pair]:
    """A few small LR/HR pairs for a quick check: Set5 crops when the data is present, else synthetic images.

    Crops are ``lr_size`` LR pixels (``lr_size·s`` HR) taken around each image's centre, aligned to the LR grid.
    """
    root = default_set5()
    if root is not None and (root / "LR_bicubic" / f"X{scale}").is_dir():
        out = []
        for name, lr, hr in load_pairs(root, scale, limit=count):
            n = min(lr_size, *lr.shape[:2])
            y0, x0 = (lr.shape[0] - n) // 2, (lr.shape[1] - n) // 2
            out.append(
                (
                    name,
                    lr[y0 : y0 + n, x0 : x0 + n],
                    hr[y0 * scale : (y0 + n) * scale, x0 * scale : (x0 + n) * scale],
                )
            )
        return out
    from edge_sr.data.imresize import imresize

    pairs = []
    for i in range(count):
        hr = _synthetic_hr(i, lr_size * scale)
        pairs.append((f"synthetic{i}", imresize(hr, output_shape=(lr_size, lr_size)), hr))
    return pairs


def _reference_model(reference: nn.Module | str | os.PathLike[str]) -> nn.Module:
    """The float model: a loaded module (carrying its card) as it is, else loaded from its checkpoint."""
    if isinstance(reference, nn.Module):
        return reference.eval()
    from edge_sr.models import load_checkpoint

    return load_checkpoint(reference)


def verify(
    artifact: Any,
    *,
    reference: nn.Module | str | os.PathLike[str],
    data: str | os.PathLike[str] | list[Pair] | None = None,
    scale: int | None = None,
    thresholds: Thresholds | None = None,
    limit: int | None = None,
    record: bool = True,
    check_sha256: bool = True,
) -> VerifyReport:
    """Run ``artifact`` and the float ``reference`` over LR/HR pairs and judge the artifact.

    Args:
        artifact: an artifact path or an ``edge_sr.runtime.Runner``.
        reference: the float model (an ``nn.Module`` carrying its card, e.g. loaded with the caller's
            overrides), or its checkpoint. Its colour channels must be the artifact's.
        data: a benchmark folder (``HR/`` + ``LR_bicubic/X{s}/``), a list of (name, LR, HR) uint8 pairs, or
            None for the built-in images (``builtin_pairs``: Set5 crops under ``EDGE_SR_DATA``, else
            synthetic pictures).
        scale: the scale (default: the artifact's).
        thresholds: pass criteria (defaults: ``Thresholds()``).
        limit: use at most this many images of ``data``.
        record: write the result into the artifact's manifest (``verification``); its ``artifact_sha256``
            stays as it is (it hashes the artifact, not the manifest).
        check_sha256: refuse an artifact path whose bytes differ from its manifest's ``artifact_sha256``
            (``edge_sr.runtime.load``); a ``Runner`` was checked when it was loaded.

    Returns:
        The report; ``report.passed`` is the verdict.
    """
    from edge_sr.convert.manifest import record_verification
    from edge_sr.runtime import Runner, from_model, load

    runner = artifact if isinstance(artifact, Runner) else load(artifact, check_sha256=check_sha256)
    float_runner = from_model(_reference_model(reference))
    # the float model sees the same tiles as the artifact, so "vs float" measures conversion error only
    float_runner.input_shape = dict(runner.input_shape)
    s = int(scale or runner.scale)
    if float_runner.scale != s:
        raise ConfigError(None, f"the reference model is x{float_runner.scale} but the artifact is x{s}")
    if float_runner.colors != runner.colors:
        raise ConfigError(
            None,
            f"the reference model takes {float_runner.colors} colour channels but the artifact "
            f"{runner.colors}; verify against the model the artifact was exported from",
        )
    pairs = _pairs(data, s, limit)
    rows = [_score_pair(runner, float_runner, pair, s) for pair in pairs]
    report = _judge(rows, runner.precision, thresholds or Thresholds())
    if record and runner.path is not None and runner.kind != "torch":
        record_verification(runner.path, _json_safe(report.to_dict()))
    return report


def _pairs(data: str | os.PathLike[str] | list[Pair] | None, scale: int, limit: int | None) -> list[Pair]:
    """The LR/HR pairs ``verify`` runs on: built-in, given, or read from a benchmark folder."""
    if data is None:
        pairs = builtin_pairs(scale)
    elif isinstance(data, list):
        pairs = data[:limit]
    else:
        pairs = load_pairs(data, scale, limit=limit)
    if not pairs:
        raise InputError(None if isinstance(data, list) else data, "no images to verify on")
    return pairs


def _score_pair(runner: Any, float_runner: Any, pair: Pair, scale: int) -> ImageResult:
    """Run the artifact and the float model on one LR image and score both against its HR."""
    from edge_sr.metrics import psnr, ssim

    name, lr, hr = pair
    gray = _is_gray(hr)
    if runner.colors == 1:
        return _score_pair_y(runner, float_runner, pair, scale)
    x = lr.astype(np.float32) / 255.0
    with torch.no_grad():
        y_float = float_runner.run(x)
    y = runner.run(x)
    y8, yf8 = _as_measured(y, gray), _as_measured(y_float, gray)
    row = ImageResult(
        name=name,
        psnr=psnr(y8, hr, crop_border=scale),
        psnr_float=psnr(yf8, hr, crop_border=scale),
        ssim=ssim(y8, hr, crop_border=scale),
        ssim_float=ssim(yf8, hr, crop_border=scale),
        psnr_vs_float=_psnr_float(y, y_float),
        max_abs_diff=float(np.max(np.abs(y - y_float))),
    )
    logger.info(
        "%s: %.2f dB (float %.2f dB), %.2f dB vs float", name, row.psnr, row.psnr_float, row.psnr_vs_float
    )
    return row


def _score_pair_y(runner: Any, float_runner: Any, pair: Pair, scale: int) -> ImageResult:
    """:func:`_score_pair` for 1-colour artifacts: both run on Y, scored on Y (see the module docstring)."""
    from edge_sr.evaluate import measure, y_input

    name, lr, hr = pair
    x = y_input(lr, gray=_is_gray(hr))
    with torch.no_grad():
        y_float = float_runner.run(x)[0, 0]
    y = runner.run(x)[0, 0]
    y8 = np.round(np.clip(y.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    yf8 = np.round(np.clip(y_float.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    (p, ss), (pf, ssf) = measure(y8, hr, scale, colors=1), measure(yf8, hr, scale, colors=1)
    row = ImageResult(
        name=name,
        psnr=p,
        psnr_float=pf,
        ssim=ss,
        ssim_float=ssf,
        psnr_vs_float=_psnr_float(y, y_float),
        max_abs_diff=float(np.max(np.abs(y - y_float))),
    )
    logger.info(
        "%s: %.2f dB (float %.2f dB), %.2f dB vs float on Y",
        name,
        row.psnr,
        row.psnr_float,
        row.psnr_vs_float,
    )
    return row


def _judge(rows: list[ImageResult], precision: str, thr: Thresholds) -> VerifyReport:
    """Means over the images and the verdict of ``precision``'s criterion (see the module docstring)."""
    mean = {
        k: float(np.mean([getattr(r, k) for r in rows])) for k in ("psnr", "psnr_float", "ssim", "ssim_float")
    }
    vs_float = [r.psnr_vs_float for r in rows]
    psnr_vs_float = (
        math.inf
        if all(math.isinf(v) for v in vs_float)
        else float(np.mean([v for v in vs_float if math.isfinite(v)]))
    )
    max_abs = max(r.max_abs_diff for r in rows)
    if precision == "int8":
        passed = mean["psnr_float"] - mean["psnr"] <= thr.int8_psnr_drop
        criterion = f"Y-PSNR within {thr.int8_psnr_drop} dB of float"
    elif precision == "fp16":
        passed = psnr_vs_float >= thr.fp16_psnr_vs_float
        criterion = f"PSNR vs float >= {thr.fp16_psnr_vs_float} dB"
    else:
        passed = max_abs <= thr.fp32_max_abs_diff
        criterion = f"max abs diff <= {thr.fp32_max_abs_diff:g}"
    return VerifyReport(
        passed=bool(passed),
        precision=precision,
        criterion=criterion,
        psnr_vs_float=psnr_vs_float,
        max_abs_diff=max_abs,
        images=rows,
        **mean,
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# ---- video: a streaming artifact over sequences ------------------------------------------------------------


@dataclass(frozen=True)
class ClipResult(ImageResult):
    """One clip: the :class:`ImageResult` fields as clip means (``max_abs_diff``: the clip's max), the worst
    frame (lowest PSNR vs float) and the drift figures of :func:`drift`."""

    frames: int
    worst_frame: int
    worst_psnr_vs_float: float
    drift_slope: float
    drift_halves: float
    drift: bool
    frame_psnr_vs_float: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class VideoVerifyReport:
    """Means of the clip means, the verdict (precision criterion and no drift) and the clip rows."""

    passed: bool
    precision: str
    criterion: str
    psnr: float
    psnr_float: float
    ssim: float
    ssim_float: float
    psnr_vs_float: float
    max_abs_diff: float
    drift: bool
    drift_criterion: str
    degradation: str
    crop: int
    clips: list[ClipResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``edge-sr verify --json`` on a sequence set)."""
        d = asdict(self)
        d["frames"] = sum(c.frames for c in self.clips)
        return d


DRIFT_WARMUP = 2  # frames left out of the drift figures: both runs start from the same initial state


def drift(psnr_vs_float: list[float], threshold_db: float) -> tuple[float, float, bool]:
    """Whether an artifact's error against the float model grows along a clip.

    The first :data:`DRIFT_WARMUP` frames are left out: frame 0 runs from the initial state (zeros, or the
    frame itself) in both runs, so its error is far below the steady one (20 dB above it was measured), and
    frame 1 is the first to see a state the artifact made. On the frames after them:

    Args:
        psnr_vs_float: the per-frame PSNR against the float model, in frame order (``inf``: identical frames,
            left out).
        threshold_db: the fall that counts as drift.

    Returns:
        (slope in dB per frame of the least-squares line, second-half mean minus first-half mean in dB, drift).
        Drift: the second half lies more than ``threshold_db`` below the first and the slope is negative. A
        stable state gives an error that moves with the content but does not trend; an error that feeds back
        through the state grows frame after frame, so both figures fall. 1 dB is the MSE against float 26 %
        larger in the second half; the figures measured on Vid4 are in docs/VIDEO.md. Fewer than 4 frames
        after the warm-up give no figures (0, 0, False).
    """
    settled = psnr_vs_float[DRIFT_WARMUP:]
    t = np.array([i for i, v in enumerate(settled) if math.isfinite(v)], dtype=np.float64)
    v = np.array([x for x in settled if math.isfinite(x)], dtype=np.float64)
    if v.size < 4:
        return 0.0, 0.0, False
    slope = float(np.polyfit(t, v, 1)[0])
    half = len(settled) // 2
    first = [x for x in settled[:half] if math.isfinite(x)]
    second = [x for x in settled[half:] if math.isfinite(x)]
    halves = float(np.mean(second) - np.mean(first)) if first and second else 0.0
    return slope, halves, bool(halves < -threshold_db and slope < 0)


def _as_measured_frame(y: np.ndarray, colors: int) -> np.ndarray:
    """(H, W, C) float output -> the uint8 frame ``edge-sr eval`` scores ((H, W, 3) RGB, or (H, W) Y)."""
    if colors == 1:
        return np.round(np.clip(y.reshape(y.shape[:2]).astype(np.float64), 0, 1) * 255).astype(np.uint8)
    return _as_measured(y, False)


def _sr_frames(video: Any, clip: Clip, colors: int) -> Iterator[np.ndarray]:
    """A clip's SR frames, in order: a stream pushed frame by frame (fresh state), or a
    :class:`_ClipPair` side's ``run_clip``."""
    from edge_sr.evaluate_video import frame_input

    lrs = (frame_input(clip.read_lr(i), colors) for i in range(len(clip)))
    if isinstance(video, _ClipSide):
        return video.frames(lrs)
    stream = video.stream()
    return (_as_array(stream.push(x)) for x in lrs)


def _score_clip_video(artifact: Any, reference: Any, clip: Clip, crop: int, thr: Thresholds) -> ClipResult:
    """Run both models over a clip (fresh states: streams; the same windows and tiles: clip models) and score
    every frame."""
    from edge_sr.evaluate import measure

    colors = int(reference.colors)
    outs = zip(_sr_frames(artifact, clip, colors), _sr_frames(reference, clip, colors), strict=True)
    rows: list[tuple[float, float, float, float, float, float]] = []
    for i, (y, y_float) in enumerate(outs):
        gt = clip.read_gt(i)
        if y.shape != y_float.shape:
            raise InputError(
                getattr(artifact, "path", None),
                f"the artifact returned {y.shape}, the float model {y_float.shape}",
            )
        p, ss = measure(_as_measured_frame(y, colors), gt, crop, colors=colors)
        pf, ssf = measure(_as_measured_frame(y_float, colors), gt, crop, colors=colors)
        rows.append((p, pf, ss, ssf, _psnr_float(y, y_float), float(np.max(np.abs(y - y_float)))))
    a = np.array(rows)
    vs_float = [float(v) for v in a[:, 4]]
    finite = [v for v in vs_float if math.isfinite(v)]
    worst = int(np.argmin(a[:, 4]))
    slope, halves, drifting = drift(vs_float, thr.drift_db)
    res = ClipResult(
        name=clip.name,
        psnr=float(a[:, 0].mean()),
        psnr_float=float(a[:, 1].mean()),
        ssim=float(a[:, 2].mean()),
        ssim_float=float(a[:, 3].mean()),
        psnr_vs_float=float(np.mean(finite)) if finite else math.inf,
        max_abs_diff=float(a[:, 5].max()),
        frames=len(rows),
        worst_frame=worst,
        worst_psnr_vs_float=vs_float[worst],
        drift_slope=slope,
        drift_halves=halves,
        drift=drifting,
        frame_psnr_vs_float=vs_float,
    )
    logger.info(
        "%s: %.2f dB (float %.2f dB), %.2f dB vs float, worst frame %d, drift %+.3f dB",
        res.name, res.psnr, res.psnr_float, res.psnr_vs_float, worst, halves,
    )  # fmt: skip
    return res


@dataclass
class _ClipSide:
    """One side of a whole-clip / window verification: a ``ClipFn`` run by ``run_clip`` with the artifact's
    chunk overlap (the artifact's T and tile size are in both sides' ``ClipFn``)."""

    clip: Any
    overlap: int | None
    path: Path | None = None
    kind: str = "torch"
    precision: str = "fp32"
    input_shape: dict[str, Any] | None = None
    colors: int = 3

    @property
    def scale(self) -> int:
        return int(self.clip.scale)

    def frames(self, lrs: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        from edge_sr.runtime.clip import run_clip

        return run_clip(self.clip, lrs, overlap=self.overlap)


def _clip_pair(runner: Any, ref_model: nn.Module) -> tuple[_ClipSide, _ClipSide]:
    """The artifact's ``clip_fn()`` and the float model's eager one with the artifact's fixed T and frame size,
    so both run the same chunks and tiles: "vs float" is the conversion error only."""
    from dataclasses import replace

    from edge_sr.runtime.clip import clip_fn

    art = runner.clip_fn()
    ref = replace(clip_fn(ref_model), frames=art.frames, min_frames=art.min_frames, size=art.size)
    overlap = (runner.manifest.get("clip") or {}).get("overlap")
    overlap = None if art.kind == "window" else overlap
    side = _ClipSide(art, overlap, runner.path, runner.kind, runner.precision, runner.input_shape)
    return side, _ClipSide(ref, overlap)


def _as_array(out: Any) -> np.ndarray:
    """A stream's output (a tensor or an array) as a float32 array."""
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def _video_artifact(artifact: Any, check_sha256: bool) -> Any:
    """``artifact`` as a stream runner: as it is when it has ``stream()``, else loaded by ``edge_sr.runtime``."""
    from edge_sr.evaluate_video import EagerVideo
    from edge_sr.models.stream import is_stream_model
    from edge_sr.runtime import load

    if isinstance(artifact, nn.Module):
        return EagerVideo(artifact)
    runner = (
        artifact if callable(getattr(artifact, "stream", None)) else load(artifact, check_sha256=check_sha256)
    )
    if callable(getattr(runner, "stream", None)) and getattr(runner, "stream_spec", True) is not None:
        return runner
    model = getattr(runner.backend, "model", None)
    if isinstance(model, nn.Module) and is_stream_model(model):
        return EagerVideo(model)
    raise InputError(artifact, "is not a streaming (video) artifact that this runtime can run frame by frame")


def verify_video(
    artifact: Any,
    *,
    reference: nn.Module | str | os.PathLike[str],
    data: str | os.PathLike[str],
    degradation: str = "BI",
    crop: int = 0,
    clips: list[str] | None = None,
    frames: int | None = None,
    thresholds: Thresholds | None = None,
    record: bool = True,
    check_sha256: bool = True,
) -> VideoVerifyReport:
    """Run a streaming (or whole-clip / window) artifact and its float model over a sequence set and judge it.

    Args:
        artifact: an artifact path (``edge_sr.runtime.load``), or a runner with ``stream()`` whose streams take
            ``push((h, w, C) float32) -> (h·s, w·s, C)`` (``edge_sr.runtime``'s), or a streaming ``nn.Module``;
            or the artifact of a whole-clip / window model (a fixed window of T frames, ``clip`` in its
            manifest) or its runner: it runs through ``run_clip`` with its T, tile size and chunk overlap, and
            the float model through the same chunks and tiles.
        reference: the float streaming (whole-clip, window) model, or its checkpoint.
        data: a sequence root (``GT/<clip>/`` + ``<degradation>x<s>/<clip>/``).
        degradation: ``"BI"`` or ``"BD"``.
        crop: border pixels shaved before scoring against GT (0: the BasicVSR / mmagic protocol).
        clips: clip names (default all); frames: the first ``frames`` of each clip (default all).
        thresholds: pass criteria (defaults: ``Thresholds()``); ``drift_db`` bounds the drift.
        record: write the result into the artifact's manifest (``verification``).
        check_sha256: refuse an artifact whose bytes differ from its manifest's ``artifact_sha256``.

    Returns:
        The report: ``passed`` when the precision's criterion holds (on the clip means, as the image verify
        does on images) and no clip drifts.
    """
    from edge_sr.convert.manifest import record_verification
    from edge_sr.data.sequences import open_sequences
    from edge_sr.models.stream import is_stream_model
    from edge_sr.runtime import from_model, load
    from edge_sr.runtime.clip import is_clip_model

    thr = thresholds or Thresholds()
    ref_model = _reference_model(reference)
    runner: Any
    float_video: Any
    if is_clip_model(ref_model):  # a whole-clip / window artifact: both run by run_clip
        loaded = artifact if hasattr(artifact, "clip_fn") else load(artifact, check_sha256=check_sha256)
        runner, float_video = _clip_pair(loaded, ref_model)
    elif not is_stream_model(ref_model):
        raise ConfigError(
            None, "the reference is an image model; verify a video artifact against its streaming float model"
        )
    else:
        runner = _video_artifact(artifact, check_sha256)
        float_video = from_model(ref_model)
        # the float model streams through the same tiles (and padding) as the artifact, each tile position
        # with its own state: "vs float" measures the conversion error only, as the image verify does
        float_video.input_shape = dict(getattr(runner, "input_shape", None) or {"mode": "any"})
    if int(runner.scale) != float_video.scale or int(runner.colors) != float_video.colors:
        raise ConfigError(
            None,
            f"the reference model is x{float_video.scale} with {float_video.colors} colours but the artifact "
            f"x{runner.scale} with {runner.colors}; verify against the model the artifact was exported from",
        )
    seqs = open_sequences(data, scale=float_video.scale, degradation=degradation, clips=clips)
    rows = [_score_clip_video(runner, float_video, c.head(frames), crop, thr) for c in seqs]
    precision = str(getattr(runner, "precision", "fp32"))
    judged = _judge(list(rows), precision, thr)  # clip means in place of images: the mean of clip means
    drifting = any(r.drift for r in rows)
    report = VideoVerifyReport(
        passed=judged.passed and not drifting,
        precision=precision,
        criterion=judged.criterion,
        psnr=judged.psnr,
        psnr_float=judged.psnr_float,
        ssim=judged.ssim,
        ssim_float=judged.ssim_float,
        psnr_vs_float=judged.psnr_vs_float,
        max_abs_diff=judged.max_abs_diff,
        drift=drifting,
        drift_criterion=f"PSNR vs float falls by at most {thr.drift_db:g} dB from a clip's first half to its second",
        degradation=degradation,
        crop=crop,
        clips=rows,
    )
    path = getattr(runner, "path", None)
    if record and path is not None and getattr(runner, "kind", "torch") != "torch":
        record_verification(path, _json_safe(report.to_dict()))
    return report


def judge_agreement(
    check: dict[str, Any], precision: str, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """``check`` (an artifact against its float model: ``max_abs_diff``, ``psnr_vs_float``) with ``passed`` and
    ``criterion`` set by the FP32 / FP16 thresholds (FP16: PSNR against float; anything else: max abs diff)."""
    thr = thresholds or Thresholds()
    if precision == "fp16":
        passed = check["psnr_vs_float"] >= thr.fp16_psnr_vs_float
        criterion = f"PSNR vs float >= {thr.fp16_psnr_vs_float:g} dB"
    else:
        passed = check["max_abs_diff"] <= thr.fp32_max_abs_diff
        criterion = f"max abs diff <= {thr.fp32_max_abs_diff:g}"
    return {**check, "passed": bool(passed), "criterion": criterion}


def verify_fixed_size(
    artifact: str | os.PathLike[str], reference: nn.Module, *, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """An artifact of one input and one output size whose factor need not be whole (an arbitrary-scale model
    exported for one output size, ``edge_sr.models.liif.FixedSizeLIIF``) against ``reference`` (the same
    wrapped module in PyTorch) on a deterministic test picture of the artifact's input size, judged by the
    FP32 / FP16 thresholds of :func:`verify` (an INT8 artifact has no such reference here).

    Raises:
        ConfigError: an INT8 artifact.
    """
    from edge_sr.runtime import load

    runner = load(artifact)
    thr = thresholds or Thresholds()
    shape = runner.manifest["inputs"][0]["shape"]
    h, w = (shape[1], shape[2]) if runner.layout == "NHWC" else (shape[2], shape[3])
    pic = _synthetic_hr(0, max(h, w))[:h, :w]
    x = (pic.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    got = runner.forward(x)
    with torch.no_grad():
        want = reference.eval()(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    vs_float = _psnr_float(np.clip(got, 0, 1), np.clip(want, 0, 1))
    if runner.precision not in ("fp32", "fp16"):
        raise ConfigError(runner.path, f"a {runner.precision} fixed-size artifact has no float check here")
    return {
        **judge_agreement({"max_abs_diff": diff, "psnr_vs_float": vs_float}, runner.precision, thr),
        "input_size": [int(h), int(w)],
        "output_size": [int(got.shape[-2]), int(got.shape[-1])],
    }
