"""The Pareto plot of the matrix: Set5 Y-PSNR against median latency, one panel per scale."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_sr.convert import TARGETS
from edge_sr.io_utils import atomic_path

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points (lower latency, higher PSNR), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _row_scale(r: dict[str, Any]) -> int | None:
    if r.get("scale"):
        return int(r["scale"])
    m = re.search(r"_x(\d+)(?:$|_)", str(r.get("model", "")))
    return int(m.group(1)) if m else None


def pareto_plot(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """PNG: Set5 Y-PSNR against median latency, one marker per target and one colour per precision, one
    panel per scale (PSNRs of different scales are not comparable), each with its Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sr.convert.spec import PRECISIONS

    pts = [r for r in rows if r.get("psnr") is not None and r.get("median_ms") is not None]
    markers = dict(zip(TARGETS, itertools.cycle(_MARKERS)))
    colors = dict(zip(PRECISIONS, itertools.cycle(_COLORS)))
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for r in pts:
        groups.setdefault(_row_scale(r), []).append(r)
    keys = sorted(groups, key=lambda k: (k is None, k or 0)) or [None]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 1.2, 4.2), dpi=120, squeeze=False)
    handles: dict[str, Any] = {}
    for ax, key in zip(axes[0], keys):
        group = groups.get(key, [])
        for r in group:
            h = ax.scatter(
                r["median_ms"],
                r["psnr"],
                marker=markers.get(r["target"], "x"),
                color=colors.get(r["precision"], "gray"),
                s=48,
                zorder=3,
            )
            handles.setdefault(f"{r['target']} {r['precision']}", h)
        if group:
            front = pareto_front([(r["median_ms"], r["psnr"]) for r in group])
            xs, ys = [group[i]["median_ms"] for i in front], [group[i]["psnr"] for i in front]
            (line,) = ax.step(xs, ys, where="post", color="black", lw=1, ls="--", zorder=2)
            handles.setdefault("Pareto front", line)
            models = sorted({r["model"] for r in group})
            ax.set_title(f"x{key}: {', '.join(models)}" if key else ", ".join(models), fontsize=9)
        else:
            ax.text(0.5, 0.5, "no cell has both a PSNR and a latency", ha="center", transform=ax.transAxes)
        ax.set_xlabel("median latency on this CPU (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Set5 Y-PSNR (dB)")
    fig.suptitle("quality against latency, per scale")
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 1.1 / (4.2 * len(keys) + 1.2), 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
