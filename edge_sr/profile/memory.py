"""Peak resident memory of this process over a block of code."""

from __future__ import annotations

import sys
from pathlib import Path


class PeakRSS:
    """Peak resident memory (MB) over a ``with`` block: ``peak_mb`` and ``base_mb`` (at entry).

    On Linux the high-water mark is reset first (``/proc/self/clear_refs``), so the peak is that of the
    block, not of earlier work; elsewhere it is the process-lifetime ``ru_maxrss``.
    """

    def __enter__(self) -> PeakRSS:
        self.linux = Path("/proc/self/clear_refs").exists()
        if self.linux:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.linux = False
        self.base_mb = self._status("VmRSS")
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.linux:
            self.peak_mb = self._status("VmHWM")
        else:  # ru_maxrss: kB on Linux, bytes on macOS
            import resource

            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_mb = r / (1 << 20) if sys.platform == "darwin" else r / 1024

    @property
    def model_mb(self) -> float | None:
        """Growth over the block: what loading and running the model took."""
        if self.base_mb is None or self.peak_mb is None:
            return None
        return max(0.0, self.peak_mb - self.base_mb)

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None
