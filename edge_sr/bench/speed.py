"""The speed benchmark: each bundled image model on every runtime against the PyTorch model a user already has.

For each checkpoint the deploy form runs in torch eager (the baseline), and its artifacts run on ExecuTorch-
XNNPACK, LiteRT (TFLite) with and without its default XNNPACK delegate, and onnxruntime with and without its
graph optimizations, in FP32 and INT8 (post-training, each target's default quantization). Every variant is
timed in the same process, the variants called in turn within each round (a load change on the machine hits
all of them alike), at each input size and thread count. The Set5 Y-PSNR each artifact loses against the float
model (``edge_sr.verify``) sits beside its time, so "fastest" is read among the artifacts that keep the
quality (``SpeedSettings.max_loss_db``).

Where the time of the ExecuTorch programs goes comes from their ETDump: per layer class (int8 convolutions,
float convolutions, the rest) the milliseconds, the MACs and the achieved rate as a share of this CPU's peak
for that precision (``edge_sr.profile.peak``).

A video (streaming) model's step is measured the same way at the first size, one call per frame with its state
fed back as an app runs it (``edge_sr.profile.stream``), the eager baseline being ``edge_sr.models.stream.Stream``
on the deploy form; INT8 is calibrated on consecutive frames of a clip and the quality column is the Vid4 Y-PSNR
loss against the float stream (``edge_sr.verify.verify_video``).

Artifacts stay in ``workdir`` between runs of the same settings (exported again only when missing).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sr.bench._env import data_dir, environment, environment_block
from edge_sr.convert import target_module

logger = logging.getLogger(__name__)

Size = tuple[int, int]


@dataclass(frozen=True)
class Variant:
    """One way to run the model: a runtime, a precision and the runner's options."""

    runtime: str  # the label in the tables
    target: str | None  # edge_sr.convert target; None: the deploy form in torch eager
    precision: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.runtime} {self.precision}"


VARIANTS: tuple[Variant, ...] = (
    Variant("torch eager", None, "fp32"),
    Variant("executorch", "executorch", "fp32"),
    Variant("executorch", "executorch", "int8"),
    Variant("tflite", "tflite", "fp32"),
    Variant("tflite", "tflite", "int8"),
    Variant("tflite, no XNNPACK", "tflite", "fp32", (("xnnpack", False),)),
    Variant("tflite, no XNNPACK", "tflite", "int8", (("xnnpack", False),)),
    Variant("onnxruntime", "onnx", "fp32"),
    Variant("onnxruntime", "onnx", "int8"),
    Variant("onnxruntime, no graph opt.", "onnx", "fp32", (("optimize", False),)),
)
# INT8 against FP32 on the same runtime, for the ratio columns
INT8_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("executorch", "executorch fp32", "executorch int8"),
    ("tflite", "tflite fp32", "tflite int8"),
    ("onnxruntime", "onnxruntime fp32", "onnxruntime int8"),
)


@dataclass(frozen=True)
class SpeedSettings:
    """What is measured and how often.

    Attributes:
        sizes: LR input sizes (H, W); the first is where quality and the per-layer breakdown are measured.
        threads: thread counts, one pass each (ExecuTorch's threadpool is one per process).
        runs: timed rounds at the first size; ``runs_large`` at the others.
        variants: ``Variant.key`` names to run (default: all of ``VARIANTS``).
        data: the Set5 folder for the quality column (default ``$EDGE_SR_DATA/benchmarks/Set5``).
        calib: images cut into INT8 calibration patches, used as LR (default the BSD200 training folder).
        calib_count: calibration patches.
        max_loss_db: the Set5 loss within which an artifact counts for "fastest".
        ops: collect the ExecuTorch per-layer breakdown (first size, one thread).
        video_data: the Vid4 root for a video model's quality column (default ``$EDGE_SR_DATA/video/Vid4``).
        video_calib: the clip a video model's INT8 step is calibrated on (default ``clips/cockatoo.mp4``).
        video_frames: the first frames of each Vid4 clip scored (default all).
    """

    sizes: tuple[Size, ...] = ((180, 320), (720, 1280))
    threads: tuple[int, ...] = (1, 2)
    runs: int = 15
    runs_large: int = 5
    variants: tuple[str, ...] = ()
    data: str | None = None
    calib: str | None = None
    calib_count: int = 8
    max_loss_db: float = 0.05
    ops: bool = True
    video_data: str | None = None
    video_calib: str | None = None
    video_frames: int | None = None

    def chosen(self) -> list[Variant]:
        from edge_sr.errors import ConfigError

        if not self.variants:
            return list(VARIANTS)
        known = {v.key: v for v in VARIANTS}
        bad = [k for k in self.variants if k not in known]
        if bad:
            raise ConfigError(None, f"unknown variant {bad[0]!r}; choose from {', '.join(known)}")
        return [known[k] for k in self.variants]


@dataclass
class ModelSpeed:
    """Everything measured for one checkpoint."""

    model: str
    scale: int
    gmacs: dict[str, float]  # "HxW" -> GMACs of one forward
    loss_db: dict[str, float | None]  # variant key -> Set5 PSNR of the float model minus the artifact's
    median_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # "HxW@T" -> key -> ms
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # precision -> per-class rows
    notes: list[str] = field(default_factory=list)
    quality: str = "Set5"  # what the loss is measured on (Vid4 for a video step)

    def summary(self, max_loss_db: float) -> list[dict[str, Any]]:
        """Per size and thread count: the eager time, the fastest artifact within ``max_loss_db`` and its
        speed-up, and INT8 against FP32 on each runtime (medians of the same run)."""
        out = []
        for cell, ms in self.median_ms.items():
            eager = ms.get("torch eager fp32")
            ok = {
                k: v
                for k, v in ms.items()
                if k != "torch eager fp32" and (self.loss_db.get(k) or 0.0) <= max_loss_db
            }
            best = min(ok, key=lambda k: ok[k]) if ok else None
            row: dict[str, Any] = {
                "cell": cell,
                "eager_ms": eager,
                "best": best,
                "best_ms": ok.get(best) if best else None,
                "best_speedup": eager / ok[best] if eager and best else None,
            }
            for name, f32, i8 in INT8_PAIRS:
                row[f"int8_vs_fp32 {name}"] = ms[f32] / ms[i8] if f32 in ms and i8 in ms else None
            out.append(row)
        return out


def cell_name(size: Size, threads: int) -> str:
    return f"{size[0]}x{size[1]}@{threads}"


# ---------------------------------------------------------------- artifacts


def mosaic(patches: torch.Tensor, size: Size) -> torch.Tensor:
    """Calibration inputs of ``size`` tiled from the (N, C, h, w) ``patches``: input ``i`` takes patch
    ``i + k`` for its ``k``-th tile, so every input mixes different images (the pixel statistics of the
    patches, at a size no training image reaches as LR)."""
    n, c, h, w = patches.shape
    rows, cols = -(-size[0] // h), -(-size[1] // w)
    out = torch.empty(n, c, rows * h, cols * w)
    for i in range(n):
        for r in range(rows):
            for k in range(cols):
                out[i, :, r * h : (r + 1) * h, k * w : (k + 1) * w] = patches[(i + r * cols + k) % n]
    return out[:, :, : size[0], : size[1]].contiguous()


def _artifact_path(out: Path, target: str, precision: str, size: Size) -> Path:
    return out / f"{target}_{precision}_{size[0]}x{size[1]}{target_module(target).SUFFIX}"


def _reusable(path: Path, source: Path) -> bool:
    """An artifact kept from an earlier run, made from these weights and unchanged since, and an INT8 one
    with the target's current quantization scheme (an artifact of an older scheme is made again)."""
    import json

    from edge_sr.convert import target_module
    from edge_sr.convert.manifest import sha256_path

    manifest = path.with_name(path.name + ".json")
    if not (path.exists() and manifest.exists()):
        return False
    made = json.loads(manifest.read_text())
    quant = made.get("quantization") or {}
    if quant and quant.get("scheme") != target_module(made.get("target", "")).quant_scheme(quant.get("mode")):
        return False
    return bool(
        (made.get("source") or {}).get("sha256") == sha256_path(source)
        and made.get("artifact_sha256") == sha256_path(path)
    )


def export_variant(
    deploy: nn.Module, target: str, precision: str, size: Size, calib: Any, out: Path, source: Path
) -> Path:
    """The ``target`` artifact of ``deploy`` at ``size`` (reused when already in ``out``)."""
    from edge_sr.convert import ExportSpec, export
    from edge_sr.quantize import from_tensors, ptq

    path = _artifact_path(out, target, precision, size)
    if _reusable(path, source):
        return path
    if precision == "int8":
        # at a larger size only the latency is read: two mosaics (onnxruntime's percentile calibration
        # keeps every activation of every calibration input in memory)
        cal = calib if tuple(calib.input_size) == size else from_tensors(mosaic(calib.patches[:2], size))
        return Path(ptq(deploy, target, cal, out=path, source=source).path)
    return Path(export(deploy, target, path, ExportSpec(input_size=size), source=source).path)


class _Eager:
    """The deploy form in torch eager: what a user runs before any export."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def forward(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


def _runner(v: Variant, path: Path | None, model: nn.Module, threads: int) -> Any:
    if v.target is None:
        return _Eager(model)
    return target_module(v.target).Runner(path, threads=threads, **dict(v.options))


def time_rounds(calls: Sequence[Callable[[], Any]], runs: int, settle: bool = False) -> list[float]:
    """Median wall time (ms) of each call over ``runs`` rounds (:func:`round_times`)."""
    return [statistics.median(ts) for ts in round_times(calls, runs, settle)]


def round_times(calls: Sequence[Callable[[], Any]], runs: int, settle: bool = False) -> list[list[float]]:
    """Wall times (ms) of each call over ``runs`` rounds, the calls made in turn within each round (so a load
    change on the machine hits all of them alike), after one warm-up call each.

    ``settle``: each timed call follows an untimed call of the same variant. With several threads a runtime's
    pool keeps spinning for a while after a call (onnxruntime, OpenMP): without it, those threads would
    compete with the next variant's call rather than with their own.
    """
    from edge_sr.convert.target import time_calls

    for c in calls:
        c()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(runs):
        for c, ts in zip(calls, times, strict=True):
            ts.extend(time_calls(c, 1, 1 if settle else 0))
    return times


# ---------------------------------------------------------------- per-layer classes


def conv_macs(model: nn.Module, size: Size, run: Callable[[], Any] | None = None) -> dict[str, int]:
    """Module path -> MACs of every ``nn.Conv2d`` of ``model`` at an LR input of ``size`` (``run``: a call
    that runs ``model`` once, a video step's, in place of a forward on a zero image)."""
    found: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        found[names[m]] = found.get(names[m], 0) + out.numel() * m.weight[0].numel()  # type: ignore[index]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            run() if run is not None else model(torch.zeros(1, 3, *size))
    finally:
        for h in hs:
            h.remove()
    return found


def layer_classes(
    ops: Sequence[Any], macs: dict[str, int], float_layers: Sequence[str], precision: str, threads: int
) -> list[dict[str, Any]]:
    """ETDump operators of an ExecuTorch-XNNPACK program grouped into int8 convolutions (``QC8``), float
    convolutions (``F32``) and the rest, each with its MACs and its rate against this CPU's peak.

    ``float_layers`` are the convs an INT8 program keeps in float (the ones reading the image); in an FP32
    program every conv is float. The MACs of a class are given only when its operator count matches the
    model's convs of that class (otherwise None: the mapping is not known)."""
    from edge_sr.profile.peak import cpu_info, theoretical_peak

    info = cpu_info()
    conv_f = {k: v for k, v in macs.items() if precision != "int8" or k in float_layers}
    conv_q = {k: v for k, v in macs.items() if k not in conv_f}
    groups: dict[str, list[float]] = {"int8 convolutions": [], "float convolutions": [], "the rest": []}
    for op in ops:
        if op.ms is None:
            continue
        name = op.name
        if name.startswith("Convolution") and ("QC8" in name or "QS8" in name or "QU8" in name):
            groups["int8 convolutions"].append(op.ms)
        elif name.startswith("Convolution"):
            groups["float convolutions"].append(op.ms)
        else:
            groups["the rest"].append(op.ms)
    expected = {"int8 convolutions": conv_q, "float convolutions": conv_f}
    peaks = {p: theoretical_peak(info, threads, p).gmacs_per_s for p in ("int8", "fp32")}
    rows = []
    for cls, times in groups.items():
        if not times:
            continue
        ms = sum(times)
        layers = expected.get(cls)
        gmac = sum(layers.values()) / 1e9 if layers is not None and len(layers) == len(times) else None
        rate = gmac / ms * 1e3 if gmac else None
        peak = peaks["int8" if cls.startswith("int8") else "fp32"]
        rows.append(
            {
                "class": cls,
                "ops": len(times),
                "ms": ms,
                "gmacs": gmac,
                "gmacs_per_s": rate,
                "percent_of_peak": 100 * rate / peak if rate and peak and cls != "the rest" else None,
                "peak_gmacs_per_s": peak if cls != "the rest" else None,
            }
        )
    return rows


# ---------------------------------------------------------------- one model


def bench_model(
    ckpt: Path, s: SpeedSettings, work: Path, progress: Callable[[str], None] | None = None
) -> ModelSpeed:
    """Export, verify and time every chosen variant of one checkpoint (see the module docstring)."""
    from edge_sr.models import card_of, load_checkpoint
    from edge_sr.quantize import load_calibration
    from edge_sr.quantize.pt2e import input_layers
    from edge_sr.reparam import reparameterize
    from edge_sr.verify import verify

    say = progress or (lambda _m: None)
    deploy = reparameterize(load_checkpoint(ckpt)).eval()
    scale = card_of(deploy).scale
    variants = s.chosen()
    out = work / ckpt.stem
    out.mkdir(parents=True, exist_ok=True)
    first = s.sizes[0]
    calib = None
    if any(v.precision == "int8" for v in variants):
        folder = data_dir(s.calib, "train", "BSD200")
        calib = load_calibration(folder, count=s.calib_count, input_size=first, scale=scale, lr_input=True)
    paths: dict[tuple[str, Size], Path] = {}
    for size in s.sizes:
        for v in variants:
            if v.target is not None and (v.key, size) not in paths:
                say(f"{ckpt.stem}: export {v.target} {v.precision} {size[0]}x{size[1]}")
                paths[(v.key, size)] = export_variant(deploy, v.target, v.precision, size, calib, out, ckpt)
    res = ModelSpeed(
        ckpt.stem,
        scale,
        {f"{h}x{w}": conv_macs_total(deploy, (h, w)) for h, w in s.sizes},
        {},
    )
    set5 = data_dir(s.data, "benchmarks", "Set5")
    for v in variants:
        if v.target is None:
            res.loss_db[v.key] = 0.0
            continue
        if v.options:  # the same file as the variant without options
            continue
        say(f"{ckpt.stem}: verify {v.key} on Set5")
        d = verify(paths[(v.key, first)], reference=deploy, data=str(set5)).to_dict()
        pf, pa = d.get("psnr_float"), d.get("psnr")
        res.loss_db[v.key] = pf - pa if pf is not None and pa is not None else None
    _share_loss(res, variants)
    for t in s.threads:
        torch.set_num_threads(t)
        for size in s.sizes:
            say(f"{ckpt.stem}: time {size[0]}x{size[1]}, {t} thread(s)")
            x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
            runners = [_runner(v, paths.get((v.key, size)), deploy, t) for v in variants]
            meds = time_rounds(
                [partial(r.forward, x) for r in runners],
                s.runs if size == first else s.runs_large,
                settle=t > 1,
            )
            res.median_ms[cell_name(size, t)] = {v.key: m for v, m in zip(variants, meds, strict=True)}
            del runners
    if s.ops:
        from edge_sr.profile import profile

        macs = conv_macs(deploy, first)
        floats = input_layers(deploy, torch.zeros(1, 3, *first))
        for v in variants:
            if v.target != "executorch" or v.options:
                continue
            say(f"{ckpt.stem}: ETDump of {v.key}")
            rep = profile(paths[(v.key, first)], runs=s.runs, warmup=2, threads=1, peak=False)
            res.layers[v.precision] = layer_classes(rep.ops, macs, floats, v.precision, 1)
    return res


def _share_loss(res: ModelSpeed, variants: Sequence[Variant]) -> None:
    """A variant with runtime options runs the same file as the plain one: it gets that one's loss."""
    for v in variants:
        if v.options:
            plain = next((u for u in variants if u.target == v.target and u.precision == v.precision), None)
            res.loss_db[v.key] = res.loss_db.get(plain.key) if plain and not plain.options else None


def _stream_entry(path: Path) -> dict[str, Any]:
    from edge_sr.convert import read_manifest

    manifest = read_manifest(path)
    assert manifest is not None  # required=True raises when it is missing
    return dict(manifest["stream"])


def bench_stream_model(
    ckpt: Path, s: SpeedSettings, work: Path, progress: Callable[[str], None] | None = None
) -> ModelSpeed:
    """Export, verify on Vid4 and time every chosen variant of a video model's step at the first size, one
    call per frame with the state fed back (see the module docstring)."""
    from edge_sr.convert import ExportSpec, export
    from edge_sr.models import card_of, load_checkpoint
    from edge_sr.models.stream import Stream
    from edge_sr.profile.stream import stream_call
    from edge_sr.quantize.sequences import load_sequences
    from edge_sr.quantize.stream import stream_ptq
    from edge_sr.reparam import reparameterize
    from edge_sr.verify import verify_video

    say = progress or (lambda _m: None)
    deploy = reparameterize(load_checkpoint(ckpt)).eval()
    card = card_of(deploy)
    size = s.sizes[0]
    variants = s.chosen()
    out = work / ckpt.stem
    out.mkdir(parents=True, exist_ok=True)
    seqs = None
    paths: dict[str, Path] = {}
    for v in variants:
        if v.target is None or f"{v.target} {v.precision}" in paths:
            continue
        path = _artifact_path(out, v.target, v.precision, size)
        if not _reusable(path, ckpt):
            say(f"{ckpt.stem}: export {v.target} {v.precision} {size[0]}x{size[1]}")
            if v.precision == "int8":
                if seqs is None:
                    clip = data_dir(s.video_calib, "video", "clips", "cockatoo.mp4")
                    seqs = load_sequences(
                        clip, input_size=size, scale=card.scale, clips=8, frames=8, seed=0, colors=card.colors
                    )
                stream_ptq(deploy, v.target, seqs, out=path, source=ckpt)
            else:
                export(deploy, v.target, path, ExportSpec(input_size=size), source=ckpt)
        paths[f"{v.target} {v.precision}"] = path
    frame = torch.zeros(1, card.colors, *size)
    macs = conv_macs(deploy, size, run=partial(Stream(deploy).push, frame))
    res = ModelSpeed(
        ckpt.stem, card.scale, {f"{size[0]}x{size[1]}": sum(macs.values()) / 1e9}, {}, quality="Vid4"
    )
    vid4 = data_dir(s.video_data, "video", "Vid4")
    for v in variants:
        if v.target is None:
            res.loss_db[v.key] = 0.0
        elif not v.options:
            say(f"{ckpt.stem}: verify {v.key} on Vid4")
            rep = verify_video(
                paths[f"{v.target} {v.precision}"],
                reference=deploy,
                data=vid4,
                frames=s.video_frames,
                record=False,
            )
            res.loss_db[v.key] = rep.psnr_float - rep.psnr
    _share_loss(res, variants)
    x = torch.from_numpy(np.random.default_rng(0).random((1, card.colors, *size), dtype=np.float32))
    for t in s.threads:
        torch.set_num_threads(t)
        say(f"{ckpt.stem}: time the step at {size[0]}x{size[1]}, {t} thread(s)")
        calls: list[Callable[[], Any]] = []
        for v in variants:
            if v.target is None:
                eager = Stream(deploy)
                calls.append(torch.inference_mode()(partial(eager.push, x)))
            else:
                path = paths[f"{v.target} {v.precision}"]
                runner = target_module(v.target).Runner(path, threads=t, **dict(v.options))
                calls.append(stream_call(runner, _stream_entry(path)))
        meds = time_rounds(calls, s.runs, settle=t > 1)
        res.median_ms[cell_name(size, t)] = {v.key: m for v, m in zip(variants, meds, strict=True)}
        del calls
    if s.ops:
        from edge_sr.convert.executorch import EtdumpRunner

        for v in variants:
            if v.target != "executorch" or v.options:
                continue
            say(f"{ckpt.stem}: ETDump of {v.key}")
            path = paths[f"{v.target} {v.precision}"]
            profiled = EtdumpRunner(path, threads=1)
            call = stream_call(profiled, _stream_entry(path))
            for _ in range(s.runs):
                call()
            # the INT8 step quantizes every conv (its first conv reads the state too)
            res.layers[v.precision] = layer_classes(profiled.ops(), macs, [], v.precision, 1)
    res.notes.append(
        f"a video step: {size[0]}x{size[1]} -> {size[0] * card.scale}x{size[1] * card.scale} per frame, the state "
        "fed back between calls; INT8 calibrated on 8 clips of 8 frames of "
        f"{Path(s.video_calib).name if s.video_calib else 'clips/cockatoo.mp4'}; loss on Vid4 "
        f"({'all frames' if s.video_frames is None else f'the first {s.video_frames} frames of each clip'}, "
        "BI, Y, crop 0) against the float stream"
    )
    return res


def conv_macs_total(model: nn.Module, size: Size) -> float:
    from edge_sr.profile.compute import count_macs

    return count_macs(model, *size) / 1e9


def bench_speed(
    checkpoints: Sequence[str | os.PathLike[str]] | None = None,
    settings: SpeedSettings | None = None,
    *,
    workdir: str | os.PathLike[str] | None = None,
    doc: str | os.PathLike[str] | None = None,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure each checkpoint (default: every bundled image model); optionally rewrite the ``speed``
    section of ``doc``.

    Returns:
        ``{"models": [...], "summary": [...], "environment": {...}, "out": doc or None}``.
    """
    from edge_sr.models import load_checkpoint
    from edge_sr.models.stream import is_stream_model
    from edge_sr.weights import bundled_checkpoints

    s = settings or SpeedSettings()
    s.chosen()  # ConfigError for an unknown variant before any work
    ckpts = [Path(c) for c in checkpoints or ()] or [
        f for scales in bundled_checkpoints(None).values() for f in scales.values()
    ]
    threads_before = torch.get_num_threads()
    results: list[ModelSpeed] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(workdir) if workdir else Path(tmp)
            for ck in ckpts:
                video = is_stream_model(load_checkpoint(ck))
                results.append((bench_stream_model if video else bench_model)(ck, s, work, progress))
    finally:
        torch.set_num_threads(threads_before)
    env = environment()
    summary = [{"model": r.model, **row} for r in results for row in r.summary(s.max_loss_db)]
    if doc is not None:
        from edge_sr.bench.report import update_section

        update_section(doc, "speed", render(results, s, environment_block(env, command)), title="Benchmarks")
    return {
        "models": [asdict(r) for r in results],
        "summary": summary,
        "settings": asdict(s),
        "environment": env,
        "out": None if doc is None else str(doc),
    }


# ---------------------------------------------------------------- markdown


def _ms(v: float | None) -> str:
    return "—" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def _db(v: float | None) -> str:
    """A loss in dB to 3 decimals; a float-exact artifact's -0.0001 shows as 0.000, not -0.000."""
    if v is None:
        return "—"
    return f"{0.0 if abs(v) < 5e-4 else v:.3f}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def render(results: Sequence[ModelSpeed], s: SpeedSettings, env_block: str) -> str:
    """The ``speed`` section: per model the median per variant and cell, then the ratios and the layers."""
    cells = [cell_name(size, t) for t in s.threads for size in s.sizes]
    lines = [
        "## Speed: each bundled model on every runtime against torch eager",
        "",
        env_block,
        "",
        f"Medians in ms of {s.runs} rounds at {s.sizes[0][0]}x{s.sizes[0][1]} and {s.runs_large} at larger "
        "inputs, every variant called in turn within each round (one process), after one warm-up call each; "
        "`HxW@T` is the LR input and the thread count; with more than one thread each timed call follows an "
        "untimed call of the same variant (thread pools spin after a call). In brackets: the speed-up over torch eager on the "
        "deploy form in the same cell. Set5 loss: Y-PSNR of the float model minus the artifact's "
        "(`edge-sr verify`, shave = scale). INT8: post-training, each target's default quantization. A video "
        "model's step runs at the first size only, one call per frame with its state fed back (its notes say "
        "how it was calibrated and scored).",
    ]
    for r in results:
        lines += ["", f"### {r.model} (x{r.scale})", ""]
        macs = ", ".join(f"{k}: {v:.2f} GMAC" for k, v in r.gmacs.items())
        lines += [f"Compute per forward: {macs}.", ""]
        mine = [c for c in cells if c in r.median_ms]
        lines.append(f"| runtime | precision | {r.quality} loss (dB) | " + " | ".join(mine) + " |")
        lines.append("| --- | --- | ---: | " + " | ".join("---:" for _ in mine) + " |")
        keys = list(next(iter(r.median_ms.values()), {}))
        for k in keys:
            runtime, prec = k.rsplit(" ", 1)
            loss = r.loss_db.get(k)
            vals = []
            for c in mine:
                ms = r.median_ms.get(c, {})
                e = ms.get("torch eager fp32")
                v = ms.get(k)
                vals.append(
                    _ms(v) if k == "torch eager fp32" or not e or not v else f"{_ms(v)} ({e / v:.1f}x)"
                )
            lines.append(f"| {runtime} | {prec} | {_db(loss)} | " + " | ".join(vals) + " |")
    lines += [
        "",
        f"### Summary: the fastest artifact within {s.max_loss_db} dB of quality loss (Set5; Vid4 for a video "
        "step), and INT8 against FP32",
        "",
        "| model | cell | torch eager (ms) | fastest artifact | ms | speed-up over eager | "
        + " | ".join(f"INT8 / FP32 {n}" for n, _, _ in INT8_PAIRS)
        + " |",
        "| --- | --- | ---: | --- | ---: | ---: | " + " | ".join("---:" for _ in INT8_PAIRS) + " |",
    ]
    for r in results:
        for row in r.summary(s.max_loss_db):
            ratios = " | ".join(_x(row[f"int8_vs_fp32 {n}"]) for n, _, _ in INT8_PAIRS)
            lines.append(
                f"| {r.model} | {row['cell']} | {_ms(row['eager_ms'])} | {row['best'] or '—'} | "
                f"{_ms(row['best_ms'])} | {_x(row['best_speedup'])} | {ratios} |"
            )
    if any(r.layers for r in results):
        lines += [
            "",
            f"### ExecuTorch-XNNPACK programs per layer class ({s.sizes[0][0]}x{s.sizes[0][1]}, 1 thread, ETDump)",
            "",
            "Operator times summed per class; the rate against this CPU's theoretical peak of the class's "
            "precision (`edge_sr.profile.peak`: vector lanes x FMA ports x clock; INT8 counts 4 MACs per "
            "32-bit lane with a dot-product instruction, 2 without one).",
            "",
            "| model | program | class | operators | ms | GMAC | GMAC/s | share of peak |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results:
            for prec, rows in r.layers.items():
                for row in rows:
                    gm = "—" if row["gmacs"] is None else f"{row['gmacs']:.3f}"
                    rate = "—" if row["gmacs_per_s"] is None else f"{row['gmacs_per_s']:.1f}"
                    pct = "—" if row["percent_of_peak"] is None else f"{row['percent_of_peak']:.0f} %"
                    lines.append(
                        f"| {r.model} | {prec.upper()} | {row['class']} | {row['ops']} | {_ms(row['ms'])} | "
                        f"{gm} | {rate} | {pct} |"
                    )
    for r in results:
        lines += [f"- {r.model}: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"
