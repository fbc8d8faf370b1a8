"""Numpy / torch kernels for the Core ML MIL ops, used by the reference executor in ``edge_sr.convert.coreml_mil``.

Each kernel takes ``(a, op)``: ``a`` maps the op's input names to numpy values (variadic inputs such as
``concat.values`` arrive as lists), ``op`` is the MIL operation (for the number of outputs). A kernel returns one
array or a tuple of arrays; the executor then rounds every result to the dtype the program declares for it.

Precision: float16 inputs are widened to float32 inside a kernel and the result is rounded once to float16 by
the executor, so every fp16 op stores fp16 values exactly as the program states (weights, activations and
intermediate tensors), while the arithmetic inside one op accumulates in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Kernel = Callable[[dict[str, Any], Any], Any]
OPS: dict[str, Kernel] = {}


def _reg(*names: str) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        for n in names:
            OPS[n] = fn
        return fn

    return deco


def f32(x: Any) -> np.ndarray:
    """Widen fp16 to fp32 for computing; leave fp32 / fp64 / ints as they are."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _torch(x: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(f32(x), dtype=np.float32))


def _axes(v: Any, rank: int) -> tuple[int, ...] | None:
    if v is None:
        return None
    return tuple(int(i) % rank for i in np.atleast_1d(v))


# --- elementwise binary: numpy broadcasting matches MIL's ---------------------------------------------------
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(fn: Callable[..., Any]) -> Callable[[dict[str, Any], Any], Any]:
    return lambda a, op: fn(f32(a["x"]), f32(a["y"]))


for _name, _fn in _BINARY.items():
    OPS[_name] = _binary(_fn)


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.erf(_torch(x)).numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free logistic


# --- elementwise unary --------------------------------------------------------------------------------------
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "exp": np.exp,
    "exp2": np.exp2,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sign": np.sign,
    "square": np.square,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "erf": _erf,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "logical_not": np.logical_not,
    "identity": lambda x: x,
}


def _unary(fn: Callable[..., Any]) -> Callable[[dict[str, Any], Any], Any]:
    return lambda a, op: fn(f32(a["x"]))


for _name, _fn1 in _UNARY.items():
    OPS[_name] = _unary(_fn1)


@_reg("log")
def _log(a, op):
    return np.log(f32(a["x"]) + a.get("epsilon", 0.0))


@_reg("rsqrt")
def _rsqrt(a, op):
    return 1.0 / np.sqrt(f32(a["x"]) + a.get("epsilon", 1e-12))


@_reg("inverse")
def _inverse(a, op):
    return 1.0 / (f32(a["x"]) + a.get("epsilon", 1e-4))


@_reg("clip")
def _clip(a, op):
    return np.minimum(np.maximum(f32(a["x"]), a["alpha"]), a["beta"])


@_reg("threshold")
def _threshold(a, op):
    return np.maximum(f32(a["x"]), a["alpha"])


# --- activations with parameters ----------------------------------------------------------------------------
@_reg("leaky_relu")
def _leaky_relu(a, op):
    x = f32(a["x"])
    return np.where(x >= 0, x, x * a.get("alpha", 0.01))


@_reg("prelu")
def _prelu(a, op):
    # alpha: (C,) per channel, channel axis 1 of a (N, C, *D) tensor.
    x = f32(a["x"])
    alpha = f32(a["alpha"]).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * alpha)


@_reg("elu")
def _elu(a, op):
    x = f32(a["x"])
    return np.where(x > 0, x, a.get("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))


@_reg("thresholded_relu")
def _thresholded_relu(a, op):
    x = f32(a["x"])
    return np.where(x >= a.get("alpha", 1.0), x, 0)


@_reg("clamped_relu")
def _clamped_relu(a, op):
    x = f32(a["x"])
    return np.minimum(np.where(x >= 0, x, x * a.get("alpha", 0.0)), a.get("beta", 6.0))


@_reg("linear_activation")
def _linear_activation(a, op):
    return a.get("alpha", 1.0) * f32(a["x"]) + a.get("beta", 0.0)


@_reg("scaled_tanh")
def _scaled_tanh(a, op):
    return a.get("alpha", 1.0) * np.tanh(a.get("beta", 1.0) * f32(a["x"]))


@_reg("sigmoid_hard")
def _sigmoid_hard(a, op):
    return np.clip(a.get("alpha", 0.2) * f32(a["x"]) + a.get("beta", 0.5), 0, 1)


@_reg("softplus_parametric")
def _softplus_parametric(a, op):
    x = f32(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    alpha, beta = f32(a["alpha"]).reshape(shape), f32(a["beta"]).reshape(shape)
    return alpha * np.logaddexp(0, beta * x)


@_reg("gelu")
def _gelu(a, op):
    x, mode = f32(a["x"]), str(a.get("mode", "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


@_reg("softmax")
def _softmax(a, op):
    x = f32(a["x"])
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- reductions ---------------------------------------------------------------------------------------------
def _reduce(fn: Callable[..., np.ndarray]) -> Kernel:
    def k(a, op):
        x = f32(a["x"])
        return fn(x, axis=_axes(a.get("axes"), x.ndim), keepdims=bool(a.get("keep_dims", False)))

    return k


OPS["reduce_mean"] = _reduce(np.mean)
OPS["reduce_sum"] = _reduce(np.sum)
OPS["reduce_max"] = _reduce(np.max)
OPS["reduce_min"] = _reduce(np.min)
OPS["reduce_prod"] = _reduce(np.prod)
OPS["reduce_l1_norm"] = _reduce(lambda x, **k: np.sum(np.abs(x), **k))
OPS["reduce_l2_norm"] = _reduce(lambda x, **k: np.sqrt(np.sum(x * x, **k)))
OPS["reduce_sum_square"] = _reduce(lambda x, **k: np.sum(x * x, **k))
OPS["reduce_log_sum"] = _reduce(lambda x, **k: np.log(np.sum(x, **k)))
OPS["reduce_log_sum_exp"] = _reduce(lambda x, **k: np.logaddexp.reduce(x, **k))


@_reg("reduce_argmax", "reduce_argmin")
def _reduce_arg(a, op):
    x, axis = f32(a["x"]), int(a.get("axis", -1))
    idx = (np.argmax if op.op_type == "reduce_argmax" else np.argmin)(x, axis=axis)
    return np.expand_dims(idx, axis) if a.get("keep_dims", False) else idx


# --- normalization and linear algebra -----------------------------------------------------------------------
@_reg("layer_norm")
def _layer_norm(a, op):
    x = f32(a["x"])
    axes = _axes(a.get("axes"), x.ndim) or tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5))
    # gamma / beta have the shape of the normalized axes, which are trailing axes in every emitted program.
    if a.get("gamma") is not None:
        y = y * f32(a["gamma"])
    if a.get("beta") is not None:
        y = y + f32(a["beta"])
    return y


@_reg("batch_norm")
def _batch_norm(a, op):
    x = f32(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - f32(a["mean"]).reshape(shape)) / np.sqrt(
        f32(a["variance"]).reshape(shape) + a.get("epsilon", 1e-5)
    )
    if a.get("gamma") is not None:
        y = y * f32(a["gamma"]).reshape(shape)
    if a.get("beta") is not None:
        y = y + f32(a["beta"]).reshape(shape)
    return y


@_reg("instance_norm")
def _instance_norm(a, op):
    x = f32(a["x"])
    axes = tuple(range(2, x.ndim))  # (N, C, *D): statistics per sample and channel
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if a.get("gamma") is not None:
        y = y * f32(a["gamma"]).reshape(shape)
    if a.get("beta") is not None:
        y = y + f32(a["beta"]).reshape(shape)
    return y


@_reg("l2_norm")
def _l2_norm(a, op):
    x = f32(a["x"])
    axes = tuple(range(x.ndim - 3, x.ndim))  # the last three axes, batch-wise
    return x / np.sqrt(np.sum(x * x, axis=axes, keepdims=True) + a.get("epsilon", 1e-6))


@_reg("linear")
def _linear(a, op):
    # weight: (D_out, D_in); x: (*, D_in)
    y = np.matmul(f32(a["x"]), f32(a["weight"]).T)
    return y + f32(a["bias"]) if a.get("bias") is not None else y


@_reg("matmul")
def _matmul(a, op):
    x, y = f32(a["x"]), f32(a["y"])
    if a.get("transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@_reg("einsum")
def _einsum(a, op):
    return np.einsum(str(a["equation"]), *[f32(v) for v in a["values"]])


@_reg("scaled_dot_product_attention")
def _sdpa(a, op):
    q, k, v = f32(a["query"]), f32(a["key"]), f32(a["value"])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = a.get("attn_mask")
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + f32(mask)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v)


# --- convolution and pooling (torch kernels on fp32) --------------------------------------------------------
def _same_pads(sizes, kernel, strides, dilations, lower: bool) -> list[int]:
    """TF-style "same" padding: output = ceil(in / stride); the odd pixel goes after (or before if lower)."""
    pads: list[int] = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        pads += [big, small] if lower else [small, big]
    return pads


def _spatial_pads(a, x_spatial, kernel, strides, dilations) -> list[int]:
    """[before_0, after_0, before_1, after_1, ...] for the spatial axes."""
    pad_type = str(a.get("pad_type", "valid")).lower()
    nd = len(x_spatial)
    if pad_type == "valid":
        return [0] * 2 * nd
    if pad_type == "custom":
        return [int(p) for p in np.atleast_1d(a.get("pad", [0] * 2 * nd))]
    return _same_pads(x_spatial, kernel, strides, dilations, lower=pad_type == "same_lower")


def _torch_pad(pads: list[int]) -> list[int]:
    # ours: axis-major from the first spatial axis; torch.nn.functional.pad: from the last axis backwards.
    out: list[int] = []
    for i in reversed(range(len(pads) // 2)):
        out += [pads[2 * i], pads[2 * i + 1]]
    return out


@_reg("conv")
def _conv(a, op):
    import torch.nn.functional as F

    x, w = _torch(a["x"]), _torch(a["weight"])  # x: (N, C_in, *D), w: (C_out, C_in / groups, *K)
    nd = x.ndim - 2
    strides = [int(s) for s in np.atleast_1d(a.get("strides", [1] * nd))]
    dil = [int(d) for d in np.atleast_1d(a.get("dilations", [1] * nd))]
    pads = _spatial_pads(a, x.shape[2:], w.shape[2:], strides, dil)
    x = F.pad(x, _torch_pad(pads))
    b = _torch(a["bias"]) if a.get("bias") is not None else None
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, stride=strides, dilation=dil, groups=int(a.get("groups", 1))).numpy()


@_reg("conv_transpose")
def _conv_transpose(a, op):
    import torch.nn.functional as F

    x, w = _torch(a["x"]), _torch(a["weight"])  # w: (C_in, C_out / groups, *K), torch's layout
    nd = x.ndim - 2
    strides = [int(s) for s in np.atleast_1d(a.get("strides", [1] * nd))]
    dil = [int(d) for d in np.atleast_1d(a.get("dilations", [1] * nd))]
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    full = fn(x, w, None, stride=strides, dilation=dil, groups=int(a.get("groups", 1))).numpy()
    # full: (N, C_out, (D - 1)·s + (K - 1)·d + 1) per axis; padding crops it, output_shape fixes the size.
    pad_type = str(a.get("pad_type", "valid")).lower()
    out_shape = a.get("output_shape")
    targets = [int(v) for v in np.atleast_1d(out_shape)[2:]] if out_shape is not None else None
    index: list[slice] = [slice(None), slice(None)]
    extend: list[tuple[int, int]] = [(0, 0), (0, 0)]
    for i in range(nd):
        full_n = full.shape[2 + i]
        if pad_type == "custom":
            pads = [int(p) for p in np.atleast_1d(a.get("pad", [0] * 2 * nd))]
            before, target = pads[2 * i], full_n - pads[2 * i] - pads[2 * i + 1]
        elif pad_type == "same":
            target = x.shape[2 + i] * strides[i]
            before = max(full_n - target, 0) // 2
        else:
            before, target = 0, full_n
        if targets is not None:
            target = targets[i]
        stop = min(before + target, full_n)
        index.append(slice(before, stop))
        extend.append((0, before + target - stop))  # output_padding reaches past the full output
    y = np.pad(full[tuple(index)], extend)
    if a.get("bias") is not None:
        y = y + f32(a["bias"]).reshape((1, -1) + (1,) * nd)
    return y


@_reg("avg_pool", "max_pool", "l2_pool")
def _pool(a, op):
    import torch
    import torch.nn.functional as F

    x = _torch(a["x"])
    nd = x.ndim - 2
    k = [int(v) for v in np.atleast_1d(a["kernel_sizes"])]
    s = [int(v) for v in np.atleast_1d(a.get("strides", [1] * nd))]
    pads = _spatial_pads(a, x.shape[2:], k, s, [1] * nd)
    ceil = bool(a.get("ceil_mode", False))
    if op.op_type == "max_pool":
        x = F.pad(x, _torch_pad(pads), value=-math.inf)
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return fn(x, k, s, ceil_mode=ceil).numpy()
    avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    if op.op_type == "l2_pool":
        sq = F.pad(x * x, _torch_pad(pads))
        return torch.sqrt(avg(sq, k, s, ceil_mode=ceil, divisor_override=None) * float(np.prod(k))).numpy()
    summed = avg(F.pad(x, _torch_pad(pads)), k, s, ceil_mode=ceil) * float(np.prod(k))
    if a.get("exclude_padding_from_average", False):
        ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads))
        count = avg(ones, k, s, ceil_mode=ceil) * float(np.prod(k))
        return (summed / count).numpy()
    return (summed / float(np.prod(k))).numpy()


# --- resizing -----------------------------------------------------------------------------------------------
def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Sample positions in input pixel units for one axis (the sampling modes of MIL's resize_bilinear)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "UNALIGN_CORNERS":
        g = (i + 0.5) * n_in / n_out - 0.5
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:  # DEFAULT
        g = i * n_in / n_out
    return np.clip(g, 0, n_in - 1)


def _interp_axis(x: np.ndarray, axis: int, n_out: int, mode: str, nearest: bool) -> np.ndarray:
    n_in = x.shape[axis]
    g = _grid(n_in, n_out, mode)
    if nearest:
        # DEFAULT samples like torch's "nearest" (floor); the half-pixel modes round to the closest pixel.
        idx = np.floor(g) if mode == "DEFAULT" else np.floor(g + 0.5)
        return np.take(x, np.minimum(idx.astype(np.int64), n_in - 1), axis=axis)
    lo = np.floor(g).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    t = (g - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = n_out
    t = t.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - t) + np.take(x, hi, axis=axis) * t


def _resize2d(x: np.ndarray, h: int, w: int, mode: str, nearest: bool) -> np.ndarray:
    x = _interp_axis(f32(x), x.ndim - 2, h, mode, nearest)
    return _interp_axis(x, x.ndim - 1, w, mode, nearest)


@_reg("upsample_nearest_neighbor")
def _upsample_nearest(a, op):
    x = a["x"]
    h = int(math.floor(x.shape[-2] * float(a.get("scale_factor_height", 1))))
    w = int(math.floor(x.shape[-1] * float(a.get("scale_factor_width", 1))))
    return _resize2d(x, h, w, "DEFAULT", nearest=True)


@_reg("upsample_bilinear")
def _upsample_bilinear(a, op):
    x = a["x"]
    h = int(math.floor(x.shape[-2] * float(a.get("scale_factor_height", 1))))
    w = int(math.floor(x.shape[-1] * float(a.get("scale_factor_width", 1))))
    align = bool(a.get("align_corners", True))
    half = bool(a.get("half_pixel_centers", not align))
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    return _resize2d(x, h, w, mode, nearest=False)


@_reg("resize_bilinear")
def _resize_bilinear(a, op):
    h, w = int(a.get("target_size_height", 1)), int(a.get("target_size_width", 1))
    return _resize2d(a["x"], h, w, str(a.get("sampling_mode", "DEFAULT")), nearest=False)


@_reg("resize_nearest_neighbor")
def _resize_nearest(a, op):
    return _resize2d(a["x"], int(a["target_size_height"]), int(a["target_size_width"]), "DEFAULT", True)


@_reg("resize")
def _resize(a, op):
    x, shape, k = a["x"], [int(v) for v in np.atleast_1d(a["shape"])], int(a["resized_dims"])
    if k != 2:
        raise NotImplementedError("resize over other than the last two axes")
    # the last `k` entries of `shape` are the new sizes; 0 keeps the input's size
    h, w = (shape[-2] or x.shape[-2]), (shape[-1] or x.shape[-1])
    nearest = str(a.get("interpolation_mode", "LINEAR")) == "NEAREST_NEIGHBOR"
    return _resize2d(x, h, w, str(a.get("sampling_mode", "DEFAULT")), nearest)


# Core ML's padding modes as torch's grid_sample ones, per align_corners: Core ML's ``reflection`` excludes the
# edge (torch's reflection with align_corners=True), ``symmetric`` repeats it (torch's with align_corners=False)
_RESAMPLE_PADDING = {
    ("constant", True): "zeros",
    ("constant", False): "zeros",
    ("border", True): "border",
    ("border", False): "border",
    ("reflection", True): "reflection",
    ("symmetric", False): "reflection",
}


@_reg("resample")
def _resample(a, op):
    """``resample`` (what coremltools makes of ``grid_sample``): x (B, C, H, W) sampled at coordinates
    (B, H2, W2, 2) in (x, y) order, normalized to [-1, 1] (or [0, 1]), bilinear or nearest."""
    import torch.nn.functional as F

    align = bool(a.get("align_corners", False))
    pad = str(a.get("padding_mode", "constant"))
    mode = str(a.get("coordinates_mode", "normalized_minus_one_to_one"))
    if (pad, align) not in _RESAMPLE_PADDING or mode == "unnormalized":
        raise NotImplementedError(f"resample with padding {pad}, align_corners {align}, coordinates {mode}")
    x, grid = _torch(a["x"]), _torch(a["coordinates"])
    if mode == "normalized_zero_to_one":
        grid = grid * 2 - 1
    # a constant padding value v: sample x - v with zeros outside, add v back (bilinear weights sum to 1)
    value = float(a.get("padding_value", 0.0)) if pad == "constant" else 0.0
    y = F.grid_sample(
        x - value,
        grid,
        mode="nearest" if str(a.get("sampling_mode", "bilinear")) == "nearest" else "bilinear",
        padding_mode=_RESAMPLE_PADDING[pad, align],
        align_corners=align,
    )
    return (y + value).numpy()


# --- tensor layout ------------------------------------------------------------------------------------------
def _ints(v: Any) -> list[int]:
    return [int(i) for i in np.atleast_1d(v)]


@_reg("reshape")
def _reshape(a, op):
    x, shape = a["x"], _ints(a["shape"])
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]  # 0 copies the input's dim
    return x.reshape(shape)


@_reg("reshape_like")
def _reshape_like(a, op):
    x, out = a["x"], [0] * 0
    for ref, begin, end, last in zip(a["ref_tensors"], _ints(a["begins"]), _ints(a["ends"]), a["end_masks"]):
        out += list(ref.shape[begin:] if last else ref.shape[begin:end])
    return x.reshape(out)


OPS["transpose"] = lambda a, op: np.transpose(a["x"], _ints(a["perm"]))
OPS["expand_dims"] = lambda a, op: np.expand_dims(a["x"], tuple(_ints(a["axes"])))
OPS["squeeze"] = lambda a, op: (
    np.squeeze(a["x"], tuple(_ints(a["axes"]))) if a.get("axes") is not None else np.squeeze(a["x"])
)
OPS["tile"] = lambda a, op: np.tile(a["x"], _ints(a["reps"]))
OPS["reverse"] = lambda a, op: np.flip(a["x"], tuple(_ints(a["axes"])) if a.get("axes") is not None else None)
OPS["shape"] = lambda a, op: np.array(a["x"].shape, dtype=np.int32)
OPS["fill"] = lambda a, op: np.full(_ints(a["shape"]), a.get("value", 0.0))
OPS["fill_like"] = lambda a, op: np.full(a["ref_tensor"].shape, a.get("value", 0.0))
OPS["range_1d"] = lambda a, op: np.arange(a["start"], a["end"], a["step"])
OPS["select"] = lambda a, op: np.where(a["cond"], a["a"], a["b"])
OPS["stack"] = lambda a, op: np.stack(a["values"], axis=int(a["axis"]))
OPS["cumsum"] = lambda a, op: _cumsum(
    f32(a["x"]), int(a.get("axis", 0)), a.get("exclusive"), a.get("reverse")
)
OPS["flatten2d"] = lambda a, op: a["x"].reshape(int(np.prod(a["x"].shape[: int(a.get("axis", 1))])), -1)


def _cumsum(x: np.ndarray, axis: int, exclusive: Any, reverse: Any) -> np.ndarray:
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if exclusive:
        y = y - x
    return np.flip(y, axis) if reverse else y


@_reg("cast")
def _cast(a, op):
    return a["x"]  # the executor rounds to the declared output dtype (fp16 <-> fp32, int32, bool, ...)


@_reg("band_part")
def _band_part(a, op):
    x = a["x"]
    lower, upper = int(a.get("lower", -1)), int(a.get("upper", -1))
    m, n = x.shape[-2:]
    d = np.arange(n)[None, :] - np.arange(m)[:, None]  # column - row
    keep = np.ones((m, n), bool)
    if lower >= 0:
        keep &= -d <= lower
    if upper >= 0:
        keep &= d <= upper
    return np.where(keep, x, 0)


@_reg("concat")
def _concat(a, op):
    # scalars join as length-1 vectors: shape arithmetic under flexible shapes concatenates gathered dims
    values, axis = [np.atleast_1d(v) for v in a["values"]], int(a["axis"])
    if a.get("interleave", False):
        # out[..., i·n + k, ...] = values[k][..., i, ...]
        axis %= values[0].ndim
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@_reg("split")
def _split(a, op):
    x, axis = a["x"], int(a["axis"])
    if a.get("split_sizes") is not None:
        cuts = np.cumsum(_ints(a["split_sizes"]))[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, int(a["num_splits"]), axis=axis))


@_reg("slice_by_index")
def _slice_by_index(a, op):
    x = a["x"]
    r = x.ndim
    begin, end = _ints(a["begin"]), _ints(a["end"])
    stride = _ints(a.get("stride", [1] * r))
    bm = [bool(v) for v in np.atleast_1d(a.get("begin_mask", [False] * r))]
    em = [bool(v) for v in np.atleast_1d(a.get("end_mask", [False] * r))]
    sm = [bool(v) for v in np.atleast_1d(a.get("squeeze_mask", [False] * r))]
    index: list[Any] = []
    for i in range(r):
        if sm[i]:
            index.append(begin[i])
        else:
            index.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return x[tuple(index)]


@_reg("slice_by_size")
def _slice_by_size(a, op):
    x, begin, size = a["x"], _ints(a["begin"]), _ints(a["size"])
    return x[
        tuple(
            slice(b % n if b < 0 else b, None if s == -1 else (b % n) + s)
            for b, s, n in zip(begin, size, x.shape)
        )
    ]


@_reg("slice_update")
def _slice_update(a, op):
    x = np.array(a["x"], copy=True)
    r = x.ndim
    begin, end = _ints(a["begin"]), _ints(a["end"])
    stride = _ints(a.get("stride", [1] * r))
    bm = [bool(v) for v in np.atleast_1d(a.get("begin_mask", [False] * r))]
    em = [bool(v) for v in np.atleast_1d(a.get("end_mask", [False] * r))]
    sm = [bool(v) for v in np.atleast_1d(a.get("squeeze_mask", [False] * r))]
    index = tuple(
        begin[i] if sm[i] else slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i])
        for i in range(r)
    )
    x[index] = a["update"]
    return x


@_reg("crop")
def _crop(a, op):
    x, (top, bottom), (left, right) = a["x"], _ints(a["crop_height"]), _ints(a["crop_width"])
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


@_reg("pad")
def _pad(a, op):
    x, pad = a["x"], _ints(a["pad"])
    n = len(pad) // 2  # pads the last n axes: [before_0, after_0, before_1, after_1, ...]
    width = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, width, constant_values=a.get("constant_val", 0.0))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge", "symmetric": "symmetric"}[mode])


def _to_space(x: np.ndarray, b: int, crd: bool) -> np.ndarray:
    # (N, C·b², H, W) -> (N, C, H·b, W·b). CRD (pixel_shuffle): channel c·b² + i·b + j;
    # DCR (depth_to_space, TensorFlow's order): channel (i·b + j)·C + c.
    n, cbb, h, w = x.shape
    c = cbb // (b * b)
    y = x.reshape(n, c, b, b, h, w) if crd else x.reshape(n, b, b, c, h, w).transpose(0, 3, 1, 2, 4, 5)
    return y.transpose(0, 1, 4, 2, 5, 3).reshape(n, c, h * b, w * b)


def _to_depth(x: np.ndarray, b: int, crd: bool) -> np.ndarray:
    # (N, C, H·b, W·b) -> (N, C·b², H, W); the inverse of _to_space in the same channel order.
    n, c, hb, wb = x.shape
    h, w = hb // b, wb // b
    y = x.reshape(n, c, h, b, w, b).transpose(0, 1, 3, 5, 2, 4)  # (N, C, b_i, b_j, H, W)
    if not crd:
        y = y.transpose(0, 2, 3, 1, 4, 5)  # (N, b_i, b_j, C, H, W)
    return y.reshape(n, c * b * b, h, w)


OPS["pixel_shuffle"] = lambda a, op: _to_space(a["x"], int(a["upscale_factor"]), crd=True)
OPS["pixel_unshuffle"] = lambda a, op: _to_depth(a["x"], int(a["downscale_factor"]), crd=True)
OPS["depth_to_space"] = lambda a, op: _to_space(a["x"], int(a["block_size"]), crd=False)
OPS["space_to_depth"] = lambda a, op: _to_depth(a["x"], int(a["block_size"]), crd=False)


# --- gather / scatter ---------------------------------------------------------------------------------------
def _fix_index(idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + n, idx)


@_reg("gather")
def _gather(a, op):
    x, axis, batch = a["x"], int(a.get("axis", 0)), int(a.get("batch_dims", 0))
    axis %= x.ndim
    idx = _fix_index(a["indices"], x.shape[axis])
    if batch == 0:
        return np.take(x, idx, axis=axis)
    # batch_dims leading axes are shared by x and indices: gather per batch entry
    lead = x.shape[:batch]
    xs, ids = x.reshape((-1,) + x.shape[batch:]), idx.reshape((-1,) + idx.shape[batch:])
    out = np.stack([np.take(xi, ii, axis=axis - batch) for xi, ii in zip(xs, ids)])
    return out.reshape(lead + out.shape[1:])


@_reg("gather_along_axis")
def _gather_along_axis(a, op):
    x, axis = a["x"], int(a.get("axis", 0))
    return np.take_along_axis(x, _fix_index(a["indices"], x.shape[axis]), axis=axis)


@_reg("gather_nd")
def _gather_nd(a, op):
    x, idx, batch = a["x"], np.asarray(a["indices"]).astype(np.int64), int(a.get("batch_dims", 0))
    if batch:
        raise NotImplementedError("gather_nd with batch_dims")
    return x[tuple(np.moveaxis(idx, -1, 0))]


_SCATTER: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


@_reg("scatter")
def _scatter(a, op):
    data, axis, mode = np.array(a["data"], copy=True), int(a.get("axis", 0)), str(a.get("mode", "add"))
    axis %= data.ndim
    idx = _fix_index(a["indices"], data.shape[axis]).reshape(-1)
    upd = np.moveaxis(
        np.asarray(a["updates"]).reshape(data.shape[:axis] + (-1,) + data.shape[axis + 1 :]), axis, 0
    )
    moved = np.moveaxis(data, axis, 0)  # a view: writes land in `data`
    for k, i in enumerate(idx):  # sequential, so repeated indices accumulate like the hardware's reduction
        moved[i] = upd[k] if mode == "update" else _SCATTER[mode](moved[i], upd[k])
    return data


@_reg("scatter_along_axis")
def _scatter_along_axis(a, op):
    data, axis, mode = np.array(a["data"], copy=True), int(a.get("axis", 0)), str(a.get("mode", "add"))
    axis %= data.ndim
    idx = _fix_index(a["indices"], data.shape[axis])
    upd = np.asarray(a["updates"])
    for pos in np.ndindex(*idx.shape):
        tgt = pos[:axis] + (int(idx[pos]),) + pos[axis + 1 :]
        data[tgt] = upd[pos] if mode == "update" else _SCATTER[mode](data[tgt], upd[pos])
    return data


@_reg("scatter_nd")
def _scatter_nd(a, op):
    data, mode = np.array(a["data"], copy=True), str(a.get("mode", "add"))
    idx = np.asarray(a["indices"]).astype(np.int64)
    upd = np.asarray(a["updates"])
    for pos in np.ndindex(*idx.shape[:-1]):
        tgt = tuple(int(v) for v in idx[pos])
        data[tgt] = upd[pos] if mode == "update" else _SCATTER[mode](data[tgt], upd[pos])
    return data


@_reg("one_hot")
def _one_hot(a, op):
    idx, depth, axis = (
        np.asarray(a["indices"]).astype(np.int64),
        int(a["one_hot_vector_size"]),
        int(a.get("axis", -1)),
    )
    hot = np.eye(depth)[idx]
    out = np.where(hot > 0, a.get("on_value", 1), a.get("off_value", 0))
    return np.moveaxis(out, -1, axis)


# --- constexpr ops: compressed weights, decompressed here exactly as the runtime would at load time ---------
def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    # elements are packed from the least significant bit of byte 0 upwards
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8), bitorder="little")[: count * nbits]
    return (bits.reshape(count, nbits) << np.arange(nbits)).sum(axis=1)


def _expand_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # a (d0 / b0, d1 / b1, ...) block parameter repeated to the data's full shape
    for ax, (n, m) in enumerate(zip(shape, param.shape)):
        param = np.repeat(param, n // m, axis=ax)
    return param


def _along(v: Any, rank: int, axis: Any) -> np.ndarray:
    # a scale / zero point: a scalar, or a vector along `axis`
    v = np.asarray(v).astype(np.float32)
    if v.ndim == 1 and v.size > 1:
        shape = [1] * rank
        shape[int(axis if axis is not None else 0) % rank] = -1
        return v.reshape(shape)
    return v.reshape(()) if v.size == 1 else v


def _affine_to_float(q: Any, scale: Any, zero_point: Any, axis: Any) -> np.ndarray:
    # scale · (q - zero_point), scale / zero point scalars or vectors along `axis`
    q = np.asarray(q).astype(np.float32)
    zp = _along(zero_point, q.ndim, axis) if zero_point is not None else 0.0
    return (q - zp) * _along(scale, q.ndim, axis)


@_reg("constexpr_affine_dequantize")
def _affine_dequantize(a, op):
    # iOS16 weights
    return _affine_to_float(a["quantized_data"], a["scale"], a["zero_point"], a["axis"])


@_reg("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a, op):
    # iOS18: scale[block] · (data - offset[block]); blocks are data.shape / scale.shape
    data = np.asarray(a["data"]).astype(np.float32)
    if a.get("offset") is not None:
        data = data - _expand_blocks(np.asarray(a["offset"]).astype(np.float32), data.shape)
    return data * _expand_blocks(np.asarray(a["scale"]).astype(np.float32), data.shape)


@_reg("constexpr_sparse_blockwise_shift_scale")
def _sparse_blockwise_shift_scale(a, op):
    mask = np.asarray(a["data_mask"]).astype(bool)
    dense = np.zeros(mask.shape, np.float32)
    dense[mask] = np.asarray(a["nonzero_data"]).astype(np.float32)
    if a.get("offset") is not None:
        dense = dense - _expand_blocks(np.asarray(a["offset"]).astype(np.float32), mask.shape)
    dense = dense * _expand_blocks(np.asarray(a["scale"]).astype(np.float32), mask.shape)
    return mask.astype(np.uint8), dense[mask]


def _lut_dense(indices: np.ndarray, lut: np.ndarray, vector_axis: Any) -> np.ndarray:
    # iOS18 LUT: indices (d0, ..., dk-1); lut (g0, ..., gk-1, palettes, vector_size), one table per block.
    rank = indices.ndim
    vec = lut.shape[-1]
    table = lut
    for ax in range(rank):  # repeat each table over its block so every element owns a table
        table = np.repeat(table, indices.shape[ax] // lut.shape[ax], axis=ax)
    picked = np.take_along_axis(table, indices.astype(np.int64)[..., None, None], axis=rank)[..., 0, :]
    if vec == 1:
        return picked[..., 0]
    # each index expands to `vec` consecutive elements along vector_axis
    axis = int(vector_axis) % rank
    picked = np.moveaxis(picked, -1, axis + 1)  # (..., d_axis, vec, ...)
    shape = list(indices.shape)
    shape[axis] *= vec
    return picked.reshape(shape)


@_reg("constexpr_lut_to_dense")
def _lut_to_dense(a, op):
    lut, indices = np.asarray(a["lut"]), np.asarray(a["indices"])
    if a.get("shape") is not None:  # iOS16: flat LUT, indices packed into bytes
        shape = _ints(a["shape"])
        count = int(np.prod(shape))
        nbits = int(round(math.log2(lut.size)))
        flat = indices.reshape(-1) if indices.size == count else _unpack_bits(indices, nbits, count)
        return lut.reshape(-1)[flat.astype(np.int64)].reshape(shape)
    return _lut_dense(indices, lut, a.get("vector_axis"))


@_reg("constexpr_lut_to_sparse")
def _lut_to_sparse(a, op):
    mask = np.asarray(a["indices_mask"]).astype(bool)
    idx = np.zeros(mask.shape, np.int64)
    idx[mask] = np.asarray(a["indices_nonzero_data"]).astype(np.int64)
    lut = np.asarray(a["lut"])
    dense = _lut_dense(idx, lut, a.get("vector_axis"))
    if lut.shape[-1] > 1:
        mask = np.repeat(mask, lut.shape[-1], axis=int(a["vector_axis"]) % mask.ndim)
    return mask.astype(np.uint8), dense[mask]


@_reg("constexpr_sparse_to_dense")
def _sparse_to_dense(a, op):
    data = np.asarray(a["nonzero_data"])
    if a.get("shape") is not None:  # iOS16: flat bit mask packed into bytes
        shape = _ints(a["shape"])
        count = int(np.prod(shape))
        mask = np.asarray(a["mask"])
        bits = mask.reshape(-1) if mask.size == count else _unpack_bits(mask, 1, count)
        dense = np.zeros(count, data.dtype)
        dense[bits.astype(bool)] = data
        return dense.reshape(shape)
    mask = np.asarray(a["mask"]).astype(bool)  # iOS18: uint1 mask with the output's shape
    dense = np.zeros(mask.shape, data.dtype)
    dense[mask] = data
    return dense


OPS["constexpr_cast"] = lambda a, op: a["source_val"]


# --- activation quantization (W8A8 programs, iOS17+) -------------------------------------------------------
@_reg("quantize")
def _quantize(a, op):
    # round(x / scale) + zero_point, saturated to the output type (round half to even, as CoreML does)
    x = np.asarray(f32(a["input"]), dtype=np.float32)
    scale = _along(a["scale"], x.ndim, a.get("axis"))
    zp = _along(a["zero_point"], x.ndim, a.get("axis")) if a.get("zero_point") is not None else 0.0
    dtype = np.int8 if str(a["output_dtype"]) == "int8" else np.uint8
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


@_reg("dequantize")
def _dequantize(a, op):
    return _affine_to_float(a["input"], a["scale"], a.get("zero_point"), a.get("axis"))
