"""What a profile produced: :class:`ProfileReport` (``--json`` object and text summary) and its statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edge_sr.convert.target import OpTime


@dataclasses.dataclass
class ProfileReport:
    """What ``edge-sr profile`` prints; ``to_dict()`` is its ``--json`` object.

    Throughput is compared with two peaks of the program's precision (``peak_precision``): the
    theoretical one of the vector units and the measured matrix-product one (``edge_sr.profile.peak``).
    A percentage above 100 is not reported (None, with the reason in ``peak_note``).
    """

    artifact: str
    kind: str
    device: str
    input_shape: list[int]
    threads: int
    runs: int
    warmup: int
    min_ms: float
    median_ms: float | None
    p90_ms: float | None
    mean_ms: float | None = None
    precision: str | None = None
    peak_rss_mb: float | None = None
    model_rss_mb: float | None = None
    size_bytes: int = 0
    ops: list[OpTime] = dataclasses.field(default_factory=list)
    ops_note: str | None = None
    gmacs: float | None = None
    gmacs_per_s: float | None = None
    peak_precision: str | None = None
    theoretical_peak_gmacs_per_s: float | None = None
    measured_peak_gmacs_per_s: float | None = None
    percent_of_theoretical_peak: float | None = None
    percent_of_measured_peak: float | None = None
    peak_note: str | None = None
    fps: float | None = None  # 1000 / median: frames (or images) per second
    stream: bool = False  # a video step timed per frame with its state fed back

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_text(self, top: int = 12) -> str:
        """A human summary: one latency line, memory and size, throughput, the slowest operators."""
        med = "n/a" if self.median_ms is None else f"{self.median_ms:.2f}"
        p90 = "n/a" if self.p90_ms is None else f"{self.p90_ms:.2f}"
        lines = [
            f"{self.artifact} ({self.kind}, {self.precision or '?'}, {self.device}, input "
            f"{'x'.join(map(str, self.input_shape))}, {self.threads} threads)",
            f"latency  min {self.min_ms:.2f} ms  median {med} ms  p90 {p90} ms  ({self.runs} runs after "
            f"{self.warmup} warm-up)"
            + (f"  {self.fps:.1f} fps" if self.fps else "")
            + (" per frame, state fed back" if self.stream else ""),
            f"size     {self.size_bytes / 1e6:.3f} MB"
            + (f"   peak RSS {self.peak_rss_mb:.0f} MB" if self.peak_rss_mb is not None else "")
            + (f" (+{self.model_rss_mb:.0f} MB for the model)" if self.model_rss_mb is not None else ""),
        ]
        if self.gmacs is not None:
            s = f"compute  {self.gmacs:.3f} GMAC"
            if self.gmacs_per_s is not None:
                s += f" -> {self.gmacs_per_s:.1f} GMAC/s"
            lines.append(s)
            for what, pct, peak in (
                ("theoretical", self.percent_of_theoretical_peak, self.theoretical_peak_gmacs_per_s),
                ("measured", self.percent_of_measured_peak, self.measured_peak_gmacs_per_s),
            ):
                if peak is not None:
                    share = "n/a" if pct is None else f"{pct:.1f}%"
                    lines.append(
                        f"         {share} of the {what} {self.peak_precision} peak ({peak:.1f} GMAC/s)"
                    )
            if self.peak_note:
                lines.append(f"         peak: {self.peak_note}")
        if self.ops:
            n_del = sum(1 for o in self.ops if o.delegated)
            lines.append(f"operators ({n_del} of {len(self.ops)} delegated):")
            timed = sorted(self.ops, key=lambda o: -(o.ms or 0.0))
            for o in timed[:top]:
                where = "delegate" if o.delegated else ("cpu" if o.delegated is False else "?")
                ms = "     n/a" if o.ms is None else f"{o.ms:8.3f}"
                lines.append(f"  {ms} ms  {where:8s}  {o.name}")
            if len(timed) > top:
                lines.append(f"  ... {len(timed) - top} more (--json lists all)")
        if self.ops_note:
            lines.append(f"note: {self.ops_note}")
        return "\n".join(lines)


def latency_stats(times_ms: list[float]) -> tuple[float, float, float]:
    """(min, median, p90) of per-run times; p90 by linear interpolation between ranks."""
    if not times_ms:
        raise ValueError("no timed runs")
    a = np.asarray(times_ms, dtype=np.float64)
    return float(a.min()), float(np.median(a)), float(np.percentile(a, 90))
