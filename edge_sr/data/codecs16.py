"""16-bit colour PNG / TIFF (Pillow has no image mode for them), and a streaming PNG writer.

Pillow holds 16-bit grayscale (``I;16``) but no 16-bit RGB / RGBA / LA mode: it decodes such files to 8 bits
by keeping the high byte of each sample. Reading keeps Pillow's decoders (PNG unfiltering, TIFF
decompression) and decodes the file twice: once with its own raw mode (the high bytes) and once with the
byte order swapped (the low bytes), then joins them. Writing uses two small encoders, since the formats are
simple: PNG (``IHDR`` + zlib-compressed, 'Up'-filtered rows + ``IEND``; :class:`PngWriter` takes the rows
band by band) and baseline uncompressed TIFF.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_SWAP = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def is_wide_rgb(im: Any) -> bool:
    """True when ``im`` (an opened, not yet loaded PIL image) is 16-bit colour that Pillow would truncate."""
    if im.mode not in ("RGB", "RGBA") or len(getattr(im, "tile", []) or []) != 1:
        return False
    return ";16" in _rawmode(im.tile[0])


def is_gray_alpha(im: Any) -> bool:
    """True for a 16-bit gray + alpha file that Pillow presents as RGBA."""
    tiles = getattr(im, "tile", []) or []
    return len(tiles) == 1 and _rawmode(tiles[0]).startswith("LA;")


def _rawmode(tile: Any) -> str:
    args = tile.args if hasattr(tile, "args") else tile[3]
    return args[0] if isinstance(args, tuple) else str(args)


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = tile.args
    args = (rawmode, *args[1:]) if isinstance(args, tuple) else rawmode
    return tile._replace(args=args)


def read_wide(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB / RGBA / gray+alpha file to a (H, W, C) uint16 array (C = 3, 4 or 2)."""
    from PIL import Image

    with Image.open(path) as im:
        raw = _rawmode(im.tile[0])
        if raw.startswith("LA;16"):  # 4 bytes per pixel: read them unchanged as 8-bit RGBA, then pair them
            im.tile = [_with_rawmode(im.tile[0], "RGBA")]
            im.load()
            b = np.asarray(im).astype(np.uint16)
            hi, lo = (0, 1) if raw.endswith("B") else (1, 0)
            return np.stack([(b[..., hi] << 8) | b[..., lo], (b[..., 2 + hi] << 8) | b[..., 2 + lo]], axis=-1)

    with Image.open(path) as im:  # pass 1: Pillow's own raw mode keeps the high byte of each sample
        im.load()
        high = np.asarray(im)
    with Image.open(path) as im:  # pass 2: the same data read with the opposite byte order: the low byte
        tile = im.tile[0]
        raw = _rawmode(tile)
        head, order = raw[:-1], raw[-1]
        im.tile = [_with_rawmode(tile, head + _SWAP[order])]
        im.load()
        low = np.asarray(im)
    return (high.astype(np.uint16) << 8) | low.astype(np.uint16)


# zlib level of every PNG written: 1, as OpenCV's imwrite (so the outputs of BasicSR / Real-ESRGAN scripts).
# On 4x-upscaled photos (skimage astronaut, coffee) it encodes 5x faster than zlib's default 6 (93 against
# 18 MB/s of pixels) for files 25 % larger; a 16000x12000 output (576 MB of pixels) takes 6 s instead of 32.
PNG_LEVEL = 1


def write_png(path: Path, arr: np.ndarray, *, level: int = PNG_LEVEL, rows_per_chunk: int = 256) -> None:
    """Write a (H, W, C) uint8 / uint16 array, C in 1..4 (gray, gray+alpha, RGB, RGBA), as a PNG.

    Streams: rows are filtered and compressed a block at a time, so memory stays near the array itself
    (Pillow would first copy it into an image of 4 bytes per RGB pixel).
    """
    h, w, c = arr.shape
    with open(path, "wb") as f:
        png = PngWriter(
            f, height=h, width=w, channels=c, depth=16 if arr.dtype == np.uint16 else 8, level=level
        )
        png.rows_per_chunk = rows_per_chunk
        png.write(arr)
        png.close()


class PngWriter:
    """A PNG encoder fed rows top to bottom: ``write`` any number of (rows, W, C) blocks, then ``close``.

    Rows are 'Up'-filtered and compressed ``rows_per_chunk`` at a time, so an image of any height is written
    with the memory of one block: the way a tiled upscale streams its output band by band.
    """

    rows_per_chunk = 256

    def __init__(
        self, f: BinaryIO, *, height: int, width: int, channels: int, depth: int, level: int = PNG_LEVEL
    ) -> None:
        self.f, self.height, self.depth = f, height, depth
        self.row_bytes = width * channels * depth // 8
        self.shape = (width, channels)
        self.rows = 0
        self.comp = zlib.compressobj(level)
        self.prev = np.zeros(self.row_bytes, np.uint8)
        color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)))

    def write(self, block: np.ndarray) -> None:
        """Append rows: (rows, W, C) uint8 (8-bit) or uint16 (16-bit) samples."""
        if block.shape[1:] != self.shape or self.rows + block.shape[0] > self.height:
            raise ValueError(f"PNG rows of shape {block.shape[1:]} after {self.rows} of {self.height} rows")
        for r0 in range(0, block.shape[0], self.rows_per_chunk):
            part = np.ascontiguousarray(
                block[r0 : r0 + self.rows_per_chunk], dtype=">u2" if self.depth == 16 else np.uint8
            )
            raw = part.view(np.uint8).reshape(-1, self.row_bytes)
            # 'Up' filter (type 2): each byte minus the byte above, modulo 256; vectorizes, compresses photos well.
            filt = np.empty((raw.shape[0], self.row_bytes + 1), np.uint8)
            filt[:, 0] = 2
            filt[:, 1:] = raw
            filt[0, 1:] -= self.prev
            filt[1:, 1:] -= raw[:-1]
            self.prev = raw[-1].copy()
            data = self.comp.compress(filt.tobytes())
            if data:
                self.f.write(_chunk(b"IDAT", data))
        self.rows += block.shape[0]

    def close(self) -> None:
        """Finish the stream (every row must have been written)."""
        if self.rows != self.height:
            raise ValueError(f"PNG closed after {self.rows} of {self.height} rows")
        self.f.write(_chunk(b"IDAT", self.comp.flush()))
        self.f.write(_chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_tiff16(path: Path, arr: np.ndarray) -> None:
    """Write a (H, W, C) uint16 array, C in 1..4, as a baseline little-endian uncompressed TIFF."""
    h, w, c = arr.shape
    data = np.ascontiguousarray(arr, dtype="<u2").tobytes()
    data_off = 8
    extra_off = data_off + len(data) + (len(data) & 1)  # BitsPerSample array (when C > 2), word-aligned
    bits = struct.pack(f"<{c}H", *([16] * c))
    ifd_off = extra_off + (len(bits) if c > 2 else 0)
    ifd_off += ifd_off & 1
    short, long_ = 3, 4
    entries: list[tuple[int, int, int, int]] = [
        (256, long_, 1, w),
        (257, long_, 1, h),
        (258, short, c, extra_off if c > 2 else (16 if c == 1 else 16 | (16 << 16))),
        (259, short, 1, 1),  # no compression
        (262, short, 1, 2 if c >= 3 else 1),  # RGB, or min-is-black gray
        (273, long_, 1, data_off),
        (277, short, 1, c),
        (278, long_, 1, h),
        (279, long_, 1, len(data)),
        (284, short, 1, 1),  # chunky (interleaved) samples
    ]
    if c in (2, 4):
        entries.append((338, short, 1, 2))  # ExtraSamples: unassociated alpha
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", tag, typ, cnt, val) for tag, typ, cnt, val in entries)
    ifd += struct.pack("<I", 0)
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", ifd_off))
        f.write(data)
        f.write(b"\x00" * (extra_off - data_off - len(data)))
        if c > 2:
            f.write(bits)
        f.write(b"\x00" * (ifd_off - f.tell()))
        f.write(ifd)
