"""Upscale image files with an SR model: ``upscale_files(inputs, out, ...)`` and ``upscale_array(...)``.

Tiled inference (``edge_sr.tiling``), 16-bit kept, gray kept gray, alpha upscaled separately and kept, EXIF
orientation applied, every output written to a temporary name and renamed. In a batch, a bad file is
reported in one line and skipped; an output that is an input, or that is a folder, device or FIFO, is
refused before anything runs. Memory follows the tile, not the image: the input stays in its stored 8 or
16 bits and the output goes to the encoder one band of tile rows at a time (PNG streams; JPEG, WebP and
TIFF, which Pillow encodes whole, gather in one uint8 / uint16 buffer). On GPU hosts: tiles batched on the device, FP16 / BF16 autocast with a
guard (a tile whose output is not finite or far out of range is recomputed in FP32 and counted), and a
CUDA out-of-memory error retried with half the tile.

A Y-channel model (``card.colors == 1``, the SRCNN / FSRCNN / ESPCN line and ECBSR's own recipe) sees the Y
of BT.601 as MATLAB's ``rgb2ycbcr`` computes it (values in [16, 235] / 255); Cb and Cr are upscaled with the
MATLAB-exact bicubic (``edge_sr.data.imresize``) and ``ycbcr2rgb`` gives the RGB output, tile by tile (the
bicubic reaches 2 pixels, well inside the tile overlap, so tiles meet without a seam). A gray image goes
straight in, as in the papers' evaluation code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.data.io import BT601_LUMA, FORMATS, image_writer, list_images, read_image
from edge_sr.errors import (
    CheckpointError,
    ConfigError,
    EdgeSRError,
    InputError,
    OutputError,
    RuntimeBackendError,
)
from edge_sr.io_utils import check_output, ensure_writable_dir
from edge_sr.metrics import RGB_MATRIX, YCBCR_MATRIX, YCBCR_OFFSET
from edge_sr.tiling import count_tiles, tiled_apply, tiled_bands

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
AlphaMode = Literal["bicubic", "model"]
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_GUARD_MAX = 4.0  # SR outputs live in [0, 1]; a tile beyond this magnitude overflowed or diverged


@dataclass
class FileResult:
    input: str
    output: str | None = None
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    tiles: int = 0
    fp32_fallback_tiles: int = 0


@dataclass
class UpscaleReport:
    """What ``upscale_files`` did; ``exit_code`` is 0 (all written), 1 (some failed) or 2 (none written)."""

    scale: float  # an arbitrary-scale model (LIIF) upscales by any factor; the others by their card's
    checkpoint: str
    device: str
    precision: str
    tile: int
    files: list[FileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if not f.ok]

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return 2 if len(self.failed) == len(self.files) else 1

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "files"}
        d["files"] = [asdict(f) for f in self.files]
        d["written"] = sum(f.ok for f in self.files)
        d["failed"] = len(self.failed)
        d["fp32_fallback_tiles"] = sum(f.fp32_fallback_tiles for f in self.files)
        return d


class TileRunner:
    """Runs a model on float32 CPU tiles: device transfer, autocast and the FP32 fallback guard."""

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: Precision = "fp32") -> None:
        if precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(None, f"unknown precision {precision!r}; choose from fp32, fp16, bf16")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.precision = precision
        self.fallbacks = 0
        self.colors = runner_colors(model)

    def _forward(self, x: Tensor, low: bool) -> Tensor:
        with torch.no_grad():
            if low:
                with torch.autocast(self.device.type, dtype=_DTYPES[self.precision]):
                    return self.model(x).float()
            return self.model(x).float()

    def __call__(self, x: Tensor) -> Tensor:
        """(B, C, h, w) float32 -> (B, C, sh, sw) float32 on the CPU (C: the model's colour channels)."""
        x = x.to(self.device, non_blocking=True)
        low = self.precision != "fp32"
        y = self._forward(x, low)
        if low:
            bad = ~torch.isfinite(y).flatten(1).all(1) | (y.abs().flatten(1).amax(1) > _GUARD_MAX)
            if bool(bad.any()):  # recompute only the broken tiles, in FP32
                y[bad] = self._forward(x[bad], False)
                self.fallbacks += int(bad.sum())
        return y.cpu()


def _gray_fn(fn: Any) -> Any:
    """Wrap a 3-channel fn for 1-channel tiles: replicate in, BT.601 luma out."""
    w = torch.tensor(BT601_LUMA).view(1, 3, 1, 1)

    def run(t: Tensor) -> Tensor:
        return (fn(t.expand(-1, 3, -1, -1)) * w).sum(1, keepdim=True)

    return run


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(n_in: int, scale: int) -> Tensor:
    """(n_in·scale, n_in) float64: MATLAB ``imresize(..., scale, 'bicubic')`` along one axis as a matrix."""
    from edge_sr.data.imresize import contributions

    w, idx = contributions(n_in, n_in * scale, float(scale))
    m = np.zeros((n_in * scale, n_in))
    np.add.at(m, (np.arange(n_in * scale)[:, None], idx), w)  # mirrored taps fold onto the border pixels
    return torch.from_numpy(m)


def matlab_bicubic(t: Tensor, scale: int) -> Tensor:
    """(B, C, h, w) float -> (B, C, h·scale, w·scale) float64, as MATLAB ``imresize`` on float input
    (``edge_sr.data.imresize``: no antialiasing when upscaling, mirrored borders, no rounding)."""
    rows = _bicubic_matrix(t.shape[-2], scale).to(t.device)
    cols = _bicubic_matrix(t.shape[-1], scale).to(t.device)
    return rows @ t.double() @ cols.T


def _ycbcr_fn(fn: Any, scale: int) -> Any:
    """Wrap a 1-colour (Y) fn for RGB tiles: Y through ``fn``, Cb / Cr by MATLAB bicubic, RGB out."""
    to_ycc = torch.from_numpy(YCBCR_MATRIX)
    to_rgb = torch.from_numpy(RGB_MATRIX)
    offset = torch.from_numpy(YCBCR_OFFSET / 255.0).view(1, 3, 1, 1)

    def run(t: Tensor) -> Tensor:
        ycc = torch.einsum("ij,bjhw->bihw", to_ycc, t.double()) + offset
        y = fn(ycc[:, :1].float()).double().cpu()
        out = torch.cat([y, matlab_bicubic(ycc[:, 1:], scale)], 1) - offset
        return torch.einsum("ij,bjhw->bihw", to_rgb, out).float()

    return run


def _color_fns(runner: Any, scale: int, colors: int, alpha_mode: AlphaMode) -> tuple[Any, Any, Any]:
    """(fn for RGB tiles, fn for gray tiles, fn for alpha tiles) of a ``colors``-channel runner."""
    if colors == 1:
        rgb_fn, gray_fn = _ycbcr_fn(runner, scale), runner  # gray goes straight in
    else:
        rgb_fn, gray_fn = runner, _gray_fn(runner)
    return rgb_fn, gray_fn, gray_fn if alpha_mode == "model" else _bicubic_fn(scale)


def runner_colors(runner: Any) -> int:
    """The colour channels a runner (a model, or a :class:`TileRunner` over one) takes: its card's, else 3."""
    from edge_sr.models import card_of, has_card

    if isinstance(getattr(runner, "colors", None), int):
        return int(runner.colors)
    for obj in (runner, getattr(runner, "model", None)):
        if has_card(obj):
            return int(card_of(obj).colors)
    return 3


def _bicubic_fn(scale: int) -> Any:
    def run(t: Tensor) -> Tensor:
        return F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)

    return run


def upscale_array(
    rgb: np.ndarray,
    runner: Any,
    *,
    scale: int,
    alpha: np.ndarray | None = None,
    gray: bool = False,
    tile: int = 256,
    tile_overlap: int = 16,
    tile_batch: int = 1,
    alpha_mode: AlphaMode = "bicubic",
    bit_depth: int = 8,
    progress: Any = None,
    colors: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale one image held in memory.

    Args:
        rgb: (H, W, 3) float in [0, 1].
        runner: maps (B, C, h, w) float32 -> (B, C, h·scale, w·scale) (a model or a :class:`TileRunner`),
            C = ``colors``.
        scale: the runner's factor.
        alpha: (H, W) float in [0, 1], upscaled separately (``alpha_mode``: bicubic, or the model on the
            alpha as a gray image).
        gray: return (sH, sW) gray values instead of RGB.
        bit_depth: 8 -> uint8 results, 16 -> uint16 (memory: the output is never held as float32).
        progress: ``progress(done, total)`` per tile batch.
        colors: 3 (RGB model) or 1 (Y-channel model: Y through the runner, Cb / Cr by MATLAB bicubic);
            default the runner's model card, else 3.

    Returns:
        (sH, sW, 3) or (sH, sW) array and the (sH, sW) alpha or None, uint8 / uint16.
    """
    out_dtype = torch.uint16 if bit_depth == 16 else torch.uint8
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, H, W) view, no copy
    rgb_fn, gray_fn, alpha_fn = _color_fns(runner, scale, colors or runner_colors(runner), alpha_mode)
    fn = rgb_fn
    if gray:
        x, fn = x[:, :1], gray_fn
    kw = dict(
        scale=scale,
        tile=tile,
        overlap=tile_overlap,
        batch=tile_batch,
        out_dtype=out_dtype,
        channels_last=True,
    )
    y = tiled_apply(fn, x, progress=progress, **kw)  # type: ignore[arg-type]
    out = y[0].permute(1, 2, 0).numpy()
    out = out[..., 0] if gray else out
    a_out = None
    if alpha is not None:
        a = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
        a_out = tiled_apply(alpha_fn, a, **kw)[0, 0].numpy()  # type: ignore[arg-type]
    return out, a_out


def is_arbitrary_scale(net: object) -> bool:
    """Whether ``net`` upscales by any factor (``model(x, scale=2.5)``: LIIF / UltraSR)."""
    return bool(getattr(net, "arbitrary_scale", False))


def checkpoint_is_arbitrary_scale(path: str | os.PathLike[str], model: str | None = None) -> bool:
    """Whether the checkpoint at ``path`` (detected, or of the zoo entry ``model``) is an arbitrary-scale model;
    False when it cannot be read (loading it later says why)."""
    from edge_sr.models import create_model
    from edge_sr.models.checkpoint import inspect_checkpoint

    try:
        det = inspect_checkpoint(path, model=model)
        with torch.device("meta"):
            return is_arbitrary_scale(create_model(det.arch, **det.args))
    except (EdgeSRError, ValueError, TypeError):  # arguments the model refuses: the loader says which, later
        return False


def _not_arbitrary(net: nn.Module, scale: float, source: object) -> CheckpointError:
    from edge_sr.models import card_of

    card = card_of(net)
    return CheckpointError(
        source if isinstance(source, str | os.PathLike) else None,
        f"{card.arch} upscales x{card.scale} only and cannot upscale x{scale:g}; a non-integer factor needs "
        "an arbitrary-scale model (liif_edsr, ultrasr_edsr, liif_edge)",
    )


def load_model(
    checkpoint: str | os.PathLike[str] | nn.Module | None,
    *,
    model: str | None = None,
    scale: float | None = None,
) -> tuple[nn.Module, Path | str]:
    """The model to upscale with and what to call it: a loaded model (with its card), a checkpoint
    (edge-sr, or foreign with ``model``), else the bundled one. ``scale`` may be any factor for an
    arbitrary-scale model (:func:`is_arbitrary_scale`); another model refuses a factor it does not have."""
    from edge_sr.models import card_of, load_checkpoint
    from edge_sr.models.checkpoint import read_metadata
    from edge_sr.weights import bundled_checkpoint

    whole = scale is None or float(scale).is_integer()
    if isinstance(checkpoint, nn.Module):
        card = card_of(checkpoint)  # ConfigError for a module without a model card
        if scale is not None and scale != card.scale and is_arbitrary_scale(checkpoint):
            return checkpoint, card.source or card.arch
        if not whole:
            raise _not_arbitrary(checkpoint, float(scale), card.source)  # type: ignore[arg-type]
        if scale is not None and scale != card.scale:
            raise CheckpointError(
                card.source, f"is a x{card.scale} model and cannot upscale x{scale}; pass a x{scale} model"
            )
        return checkpoint, card.source or card.arch
    if checkpoint is None:
        if not whole:
            raise ConfigError(None, f"x{scale:g} needs an arbitrary-scale model (LIIF); pass --checkpoint P")
        path = bundled_checkpoint(int(scale or 4))
        if path is None:
            raise CheckpointError(None, f"no bundled x{scale or 4} model in this build; pass --checkpoint P")
    else:
        path = Path(checkpoint)
    if model is not None:  # foreign weights: the architecture and scale come from the command line
        net = load_checkpoint(path, model=model, scale=int(scale) if whole and scale else 4)
        if not whole and not is_arbitrary_scale(net):
            raise _not_arbitrary(net, float(scale), path)  # type: ignore[arg-type]
        return net, path
    have = read_metadata(path)["scale"]
    if scale is not None and scale != have:
        net = load_checkpoint(path)
        if is_arbitrary_scale(net):
            return net, path
        if not whole:
            raise _not_arbitrary(net, float(scale), path)
        raise CheckpointError(
            path, f"is a x{have} model and cannot upscale x{scale}; pass a x{scale} checkpoint"
        )
    return load_checkpoint(path), path


def check_tile(net: nn.Module, tile: int, overlap: int) -> None:
    """A tile must exceed twice the overlap and be at least the model's ``min_tile_size`` (transformer window)."""
    if tile <= 2 * overlap:
        raise ConfigError(None, f"--tile {tile} must be larger than twice --tile-overlap ({overlap})")
    min_tile = getattr(net, "min_tile_size", None)
    if min_tile is not None and tile < int(min_tile):
        raise ConfigError(
            None, f"--tile {tile} is smaller than this model's window ({min_tile}); use --tile {min_tile}+"
        )


def _output_path(src: Path, out: Path, single_file_out: bool) -> Path:
    return out if single_file_out else out / src.name


def _refuse_overwriting_inputs(files: list[Path], outputs: list[Path]) -> None:
    """An ``OutputError`` when an output is a folder, device or FIFO, or is one of the inputs.

    Files are compared by identity (device and inode), so a symlink, ``./``, a hard link or another case
    of the name on a case-insensitive file system all count as the same file.
    """
    ids: dict[tuple[int, int], Path] = {}
    for f in files:
        with contextlib.suppress(OSError):
            st = f.stat()
            ids.setdefault((st.st_dev, st.st_ino), f)
    for dst in outputs:
        check_output(dst)
        try:
            st = dst.stat()
        except OSError:
            continue  # not there yet: it cannot be an input
        src = ids.get((st.st_dev, st.st_ino))
        if src is not None:
            what = "is the input itself" if len(files) == 1 else f"is the input {src}"
            raise OutputError(
                dst, f"{what}; upscaling would overwrite it; choose another -o (nothing written)"
            )


def _bar(enabled: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kw)


def _without_earlier_outputs(files: list[Path], scale: float) -> list[Path]:
    """Drop ``name_x<scale>.ext`` when ``name.ext`` is an input too: the result of an earlier run beside it,
    which a re-run over the same folder would otherwise upscale again."""
    tag = f"_x{scale:g}"
    given = {f.resolve() for f in files}
    keep = []
    for f in files:
        src = f.with_name(f.stem.removesuffix(tag) + f.suffix)
        if f.stem.endswith(tag) and src.resolve() in given:
            log.info("skipped %s: the x%g output of %s from an earlier run", f, scale, src.name)
            continue
        keep.append(f)
    return keep


def upscale_files(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    checkpoint: str | os.PathLike[str] | nn.Module | None = None,
    model: str | None = None,
    scale: float | None = None,
    tile: int = 256,
    tile_overlap: int = 16,
    device: str = "cpu",
    precision: Precision = "fp32",
    tile_batch: int = 1,
    alpha_mode: AlphaMode = "bicubic",
    progress: bool = True,
) -> UpscaleReport:
    """Upscale files and folders into ``out`` (a file when one input and ``out`` has an image extension).

    ``checkpoint`` is a checkpoint path, an already loaded model carrying its card (``load_checkpoint``
    with the caller's overrides), or None for the bundled model. A Y-channel model (``card.colors == 1``)
    upscales Y and takes Cb / Cr from MATLAB bicubic (see the module docstring).
    Without ``out`` each result is written beside its input as ``<name>_x<scale><ext>``.
    Bad inputs are reported one per line (``UpscaleReport.files[i].error``) and skipped; see ``exit_code``.
    An output that cannot be written (a full or read-only disk) stops the batch with an ``OutputError``; the
    files written before it stay. An output that is an input, a folder, a device or a FIFO is refused first.
    An output folder that cannot be written, a checkpoint without the requested scale, or a tile smaller
    than the model allows raise an ``EdgeSRError`` before any file is processed.
    """
    files = list_images(inputs)
    if not files:
        raise InputError(
            ", ".join(map(str, inputs)) or None, "no images found (png, jpg, jpeg, webp, tif, tiff)"
        )
    beside = out is None
    out = Path(out) if out is not None else Path(".")
    single = not beside and out.suffix.lower() in FORMATS
    if single and len(files) > 1:
        raise ConfigError(out, f"names one file but there are {len(files)} inputs; give an output folder")
    folders = sorted({f.parent for f in files}) if beside else [out.parent if single else out]
    for folder in folders:
        ensure_writable_dir(folder, "choose another -o")
    from edge_sr.models import card_of

    net, ckpt = load_model(checkpoint, model=model, scale=scale)
    s: float = card_of(net).scale
    any_scale = is_arbitrary_scale(net)  # its own exact LR tiling, at any factor
    if any_scale and scale is not None:
        s = scale
    if beside:
        files = _without_earlier_outputs(files, s)
    dsts = [
        src.with_name(f"{src.stem}_x{s:g}{src.suffix}") if beside else _output_path(src, out, single)
        for src in files
    ]
    _refuse_overwriting_inputs(files, dsts)
    check_tile(net, tile, tile_overlap)
    runner = TileRunner(net, device=device, precision=precision)
    report = UpscaleReport(scale=s, checkpoint=str(ckpt), device=device, precision=precision, tile=tile)
    show = progress and sys.stderr.isatty()
    targets: dict[Path, str] = {}
    with _bar(show, total=len(files), unit="file", position=0) as fbar:
        for src, dst in zip(files, dsts):
            res = FileResult(input=str(src))
            report.files.append(res)
            t0 = time.perf_counter()
            try:
                if dst.resolve() in targets:
                    raise InputError(
                        src, f"has the same name as {targets[dst.resolve()]}; its output would overwrite it"
                    )
                targets[dst.resolve()] = str(src)
                if any_scale:
                    res.tiles = _upscale_any_scale(src, dst, runner, s, tile, tile_overlap)
                    res.ok, res.output = True, str(dst)
                    res.seconds = round(time.perf_counter() - t0, 3)
                    fbar.update(1)
                    continue
                tile = _upscale_one(
                    src, dst, runner, report, res, tile, tile_overlap, tile_batch, alpha_mode, show
                )
                res.ok, res.output = True, str(dst)
            except OutputError:  # the disk (full, read-only) fails every file after this one too: stop
                raise
            except EdgeSRError as e:
                res.error = str(e)
                log.info("skipped: %s", e)
            res.seconds = round(time.perf_counter() - t0, 3)
            fbar.update(1)
    report.tile = tile
    return report


def _upscale_any_scale(
    src: Path, dst: Path, runner: TileRunner, scale: float, tile: int, overlap: int
) -> int:
    """Upscale one file by any factor with an arbitrary-scale model (LIIF): LR tiles with the model's own
    overlap (at least its reach, so tiles meet exactly), output size ``round(h·scale)`` x ``round(w·scale)``;
    alpha by bicubic, gray kept gray, FP16 / BF16 by autocast (no FP32 guard). Returns the number of tiles."""
    from edge_sr.data.io import write_image

    img = read_image(src)
    h, w = img.size
    net: Any = runner.model
    ov = max(overlap, int(net.radius))
    tile = max(tile, 2 * ov + 1)
    x = torch.from_numpy(np.ascontiguousarray(img.rgb)).permute(2, 0, 1)[None].to(runner.device)
    low = runner.precision != "fp32"
    with (
        torch.no_grad(),
        torch.autocast(runner.device.type, dtype=_DTYPES.get(runner.precision), enabled=low),
    ):
        y = net.upscale(x, scale=scale, tile=tile, overlap=ov).float()
    y = y.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    alpha = None
    if img.alpha is not None:
        a = torch.from_numpy(np.ascontiguousarray(img.alpha))[None, None]
        alpha = (
            F.interpolate(a, size=y.shape[:2], mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()
        )
    write_image(dst, y, alpha, bit_depth=img.bit_depth, gray=img.was_gray)
    return count_tiles(h, w, tile, ov)


def _upscale_one(src, dst, runner, report, res, tile, overlap, batch, alpha_mode, show) -> int:  # noqa: ANN001
    """Read, upscale, write one file; returns the tile size that worked (smaller after a CUDA OOM)."""
    img = read_image(src, native=True)  # uint8 / uint16 samples: a quarter / half of float32's memory
    h, w = img.size
    fallbacks0 = runner.fallbacks
    while True:
        n = count_tiles(h, w, tile, overlap)
        with _bar(show, total=n, unit="tile", position=1, leave=False, desc=src.name) as tbar:
            last = [0]

            def step(done: int, total: int, bar: Any = tbar, last: list[int] = last) -> None:
                bar.update(done - last[0])
                last[0] = done

            try:
                _stream(img, dst, runner, report.scale, tile, overlap, batch, alpha_mode, step)
                break
            except torch.OutOfMemoryError:
                if tile // 2 <= 2 * overlap or tile // 2 < int(
                    getattr(runner.model, "min_tile_size", 0) or 0
                ):
                    msg = f"out of device memory even with --tile {tile}; use --device cpu"
                    raise RuntimeBackendError(src, msg) from None
                torch.cuda.empty_cache()
                tile //= 2
                note = f"{src}: out of device memory; retrying with --tile {tile}"
                log.warning(note)
                report.notes.append(note)
    res.tiles = n
    res.fp32_fallback_tiles = runner.fallbacks - fallbacks0
    return tile


def _stream(img, dst, runner, scale, tile, overlap, batch, alpha_mode, progress) -> None:  # noqa: ANN001
    """Upscale a natively read image into ``dst`` band by band: colour (or gray) and alpha in one pass.

    The tile function takes (B, C [+ 1 alpha], h, w) and returns the upscaled colour and alpha together, so
    every band of the output is complete when it reaches the encoder.
    """
    c = 1 if img.was_gray else 3
    with warnings.catch_warnings():  # Pillow's arrays are read-only; the tiles only read them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(img.rgb[..., :c]).permute(2, 0, 1)[None]  # (1, c, H, W) view, no copy
        if img.alpha is not None:  # one copy of the stored samples: colour and alpha side by side
            x = torch.cat([x, torch.from_numpy(img.alpha)[None, None]], 1)
    rgb_fn, gray_fn, afn = _color_fns(runner, scale, runner_colors(runner), alpha_mode)
    fn = gray_fn if img.was_gray else rgb_fn

    def both(t: Tensor) -> Tensor:
        if img.alpha is None:
            return fn(t)
        return torch.cat([fn(t[:, :c]), afn(t[:, c:])], 1)

    h, w = img.size
    out_dtype = torch.uint16 if img.bit_depth == 16 else torch.uint8
    with image_writer(
        dst, height=h * scale, width=w * scale, channels=x.shape[1], bit_depth=img.bit_depth
    ) as put:
        tiled_bands(
            both, x, lambda _row0, band: put(band[0].permute(1, 2, 0).numpy()), scale=scale, tile=tile,
            overlap=overlap, batch=batch, progress=progress, out_dtype=out_dtype, channels_last=True,
        )  # fmt: skip
