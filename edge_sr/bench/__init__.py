"""The benchmarks behind ``edge-sr bench KIND``, each writing its own section of a docs page.

======== ===================================================== ============================
kind     what it measures                                       section (page)
======== ===================================================== ============================
reparam  train against deploy form: params, MACs, CPU latency   ``reparam`` (BENCHMARKS.md)
collapse collapsed against multi-branch training steps          ``train-collapsed``
quantize float / FP16 / INT8 variants per target, INT8 latency  ``quantization*``
matrix   convert -> verify -> profile per model, target,        ``matrix`` + pareto.png
         precision and size
gpu      transformer tiles per second, FP32 against FP16        ``gpu-bench``
zoo      every bundled model on Set5 / Set14                    ``zoo`` (MODEL_ZOO.md)
======== ===================================================== ============================

:func:`edge_sr.bench.report.update_section` writes a section; :mod:`edge_sr.bench._env` gives the machine,
versions and command each section states.
"""

from __future__ import annotations

from edge_sr.bench.matrix import Settings, Skip, bench_matrix, export_artifact, run_cell
from edge_sr.bench.plot import pareto_front, pareto_plot
from edge_sr.bench.report import update_section

KINDS: tuple[str, ...] = ("reparam", "collapse", "quantize", "matrix", "gpu", "zoo")

__all__ = [
    "KINDS",
    "Settings",
    "Skip",
    "bench_matrix",
    "export_artifact",
    "pareto_front",
    "pareto_plot",
    "run_cell",
    "update_section",
]
