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


# ---------------------------------------------------------------- outputs: atomic_path and the stream writer


def test_atomic_path_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    import os
    import socket
    import stat

    from edge_sr.io_utils import atomic_path

    folder = tmp_path / "out.png"
    (folder / "inner").mkdir(parents=True)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(folder)
    sock_path = tmp_path / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for victim, words in [(folder, "folder"), (fifo, "FIFO"), (link, "symlink"), (sock_path, "socket")]:
            with pytest.raises(OutputError, match=words) as e, atomic_path(victim) as tmp:
                tmp.write_bytes(b"x")  # never reached: refused before the writer runs
            assert "\n" not in str(e.value) and str(victim) in str(e.value)
    finally:
        sock.close()
    assert (folder / "inner").is_dir() and stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    assert not [p for p in tmp_path.iterdir() if ".edge-sr-" in p.name]


def test_atomic_path_replaces_files_and_coreml_packages(tmp_path: Path) -> None:
    from edge_sr.io_utils import atomic_path

    f = tmp_path / "a.json"
    f.write_text("old")
    with atomic_path(f) as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new"
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "old.bin").write_bytes(b"old")
    with atomic_path(pkg) as tmp:
        (tmp / "Data").mkdir(parents=True)
        (tmp / "Manifest.json").write_text('{"new": 1}')
    assert (pkg / "Manifest.json").read_text() == '{"new": 1}' and not (pkg / "Data" / "old.bin").exists()
    with pytest.raises(OutputError, match="folder"), atomic_path(pkg) as tmp:  # a file cannot replace it
        tmp.write_text("a file")
    assert (pkg / "Manifest.json").is_file()
    plain = tmp_path / "p.mlpackage"  # a folder that only has the suffix is a user's folder: refused
    plain.mkdir()
    with pytest.raises(OutputError, match="folder"), atomic_path(plain) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "m.mlpackage", "p.mlpackage"]


def test_atomic_path_disk_errors_are_one_line_and_leave_nothing(tmp_path: Path) -> None:
    import errno
    import os

    from edge_sr.io_utils import atomic_path

    out = tmp_path / "model.tflite"
    out.write_bytes(b"previous")
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        with pytest.raises(OutputError) as e, atomic_path(out) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(code, os.strerror(code))
        assert "\n" not in str(e.value) and str(out) in str(e.value)
    with pytest.raises(OutputError, match="no space"), atomic_path(out) as tmp:  # a native writer's wording
        tmp.write_bytes(b"partial")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(ValueError), atomic_path(out):  # other errors pass through unchanged
        raise ValueError("a bug")
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_nested_writer_errors_name_the_output_and_stale_temps_go(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edge_sr.io_utils import atomic_path

    out = tmp_path / "m.json"
    with pytest.raises(OutputError) as e, atomic_path(out) as tmp, atomic_path(tmp) as inner:
        inner.mkdir()  # the inner destination is the outer temporary; its error must name m.json
        (inner / "x").write_text("x")
        raise OutputError(inner, "cannot write: no space left on the device")
    assert str(e.value).startswith(f"{out}:")
    # A process that dies inside the block (a converter's abort) leaves its temporary; the next write of
    # the same output removes it.
    code = f"import os; from edge_sr.io_utils import atomic_path\nwith atomic_path({str(out)!r}) as t:\n t.write_text('x'); os._exit(1)"
    subprocess.run([sys.executable, "-c", code], check=False)
    assert [p for p in tmp_path.iterdir() if ".edge-sr-" in p.name]
    with atomic_path(out) as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("channels,bits", [(1, 8), (2, 16), (3, 16), (4, 8)])
def test_image_writer_streams_bands_like_write_image(
    tmp_path: Path, ext: str, channels: int, bits: int
) -> None:
    from edge_sr.data.io import image_writer

    a = _values(channels, bits, (37, 23))
    gray = channels <= 2
    color, alpha = (a[..., :1] if gray else a[..., :3]), (a[..., -1] if channels in (2, 4) else None)
    ref = read_image(write_image(tmp_path / f"ref{ext}", color, alpha, bit_depth=bits, gray=gray))
    with image_writer(tmp_path / f"s{ext}", height=37, width=23, channels=channels, bit_depth=bits) as put:
        for r0 in (0, 5, 20):  # uneven bands, as tile rows are
            put(a[r0 : {0: 5, 5: 20, 20: 37}[r0]])
    got = read_image(tmp_path / f"s{ext}")
    assert got.bit_depth == ref.bit_depth and np.array_equal(got.rgb, ref.rgb)
    assert (got.alpha is None) == (ref.alpha is None)
    if got.alpha is not None:
        assert np.array_equal(got.alpha, ref.alpha)
    with pytest.raises(ValueError), image_writer(tmp_path / f"short{ext}", height=37, width=23, channels=channels, bit_depth=bits) as put:  # fmt: skip
        put(a[:10])  # too few rows: an error, and nothing written
    assert not (tmp_path / f"short{ext}").exists()
    assert not [p for p in tmp_path.iterdir() if ".edge-sr-" in p.name]
