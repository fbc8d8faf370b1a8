"""Hostile outputs through the CLI: a folder, a FIFO or a device at ``-o``, an output that is an input, a
full disk. Each one is exit code 2, exactly one line on stderr, no traceback, and the victim intact."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sr.cli import main
from edge_sr.data.io import write_image
from edge_sr.models import create_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(create_model("ecbsr_m4c8", scale=2, blocks=1), d / "tiny_x2.safetensors")


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A test that would block on a FIFO fails after 60 s instead of hanging the suite."""

    def fail(*_: object) -> None:
        raise TimeoutError("blocked: an output was opened instead of refused")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _photo(path: Path, h: int = 16, w: int = 16) -> Path:
    return write_image(path, np.random.default_rng(0).random((h, w, 3)))


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run the CLI; exit 2, one stderr line naming the problem, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def _upscale(src: Path | str, out: Path | str, ckpt: Path) -> list[str]:
    return [
        "upscale",
        str(src),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--tile",
        "32",
        "--tile-overlap",
        "4",
    ]


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".edge-sr-" in p.name or ".tmp" in p.name]


def test_folder_named_like_a_file_survives_upscale(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _photo(tmp_path / "a.png")
    victim = tmp_path / "photos.png"
    (victim / "holiday").mkdir(parents=True)
    (victim / "holiday" / "beach.jpg").write_bytes(b"precious")
    _refused(_upscale(src, victim, ckpt), capsys, str(victim), "folder")
    assert (victim / "holiday" / "beach.jpg").read_bytes() == b"precious"
    assert _temps(tmp_path) == []


def test_fifo_is_refused_without_blocking(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _photo(tmp_path / "a.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    _refused(_upscale(src, fifo, ckpt), capsys, str(fifo), "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "link.png"  # a symlink to it is refused too
    link.symlink_to(fifo)
    _refused(_upscale(src, link, ckpt), capsys, str(link), "FIFO", "symlink")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()


def _char_device(tmp_path: Path) -> Path:
    """A character device in tmp (/dev/null's numbers: harmless even if written); skip when not permitted."""
    dev = tmp_path / "null.png"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a device node here ({e.strerror})")
    return dev


def test_device_is_refused_and_stays_a_device(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _photo(tmp_path / "a.png")
    dev = _char_device(tmp_path)
    _refused(_upscale(src, dev, ckpt), capsys, str(dev), "device")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    ckpt_out = tmp_path / "null.safetensors"
    os.mknod(ckpt_out, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _refused(["reparam", str(ckpt), "-o", str(ckpt_out)], capsys, str(ckpt_out), "device")
    assert stat.S_ISCHR(os.lstat(ckpt_out).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_upscale_refuses_to_overwrite_its_input(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _photo(tmp_path / "x.png")
    before = src.read_bytes()
    _refused(_upscale(src, src, ckpt), capsys, "input itself")
    monkeypatch.chdir(tmp_path)
    _refused(_upscale("x.png", "./sub/../x.png", ckpt), capsys, "input itself")
    (tmp_path / "alias.png").symlink_to(src)
    _refused(_upscale(src, tmp_path / "alias.png", ckpt), capsys, "input itself")
    os.link(src, tmp_path / "hard.png")
    _refused(_upscale(tmp_path / "hard.png", src, ckpt), capsys, "input itself")
    assert src.read_bytes() == before


def test_folder_batch_never_writes_over_its_inputs(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "photos"
    srcs = [_photo(d / f"p{i}.png", 12, 12) for i in range(2)]
    before = {p.name: p.read_bytes() for p in srcs}
    _refused(_upscale(d, d, ckpt), capsys, "would overwrite")
    _refused(_upscale(d, str(d) + "/.", ckpt), capsys, "would overwrite")
    other = tmp_path / "other"
    _photo(other / "p0.png", 12, 12)  # a batch whose output folder holds one of its inputs
    _refused(["upscale", str(d / "p1.png"), str(other / "p0.png"), "-o", str(other), "--checkpoint", str(ckpt)], capsys, "would overwrite")  # fmt: skip
    assert {p.name: p.read_bytes() for p in srcs} == before
    assert sorted(p.name for p in d.iterdir()) == ["p0.png", "p1.png"]


def test_reparam_refuses_an_existing_folder(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "deploy.safetensors"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    _refused(["reparam", str(ckpt), "-o", str(victim)], capsys, str(victim), "folder")
    assert (victim / "keep.txt").read_text() == "mine"


@contextlib.contextmanager
def _full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs filled to the last byte (we are root in CI); skip where mounting is not permitted."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.decode().strip() or run.returncode})")
    try:
        with contextlib.suppress(OSError), open(mnt / ".filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_through_the_cli(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _photo(tmp_path / "a.png", 32, 32)
    with _full_disk(tmp_path) as mnt:
        (mnt / "old.png").touch()  # an existing output is kept when its replacement cannot be written
        _refused(_upscale(src, mnt / "old.png", ckpt), capsys, str(mnt / "old.png"), "no space")
        _refused(
            ["reparam", str(ckpt), "-o", str(mnt / "d.safetensors")], capsys, "d.safetensors", "no space"
        )
        assert sorted(p.name for p in mnt.iterdir()) == [".filler", "old.png"]  # no temporary left


def test_full_disk_simulated(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a mount: every PNG write and every safetensors write fails with ENOSPC."""
    from edge_sr.data import codecs16

    def enospc(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    src = _photo(tmp_path / "a.png")
    monkeypatch.setattr(codecs16.PngWriter, "write", enospc)
    out = tmp_path / "out"
    _refused(_upscale(src, out / "b.png", ckpt), capsys, "b.png", "no space")
    assert _temps(out) == [] and not (out / "b.png").exists()

    import safetensors.torch

    def rust_enospc(*_: object, **__: object) -> None:  # how safetensors reports it: not an OSError
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", rust_enospc)
    _refused(["reparam", str(ckpt), "-o", str(out / "d.safetensors")], capsys, "d.safetensors", "no space")
    assert _temps(out) == []


def test_reparam_refuses_to_overwrite_its_input(
    tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    src = Path(shutil.copy(ckpt, tmp_path / "m.safetensors"))
    before = src.read_bytes()
    _refused(
        ["reparam", str(src), "-o", str(tmp_path / "." / "m.safetensors")], capsys, "input checkpoint itself"
    )
    assert src.read_bytes() == before
