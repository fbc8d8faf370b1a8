"""CoreML target: an ML Program ``.mlpackage`` (iOS 16+ by default) from ``torch.export`` through coremltools.

Tensor I/O (float32 arrays; FP16 compute precision keeps float32 I/O) or image I/O (``ct.ImageType`` in
and out: RGB pixels 0-255, what an app feeds from a pixel buffer; the graph divides by 255 on the way in and
multiplies by 255 on the way out). Shapes fixed, enumerated (``ct.EnumeratedShapes``) or ranged
(``ct.RangeDim``). With flexible shapes the rank-6 ``reshape`` pixel-shuffle lowering is exported in its
``rank4`` form, and the manifest says so: Core ML has no rank-6 tensors, and coremltools rewrites them into
lower ranks only when every size is known. The manifest fields also go into ``user_defined_metadata``.
Prediction needs macOS; elsewhere the runner executes the saved MIL program with ``edge_sr.runtime.mil``.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.onnx import dynamic_hw
from edge_sr.convert.pixelshuffle import without_rank6
from edge_sr.convert.spec import ExportSpec
from torch import Tensor, nn

from edge_sr.errors import ConversionError, RuntimeBackendError

DEBUG_MAP = "executorch_debug_handle_mapping.json"
SUFFIX = ".mlpackage"
FP16_BY_CAST = False  # compute_precision=FLOAT16 with float32 I/O
logger = logging.getLogger(__name__)


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what the CoreML export does not offer."""
    import coremltools as ct

    if not hasattr(ct.target, spec.deployment_target):
        raise ConversionError(
            None, f"unknown CoreML deployment target {spec.deployment_target!r} (e.g. iOS16, iOS17)"
        )
    if spec.io == "image" and spec.layout != "NCHW":
        raise ConversionError(None, "coreml image I/O takes pixel buffers; use layout NCHW with io='image'")


class _ImageOut(nn.Module):
    """[0, 1] model output -> 0-255 pixel values for an image output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) * 255.0).clamp(0.0, 255.0)


def _input_shape(spec: ExportSpec, example: Tensor) -> Any:
    import coremltools as ct

    n, a, b, c = example.shape
    if spec.dynamic is not None:
        lo, hi = spec.dynamic
        h, w = spec.example_size
        hdim, wdim = ct.RangeDim(lo, hi, default=h), ct.RangeDim(lo, hi, default=w)
        return ct.Shape((n, hdim, wdim, c) if spec.layout == "NHWC" else (n, a, hdim, wdim))
    if spec.sizes:
        shapes = [(n, h, w, c) if spec.layout == "NHWC" else (n, a, h, w) for h, w in spec.sizes]
        return ct.EnumeratedShapes(shapes=shapes, default=shapes[0])
    return tuple(example.shape)


def _dynamic(spec: ExportSpec) -> tuple[dict[int, Any], ...] | None:
    """Dynamic H / W for ranged shapes, and for enumerated ones (their bounding range), else None."""
    if spec.sizes and len(set(spec.sizes)) > 1:
        hs, ws = [h for h, _ in spec.sizes], [w for _, w in spec.sizes]
        dims: dict[int, Any] = {}
        axes = (1, 2) if spec.layout == "NHWC" else (2, 3)
        # each varying axis gets a Dim covering the enumerated values
        if len(set(hs)) > 1:
            dims[axes[0]] = torch.export.Dim("height", min=min(hs), max=max(hs))
        if len(set(ws)) > 1:
            dims[axes[1]] = torch.export.Dim("width", min=min(ws), max=max(ws))
        return (dims,)
    return dynamic_hw(spec)


def write(
    model: nn.Module,
    example: Tensor,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Convert ``model`` to an ``.mlpackage`` at ``path``; returns the manifest's I/O entries."""
    import coremltools as ct

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    image = spec.io == "image"
    dynamic = _dynamic(spec)
    info: dict[str, Any] = {}
    if dynamic is not None:
        # symbolic H / W: coremltools cannot bring a rank-6 reshape down to Core ML's rank 5
        model, n = without_rank6(model)
        if n:
            logger.info("coreml: %d rank-6 pixel shuffle(s) lowered as rank4 for flexible shapes", n)
            info["pixel_shuffle"] = "rank4"
            metadata = {**metadata, "edge_sr.pixel_shuffle": "rank4"}
    net = _ImageOut(model).eval() if image else model
    ep = torch.export.export(net, (example,), dynamic_shapes=dynamic).run_decompositions({})
    shape = _input_shape(spec, example)
    if image:
        inputs = [ct.ImageType(name="input", shape=shape, scale=1.0 / 255.0, color_layout=ct.colorlayout.RGB)]
        outputs = [ct.ImageType(name="output", color_layout=ct.colorlayout.RGB)]
    else:
        inputs = [ct.TensorType(name="input", shape=shape, dtype=np.float32)]
        outputs = [ct.TensorType(name="output", dtype=np.float32)]
    precision = ct.precision.FLOAT16 if spec.precision == "fp16" else ct.precision.FLOAT32
    mlmodel = ct.convert(
        ep,
        inputs=inputs,
        outputs=outputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, spec.deployment_target),
        compute_precision=precision,
        skip_model_load=True,
    )
    transform = options.get("transform")  # e.g. coremltools.optimize weight quantization
    if transform is not None:
        mlmodel = transform(mlmodel)
    mlmodel.short_description = f"edge-sr {metadata.get('edge_sr.arch')} x{metadata.get('edge_sr.scale')}"
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.save(os.fspath(path))
    # coremltools adds ExecuTorch's op-to-debug-handle map for programs from torch.export (30 KB on a small
    # SR net, larger than its weights); the package manifest does not list it and CoreML never reads it
    (Path(path) / DEBUG_MAP).unlink(missing_ok=True)
    ops = sorted(
        {op.op_type for f in mlmodel._mil_program.functions.values() for op in f.operations} - {"const"}
    )
    vr = [0.0, 255.0] if image else [0.0, 1.0]
    io_dtype = "image" if image else "float32"
    return {
        **info,
        "inputs": [{"name": "input", "dtype": io_dtype, "layout": spec.layout, "value_range": vr}],
        "outputs": [{"name": "output", "dtype": io_dtype, "layout": spec.layout, "value_range": vr}],
        "target_info": {"deployment_target": spec.deployment_target, "ops": ops},
    }


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``user_defined_metadata`` of a saved ``.mlpackage`` (read from its spec; no prediction needed)."""
    import coremltools as ct

    spec = ct.utils.load_spec(os.fspath(path))
    return dict(spec.description.metadata.userDefined)


def can_predict() -> bool:
    """CoreML prediction runs on macOS only."""
    return platform.system() == "Darwin"


class Runner:
    """CoreML prediction on macOS, the MIL reference executor elsewhere.

    ``forward`` takes (1, 3, h, w) float32 in the model's layout; for image I/O the values are 0-255 pixels.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RuntimeBackendError(path, "not an .mlpackage folder")
        if can_predict():
            import coremltools as ct

            self.model: Any = ct.models.MLModel(os.fspath(path))
            desc = self.model.get_spec().description
            self.input_names = [d.name for d in desc.input]
            self.output_names = [d.name for d in desc.output]
            self._image = desc.input[0].type.WhichOneof("Type") == "imageType"
            self.mil = None
        else:
            try:
                from edge_sr.runtime.mil import MILRunner
            except ImportError:
                raise RuntimeBackendError(
                    path, "CoreML prediction needs macOS and no MIL reference executor is installed"
                ) from None
            self.mil = MILRunner(path)
            self.input_names = list(self.mil.input_names)
            self.output_names = list(self.mil.output_names)

    def forward(self, x: np.ndarray) -> np.ndarray:
        name = self.input_names[0]
        if self.mil is not None:
            out = self.mil.run({name: x})[self.output_names[0]]
            return np.asarray(out)
        feed: Any = x
        if self._image:
            from PIL import Image

            feed = Image.fromarray(np.clip(np.round(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8))
        out = self.model.predict({name: feed})[self.output_names[0]]
        if not isinstance(out, np.ndarray):  # an image output
            out = np.asarray(out, dtype=np.float32).transpose(2, 0, 1)[None]
        return np.asarray(out)
