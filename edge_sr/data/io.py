"""Image files in and out: PNG, JPEG, WebP and TIFF; 8 and 16 bits; grayscale; alpha; EXIF orientation.

``read_image`` returns an :class:`Image` (float32 RGB in [0, 1] plus what is needed to write the result back
the same way); ``write_image`` writes atomically, in the format named by the file extension. Any file that
cannot be read is an ``InputError`` naming the file and the problem in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.errors import InputError, OutputError
from edge_sr.io_utils import atomic_path, disk_error

log = logging.getLogger(__name__)

BT601_LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""BT.601 full-range luma weights of R, G, B: gray = 0.299 R + 0.587 G + 0.114 B (CoreML's own RGB -> gray too)."""

# A bundled 256x256 photo for demos and smoke tests (skimage.data.astronaut, NASA, public domain, halved
# with the MATLAB-exact imresize).
DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "demo.png"

FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
# EXIF orientation (tag 0x0112) -> numpy transform of an (H, W, ...) array, as ImageOps.exif_transpose does.
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirror left-right
    3: lambda a: a[::-1, ::-1],  # rotate 180
    4: lambda a: a[::-1],  # mirror top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transpose
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise
}


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1]; a grayscale file has its channel replicated (see
            ``read_image(native=True)`` for the stored samples).
        alpha: (H, W) float32 in [0, 1], or None when the file has no alpha channel.
        bit_depth: 8 or 16, the precision of the file's samples.
        was_gray: the file holds gray values (L, LA, 16-bit gray).
        mode: the Pillow mode the file opened as (``RGB``, ``I;16``, ...).
        format: the file format (``PNG``, ``JPEG``, ``WEBP``, ``TIFF``).
        path: where it was read from.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    was_gray: bool
    mode: str
    format: str
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def image_format(path: str | os.PathLike[str]) -> str:
    """The format named by ``path``'s extension; an unknown extension is an ``InputError``."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted({e.lstrip(".") for e in FORMATS}))
        raise InputError(p, f"unknown image extension {p.suffix or '(none)'!r}; use one of {known}")
    return fmt


def _check_readable(p: Path) -> None:
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, not an image file")
    image_format(p)
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty (0 bytes)")


def read_image(path: str | os.PathLike[str], *, native: bool = False) -> Image:
    """Read an image file, apply its EXIF orientation, and return it as float32 RGB in [0, 1] (+ alpha).

    With ``native`` the samples stay as stored (uint8 / uint16, a quarter or half of float32's memory) and a
    gray file keeps one channel: ``rgb`` is (H, W, 3) or (H, W, 1), ``alpha`` (H, W), both read-only.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    from edge_sr.data import codecs16

    p = Path(path)
    _check_readable(p)
    try:
        with PILImage.open(p) as im:
            fmt, mode = str(im.format), im.mode
            wide = codecs16.is_wide_rgb(im)  # before getexif(), which may load the PNG
            gray_alpha = codecs16.is_gray_alpha(im)
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if not wide:
                im.load()
                arr, alpha, bits, gray = _decode(im)
        if wide:  # 16-bit colour: Pillow would keep only the high byte; decode both bytes.
            a16 = codecs16.read_wide(p)
            arr, bits, gray = a16[..., : 1 if gray_alpha else 3], 16, gray_alpha
            alpha = a16[..., -1] if a16.shape[-1] in (2, 4) else None
    except UnidentifiedImageError:
        raise InputError(p, "not an image, or a format that cannot be read") from None
    except PILImage.DecompressionBombError as e:
        raise InputError(p, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(p, f"truncated or corrupt image file ({_first_line(e)})") from None
    if native:
        rgb, a = (arr[..., None] if arr.ndim == 2 else arr), alpha
        if orientation in _ORIENT:
            rgb = np.ascontiguousarray(_ORIENT[orientation](rgb))
            a = None if a is None else np.ascontiguousarray(_ORIENT[orientation](a))
        return Image(rgb=rgb, alpha=a, bit_depth=bits, was_gray=gray, mode=mode, format=fmt, path=p)
    scale = 1.0 / (65535.0 if bits == 16 else 255.0)
    rgb = arr.astype(np.float32)
    rgb *= np.float32(scale)  # in place: a 12 MP photo is 144 MB as float32
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    a = None if alpha is None else alpha.astype(np.float32) * np.float32(scale)
    if orientation in _ORIENT:
        rgb = np.ascontiguousarray(_ORIENT[orientation](rgb))
        a = None if a is None else np.ascontiguousarray(_ORIENT[orientation](a))
    return Image(rgb=rgb, alpha=a, bit_depth=bits, was_gray=gray, mode=mode, format=fmt, path=p)


def _decode(im) -> tuple[np.ndarray, np.ndarray | None, int, bool]:  # noqa: ANN001 (PIL image)
    """A loaded PIL image -> (values (H, W[, C]), alpha (H, W) or None, bit depth, was_gray)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), None, 16, True
    if mode in ("I", "F"):  # 32-bit integer / float gray: keep 16 bits of it
        v = np.asarray(im).astype(np.float64)
        v = v * 65535.0 if mode == "F" and v.max() <= 1.0 else v
        return np.clip(np.round(v), 0, 65535).astype(np.uint16), None, 16, True
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in im.info)
    gray = mode in _GRAY_MODES
    target = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    v = np.asarray(im if im.mode == target else im.convert(target))
    if has_alpha:
        return v[..., :-1], v[..., -1], 8, gray
    return v, None, 8, gray


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _quantize(v: np.ndarray, bits: int) -> np.ndarray:
    dtype = np.uint16 if bits == 16 else np.uint8
    if v.dtype == dtype:
        return v
    if v.dtype == np.uint8:  # 8 -> 16 bits: x * 257 maps 255 to 65535 exactly
        return v.astype(np.uint16) * np.uint16(257)
    if v.dtype == np.uint16:
        return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)
    top = 65535.0 if bits == 16 else 255.0
    return np.round(np.clip(v, 0.0, 1.0) * top).astype(dtype)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float -> (H, W) BT.601 luma (``BT601_LUMA``), same dtype family as floats."""
    rgb = np.asarray(rgb, dtype=np.float32)
    r, g, b = BT601_LUMA
    return rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    bit_depth: int = 8,
    gray: bool = False,
    quality: int = 95,
) -> Path:
    """Write an image atomically; the format follows the extension.

    Args:
        path: destination (``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.tif``/``.tiff``).
        rgb: (H, W, 3) float in [0, 1] (or uint8 / uint16 values), or (H, W) / (H, W, 1) gray.
        alpha: (H, W) in the same value convention, or None.
        bit_depth: 8 or 16; 16 is kept for PNG and TIFF, JPEG and WebP store 8.
        gray: store one gray channel (BT.601 luma of an RGB input).
        quality: JPEG / WebP quality.
    """
    p = Path(path)
    fmt = image_format(p)
    if bit_depth not in (8, 16):
        raise OutputError(p, f"bit depth must be 8 or 16, not {bit_depth}")
    if bit_depth == 16 and fmt in ("JPEG", "WEBP"):
        log.info("%s: %s stores 8 bits per sample; writing 8-bit", p, fmt)
        bit_depth = 8
    if alpha is not None and fmt == "JPEG":
        log.warning("%s: JPEG has no alpha channel; the alpha channel is dropped", p)
        alpha = None
    v = np.asarray(rgb)
    if v.ndim == 3 and v.shape[-1] == 1:
        v = v[..., 0]
    if gray and v.ndim == 3:
        v = to_gray(_quantize(v, 16).astype(np.float32) / np.float32(65535.0))
    chans = [_quantize(v, bit_depth)]
    if alpha is not None:
        chans.append(_quantize(np.asarray(alpha), bit_depth))
    if chans[0].ndim == 2:
        chans[0] = chans[0][..., None]
    if len(chans) > 1:
        chans[1] = chans[1][..., None]
    arr = np.concatenate(chans, axis=-1) if len(chans) > 1 else chans[0]
    with atomic_path(p) as tmp:
        try:
            _save(tmp, arr, fmt, bit_depth, quality)
        except OSError as e:
            raise OutputError(p, f"cannot write the image ({disk_error(e) or _first_line(e)})") from None
    return p


@contextlib.contextmanager
def image_writer(
    path: str | os.PathLike[str],
    *,
    height: int,
    width: int,
    channels: int,
    bit_depth: int = 8,
    quality: int = 95,
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an image band by band, atomically: yields ``put(rows)``, to be called top to bottom.

    Each block is (rows, ``width``, ``channels``) uint8 (``bit_depth`` 8) or uint16 (16) samples, channels as
    in :func:`write_image` (gray, gray + alpha, RGB, RGBA). PNG streams each block into the encoder, so
    memory stays at one block whatever the height; JPEG, WebP and TIFF go through Pillow or the TIFF
    writer, which need the whole image: their blocks gather in one buffer of the output's size.
    """
    p = Path(path)
    fmt = image_format(p)
    if bit_depth not in (8, 16):
        raise OutputError(p, f"bit depth must be 8 or 16, not {bit_depth}")
    out_bits = 8 if fmt in ("JPEG", "WEBP") else bit_depth
    keep = channels - 1 if fmt == "JPEG" and channels in (2, 4) else channels  # JPEG has no alpha
    if keep != channels:
        log.warning("%s: JPEG has no alpha channel; the alpha channel is dropped", p)
    done = [0]

    def convert(block: np.ndarray) -> np.ndarray:
        if block.shape[1:] != (width, channels) or done[0] + block.shape[0] > height:
            raise ValueError(f"{p}: rows of shape {block.shape} after {done[0]} of {height} rows")
        done[0] += block.shape[0]
        return _quantize(block[..., :keep], out_bits)

    from edge_sr.data import codecs16

    with atomic_path(p) as tmp:
        try:
            if fmt == "PNG":
                with open(tmp, "wb") as f:
                    depth = 16 if out_bits == 16 else 8
                    png = codecs16.PngWriter(f, height=height, width=width, channels=keep, depth=depth)
                    yield lambda block: png.write(convert(block))
                    png.close()
            else:
                buf = np.empty((height, width, keep), np.uint16 if out_bits == 16 else np.uint8)

                def put(block: np.ndarray) -> None:
                    r0 = done[0]
                    buf[r0 : r0 + block.shape[0]] = convert(block)

                yield put
                if done[0] != height:
                    raise ValueError(f"{p}: closed after {done[0]} of {height} rows")
                _save(tmp, buf, fmt, out_bits, quality)
        except OSError as e:
            raise OutputError(p, f"cannot write the image ({disk_error(e) or _first_line(e)})") from None


def _save(tmp: Path, arr: np.ndarray, fmt: str, bits: int, quality: int) -> None:
    """(H, W, C) uint8 / uint16, C in 1..4 -> file."""
    from PIL import Image as PILImage

    from edge_sr.data import codecs16

    c = arr.shape[-1]
    if fmt == "PNG":
        codecs16.write_png(tmp, arr)
        return
    if bits == 16 and c == 2 and fmt == "TIFF":  # 16-bit gray + alpha TIFF is rarely readable: store RGBA
        arr, c = np.concatenate([np.repeat(arr[..., :1], 3, axis=-1), arr[..., 1:]], axis=-1), 4
    if bits == 16 and c > 1:  # Pillow has no 16-bit colour or gray+alpha mode
        codecs16.write_tiff16(tmp, arr)
        return
    if bits == 16:
        im = PILImage.fromarray(np.ascontiguousarray(arr[..., 0]).astype(np.uint16))
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
        if fmt == "WEBP" and mode == "LA":
            arr, mode = np.concatenate([np.repeat(arr[..., :1], 3, axis=-1), arr[..., 1:]], axis=-1), "RGBA"
        im = PILImage.fromarray(np.ascontiguousarray(arr[..., 0] if c == 1 else arr))
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "TIFF":
        kwargs = {"compression": "tiff_deflate"}
    im.save(tmp, format=fmt, **kwargs)


def list_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into a list of image files.

    Named files are kept as given (so a bad one is reported when read); a folder contributes its files
    with a known image extension, sorted by name, hidden files skipped. Duplicates are dropped.
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FORMATS]
            out.extend(sorted((f for f in found if not f.name.startswith(".")), key=lambda f: f.name))
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
