"""Image I/O: formats, bit depths, gray, alpha, EXIF orientation, bad files, folder listing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_sr.data.io import DEMO_IMAGE, Image, list_images, read_image, write_image
from edge_sr.errors import InputError, OutputError

RNG = np.random.default_rng(0)


def _values(c: int, bits: int, shape: tuple[int, int] = (13, 17)) -> np.ndarray:
    top = 65535 if bits == 16 else 255
    return RNG.integers(0, top + 1, (*shape, c)).astype(np.uint16 if bits == 16 else np.uint8)


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])  # gray, gray+alpha, RGB, RGBA
def test_lossless_round_trip(tmp_path: Path, ext: str, bits: int, channels: int) -> None:
    a = _values(channels, bits)
    gray = channels <= 2
    color = a[..., :1] if gray else a[..., :3]
    alpha = a[..., -1] if channels in (2, 4) else None
    f = write_image(tmp_path / f"x{ext}", color, alpha, bit_depth=bits, gray=gray)
    im = read_image(f)
    top = 65535 if bits == 16 else 255
    assert isinstance(im, Image) and im.bit_depth == bits and im.size == (13, 17)
    assert im.rgb.dtype == np.float32 and im.rgb.shape == (13, 17, 3)
    expect = np.repeat(color, 3, axis=-1) if gray else color
    assert np.array_equal(np.round(im.rgb * top).astype(np.int64), expect.astype(np.int64))
    if alpha is None:
        assert im.alpha is None
    else:
        assert im.alpha is not None and np.array_equal(np.round(im.alpha * top).astype(np.int64), alpha)
    if gray and not (bits == 16 and channels == 2 and ext != ".png"):  # 16-bit gray+alpha TIFF is stored RGBA
        assert im.was_gray


@pytest.mark.parametrize("ext,tol", [(".jpg", 12 / 255), (".jpeg", 12 / 255), (".webp", 12 / 255)])
def test_lossy_formats(tmp_path: Path, ext: str, tol: float) -> None:
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = np.stack([xx / 40, yy / 32, (xx + yy) / 72], -1)
    im = read_image(write_image(tmp_path / f"x{ext}", smooth, bit_depth=16))  # 16 bits are stored as 8
    assert im.bit_depth == 8 and im.rgb.shape == (32, 40, 3)
    assert np.abs(im.rgb - smooth).max() < tol


def test_webp_keeps_alpha_and_jpeg_drops_it(tmp_path: Path) -> None:
    rgb, alpha = np.full((16, 16, 3), 0.5), np.linspace(0, 1, 256).reshape(16, 16)
    assert read_image(write_image(tmp_path / "a.webp", rgb, alpha, quality=100)).alpha is not None
    assert read_image(write_image(tmp_path / "a.jpg", rgb, alpha)).alpha is None


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_exif_orientation_applied_like_pillow(tmp_path: Path, orientation: int, ext: str) -> None:
    from PIL import Image as PILImage
    from PIL import ImageOps

    arr = _values(3, 8, (12, 20))
    pil = PILImage.fromarray(arr)
    exif = pil.getexif()
    exif[0x0112] = orientation
    f = tmp_path / f"o{ext}"
    pil.save(f, exif=exif.tobytes())
    with PILImage.open(f) as ref_im:
        ref = np.asarray(ImageOps.exif_transpose(ref_im).convert("RGB"))
    got = read_image(f)
    assert got.size == ref.shape[:2]
    assert got.size == ((20, 12) if orientation >= 5 else (12, 20))
    assert np.array_equal(np.round(got.rgb * 255).astype(np.uint8), ref)


def test_bad_inputs_are_one_line_input_errors(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", RNG.random((20, 20, 3)))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:-40])
    (tmp_path / "text.png").write_text("not an image at all\n")
    (tmp_path / "x.bmp").write_bytes(good.read_bytes())
    cases = {
        "missing.png": "no such file",
        "empty.png": "empty",
        "trunc.png": "truncated",
        "text.png": "not an image",
        "x.bmp": "unknown image extension",
    }
    for name, words in cases.items():
        with pytest.raises(InputError) as e:
            read_image(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg and words in msg, msg
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


def test_write_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        write_image(blocker / "sub" / "out.png", np.zeros((4, 4, 3)))
    with pytest.raises(InputError, match="unknown image extension"):
        write_image(tmp_path / "out.gif", np.zeros((4, 4, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written


def test_list_images(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for name in ["b.png", "a.JPG", "c.webp", ".hidden.png", "notes.txt", "z.tiff"]:
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    explicit = tmp_path / "e.bmp"
    found = list_images([d, explicit, d / "b.png"])
    assert [p.name for p in found] == ["a.JPG", "b.png", "c.webp", "z.tiff", "e.bmp"]


def test_demo_image_is_bundled() -> None:
    im = read_image(DEMO_IMAGE)
    assert im.size == (256, 256) and im.bit_depth == 8 and not im.was_gray
    assert DEMO_IMAGE.stat().st_size < 200_000
