"""The comparison PNG: the LR image with the box, each form's map with its DI, and each map minus float."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_sr.explain import ExplainReport


def draw(report: ExplainReport, out: str | os.PathLike[str]) -> None:
    """Draw ``report`` into the PNG ``out`` (matplotlib, Agg backend).

    Row 1: the LR input with the box (in input pixels: the output box divided by the scale), then each map,
    normalized to its maximum (square-root scale), zoomed to where any map exceeds 1e-3 of its maximum. Row 2 (when float and another form are compared): each map minus the float
    map, divided by the float map's maximum, on a symmetric scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    forms = list(report.maps)
    diffs = [f for f in forms if f != "float"] if "float" in report.maps else []
    rows, cols = (2 if diffs else 1), 1 + len(forms)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.6 * rows), squeeze=False)
    x, y, w, h = report.box
    s = report.scale

    def box_on(ax: object) -> None:
        ax.add_patch(Rectangle((x / s - 0.5, y / s - 0.5), w / s, h / s, fill=False, ec="lime", lw=1.2))  # type: ignore[attr-defined]

    lr = report.lr if report.lr.shape[2] == 3 else report.lr[..., 0]
    axes[0][0].imshow(np.clip(lr, 0, 1), cmap=None if lr.ndim == 3 else "gray", interpolation="nearest")
    axes[0][0].set_title(f"input, box {x},{y},{w},{h} (x{s})", fontsize=8)
    box_on(axes[0][0])
    for i, form in enumerate(forms, start=1):
        a = report.maps[form]
        # square root: the tails of the attribution are what DI measures, keep them visible
        axes[0][i].imshow(np.sqrt(a.map / max(float(a.map.max()), 1e-12)), cmap="inferno", vmin=0, vmax=1)
        axes[0][i].set_title(f"{form}  DI {a.di:.2f}", fontsize=9)
        box_on(axes[0][i])
    if diffs:
        ref = max(float(report.maps["float"].map.max()), 1e-12)
        axes[1][0].set_visible(False)
        axes[1][1].set_visible(False)
        for form in diffs:
            i = forms.index(form) + 1
            d = report.diff(form) / ref
            lim = max(float(np.abs(d).max()), 1e-6)
            axes[1][i].imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[1][i].set_title(f"{form} − float (max {lim:.1e})", fontsize=8)
    x0, x1, y0, y1 = _view(report)
    for ax in axes.ravel()[1:]:  # the maps zoom to where the attribution is; the image shows it all
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(y1 - 0.5, y0 - 0.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"LAM of {os.path.basename(report.source)}, {report.steps} steps, σ_max {report.sigma_max}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)


def _view(report: ExplainReport) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) input pixels holding every map's attribution above 1e-3 of its maximum, and the box,
    padded by a quarter of its size."""
    h, w = report.lr.shape[:2]
    x, y, bw, bh = (v / report.scale for v in report.box)
    xs, ys = [x, x + bw], [y, y + bh]
    for a in report.maps.values():
        rows, cols = np.nonzero(a.map > 1e-3 * max(float(a.map.max()), 1e-12))
        if rows.size:
            xs += [float(cols.min()), float(cols.max()) + 1]
            ys += [float(rows.min()), float(rows.max()) + 1]
    pad = max(2.0, 0.25 * max(max(xs) - min(xs), max(ys) - min(ys)))
    return (
        max(0, int(min(xs) - pad)),
        min(w, int(np.ceil(max(xs) + pad))),
        max(0, int(min(ys) - pad)),
        min(h, int(np.ceil(max(ys) + pad))),
    )
