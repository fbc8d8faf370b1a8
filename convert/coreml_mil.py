"""Reference execution of saved Core ML programs off macOS.

coremltools converts and saves ``.mlpackage`` files on any OS but predicts only on macOS. To check an
artifact's numerics elsewhere we read the saved file back into its MIL program (coremltools' milproto
frontend) and run that program op by op with the numpy / torch kernels of ``edge_sr.convert.coreml_mil_ops``:

    runner = MILRunner("model.mlpackage")
    out = runner.run({"x": lr})["output"]        # lr: (1, 3, H, W) float32 in [0, 1]

Every value keeps the dtype the program declares, so an FP16 program computes on float16 tensors and its
rounding error shows. Image inputs take pixel values in [0, 255] in RGB order, (H, W, 3), (H, W) for gray, or
already (1, C, H, W); they are rounded to 8-bit like a pixel buffer and reordered to the model's channel
order (BGR models get BGR); the scale and bias that conversion recorded are ops of the program itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edge_sr.convert.coreml_mil_ops import OPS

from edge_sr.errors import InputError, RuntimeBackendError

log = logging.getLogger(__name__)

_NP_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "int16": np.int16,
    "uint16": np.uint16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int4": np.int8,
    "uint4": np.uint8,
    "uint2": np.uint8,
    "uint1": np.uint8,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class MILInputSpec:
    """One program input as the artifact declares it.

    Attributes:
        name: feed name.
        shape: the default shape, (N, C, H, W) for images.
        dtype: element type the program computes the input in ("fp32", "fp16", ...).
        is_image: whether the model takes a pixel buffer (``ct.ImageType``).
        color_layout: "RGB", "BGR", "GRAYSCALE" or "GRAYSCALE_FLOAT16" for images, else None.
        scale: the image preprocessing scale recorded in the program (1.0 when none).
        bias: per-channel image preprocessing bias (zeros when none), in the model's channel order.
        enumerated_shapes: the allowed shapes when the input has enumerated shapes, else ().
        shape_range: (lower, upper) per axis for ranged shapes (upper -1 means unbounded), else None.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    is_image: bool = False
    color_layout: str | None = None
    scale: float = 1.0
    bias: tuple[float, ...] = ()
    enumerated_shapes: tuple[tuple[int, ...], ...] = ()
    shape_range: tuple[tuple[int, int], ...] | None = field(default=None)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a feed of this (program-layout) shape is one the artifact allows."""
        if self.enumerated_shapes:
            return tuple(shape) in self.enumerated_shapes
        if self.shape_range is not None:
            return len(shape) == len(self.shape_range) and all(
                lo <= n and (hi < 0 or n <= hi) for n, (lo, hi) in zip(shape, self.shape_range)
            )
        return tuple(shape) == tuple(self.shape)


def supported_ops() -> list[str]:
    """The MIL op types the reference executor can run (``const`` included)."""
    return sorted([*OPS, "const"])


def _quiet_coremltools() -> Any:
    # coremltools logs version warnings and missing native libraries on import; they say nothing about us.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    return ct


def _load_spec(path: Path) -> tuple[Any, str | None]:
    """The protobuf spec and the weights folder of an .mlpackage (or a weight-free .mlmodel)."""
    ct = _quiet_coremltools()
    if not path.exists():
        raise InputError(path, "no such Core ML model; pass an .mlpackage folder")
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as e:  # protobuf / manifest errors come in many types
        raise RuntimeBackendError(path, f"cannot read the Core ML model ({type(e).__name__}: {e})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        kind = spec.WhichOneof("Type")
        raise RuntimeBackendError(
            path, f"is a Core ML '{kind}' model; the reference executor runs ML Programs only"
        )
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    return spec, (str(weights) if weights.is_dir() else None)


def load_program(path: str | os.PathLike[str]) -> Any:
    """Load a saved ML Program back into a coremltools MIL ``Program``.

    Raises:
        InputError: the path does not exist.
        RuntimeBackendError: the file is not a readable ML Program.
    """
    path = Path(path)
    spec, weights = _load_spec(path)
    return _program_from_spec(path, spec, weights)


def _program_from_spec(path: Path, spec: Any, weights: str | None) -> Any:
    _quiet_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        return load(spec, specification_version=spec.specificationVersion, file_weights_dir=weights)
    except Exception as e:
        raise RuntimeBackendError(path, f"cannot load the ML Program ({type(e).__name__}: {e})") from None


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def _np_dtype(var: Any) -> Any:
    return _NP_DTYPES.get(_dtype_name(var))


def _image_preprocessing(func: Any, name: str) -> tuple[float, tuple[float, ...]]:
    """Scale and bias of an image input: the ``mul`` / ``add`` ops conversion put right after it."""
    scale, bias = 1.0, ()
    var = func.inputs[name]
    for op in var.child_ops:
        if op.op_type == "cast":  # fp16 image inputs are cast before preprocessing in some programs
            var = op.outputs[0]
            break
    for op in list(var.child_ops):
        if op.op_type == "mul" and op.y.val is not None and op.name.endswith("__scaled__"):
            scale = float(np.asarray(op.y.val).reshape(-1)[0])
            var = op.outputs[0]
            break
    for op in list(var.child_ops):
        if op.op_type == "add" and op.y.val is not None and op.name.endswith("__biased__"):
            bias = tuple(float(b) for b in np.asarray(op.y.val).reshape(-1))  # type: ignore[assignment]
    return scale, bias


def _color_layout(color_space: int) -> str:
    from coremltools.proto import FeatureTypes_pb2 as ft

    return ft.ImageFeatureType.ColorSpace.Name(color_space)


def _input_spec(func: Any, desc: Any) -> MILInputSpec:
    var = func.inputs[desc.name]
    shape = tuple(int(n) if isinstance(n, (int, np.integer)) else -1 for n in var.shape)
    kind = desc.type.WhichOneof("Type")
    if kind == "imageType":
        img = desc.type.imageType
        layout = _color_layout(img.colorSpace)
        scale, bias = _image_preprocessing(func, desc.name)
        channels = 1 if layout.startswith("GRAYSCALE") else 3
        enum = tuple((1, channels, int(s.height), int(s.width)) for s in img.enumeratedSizes.sizes)
        ranged = None
        if img.WhichOneof("SizeFlexibility") == "imageSizeRange":
            r = img.imageSizeRange
            ranged = (
                (1, 1),
                (channels, channels),
                (int(r.heightRange.lowerBound), int(r.heightRange.upperBound)),
                (int(r.widthRange.lowerBound), int(r.widthRange.upperBound)),
            )
        fixed = (1, channels, int(img.height), int(img.width))
        return MILInputSpec(
            desc.name, fixed, _dtype_name(var), True, layout, scale, bias or (0.0,) * channels, enum, ranged
        )
    arr = desc.type.multiArrayType
    dims: tuple[int, ...] = tuple(int(n) for n in arr.shape) or shape
    shapes: tuple[tuple[int, ...], ...] = tuple(
        tuple(int(n) for n in s.shape) for s in arr.enumeratedShapes.shapes
    )
    bounds: tuple[tuple[int, int], ...] | None = None
    if arr.WhichOneof("ShapeFlexibility") == "shapeRange":
        bounds = tuple((int(r.lowerBound), int(r.upperBound)) for r in arr.shapeRange.sizeRanges)
    return MILInputSpec(desc.name, dims, _dtype_name(var), enumerated_shapes=shapes, shape_range=bounds)  # type: ignore[arg-type]


class MILRunner:
    """Runs a saved Core ML ML Program with numpy / torch kernels.

    Args:
        path: an ``.mlpackage`` folder (or an ``.mlmodel`` ML Program without external weights).

    Attributes:
        input_names / output_names: feed and result names, in the model's order.
        input_specs: name -> ``MILInputSpec`` (shape, dtype, image preprocessing, flexible shapes).
        image_outputs: output name -> color layout, for the outputs declared as images.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        spec, weights = _load_spec(self.path)
        self.program = _program_from_spec(self.path, spec, weights)
        fname = spec.description.defaultFunctionName or "main"
        if fname not in self.program.functions:
            raise RuntimeBackendError(self.path, f"the program has no function '{fname}'")
        self.function = self.program.functions[fname]
        self.input_names = [d.name for d in spec.description.input]
        self.output_names = [d.name for d in spec.description.output]
        self.input_specs = {d.name: _input_spec(self.function, d) for d in spec.description.input}
        # image outputs: name -> color layout; CoreML hands them back as 8-bit pixel buffers
        self.image_outputs = {
            d.name: _color_layout(d.type.imageType.colorSpace)
            for d in spec.description.output
            if d.type.WhichOneof("Type") == "imageType"
        }
        self._check_supported()

    def _check_supported(self) -> None:
        # fail at load time, naming the op, rather than half way through a run
        for op in self.function.operations:
            if op.op_type != "const" and (op.op_type not in OPS or op.blocks):
                raise RuntimeBackendError(
                    self.path, f"CoreML op '{op.op_type}' is not supported by the reference executor"
                )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute the program once.

        Args:
            feeds: input name -> array. Tensors in the program's layout; images as described in the
                module docstring.

        Returns:
            Output name -> array in the dtype the program declares (float16 for FP16 I/O); image outputs
            as (1, C, H, W) float32 pixel values, rounded and clipped to [0, 255], in RGB order.

        Raises:
            InputError: a feed is missing, unknown, or of a shape the artifact does not allow.
            RuntimeBackendError: an op cannot be executed.
        """
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise InputError(
                self.path, f"feeds {unknown} are unknown and {missing} missing; inputs: {self.input_names}"
            )
        env: dict[str, Any] = {}
        for name in self.input_names:
            env[name] = self._prepare(self.input_specs[name], np.asarray(feeds[name]))
        for op in self.function.operations:
            self._execute(op, env)
        outputs = {name: env[var.name] for name, var in zip(self.output_names, self.function.outputs)}
        for name, layout in self.image_outputs.items():
            outputs[name] = _image_from_tensor(outputs[name], layout)
        return outputs

    def _prepare(self, spec: MILInputSpec, x: np.ndarray) -> np.ndarray:
        dtype = _NP_DTYPES[spec.dtype]
        if spec.is_image:
            x = _image_to_tensor(x, spec.color_layout or "RGB")
        if not spec.accepts(x.shape):
            allowed = spec.enumerated_shapes or spec.shape_range or spec.shape
            raise InputError(
                self.path, f"input '{spec.name}' has shape {tuple(x.shape)}; the model takes {allowed}"
            )
        return x.astype(dtype)

    def _execute(self, op: Any, env: dict[str, Any]) -> None:
        outs = op.outputs
        if op.op_type == "const":
            env[outs[0].name] = np.asarray(outs[0].val)
            return
        args: dict[str, Any] = {}
        for key, var in op.inputs.items():
            args[key] = [_value(v, env) for v in var] if isinstance(var, (list, tuple)) else _value(var, env)
        try:
            result = OPS[op.op_type](args, op)
        except NotImplementedError as e:
            raise RuntimeBackendError(
                self.path, f"CoreML op '{op.op_type}' ({e}) is not supported by the reference executor"
            ) from None
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(outs):
            raise RuntimeBackendError(
                self.path, f"op '{op.name}' gave {len(results)} outputs, expected {len(outs)}"
            )
        for var, value in zip(outs, results):
            dtype = _np_dtype(var)
            value = np.asarray(value)
            # round every result to its declared dtype: this is where fp16 programs lose precision
            env[var.name] = value.astype(dtype, copy=False) if dtype is not None else value


def _value(var: Any, env: dict[str, Any]) -> Any:
    if var.name in env:
        return env[var.name]
    if var.val is not None:  # consts folded into the op by the loader
        return var.val
    raise KeyError(var.name)


def _image_to_tensor(x: np.ndarray, layout: str) -> np.ndarray:
    """RGB pixels (H, W, 3) / (H, W) / (1, C, H, W) in [0, 255] -> (1, C, H, W) in the model's channel order."""
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = np.transpose(x, (2, 0, 1))[None]
    x = x.astype(np.float32)
    if layout.startswith("GRAYSCALE") and x.shape[1] == 3:
        # CoreML's own RGB -> gray conversion (ITU-R BT.601 luma)
        from edge_sr.data.io import BT601_LUMA

        x = (x * np.array(BT601_LUMA, np.float32).reshape(1, 3, 1, 1)).sum(axis=1, keepdims=True)
    if x.shape[1] == 4:  # drop alpha
        x = x[:, :3]
    if layout == "BGR":
        x = x[:, ::-1]
    if layout != "GRAYSCALE_FLOAT16":
        x = np.clip(np.round(x), 0, 255)  # an 8-bit pixel buffer
    return np.ascontiguousarray(x)


def _image_from_tensor(x: np.ndarray, layout: str) -> np.ndarray:
    """(1, C, H, W) program output -> (1, C, H, W) float32 pixel values as an 8-bit buffer holds them, RGB."""
    x = np.asarray(x, dtype=np.float32)
    if layout == "BGR":
        x = x[:, ::-1]
    if layout != "GRAYSCALE_FLOAT16":
        x = np.clip(np.round(x), 0, 255)
    return np.ascontiguousarray(x)
