"""Per-frame latency of a video step artifact, timed the way an app runs it: one call per frame, each state
input fed with the output its ``next`` names from the call before, as the artifact gave it.

    timed = profile_stream(path, "tflite", manifest, runs=50, warmup=5, threads=1, timer=time_calls)

The target's own runner (``edge_sr.convert.target_module(kind).Runner(...).run(feeds) -> outputs``) is called
with the tensors in the artifact's layout and dtype (the manifest's ``stream.tensors``): an int8 state goes
back as int8, unchanged; a state fed from a frame (RRN's ``prev`` from ``cur``) is converted to its own dtype
inside the timed call, as an app would. Frames cycle through a few fixed random frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_sr.convert import target_module
from edge_sr.convert.target import Timed, Timer

__all__ = ["profile_stream", "stream_call"]

FRAMES = 4  # distinct random frames cycled through


def _as(t: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Float values ``x`` in tensor ``t``'s dtype (int8: quantized with its scale / zero point)."""
    q = t.get("quant")
    if t["dtype"] in ("int8", "uint8") and q:
        info = np.iinfo(t["dtype"])
        return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(t["dtype"])
    return x.astype(t["dtype"] if t["dtype"] in ("float32", "float16") else np.float32)


def initial_feeds(entry: dict[str, Any], frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first call's inputs: the frames, then each state's ``init`` (zeros, or the first frame)."""
    tensors = {t["name"]: t for t in entry["tensors"] if t["io"] == "input"}
    feeds = dict(frames)
    first = next(iter(frames.values()))
    for s in entry["state"]:
        t = tensors[s["name"]]
        src = first.astype(np.float32) if s["init"] == "frame" else np.zeros(t["shape"], np.float32)
        feeds[s["name"]] = _as(t, src)
    return feeds


def random_frames(entry: dict[str, Any], count: int = FRAMES) -> list[dict[str, np.ndarray]]:
    """``count`` sets of random frame inputs in [0, 1], each in its tensor's dtype."""
    rng = np.random.default_rng(0)
    tensors = {t["name"]: t for t in entry["tensors"] if t["io"] == "input"}
    return [
        {f: _as(tensors[f], rng.random(tensors[f]["shape"], dtype=np.float32)) for f in entry["frames"]}
        for _ in range(count)
    ]


def stream_call(runner: Any, entry: dict[str, Any]) -> Callable[[], Any]:
    """One step per call of the manifest ``stream`` entry's step on ``runner`` (a target's ``Runner``), each
    state input fed with the output its ``next`` names from the call before, as the artifact gave it."""
    tensors = {t["name"]: t for t in entry["tensors"] if t["io"] == "input"}
    frames = random_frames(entry)
    cycle = itertools.cycle(frames)
    feeds = initial_feeds(entry, next(cycle))

    def call() -> Any:
        nonlocal feeds
        outs = runner.run(feeds)
        nxt = dict(next(cycle))
        for s in entry["state"]:
            src = outs.get(s["next"])
            if src is None:  # fed from a frame input: in the state's dtype
                f = feeds[s["next"]]
                t_f = tensors[s["next"]]
                q = t_f.get("quant")
                val = (f.astype(np.float32) - q["zero_point"]) * q["scale"] if q else f.astype(np.float32)
                src = _as(tensors[s["name"]], val) if tensors[s["name"]]["dtype"] != t_f["dtype"] else f
            nxt[s["name"]] = src
        feeds = nxt
        return outs

    return call


def profile_stream(
    path: Path, kind: str, manifest: dict[str, Any], *, runs: int, warmup: int, threads: int, timer: Timer
) -> Timed:
    """Per-frame times of ``runs`` consecutive steps (after ``warmup``), the state fed back between them."""
    entry = manifest["stream"]
    tensors = {t["name"]: t for t in entry["tensors"] if t["io"] == "input"}
    mod = target_module(kind)
    # a target whose runner here is not its runtime (CoreML off macOS: the MIL reference executor) refuses
    check = getattr(mod, "check_profilable", None)
    if callable(check):
        check(path)
    times = timer(stream_call(mod.Runner(path, threads=threads), entry), runs, warmup)
    shape = [int(d) for d in tensors[entry["frames"][0]]["shape"]]
    note = (
        f"per frame: one {kind} step with the state fed back (output {entry['output']}); "
        "no per-operator table for a step (profile the image path for one)"
    )
    return Timed(times, shape, [], note)
