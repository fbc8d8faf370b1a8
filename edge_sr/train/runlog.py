"""What a training run writes and hears as it goes: the metrics log, the progress bar, Ctrl-C between steps."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_sr.io_utils import atomic_path
from edge_sr.train.state import disk_errors


@contextlib.contextmanager
def ctrl_c_between_steps() -> Iterator[list[bool]]:
    """The first SIGINT only asks the loop to stop after the current step (the yielded list becomes
    truthy); a second one interrupts at once, without a save. Outside the main thread: unchanged."""
    asked: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def handler(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with disk_errors(path, "the metrics log"), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop the records a killed run logged after its last checkpoint (they are logged again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if line.endswith("\n") and _record_step(line) <= step]
    if len(keep) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(keep))


def _record_step(line: str) -> float:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line torn by a kill: dropped


def progress_bar(start: int, total: int, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(
        total=total, initial=start, disable=not enabled, unit="it", dynamic_ncols=True, smoothing=0.05
    )
