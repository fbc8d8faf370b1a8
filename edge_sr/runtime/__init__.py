"""Run any edge-sr artifact: ``load(path) -> Runner``; ``Runner.run(image)``.

The kind comes from the file's suffix: an artifact of any target in ``edge_sr.convert.TARGETS`` opens with
that target's own runner (``.onnx`` onnxruntime, ``.tflite`` LiteRT, ``.pte`` ExecuTorch, ``.mlpackage``
CoreML on macOS / the MIL reference executor elsewhere, ``.pt2`` torch.export), a checkpoint
(``.safetensors`` / ``.pth``) runs in eager torch. The manifest
beside an artifact says how to feed it: layout (NCHW / NHWC), value range (0-1, or 0-255 pixels for image
I/O), dtype and int8 scale / zero point, and which input sizes it accepts; inputs of other sizes are run
tile by tile with overlap (``edge_sr.tiling``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sr.errors import InputError, RuntimeBackendError
from edge_sr.runtime.backends import CHECKPOINT_SUFFIXES, TorchBackend, open_backend

__all__ = ["Runner", "TorchBackend", "load", "from_model"]

DEFAULT_OVERLAP = 8


class Runner:
    """One artifact (or model) ready to upscale images.

    Attributes:
        path: the artifact, ``kind``: its target (``onnx`` ...) or ``torch``, ``manifest``: its manifest
        (``{}`` for checkpoints), ``scale``: the upscaling factor, ``precision``.
    """

    def __init__(
        self, backend: Any, *, kind: str, manifest: dict[str, Any], scale: int, path: Path | None
    ) -> None:
        self.backend = backend
        self.kind = kind
        self.manifest = manifest
        self.scale = int(scale)
        self.path = path
        self.precision = manifest.get("precision", "fp32")
        self.layout = manifest.get("layout", "NCHW")
        self.image_io = manifest.get("io") == "image"
        self.input_shape = manifest.get("input_shape") or {"mode": "any"}
        self._in = (manifest.get("inputs") or [{}])[0]
        self._out = (manifest.get("outputs") or [{}])[0]

    # ---- one call at a size the artifact accepts: (B, 3, h, w) float32 [0, 1] -> (B, 3, h·s, w·s)
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the artifact once on an NCHW float32 [0, 1] batch it accepts (no tiling)."""
        outs = [self._forward1(x[i : i + 1]) for i in range(x.shape[0])]
        return np.concatenate(outs, axis=0)

    def _forward1(self, x: np.ndarray) -> np.ndarray:
        a = x.astype(np.float32)
        if self.layout == "NHWC":
            a = a.transpose(0, 2, 3, 1)
        if self.image_io:
            a = a * 255.0
        a = _encode(np.ascontiguousarray(a), self._in, getattr(self.backend, "input_quant", None))
        y = self.backend.forward(a)
        y = _decode(np.asarray(y), self._out, getattr(self.backend, "output_quant", None))
        if self.image_io:
            y = y / 255.0
        if self.layout == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y, dtype=np.float32)

    def accepts(self, h: int, w: int) -> bool:
        """Whether the artifact takes an (h, w) input directly."""
        mode = self.input_shape.get("mode", "any")
        if mode == "fixed":
            return [h, w] == list(self.input_shape["size"])
        if mode == "dynamic":
            return self.input_shape["min"] <= min(h, w) and max(h, w) <= self.input_shape["max"]
        if mode == "enumerated":
            return [h, w] in [list(s) for s in self.input_shape["sizes"]]
        return True

    def tile_size(self) -> tuple[int, int] | None:
        """The tile an input of another size is cut into (None: the artifact takes any size)."""
        mode = self.input_shape.get("mode", "any")
        if mode == "fixed":
            return tuple(self.input_shape["size"])  # type: ignore[return-value]
        if mode == "enumerated":
            return max((tuple(s) for s in self.input_shape["sizes"]), key=lambda s: s[0] * s[1])  # type: ignore[return-value]
        if mode == "dynamic":
            return (self.input_shape["max"], self.input_shape["max"])
        return None

    def run(
        self, image: np.ndarray, *, tile: int | tuple[int, int] | None = None, overlap: int = DEFAULT_OVERLAP
    ) -> np.ndarray:
        """Upscale an (H, W, 3) float [0, 1] image (returns (H·s, W·s, 3)) or an (N, 3, H, W) batch.

        Inputs of a size the artifact does not take are tiled (``tile``, default the artifact's own size)
        with ``overlap`` pixels of context per inner side; uint8 images are scaled to [0, 1] first.
        """
        img = np.asarray(image)
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        hwc = img.ndim == 3
        if hwc:
            if img.shape[-1] != 3:
                raise InputError(self.path, f"expected an (H, W, 3) image, got shape {img.shape}")
            x = img.transpose(2, 0, 1)[None]
        elif img.ndim == 4 and img.shape[1] == 3:
            x = img
        else:
            raise InputError(self.path, f"expected (H, W, 3) or (N, 3, H, W), got shape {img.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        h, w = x.shape[-2:]
        if tile is None and self.accepts(h, w):
            y = self.forward(x)
        else:
            y = np.concatenate([self._tiled(x[i : i + 1], tile, overlap) for i in range(x.shape[0])])
        return y[0].transpose(1, 2, 0) if hwc else y

    def _tiled(self, x: np.ndarray, tile: int | tuple[int, int] | None, overlap: int) -> np.ndarray:
        from edge_sr.tiling import tiled_apply

        size = tile or self.tile_size()
        if size is None:
            raise RuntimeBackendError(self.path, "no tile size: pass tile=")
        exact = self.input_shape.get("mode") in ("fixed", "enumerated")

        def fn(t: torch.Tensor) -> torch.Tensor:  # (B, 3, h, w) -> (B, 3, h·s, w·s)
            return torch.from_numpy(self.forward(t.numpy()))

        y = tiled_apply(fn, torch.from_numpy(x), scale=self.scale, tile=size, overlap=overlap, exact=exact)
        return y.numpy()


def _encode(a: np.ndarray, entry: dict[str, Any], artifact_quant: tuple[float, int] | None) -> np.ndarray:
    """float array -> the artifact's input dtype (int8 quantized with the manifest's scale / zero point)."""
    dtype = entry.get("dtype", "float32")
    if dtype in ("int8", "uint8"):
        q = entry.get("quant") or (
            {"scale": artifact_quant[0], "zero_point": artifact_quant[1]} if artifact_quant else None
        )
        if q is None:
            raise RuntimeBackendError(None, f"the {dtype} input has no scale / zero point in the manifest")
        info = np.iinfo(np.dtype(dtype))
        return np.clip(np.round(a / q["scale"]) + q["zero_point"], info.min, info.max).astype(dtype)
    if dtype == "float16":
        return a.astype(np.float16)
    return a.astype(np.float32)


def _decode(y: np.ndarray, entry: dict[str, Any], artifact_quant: tuple[float, int] | None) -> np.ndarray:
    """The artifact's output -> float32 (int8 dequantized with the manifest's scale / zero point)."""
    if y.dtype in (np.int8, np.uint8) and entry.get("dtype", "") != "image":
        q = entry.get("quant") or (
            {"scale": artifact_quant[0], "zero_point": artifact_quant[1]} if artifact_quant else None
        )
        if q is None:
            raise RuntimeBackendError(None, f"the {y.dtype} output has no scale / zero point in the manifest")
        return (y.astype(np.float32) - q["zero_point"]) * q["scale"]
    return y.astype(np.float32)


def load(
    path: str | os.PathLike[str],
    *,
    scale: int | None = None,
    threads: int | None = None,
    model: str | None = None,
    check_sha256: bool = True,
) -> Runner:
    """Open an artifact or checkpoint for inference.

    Args:
        path: an artifact of a registered target (with its manifest), ``.safetensors`` or ``.pth``.
        scale: the upscaling factor of an artifact without a manifest (else the manifest's); for a checkpoint,
            the scale it must have.
        threads: CPU threads for the backend (its default when None).
        model: the zoo architecture of a foreign checkpoint (``edge_sr.models.load_checkpoint``'s ``model``).
        check_sha256: refuse an artifact whose bytes differ from its manifest's ``artifact_sha256`` (hashing
            reads the whole file once).

    Raises:
        InputError: no such file, or an invalid manifest. RuntimeBackendError: unknown kind, an artifact
        modified after export, or the backend cannot open it. CheckpointError: an invalid checkpoint.
    """
    from edge_sr.convert import read_manifest, target_for_path
    from edge_sr.convert.manifest import check_artifact_sha256

    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such artifact")
    if p.suffix.lower() in CHECKPOINT_SUFFIXES:
        backend = open_backend(p, None, scale=scale, model=model)
        return Runner(backend, kind="torch", manifest={}, scale=_model_scale(backend.model), path=p)
    target = target_for_path(p)
    manifest = (read_manifest(p, required=False) or {}) if target is not None else {}
    if check_sha256:
        check_artifact_sha256(p, manifest)
    backend = open_backend(p, target, threads=threads)
    scale = manifest.get("scale") or scale
    if not scale:
        raise RuntimeBackendError(p, "no manifest beside the artifact, so its scale is unknown; pass scale=")
    return Runner(backend, kind=target or "unknown", manifest=manifest, scale=scale, path=p)


def from_model(model: torch.nn.Module) -> Runner:
    """A runner over an eager model (the float reference in ``verify``)."""
    return Runner(TorchBackend(model), kind="torch", manifest={}, scale=_model_scale(model), path=None)


def _model_scale(model: torch.nn.Module) -> int:
    from edge_sr.models import card_of  # ConfigError for a module without a model card

    return card_of(model).scale
