"""edge-sr: super-resolution models from PyTorch to edge devices, verified."""

from __future__ import annotations

__version__ = "0.1.0"
