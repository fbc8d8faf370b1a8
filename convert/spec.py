"""What an export should produce: ``ExportSpec`` (a frozen dataclass) and the ``Artifact`` it returns.

Shapes: exactly one of ``input_size`` (fixed H, W), ``dynamic`` (H and W each in [min, max]) or ``sizes``
(several fixed sizes: CoreML enumerated shapes, TFLite signatures). The batch is always 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_sr.errors import ConfigError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")
IOS: tuple[str, ...] = ("tensor", "image")
Layout = Literal["NCHW", "NHWC"]
IO = Literal["tensor", "image"]
PixelShuffleMode = Literal["reshape", "rank4", "depth_to_space", "conv_transpose"]
PIXEL_SHUFFLE_MODES: tuple[str, ...] = ("reshape", "rank4", "depth_to_space", "conv_transpose")


@dataclass(frozen=True)
class ExportSpec:
    """How to export a model.

    Attributes:
        input_size: fixed input (H, W); used when ``dynamic`` and ``sizes`` are unset.
        dynamic: (min, max) for both H and W: a ranged shape (CoreML RangeDim, torch.export ``Dim``).
        sizes: several fixed (H, W): CoreML enumerated shapes or one TFLite signature each.
        precision: fp32 or fp16 (int8 artifacts come from ``edge_sr.quantize``).
        layout: NCHW (the torch contract) or NHWC I/O (what TFLite and Android code feed).
        io: ``tensor`` or ``image`` (CoreML ``ImageType`` in and out, values 0-255).
        pixel_shuffle: how ``nn.PixelShuffle`` is lowered, see ``edge_sr.convert.pixelshuffle``.
        frames: the T of a whole-clip / window video model's fixed window (None: the model's default, see
            ``edge_sr.convert.clip``); other models refuse it.

    What only one format knows (ONNX opset, CoreML deployment target, ExecuTorch delegate) is in that
    target's own ``Options`` (``edge_sr.convert.<target>.Options``), passed to ``export(options=...)``.
    """

    input_size: tuple[int, int] = (64, 64)
    dynamic: tuple[int, int] | None = None
    sizes: tuple[tuple[int, int], ...] = ()
    precision: Precision = "fp32"
    layout: Layout = "NCHW"
    io: IO = "tensor"
    pixel_shuffle: PixelShuffleMode = "reshape"
    frames: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                None, f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}"
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(None, f"unknown layout {self.layout!r}; choose NCHW or NHWC")
        if self.io not in IOS:
            raise ConfigError(None, f"unknown io {self.io!r}; choose tensor or image")
        if self.pixel_shuffle not in PIXEL_SHUFFLE_MODES:
            raise ConfigError(
                None,
                f"unknown pixel_shuffle {self.pixel_shuffle!r}; choose from {', '.join(PIXEL_SHUFFLE_MODES)}",
            )
        if self.dynamic is not None:
            lo, hi = self.dynamic
            if not 2 <= lo <= hi:
                raise ConfigError(None, f"dynamic range {lo}:{hi} must satisfy 2 <= MIN <= MAX")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(None, f"frames {self.frames} must be at least 1")
        for h, w in (self.input_size, *self.sizes):
            if h < 1 or w < 1:
                raise ConfigError(None, f"input size {h}x{w} must be positive")

    @property
    def example_size(self) -> tuple[int, int]:
        """The (H, W) traced: the fixed size, the first enumerated size, or a size inside the range."""
        if self.dynamic is not None:
            lo, hi = self.dynamic
            # torch.export specializes sizes 0/1; keep the example away from them and inside the range
            n = min(max(lo, 32), hi)
            return (n, n)
        return tuple(self.sizes[0]) if self.sizes else tuple(self.input_size)  # type: ignore[return-value]

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...] | None:
        """torch.export ``dynamic_shapes`` for H and W within ``dynamic`` (None for fixed shapes)."""
        if self.dynamic is None:
            return None
        import torch

        lo, hi = self.dynamic
        h = torch.export.Dim("height", min=lo, max=hi)
        w = torch.export.Dim("width", min=lo, max=hi)
        return ({self.hw_axes[0]: h, self.hw_axes[1]: w},)

    @property
    def hw_axes(self) -> tuple[int, int]:
        """The H and W axes of the artifact's input: (2, 3) for NCHW, (1, 2) for NHWC."""
        return (1, 2) if self.layout == "NHWC" else (2, 3)

    def input_shape(self) -> dict[str, Any]:
        """The manifest's description of the accepted input sizes."""
        if self.dynamic is not None:
            return {"mode": "dynamic", "min": self.dynamic[0], "max": self.dynamic[1]}
        if self.sizes:
            return {"mode": "enumerated", "sizes": [list(s) for s in self.sizes]}
        return {"mode": "fixed", "size": list(self.input_size)}


@dataclass(frozen=True)
class Artifact:
    """An exported model: the artifact path, its manifest path and the manifest's content."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def size_bytes(self) -> int:
        return int(self.manifest.get("size_bytes", 0))


def parse_hw(text: str, what: str = "--input-size") -> tuple[int, int]:
    """``"180x320"`` -> (180, 320) as (height, width); ``ConfigError`` naming ``what`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)[xX](\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ConfigError(None, f"{what} {text!r} must look like 180x320 (HxW, both positive)")
    return int(m.group(1)), int(m.group(2))


def parse_range(text: str, what: str = "--dynamic") -> tuple[int, int]:
    """``"32:512"`` -> (32, 512); ``ConfigError`` naming ``what`` otherwise."""
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if not m:
        raise ConfigError(None, f"{what} {text!r} must look like 32:512 (MIN:MAX)")
    return int(m.group(1)), int(m.group(2))
