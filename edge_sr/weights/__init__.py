"""Bundled pretrained weights, trained by the edge-sr recipes in ``configs/`` (see docs/MODEL_ZOO.md).

Files are ``<arch>_x<scale>.safetensors`` (deploy or train form, as their metadata says); the image models
are ``DEFAULT_ARCH``'s, the streaming video models ``DEFAULT_VIDEO_ARCH``'s.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_ARCH = "ecbsr_m4c16"
DEFAULT_VIDEO_ARCH = "ecbvsr_m4c16"
# the bundled files that are streaming video models (a step per frame, not an image model), by name before
# ``_x<scale>``: the default (BI), its BD model, and RRN-edge (BI)
VIDEO_ARCHS: tuple[str, ...] = (DEFAULT_VIDEO_ARCH, "ecbvsr_m4c16_bd", "rrn_edge")


def bundled_checkpoints(kind: str | None = "image") -> dict[str, dict[int, Path]]:
    """``{arch: {scale: path}}`` for every bundled file of ``kind``: ``"image"`` (the default: what the image
    benchmarks and demos iterate), ``"video"``, or None for both."""
    out: dict[str, dict[int, Path]] = {}
    for p in sorted(WEIGHTS_DIR.glob("*_x[0-9].safetensors")):
        arch, _, s = p.stem.rpartition("_x")
        if kind is not None and (arch in VIDEO_ARCHS) != (kind == "video"):
            continue
        out.setdefault(arch, {})[int(s)] = p
    return out


def bundled_checkpoint(scale: int = 4, arch: str | None = None) -> Path | None:
    """The bundled checkpoint for ``scale`` (default architecture unless ``arch``), or None."""
    return bundled_checkpoints(None).get(arch or DEFAULT_ARCH, {}).get(scale)


def bundled_video_checkpoint(scale: int = 4) -> Path | None:
    """The bundled streaming video model for ``scale`` (``ecbvsr_m4c16_x<scale>.safetensors``, BI), or None."""
    return bundled_checkpoint(scale, DEFAULT_VIDEO_ARCH)
