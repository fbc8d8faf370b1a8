"""Run any edge-sr artifact: ``load(path) -> Runner``; ``Runner.run(image)``.

The kind comes from the file's suffix: an artifact of any target in ``edge_sr.convert.TARGETS`` opens with
that target's own runner (``.onnx`` onnxruntime, ``.tflite`` LiteRT, ``.pte`` ExecuTorch, ``.mlpackage``
CoreML on macOS / the MIL reference executor elsewhere, ``.pt2`` torch.export), a checkpoint
(``.safetensors`` / ``.pth``) runs in eager torch. The manifest
beside an artifact says how to feed it: layout (NCHW / NHWC), value range (0-1, or 0-255 pixels for image
I/O), dtype and int8 scale / zero point, and which input sizes it accepts; inputs of other sizes are run
tile by tile with overlap (``edge_sr.tiling``).

Colour: ``Runner.run(rgb)`` takes an RGB image for every artifact. A 3-colour artifact sees it as it is; a
1-colour (Y-channel) artifact, whose manifest's ``color`` entry says so, sees the Y of BT.601 as MATLAB's
``rgb2ycbcr`` computes it, its Cb / Cr are upscaled with MATLAB bicubic and ``ycbcr2rgb`` gives RGB back.
A gray (H, W) image goes straight into a 1-colour artifact. ``Runner.forward`` and NCHW batches with the
artifact's own channel count stay at the tensor level.

Video: the artifact of a video model's step (its manifest has a ``stream`` entry) and a video checkpoint
run frame by frame through ``Runner.stream() -> StreamRunner`` (``push(frame) -> sr``, the state carried
between calls and per tile: :mod:`edge_sr.runtime.stream`); ``Runner.step`` is one raw call of the step.
``run`` / ``forward`` refuse them (a step needs its state), and an image runner refuses ``stream()``.

Whole-clip and window video models (BasicVSR, IconVSR, BasicVSR++, EDVR): the artifact of a fixed window of
T frames (its manifest has a ``clip`` entry, ``edge_sr.convert.clip``) and a checkpoint of these families give
``Runner.clip_fn() -> ClipFn``, which ``edge_sr.runtime.clip.run_clip`` runs over clips of any length and
frame size (chunks of exactly T frames, tiles of exactly the artifact's size).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sr.errors import EdgeSRError, InputError, RuntimeBackendError
from edge_sr.models.stream import stream_spec
from edge_sr.runtime.backends import CHECKPOINT_SUFFIXES, TorchBackend, open_backend
from edge_sr.runtime.clip import ClipFn
from edge_sr.runtime.stream import StreamRunner, spec_from_manifest

__all__ = [
    "ClipFn",
    "Runner",
    "StreamRunner",
    "TorchBackend",
    "clip_agreement",
    "from_model",
    "load",
    "manifest_colors",
]

DEFAULT_OVERLAP = 8


class Runner:
    """One artifact (or model) ready to upscale images.

    Attributes:
        path: the artifact, ``kind``: its target (``onnx`` ...) or ``torch``, ``manifest``: its manifest
        (``{}`` for checkpoints), ``scale``: the upscaling factor, ``precision``, ``colors``: the channels
        the artifact takes (3 RGB, 1 Y: see the module docstring).
    """

    def __init__(
        self,
        backend: Any,
        *,
        kind: str,
        manifest: dict[str, Any],
        scale: int,
        path: Path | None,
        colors: int | None = None,
    ) -> None:
        self.backend = backend
        self.kind = kind
        self.manifest = manifest
        self.scale = int(scale)
        self.colors = int(colors or manifest_colors(manifest))
        self.path = path
        self.precision = manifest.get("precision", "fp32")
        self.layout = manifest.get("layout", "NCHW")
        self.image_io = manifest.get("io") == "image"
        self.input_shape = manifest.get("input_shape") or {"mode": "any"}
        self._in = (manifest.get("inputs") or [{}])[0]
        self._out = (manifest.get("outputs") or [{}])[0]
        model = getattr(backend, "model", None) if kind == "torch" else None
        self.stream_spec = (
            spec_from_manifest(manifest["stream"])
            if manifest.get("stream")
            else (stream_spec(model) if isinstance(model, torch.nn.Module) else None)
        )

    # ---- video: a step that carries its state
    def stream(
        self, *, tile: int | tuple[int, int] | None = None, overlap: int = DEFAULT_OVERLAP
    ) -> StreamRunner:
        """A :class:`StreamRunner` (``push(frame) -> sr``) over this video step; frames of a size the
        artifact does not take are tiled (``tile``, default its own size), one state per tile position."""
        if self.manifest.get("clip"):
            self._refuse_step()  # a whole-clip / window model: run_clip, not a stream
        if self.stream_spec is None:
            raise InputError(self.path, "an image model has no stream: upscale images with run(image)")
        return StreamRunner(self, self.stream_spec, tile=tile, overlap=overlap)

    def step(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of a step artifact: every input by name, NCHW float32 -> every output by name, NCHW
        float32 (layout, dtype and int8 scale / zero point per tensor from the manifest's ``stream``)."""
        entry = self.manifest.get("stream")
        if self.stream_spec is None or not entry:
            raise InputError(self.path, "not the artifact of a video step (no stream entry in its manifest)")
        tensors = entry["tensors"]
        want = sorted(t["name"] for t in tensors if t["io"] == "input")
        if sorted(feeds) != want:
            raise InputError(self.path, f"the step takes {', '.join(want)}, got {', '.join(sorted(feeds))}")
        enc = {}
        for t in (t for t in tensors if t["io"] == "input"):
            a = np.asarray(feeds[t["name"]], dtype=np.float32)
            nhwc = t["layout"] == "NHWC" and a.ndim == 4
            if nhwc:
                a = a.transpose(0, 2, 3, 1)
            if t.get("shape") is not None and list(a.shape) != t["shape"]:
                shown = _nchw(t["shape"]) if nhwc else t["shape"]
                raise InputError(
                    self.path,
                    f"step input {t['name']!r} has shape {_nchw(list(a.shape)) if nhwc else list(a.shape)}; "
                    f"the artifact takes {shown} (NCHW)",
                )
            enc[t["name"]] = _encode(np.ascontiguousarray(a), t, None)
        try:
            outs = self.backend.run(enc)
        except EdgeSRError:
            raise
        except Exception as e:  # each runtime raises its own types (a manifest that does not fit the file)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RuntimeBackendError(
                self.path, f"the {self.kind} runtime refused the step ({first})"
            ) from None
        got = {}
        for t in (t for t in tensors if t["io"] == "output"):
            y = _decode(np.asarray(outs[t["name"]]), t, None)
            got[t["name"]] = np.ascontiguousarray(
                y.transpose(0, 3, 1, 2) if t["layout"] == "NHWC" and y.ndim == 4 else y
            )
        return got

    def _refuse_step(self) -> None:
        if self.manifest.get("clip"):
            raise InputError(
                self.path,
                "a whole-clip / window video artifact takes windows of frames: "
                "run it with edge_sr.runtime.clip.run_clip(runner.clip_fn(), frames)",
            )
        if self.stream_spec is not None:
            raise InputError(
                self.path,
                "a video model's step needs its state: run it frame by frame with .stream().push(frame)",
            )

    # ---- video: a whole-clip / window model, a fixed window of T frames
    def clip_fn(self) -> ClipFn:
        """The :class:`~edge_sr.runtime.clip.ClipFn` of a whole-clip / window artifact (its manifest has a
        ``clip`` entry), ``frames`` and ``size`` fixed by its export: ``edge_sr.runtime.clip.run_clip`` cuts
        a clip of any length and frame size into windows of exactly that shape; an eager video model
        (a checkpoint, :func:`from_model`) gives ``edge_sr.runtime.clip.clip_fn`` of its module.

        Raises:
            InputError: not a whole-clip / window artifact or model.
        """
        from edge_sr.runtime.clip import clip_fn, is_clip_model

        entry = self.manifest.get("clip")
        model = getattr(self.backend, "model", None) if self.kind == "torch" else None
        if not entry:
            if model is not None and is_clip_model(model):
                return clip_fn(model)
            raise InputError(
                self.path, "not a whole-clip or window video artifact (no clip entry in its manifest)"
            )
        size = tuple(int(v) for v in self.input_shape["size"])
        t, kind = int(entry["frames"]), entry["kind"]
        return ClipFn(
            _ClipCall(self, t, size, nhwc=entry["layout"] == "NTHWC"),  # type: ignore[arg-type]
            kind,
            self.scale,
            t,
            t,
            multiple=int(entry["multiple"]),
            min_side=int(entry["min_side"]),
            size=size,  # type: ignore[arg-type]
            name=f"{self.manifest.get('arch') or 'the'} {self.kind} artifact",
        )

    # ---- one call at a size the artifact accepts: (B, C, h, w) float32 [0, 1] -> (B, C, h·s, w·s)
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run the artifact once on an NCHW float32 [0, 1] batch it accepts (no tiling); C = ``colors``."""
        self._refuse_step()
        if x.ndim != 4 or x.shape[1] != self.colors:
            raise InputError(
                self.path,
                f"expected an (N, {self.colors}, H, W) batch for this artifact, got shape {x.shape}",
            )
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
        """Upscale an (H, W, 3) RGB float [0, 1] image (returns (H·s, W·s, 3)) or an (N, C, H, W) batch.

        A 1-colour artifact upscales the Y of an RGB image and Cb / Cr by MATLAB bicubic (an RGB batch
        (N, 3, H, W) likewise), and takes an (H, W) gray image straight (returns (H·s, W·s)). A batch with
        the artifact's own channel count runs as it is. Inputs of a size the artifact does not take are
        tiled (``tile``, default the artifact's own size) with ``overlap`` pixels of context per inner side;
        uint8 images are scaled to [0, 1] first. Results are not clipped. A video step refuses (use
        :meth:`stream`).
        """
        self._refuse_step()
        img = np.asarray(image)
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        img = img.astype(np.float32, copy=False)
        if img.ndim == 2 and self.colors == 1:  # gray: straight in
            return self._apply(img[None, None], tile, overlap)[0, 0]
        if img.ndim == 3:
            if img.shape[-1] != 3:
                raise InputError(self.path, f"expected an (H, W, 3) image, got shape {img.shape}")
            if self.colors == 1:
                return self._run_ycbcr(img, tile, overlap)
            return self._apply(img.transpose(2, 0, 1)[None], tile, overlap)[0].transpose(1, 2, 0)
        if img.ndim == 4 and img.shape[1] == self.colors:
            return self._apply(img, tile, overlap)
        if img.ndim == 4 and img.shape[1] == 3:  # an RGB batch into a 1-colour artifact
            rgb = img.transpose(0, 2, 3, 1)
            return np.stack([self._run_ycbcr(im, tile, overlap) for im in rgb]).transpose(0, 3, 1, 2)
        want = "(H, W), (H, W, 3)" if self.colors == 1 else "(H, W, 3)"
        raise InputError(self.path, f"expected {want} or (N, {self.colors}, H, W), got shape {img.shape}")

    def _apply(self, x: np.ndarray, tile: int | tuple[int, int] | None, overlap: int) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, C, H·s, W·s): one call when the artifact takes the size, else tiles."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        h, w = x.shape[-2:]
        if tile is None and self.accepts(h, w):
            return self.forward(x)
        return np.concatenate([self._tiled(x[i : i + 1], tile, overlap) for i in range(x.shape[0])])

    def _run_ycbcr(self, rgb: np.ndarray, tile: int | tuple[int, int] | None, overlap: int) -> np.ndarray:
        """(H, W, 3) RGB -> (H·s, W·s, 3) RGB through a 1-colour artifact: Y by the artifact, Cb / Cr by
        MATLAB bicubic, BT.601 (MATLAB ``rgb2ycbcr`` / ``ycbcr2rgb``) both ways, float32."""
        from edge_sr.data.imresize import imresize
        from edge_sr.metrics import rgb_to_ycbcr, ycbcr_to_rgb

        ycc = rgb_to_ycbcr(rgb, peak=1.0)  # float64
        y = self._apply(ycc[None, None, :, :, 0], tile, overlap)[0, 0]
        cbcr = imresize(ycc[..., 1:], float(self.scale))
        return ycbcr_to_rgb(np.concatenate([y[..., None], cbcr], axis=-1), peak=1.0).astype(np.float32)

    def _tiled(self, x: np.ndarray, tile: int | tuple[int, int] | None, overlap: int) -> np.ndarray:
        from edge_sr.tiling import tiled_apply

        size = tile or self.tile_size()
        if size is None:
            raise RuntimeBackendError(self.path, "no tile size: pass tile=")
        exact = self.input_shape.get("mode") in ("fixed", "enumerated")

        def fn(t: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, h·s, w·s)
            return torch.from_numpy(self.forward(t.numpy()))

        y = tiled_apply(fn, torch.from_numpy(x), scale=self.scale, tile=size, overlap=overlap, exact=exact)
        return y.numpy()


class _ClipCall:
    """One call of a clip / window artifact on (T, h, w, 3) float32 frames: (T, h·s, w·s, 3) for a clip,
    (h·s, w·s, 3) (the centre frame) for a window; the artifact's layout and dtype from its manifest."""

    def __init__(self, runner: Runner, frames: int, size: tuple[int, int], *, nhwc: bool) -> None:
        self.runner, self.frames, self.size, self.nhwc = runner, frames, size, nhwc

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        r = self.runner
        want = (self.frames, *self.size, 3)
        if frames.shape != want:
            raise InputError(
                r.path, f"the artifact takes a window of shape {want} (T, h, w, 3), not {frames.shape}"
            )
        # (T, h, w, 3) -> (1, T, h, w, 3) NTHWC or (1, T, 3, h, w) NTCHW
        x = frames[None] if self.nhwc else frames.transpose(0, 3, 1, 2)[None]
        x = _encode(np.ascontiguousarray(x, dtype=np.float32), r._in, None)
        try:
            y = _decode(np.asarray(r.backend.forward(x)), r._out, None)[0]
        except EdgeSRError:
            raise
        except Exception as e:  # each runtime raises its own types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RuntimeBackendError(r.path, f"the {r.kind} runtime refused the window ({first})") from None
        if self.nhwc:
            return np.ascontiguousarray(y, dtype=np.float32)
        # clip (T, 3, H, W) -> (T, H, W, 3); window (3, H, W) -> (H, W, 3)
        return np.ascontiguousarray(np.moveaxis(y, -3, -1), dtype=np.float32)


def _nchw(shape: list[int]) -> list[int]:
    """An NHWC shape as NCHW."""
    return [shape[0], shape[3], shape[1], shape[2]]


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


def clip_agreement(runner: Runner, model: torch.nn.Module) -> dict[str, Any]:
    """One window of moving frames (``edge_sr.runtime.stream.moving_frames``: the artifact's T at its own
    size) through a whole-clip / window artifact and through its float model: the largest difference and the
    PSNR against float (peak 1), what ``edge-sr convert`` checks an exported window with."""
    from edge_sr.runtime.clip import clip_fn
    from edge_sr.runtime.stream import moving_frames

    fn = runner.clip_fn()
    if fn.size is None or fn.frames is None:
        raise InputError(runner.path, "not the artifact of a fixed window (no frames / size in its manifest)")
    x = np.stack(moving_frames(*fn.size, n=fn.frames))
    d = np.asarray(fn.fn(x), np.float64) - np.asarray(clip_fn(model).fn(x), np.float64)
    mse = float(np.mean(d**2))
    return {
        "frames": fn.frames,
        "size": list(fn.size),
        "max_abs_diff": float(np.abs(d).max()),
        "psnr_vs_float": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
    }


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
        scale, colors = _model_scale_colors(backend.model)
        return Runner(backend, kind="torch", manifest={}, scale=scale, path=p, colors=colors)
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
    """A runner over an eager model carrying its card (the float reference in ``verify``)."""
    scale, colors = _model_scale_colors(model)
    return Runner(TorchBackend(model), kind="torch", manifest={}, scale=scale, path=None, colors=colors)


def _model_scale_colors(model: torch.nn.Module) -> tuple[int, int]:
    from edge_sr.models import card_of  # ConfigError for a module without a model card

    card = card_of(model)
    return card.scale, card.colors


def manifest_colors(manifest: dict[str, Any]) -> int:
    """The colour channels of a (checked) manifest: its ``color`` entry, else ``args.colors``, else 3."""
    color = manifest.get("color")
    if isinstance(color, dict) and color.get("colors") in (1, 3):
        return int(color["colors"])
    args = manifest.get("args")
    if isinstance(args, dict) and args.get("colors") in (1, 3):
        return int(args["colors"])
    return 3
