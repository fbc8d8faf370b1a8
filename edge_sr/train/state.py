"""Training checkpoints: one file per saved step for an exact resume, plus the weights as ``.safetensors``.

``<run>/resume.pt``            everything ``--resume`` needs, of one step: model and EMA weights, optimizer,
                               AMP scaler and RNG state, step, best score, arch and args. Tensors and plain
                               values only, read back with ``torch.load(weights_only=True)``. Written to a
                               temporary name, flushed to disk, and published by one rename: a kill at any
                               moment leaves the previous complete step or the new one, never a mix.
``<run>/last.safetensors``     the model weights of that step (card and ``step`` in the metadata), for every
``<run>/last_ema.safetensors`` other command; written from the same tensors right after ``resume.pt``. A kill
                               between the two leaves them one save behind; ``--resume`` rewrites them.
``<run>/best.safetensors``     the weights (EMA if on) with the best validation PSNR.

Runs saved before ``resume.pt`` existed (``last.state.pt`` next to ``last*.safetensors``, three renames per
save) resume when the three files name the same step; a mixed set, left by a kill inside a save, is
refused: resuming it would continue from weights and optimizer state of different steps.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sr.errors import CheckpointError, EdgeSRError, OutputError
from edge_sr.io_utils import atomic_path
from edge_sr.models.checkpoint import load_into, load_state_dict_file, read_metadata, save_checkpoint

logger = logging.getLogger(__name__)

FORMAT = "edge-sr-train/2"
RESUME_FILE = "resume.pt"
OLD_STATE_FILE = "last.state.pt"  # the format before RESUME_FILE
_OURS = ("resume", "last", "last_ema", "last.state", "best", "config", "init", "metrics")
_TEMP = re.compile(r"^\.(?:" + "|".join(map(re.escape, _OURS)) + r")\..*tmp")


@dataclass
class TrainingState:
    """What a run carries from one step to the next besides the module weights."""

    step: int
    best: dict[str, Any]
    exports_stale: bool = False  # last*.safetensors are not of ``step`` (a kill between the writes)


@contextlib.contextmanager
def disk_errors(path: Path, what: str) -> Iterator[None]:
    """Turn a failed write (full disk, read-only folder...) into one ``OutputError`` line naming ``path``."""
    try:
        yield
    except EdgeSRError:
        raise
    except Exception as e:  # OSError, and the RuntimeError / SafetensorError writers wrap it in
        problem = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise OutputError(path, f"cannot write {what} ({problem})") from None


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary sibling, fsync, one rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(run: Path) -> list[str]:
    """Delete the temporary files a killed save left in ``run`` (not those of a live writer); their names."""
    gone = []
    if run.is_dir():
        for f in run.iterdir():
            if not _TEMP.match(f.name) or not f.is_file() or f.is_symlink():
                continue
            pid = re.search(r"edge-sr-(\d+)\.", f.name)
            if pid and int(pid.group(1)) != os.getpid() and _alive(int(pid.group(1))):
                continue
            with contextlib.suppress(OSError):
                f.unlink()
                gone.append(f.name)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def save_training_state(
    run: Path,
    *,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    step: int,
    best: dict[str, Any],
    arch: str,
    args: dict[str, Any],
) -> None:
    """Publish ``resume.pt`` of ``step`` (one rename), then ``last.safetensors`` / ``last_ema.safetensors``.

    Raises:
        OutputError: A write failed (e.g. the disk is full); no temporary file is left, and the previous
            ``resume.pt`` is intact.
    """
    unit = {
        "format": FORMAT,
        "step": step,
        "arch": arch,
        "args": json.dumps(args, sort_keys=True),
        "model": _cpu(model.state_dict()),
        "ema": _cpu(ema_model.state_dict()) if ema_model is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "best": dict(best),
    }
    buf = io.BytesIO()
    torch.save(unit, buf)
    try:
        with disk_errors(run / RESUME_FILE, "the training checkpoint"):
            _write_bytes(run / RESUME_FILE, buf.getvalue())
            _fsync_dir(run)
    except OutputError as e:
        if not (run / RESUME_FILE).is_file():
            raise
        kept = "the previous checkpoint is kept (continue with --resume)"
        raise OutputError(e.path, f"{e.problem}; {kept}") from None
    with contextlib.suppress(FileNotFoundError):  # an old-format run: its state is superseded now
        (run / OLD_STATE_FILE).unlink()
    _save_exports(run, model, ema_model, step, arch, args)


def _save_exports(
    run: Path, model: nn.Module, ema_model: nn.Module | None, step: int, arch: str, args: dict[str, Any]
) -> None:
    extra = {"step": str(step)}
    pairs = [("last.safetensors", model), ("last_ema.safetensors", ema_model)]
    for name, module in pairs:
        if module is not None:
            with disk_errors(run / name, "the weights"):
                save_checkpoint(module, run / name, arch=arch, args=args, form="train", extra=extra)


def save_best(
    run: Path, model: nn.Module, *, arch: str, args: dict[str, Any], step: int, psnr: float
) -> None:
    """``best.safetensors``: these weights, with the step and validation PSNR in the metadata."""
    path = run / "best.safetensors"
    with disk_errors(path, "the best weights"):
        save_checkpoint(
            model,
            path,
            arch=arch,
            args=args,
            form="train",
            extra={"step": str(step), "val_psnr": f"{psnr:.4f}"},
        )


def load_training_state(
    run: Path,
    *,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    arch: str,
    args: dict[str, Any],
) -> TrainingState:
    """Restore the last complete step of ``run`` into the given modules, optimizer, scaler and torch RNG.

    Raises:
        CheckpointError: Nothing to resume, an unreadable or foreign ``resume.pt``, one saved for another
            model, or an old-format set whose files are of different steps.
    """
    path = run / RESUME_FILE
    if not path.is_file():
        if (run / OLD_STATE_FILE).is_file():
            return _load_old_format(run, model=model, ema_model=ema_model, optimizer=optimizer)
        raise CheckpointError(run, f"nothing to resume: no {RESUME_FILE} in the run folder")
    unit = _read_unit(path)
    saved = (unit["arch"], json.loads(unit["args"]))
    if saved != (arch, json.loads(json.dumps(args, sort_keys=True))):
        raise CheckpointError(
            path,
            f"saved for {saved[0]} {saved[1]}, but the config builds {arch} {args}; resume with that config",
        )
    load_into(model, unit["model"], path)
    if ema_model is not None:
        if unit["ema"] is None:
            raise CheckpointError(
                path, "saved without EMA weights; resume with ema_decay: 0 or start a new run"
            )
        load_into(ema_model, unit["ema"], path)
    elif unit["ema"] is not None:
        logger.warning("%s: EMA weights ignored (ema_decay is 0)", path)
    try:
        optimizer.load_state_dict(unit["optimizer"])
        if scaler is not None and unit["scaler"] is not None:
            scaler.load_state_dict(unit["scaler"])
        torch.set_rng_state(unit["torch_rng"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            path, f"optimizer or RNG state does not fit this run ({_first_line(e)})"
        ) from None
    step = unit["step"]
    stale = any(
        _export_step(run / name) != step
        for name, on in (("last.safetensors", True), ("last_ema.safetensors", ema_model is not None))
        if on
    )
    return TrainingState(step, dict(unit["best"]), exports_stale=stale)


def _read_unit(path: Path) -> dict[str, Any]:
    try:
        unit = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(path, f"cannot read the training checkpoint ({_first_line(e)})") from None
    keys = ("format", "step", "arch", "args", "model", "ema", "optimizer", "scaler", "torch_rng", "best")
    if not isinstance(unit, dict) or unit.get("format") != FORMAT or any(k not in unit for k in keys):
        raise CheckpointError(path, f"not an edge-sr training checkpoint (expected format {FORMAT})")
    if not isinstance(unit["step"], int) or unit["step"] < 0:
        raise CheckpointError(path, f"step is {unit['step']!r}; expected an integer >= 0")
    return unit


def _export_step(path: Path) -> int | None:
    try:
        return int(read_metadata(path).get("step", -1))
    except (EdgeSRError, ValueError):
        return None


def _load_old_format(
    run: Path, *, model: nn.Module, ema_model: nn.Module | None, optimizer: torch.optim.Optimizer
) -> TrainingState:
    """A run saved as ``last.state.pt`` + ``last*.safetensors``: resumed only when all name one step."""
    state_path = run / OLD_STATE_FILE
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        step = int(state["step"])
    except Exception as e:
        raise CheckpointError(state_path, f"cannot read training state ({_first_line(e)})") from None
    files = ["last.safetensors"] + (["last_ema.safetensors"] if ema_model is not None else [])
    for name in files:
        other = _export_step(run / name)
        if other != step:
            found = "is missing or has no step" if other is None else f"is step {other}"
            raise CheckpointError(
                run,
                f"mixed checkpoint: {OLD_STATE_FILE} is step {step} but {name} {found} (a save was "
                f"interrupted); start again without --resume, or with --init {run / 'last.safetensors'}",
            )
    load_into(model, load_state_dict_file(run / "last.safetensors"), run / "last.safetensors")
    if ema_model is not None:
        load_into(ema_model, load_state_dict_file(run / "last_ema.safetensors"), run / "last_ema.safetensors")
    try:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            state_path, f"optimizer or RNG state does not fit this run ({_first_line(e)})"
        ) from None
    return TrainingState(step, dict(state.get("best", {"psnr": None, "step": None})))


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in sd.items()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
