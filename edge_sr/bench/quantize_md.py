"""The markdown of the quantization sections (``edge_sr.bench.quantize``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_sr.bench.quantize import QuantBenchSettings, Row

HOW = """How the pieces compose: quantization always acts on the deploy (fused) graph, the one the device runs.
QAT fuses first, then fine-tunes the plain convs with fake-quant (`int8-qat`). QAT on the multi-branch
train form (`int8-qat-trainform`) gives every branch its own quantizer; a sum of separately quantized
convs is not a quantized fused conv, so it cannot be fused afterwards and ships as a multi-branch int8
graph. CoreML W8A8 comes from the PT2E CoreML quantizer (calibrated in torch, no macOS needed);
`int8-weights` is coremltools weight-only int8 with `weight_threshold=0` (every conv)."""


def render(rows: list[Row], lat: dict[str, float], s: QuantBenchSettings, env_block: str) -> str:
    """The quality table (when there are rows) and the latency list (when timed), under ``env_block``."""
    h, w = s.latency_size
    if not rows:
        title = f"## INT8 against FP32 latency ({s.latency_target}, {h}x{w})"
        return "\n".join([title, "", env_block, "", *_latency_lines(lat, s)])
    models = ", ".join(dict.fromkeys(r.model for r in rows))
    sets = s.sets
    lines = [
        f"## Quantization: float / FP16 / INT8 per target ({models})",
        "",
        env_block,
        "",
        "Y-PSNR (dB, border = scale) on the benchmark sets; artifacts at a fixed input size "
        f"({s.input_size[0]}x{s.input_size[1]}), run tile by tile over each image; (drop) = float model minus "
        "artifact.",
        "",
        HOW,
        "",
        "| model | target | variant | size (KB) | "
        + " | ".join(f"{n} PSNR (drop)" for n in sets)
        + " | note |",
        "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in sets) + " | --- |",
    ]
    for r in rows:
        cells = [
            f"{r.psnr[n]:.2f} ({r.psnr_float[n] - r.psnr[n]:+.3f})" if n in r.psnr else "-" for n in sets
        ]
        lines.append(
            f"| {r.model} | {r.target} | {r.variant} | {r.size_bytes / 1024:.1f} | "
            + " | ".join(cells)
            + f" | {r.note} |"
        )
    if lat:
        lines += ["", *_latency_lines(lat, s)]
    return "\n".join(lines)


def _latency_lines(lat: dict[str, float], s: QuantBenchSettings) -> list[str]:
    h, w = s.latency_size
    lines = [
        f"{s.latency_target} CPU latency at {h}x{w}, {s.threads} thread(s): median of {s.runs} rounds, FP32 and "
        "INT8 called in turn in each round (one process), after a warm-up call each.",
        "",
    ]
    for k, v in lat.items():
        unit = " ms"
        if k.endswith("speed-up"):
            unit = "x (FP32 / INT8 medians, one run)"
        elif k.endswith("per round"):
            unit = "x (median over the rounds of FP32 / INT8 in the same round)"
        lines.append(f"- {k}: {v:.2f}{unit}")
    return lines
