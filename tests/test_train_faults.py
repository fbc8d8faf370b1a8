"""Training under faults: kill -9 at random steps and inside a checkpoint save, a full disk, old-format runs.

Every killed run must leave a checkpoint that loads, and ``--resume`` must then end on exactly the tensors
of the run that was never interrupted (weights, EMA, optimizer state; compared tensor by tensor).

``python tests/test_train_faults.py`` prints the figures docs/ROBUSTNESS.md quotes (kills at every save
moment and at random steps, each resumed and compared with the straight run).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from edge_sr.cli import main
from edge_sr.models import load_checkpoint
from edge_sr.train import load_config, train

REPO = Path(__file__).resolve().parents[1]
ITERS, SAVE_EVERY = 24, 3

# Run `edge-sr train` in a child that stops (touches MARKER, then sleeps until killed) at one moment:
#   step K    before training step K (the parent kills it there; steps are slowed to make that land)
#   before K  the K-th rename of a finished temporary file (config.yaml is the first; each save renames
#             resume.pt, last.safetensors, last_ema.safetensors), i.e. inside a save
#   after K   right after that rename, before the next file of the save
#   write K   halfway through writing the K-th resume.pt
_CHILD = r"""
import os, sys, time
mode, k, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
argv = sys.argv[4:]

def stop_here():
    open(marker, "w").close()
    time.sleep(600)

import edge_sr.train.loop as loop
import edge_sr.train.state as state
from edge_sr.io_utils import atomic_path

calls = [0]
if mode == "step":
    real_step = loop._train_step
    def slow_step(run, *a, **kw):
        if run.step + 1 == k:
            stop_here()
        time.sleep(0.02)
        return real_step(run, *a, **kw)
    loop._train_step = slow_step
elif mode in ("before", "after"):
    real_replace = os.replace
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == k and mode == "before":
            stop_here()
        real_replace(src, dst)
        if calls[0] == k and mode == "after":
            stop_here()
    os.replace = replace
elif mode == "write":
    real_write = state._write_bytes
    def write(path, data):
        calls[0] += 1
        if calls[0] != k:
            return real_write(path, data)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            stop_here()
    state._write_bytes = write

from edge_sr.cli import main
sys.exit(main(argv))
"""


def _make_images(folder: Path, n: int = 6, size: int = 40) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BICUBIC)  # smooth: something to learn
        img.save(folder / f"im{i}.png")


def write_cfg(root: Path, images: Path, name: str = "run") -> Path:
    """A recipe of ITERS tiny steps, saved every SAVE_EVERY, no validation; returns its path."""
    cfg = {
        "model": {"name": "ecbsr_m4c8", "scale": 2, "args": {"collapsed": True}},
        "data": {"train_folders": [str(images)], "patch_size": 12, "batch_size": 2},
        "optim": {"warmup_iters": 4},
        "iters": ITERS,
        "ema_decay": 0.9,
        "save_every": SAVE_EVERY,
        "log_every": 1,
        "val_every": 1000,
        "threads": 1,
        "out_dir": str(root / name),
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor a run ends with: weights, EMA, and the optimizer state of resume.pt."""
    out = {f"model.{k}": v for k, v in load_file(str(run / "last.safetensors")).items()}
    out.update({f"ema.{k}": v for k, v in load_file(str(run / "last_ema.safetensors")).items()})
    unit = torch.load(run / "resume.pt", weights_only=True)
    for i, st in unit["optimizer"]["state"].items():
        out.update({f"optim.{i}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
    out.update({f"unit.model.{k}": v for k, v in unit["model"].items()})
    return out


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def temps(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and "tmp" in p.name)


@dataclass
class Straight:
    images: Path  # the training images
    want: dict[str, torch.Tensor]  # the tensors of the uninterrupted run
    unit_bytes: int  # the size of resume.pt
    export_bytes: int  # the size of last.safetensors


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Straight:
    root = tmp_path_factory.mktemp("straight")
    _make_images(root / "images")
    train(load_config(write_cfg(root, root / "images")), progress=False)
    run = root / "run"
    sizes = (run / "resume.pt").stat().st_size, (run / "last.safetensors").stat().st_size
    return Straight(root / "images", tensors(run), *sizes)


def kill_and_resume(root: Path, images: Path, mode: str, k: int) -> dict[str, object]:
    """Start a run, kill -9 it at (mode, k), check what is left, resume it; returns what it found."""
    cfg = write_cfg(root, images)
    run, marker = root / "run", root / "marker"
    args = [sys.executable, "-c", _CHILD, mode, str(k), str(marker), "train", str(cfg), "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert killed, f"{mode} {k}: the child ended before the kill point (rc {proc.returncode}): {err[-800:]}"
    left = temps(run)
    saved = None
    if (run / "resume.pt").is_file():  # what the kill left loads, and is one step
        saved = torch.load(run / "resume.pt", weights_only=True)["step"]
        if (run / "last.safetensors").is_file():  # absent when the kill fell between the first two files
            load_checkpoint(run / "last.safetensors")
    rc = main(["train", str(cfg), "--no-progress"] + (["--resume"] if saved is not None else []))
    assert rc == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"saved": saved, "temps_left": left, "temps_after": temps(run), "steps": steps, "run": run}


# os.replace calls: 1 is config.yaml; save i (step 3i) renames resume.pt (3i - 1), last (3i), last_ema (3i + 1).
# write 2: resume.pt of step 6 half written (resume from step 3); after 5: resume.pt of step 6 published,
# last*.safetensors still of step 3; before 7: last_ema.safetensors of step 6 written, not yet renamed.
_MOMENTS = [("write", 2), ("after", 5), ("before", 7)]


@pytest.mark.parametrize(("mode", "k"), _MOMENTS, ids=[f"{m}{k}" for m, k in _MOMENTS])
def test_kill_inside_a_save_then_resume_is_exact(
    tmp_path: Path, straight: Straight, mode: str, k: int
) -> None:
    images, want = straight.images, straight.want
    found = kill_and_resume(tmp_path, images, mode, k)
    assert found["temps_after"] == [], found
    assert found["steps"] == list(range(1, ITERS + 1))  # metrics.jsonl: each step once
    got = tensors(found["run"])  # type: ignore[arg-type]
    assert max_diff(got, want) == 0.0, (mode, k, found["saved"])


def test_kill_at_a_random_step_then_resume_is_exact(tmp_path: Path, straight: Straight) -> None:
    images, want = straight.images, straight.want
    k = random.Random().randrange(SAVE_EVERY + 1, ITERS)
    found = kill_and_resume(tmp_path, images, "step", k)
    assert found["saved"] is not None and found["saved"] <= k, (k, found)
    assert found["steps"] == list(range(1, ITERS + 1))
    assert max_diff(tensors(found["run"]), want) == 0.0, f"killed before step {k}"  # type: ignore[arg-type]


def test_old_format_run_resumes_when_whole_and_is_refused_when_mixed(
    tmp_path: Path, straight: Straight, capsys: pytest.CaptureFixture[str]
) -> None:
    images, want = straight.images, straight.want
    cfg = load_config(write_cfg(tmp_path, images))
    train(cfg, progress=False, until=12)
    run = tmp_path / "run"
    unit = torch.load(run / "resume.pt", weights_only=True)
    old = {k: unit[k] for k in ("step", "optimizer", "torch_rng", "best")}
    torch.save(old, run / "last.state.pt")  # the layout before resume.pt
    (run / "resume.pt").unlink()
    saved_last = (run / "last.safetensors").read_bytes()
    # mixed: last.safetensors of another step than last.state.pt
    from edge_sr.models.checkpoint import save_checkpoint

    model = load_checkpoint(run / "last.safetensors")
    save_checkpoint(model, run / "last.safetensors", form="train", extra={"step": "15"})
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixed checkpoint" in err and "step 12" in err and "step 15" in err, err
    # whole: resumes, converts to resume.pt, and ends on the straight run's tensors
    (run / "last.safetensors").write_bytes(saved_last)
    assert main(["train", str(tmp_path / "run.yaml"), "--resume", "--no-progress"]) == 0
    assert not (run / "last.state.pt").exists()
    assert max_diff(tensors(run), want) == 0.0


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs to fill ({e})")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def _pages(n: int) -> int:
    return -(-n // 4096) * 4096


@pytest.mark.parametrize("fails", ["unit", "exports"])
def test_full_disk_is_one_line_and_leaves_no_temporary_files(
    tmp_path: Path, straight: Straight, capsys: pytest.CaptureFixture[str], fails: str
) -> None:
    """A 1 MiB tmpfs filled so that the first resume.pt does not fit, or fits and last.safetensors not."""
    small = 2 * 4096  # config.yaml and metrics.jsonl, a page each
    if fails == "unit":
        leave = small + _pages(straight.unit_bytes // 2)
    else:
        leave = small + _pages(straight.unit_bytes) + _pages(straight.export_bytes // 2)
    images = straight.images
    disk = tmp_path / "disk"
    with _tmpfs(disk, "1m"):
        _fill(disk, leave)
        cfg = write_cfg(tmp_path, images)
        text = cfg.read_text().replace(str(tmp_path / "run"), str(disk / "run"))
        cfg.write_text(text)
        assert main(["train", str(cfg), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no space left" in err.lower(), err
        assert err.startswith("edge-sr train: ")
        assert temps(disk / "run") == []
        if fails == "exports":  # the unit was published: it loads, whatever the exports did
            assert "safetensors" in err
            assert torch.load(disk / "run" / "resume.pt", weights_only=True)["step"] == SAVE_EVERY


def test_write_error_without_a_tmpfs(
    tmp_path: Path,
    straight: Straight,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC raised by the writer itself (any file system): the same one line and clean-up."""
    import edge_sr.train.state as state
    from edge_sr.io_utils import atomic_path

    def full(path: Path, data: bytes) -> None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(state, "_write_bytes", full)
    images = straight.images
    assert main(["train", str(write_cfg(tmp_path, images)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resume.pt: cannot write" in err and "no space left" in err.lower(), err
    assert temps(tmp_path / "run") == [] and not (tmp_path / "run" / "resume.pt").exists()


def _figures() -> None:  # pragma: no cover - `python tests/test_train_faults.py`, for docs/ROBUSTNESS.md
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _make_images(root / "images")
        train(load_config(write_cfg(root / "straight", root / "images")), progress=False)
        want = tensors(root / "straight" / "run")
        saves = ITERS // SAVE_EVERY
        moments = [("write", i) for i in range(1, saves + 1)]
        moments += [(m, i) for m in ("before", "after") for i in range(2, 11)]  # every rename of saves 1-3
        rng = random.Random(0)
        moments += [("step", rng.randrange(2, ITERS + 1)) for _ in range(10)]
        rows = []
        for n, (mode, k) in enumerate(moments):
            found = kill_and_resume(root / f"k{n}", root / "images", mode, k)
            diff = max_diff(tensors(found["run"]), want)  # type: ignore[arg-type]
            rows.append((mode, k, found["saved"], len(found["temps_left"]), diff))  # type: ignore[arg-type]
            print(
                f"{mode:6} {k:3}  saved step {found['saved']}  temps left by the kill {len(found['temps_left'])}  max |diff| {diff}"
            )
        exact = sum(r[4] == 0.0 for r in rows)
        print(
            f"{len(rows)} kills, {exact} resumed bit-exact; {sum(r[3] > 0 for r in rows)} left temporary files (removed on resume)"
        )


if __name__ == "__main__":
    _figures()
