"""Reference execution of saved Core ML programs (edge_sr.convert.coreml_mil) against the PyTorch models."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from edge_sr.convert.coreml_mil import MILRunner, load_program, supported_ops
from tiny_args import FAMILY_TINY
from torch import nn

from edge_sr.errors import InputError, RuntimeBackendError
from edge_sr.models import create_model, get_entry, list_models
from edge_sr.reparam import reparameterize

ct = pytest.importorskip("coremltools")
logging.getLogger("coremltools").setLevel(logging.ERROR)

SIZE = 16  # LR side: every model here runs on (1, 3, 16, 16)
FP16_MIN_PSNR = 50.0

# Constructor arguments that shrink a model when its class has them (families are free to name theirs).
TINY = {
    "channels": 8,
    "blocks": 2,
    "num_feat": 8,
    "num_block": 2,
    "num_conv": 2,
    "feature_channels": 8,
    "n_feats": 8,
    "n_resblocks": 2,
    "num_blocks": 2,
    "num_layers": 2,
    "embed_dim": 8,
    "depths": [2],
    "d": 16,
    "s": 8,
    "m": 2,
}


def _psnr(a: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of ``a`` against ``ref`` with the reference's value range as peak (at least 1).

    Trained SR models output [0, 1] (peak 1); the untrained models here output values in the tens, and
    fp16's error is relative, so the peak follows the signal's range.
    """
    peak = max(1.0, float(ref.max() - ref.min()))
    mse = float(np.mean((a.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _convert(
    model: nn.Module, x: torch.Tensor, path: Path, precision: str = "fp32", inputs=None, target=None
):
    """Export with torch.export and save an .mlpackage the way the CoreML target does."""
    ep = torch.export.export(model.eval(), (x,)).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ct.convert(
            ep,
            minimum_deployment_target=target or ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            inputs=inputs or [ct.TensorType(name="x", shape=tuple(x.shape))],
        )
    ml.save(str(path))
    return ml


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    runner = MILRunner(path)
    feed = x.numpy().astype(np.float16 if runner.input_specs["x"].dtype == "fp16" else np.float32)
    (out,) = runner.run({"x": feed}).values()
    return out


def _tiny_edge_model(name: str) -> nn.Module:
    """The registered model with whatever TINY overrides its constructor takes (deploy form if fusable)."""
    default = create_model(name, scale=2)
    params = inspect.signature(type(default).__init__).parameters
    overrides = {k: v for k, v in TINY.items() if k in params}
    overrides = FAMILY_TINY.get(get_entry(name).family, overrides)
    try:
        model = create_model(name, scale=2, **overrides) if overrides else default
        with torch.no_grad():
            model.eval()(torch.rand(1, 3, SIZE, SIZE))
    except Exception:  # a family may reject a combination; its defaults are edge-sized anyway
        model = default
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # wake up zero-initialised tails so the output depends on every layer
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    if get_entry(name).reparameterizable:
        model = reparameterize(model)
    return model


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, SIZE, SIZE)


# --- every edge model of the zoo, FP32 and FP16 -------------------------------------------------------------
@pytest.mark.parametrize("name", list_models(kind="edge"))
def test_edge_zoo_fp32_and_fp16(name: str, lr: torch.Tensor, tmp_path: Path) -> None:
    model = _tiny_edge_model(name)
    with torch.no_grad():
        ref = model(lr).numpy()
    try:
        _convert(model, lr, tmp_path / "fp32.mlpackage", "fp32")
    except NotImplementedError as e:  # coremltools itself cannot convert it: nothing to execute
        pytest.xfail(f"coremltools cannot convert {name}: {e}")
    out32 = _run(tmp_path / "fp32.mlpackage", lr)
    assert out32.dtype == np.float32 and out32.shape == ref.shape
    assert np.abs(out32 - ref).max() <= 1e-4

    _convert(model, lr, tmp_path / "fp16.mlpackage", "fp16")
    out16 = _run(tmp_path / "fp16.mlpackage", lr)
    assert out16.dtype == np.float16  # FP16 programs compute and return float16
    diff = np.abs(out16.astype(np.float32) - ref).max()
    assert 0 < diff  # fp16 rounding must show: the program really ran in half precision
    assert _psnr(out16, ref) >= FP16_MIN_PSNR


# --- op coverage: small graphs that exercise what the edge families and tiny transformers emit ------------
class ConvZoo(nn.Module):
    """Grouped, dilated, strided and reflect-padded convs, a transposed conv, activations, pixel shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv2d(8, 8, (3, 5), padding="same")
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)  # FSRCNN-style deconvolution
        self.up_odd = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.prelu = nn.PReLU(8)
        self.tail = nn.Conv2d(4, 12, 1)

    def forward(self, x):
        y = self.prelu(self.head(x))  # (1, 8, 16, 16)
        y = F.leaky_relu(self.grouped(y), 0.1) + torch.sigmoid(self.dilated(y))
        y = torch.tanh(self.reflect(y)) * F.hardtanh(self.same(y), -0.5, 0.5) - F.relu6(y) / 4
        y = F.gelu(self.up(F.silu(self.down(y)))) + F.elu(y)  # stride 2 down and back up
        y = self.up_odd(torch.clamp(y, min=-1.0, max=2.0))  # (1, 4, 32, 32)
        y = F.pixel_unshuffle(y, 2)  # (1, 16, 16, 16)
        return F.pixel_shuffle(self.tail(y[:, :4]) + F.hardswish(y[:, 4:16].mean(1, keepdim=True)), 2)


class LayoutZoo(nn.Module):
    """Concat, split, slicing, padding, resizing, pooling, reductions and elementwise arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(4, 16)

    def forward(self, x):
        y = self.conv(x)  # (1, 8, 16, 16)
        a, b = torch.chunk(y, 2, dim=1)
        y = torch.cat([torch.maximum(a, b), torch.minimum(a, b), a - b, a / (b.abs() + 1)], dim=1)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean(dim=(2, 3))))))  # channel attention (RCAN)
        y = y * w[:, :, None, None]
        y = F.pad(y, (1, 2, 0, 1), mode="replicate")[:, :, :16, 1:17]
        y = F.pad(y, (2, 2, 2, 2), mode="reflect")[:, :, 2:-2, 2:-2] + F.pad(y[:, :, 1:, 1:], (0, 1, 0, 1))
        # stride spelled out: torch.export drops a default stride, and coremltools' max_pool2d converter
        # then rejects the node ("got 2 input(s), expected minimum 3", apple/coremltools#2415)
        p = F.max_pool2d(y, 2, stride=2) + F.avg_pool2d(y, 3, stride=2, padding=1)  # (1, 16, 8, 8)
        y = y + F.interpolate(p, scale_factor=2, mode="nearest")
        y = y + F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=False)
        y = y + F.interpolate(p, size=(16, 16), mode="bilinear", align_corners=True)
        y = y.reshape(1, 16, 256).permute(0, 2, 1).reshape(1, 16, 16, 16).permute(0, 3, 1, 2)
        y = y[:, ::2] * y.amax(dim=1, keepdim=True) + y[:, 1::2].sum(dim=1, keepdim=True).pow(2) * 1e-3
        up = F.interpolate(y[:, :3], scale_factor=2, mode="nearest") + F.interpolate(
            x, scale_factor=2, mode="bilinear", align_corners=False
        )
        return (
            up
            + torch.exp(-y[:, 3:6].abs()).repeat(1, 1, 2, 2)
            + torch.sqrt(y[:, 6:7] ** 2 + 1).repeat(1, 3, 2, 2)
        )


class TinyTransformer(nn.Module):
    """One pre-norm attention block over 4x4 patches (the shape of SwinIR-like edge transformers)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.heads = heads
        self.out = nn.Conv2d(dim, 3 * 16 * 4, 1)

    def forward(self, x):
        t = self.embed(x)  # (1, D, 4, 4)
        n, d, h, w = t.shape
        t = t.flatten(2).transpose(1, 2)  # (1, 16 tokens, D)
        qkv = self.qkv(self.norm1(t)).reshape(n, h * w, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (1, heads, tokens, D / heads)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        t = t + self.proj((att @ v).transpose(1, 2).reshape(n, h * w, d))
        t = t + self.mlp(self.norm2(t))
        y = self.out(t.transpose(1, 2).reshape(n, d, h, w))  # (1, 192, 4, 4)
        return F.pixel_shuffle(y, 8) + F.interpolate(x, scale_factor=2, mode="nearest")


GRAPHS = {"conv": ConvZoo, "layout": LayoutZoo, "transformer": TinyTransformer}


@pytest.fixture(scope="module", params=sorted(GRAPHS))
def graph(request, tmp_path_factory, lr):
    """(name, torch module, its output, {precision: saved package}) for one coverage graph."""
    torch.manual_seed(2)
    model = GRAPHS[request.param]().eval()
    with torch.no_grad():
        ref = model(lr).numpy()
    root = tmp_path_factory.mktemp(request.param)
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = root / f"{precision}.mlpackage"
        _convert(model, lr, paths[precision], precision)
    return request.param, model, ref, paths


def test_graph_fp32_matches_torch(graph, lr) -> None:
    name, _, ref, paths = graph
    out = _run(paths["fp32"], lr)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4, name


def test_graph_fp16_close_to_float(graph, lr) -> None:
    name, _, ref, paths = graph
    out = _run(paths["fp16"], lr)
    assert out.dtype == np.float16
    assert _psnr(out, ref) >= FP16_MIN_PSNR, name


# --- image input, compressed weights, errors ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ecbsr():
    torch.manual_seed(3)
    return reparameterize(create_model("ecbsr_m4c8", scale=2).eval())


@pytest.mark.parametrize("layout", ["RGB", "BGR"])
def test_image_input_applies_scale_bias_and_channel_order(ecbsr, lr, tmp_path, layout) -> None:
    bias = [-0.1, 0.0, 0.2]
    image = ct.ImageType(
        name="x",
        shape=tuple(lr.shape),
        scale=1 / 255,
        bias=bias,
        color_layout=getattr(ct.colorlayout, layout),
    )
    _convert(ecbsr, lr, tmp_path / "img.mlpackage", "fp32", inputs=[image])
    runner = MILRunner(tmp_path / "img.mlpackage")
    spec = runner.input_specs["x"]
    assert spec.is_image and spec.color_layout == layout
    assert spec.scale == pytest.approx(1 / 255) and spec.bias == pytest.approx(bias)

    pixels = np.round(lr[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # (H, W, 3) RGB
    out = runner.run({"x": pixels})[runner.output_names[0]]
    # what the model sees: the pixel buffer in its own channel order, scaled, plus bias
    chw = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
    if layout == "BGR":
        chw = chw.flip(1)
    with torch.no_grad():
        ref = ecbsr(chw / 255 + torch.tensor(bias).reshape(1, 3, 1, 1)).numpy()
    assert np.abs(out - ref).max() <= 1e-4


def _quantize_int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 with one scale per output channel, dequantized: max|w| maps to 127."""
    scale = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 127
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def test_weight_only_int8_matches_dequantized_torch(ecbsr, lr, tmp_path) -> None:
    import coremltools.optimize.coreml as cto

    ml = _convert(ecbsr, lr, tmp_path / "f.mlpackage", "fp32")
    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cto.linear_quantize_weights(ml, config).save(str(tmp_path / "int8.mlpackage"))
    ops = {op.op_type for op in load_program(tmp_path / "int8.mlpackage").functions["main"].operations}
    assert "constexpr_affine_dequantize" in ops

    deq = reparameterize(ecbsr)  # a copy whose conv weights are the int8 grid the artifact stores
    with torch.no_grad():
        for m in deq.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(_quantize_int8_per_channel(m.weight))
        ref, ref_float = deq(lr).numpy(), ecbsr(lr).numpy()
    out = _run(tmp_path / "int8.mlpackage", lr)
    assert np.abs(out - ref).max() <= 1e-4
    # the weights really went through int8: per-channel int8 moves this tiny net's output by ~8e-4, well
    # past the 1e-4 the artifact is held to, so the output cannot match the float weights as well
    assert np.abs(out - ref_float).max() > 5e-4


@pytest.mark.parametrize("target", ["iOS17", "iOS18"])
@pytest.mark.parametrize("kind", ["int4_block", "palettize", "prune"])
def test_constexpr_kernels_match_coremltools(ecbsr, lr, tmp_path, target, kind) -> None:
    """Our decompression of every constexpr op equals coremltools' own, and the program still runs."""
    import coremltools.optimize.coreml as cto
    from edge_sr.convert.coreml_mil_ops import OPS

    if kind == "int4_block" and target == "iOS17":
        pytest.skip("block-wise int4 needs iOS18")  # not an executor limit: coremltools refuses it
    ml = _convert(ecbsr, lr, tmp_path / "f.mlpackage", "fp32", target=getattr(ct.target, target))
    op_config = {
        "int4_block": cto.OpLinearQuantizerConfig(
            mode="linear", dtype="int4", granularity="per_block", block_size=4, weight_threshold=0
        ),
        "palettize": cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=0),
        "prune": cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0),
    }[kind]
    fn = {
        "int4_block": cto.linear_quantize_weights,
        "palettize": cto.palettize_weights,
        "prune": cto.prune_weights,
    }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(ml, cto.OptimizationConfig(global_config=op_config)).save(str(tmp_path / "c.mlpackage"))
    program = load_program(tmp_path / "c.mlpackage")
    constexprs = [op for op in program.functions["main"].operations if op.op_type.startswith("constexpr_")]
    assert constexprs
    for op in constexprs:
        args = {k: v.val for k, v in op.inputs.items()}
        mine = OPS[op.op_type](args, op)
        theirs = op.materialized_val_inference()
        for m, t in zip(
            mine if isinstance(mine, tuple) else (mine,), theirs if isinstance(theirs, tuple) else (theirs,)
        ):
            np.testing.assert_allclose(
                np.asarray(m, np.float32), np.asarray(t, np.float32), rtol=0, atol=1e-6
            )
    # end to end: the same network with the weights coremltools decompresses, run in torch
    ref = _with_program_weights(ecbsr, program)(lr).detach().numpy()
    out = _run(tmp_path / "c.mlpackage", lr)
    assert np.abs(out - ref).max() <= 1e-4


def _materialize(var) -> np.ndarray:
    """A weight as coremltools itself decompresses it (an implementation independent of ours)."""
    if var.val is not None:
        return np.asarray(var.val, np.float32)
    val = var.op.materialized_val_inference()
    return np.asarray(val[1] if isinstance(val, tuple) else val, np.float32)


def _with_program_weights(model: nn.Module, program) -> nn.Module:
    """A copy of ``model`` whose conv weights and biases are the program's, in program order.

    Conv kernels the model holds as buffers (``b_<name>`` in the program, e.g. ECBSR's fixed 0/1 residual
    kernel) are compressed like any weight and need not come back exact: coremltools' k-means of its two
    distinct values into 16 clusters (through scikit-learn 1.9, newer than coremltools supports) puts the
    1.0 entries on a centroid of -7.0. So they are taken from the program as well, by name.
    """
    twin = reparameterize(model)
    convs = [op for op in program.functions["main"].operations if op.op_type == "conv"]
    learned = [op for op in convs if not op.weight.name.startswith("b_")]  # b_*: registered buffers
    fixed = [op for op in convs if op.weight.name.startswith("b_")]
    modules = [m for m in twin.modules() if isinstance(m, nn.Conv2d)]
    assert len(learned) == len(modules)
    buffers = {"b_" + name.replace(".", "_"): buf for name, buf in twin.named_buffers()}
    with torch.no_grad():
        for op, m in zip(learned, modules):
            m.weight.copy_(torch.from_numpy(_materialize(op.weight)))
            if m.bias is not None and op.bias is not None:
                m.bias.copy_(torch.from_numpy(_materialize(op.bias)))
        for op in fixed:
            # the buffer's program name, possibly with a compression suffix (b_residual_kernel_palettized)
            names = [n for n in buffers if op.weight.name == n or op.weight.name.startswith(n + "_")]
            assert names, op.weight.name
            buffers[max(names, key=len)].copy_(torch.from_numpy(_materialize(op.weight)))
    return twin


def test_unsupported_op_is_named(tmp_path) -> None:
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 8))], opset_version=ct.target.iOS17)
    def prog(x):
        return mb.topk(x=x, k=2)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.convert(prog, minimum_deployment_target=ct.target.iOS17).save(str(tmp_path / "topk.mlpackage"))
    with pytest.raises(
        RuntimeBackendError, match="CoreML op 'topk' is not supported by the reference executor"
    ):
        MILRunner(tmp_path / "topk.mlpackage")


def test_feed_errors_and_missing_model(ecbsr, lr, tmp_path) -> None:
    _convert(ecbsr, lr, tmp_path / "m.mlpackage", "fp32")
    runner = MILRunner(tmp_path / "m.mlpackage")
    assert runner.input_specs["x"].shape == (1, 3, SIZE, SIZE)
    with pytest.raises(InputError, match="shape"):
        runner.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(InputError, match="missing"):
        runner.run({})
    with pytest.raises(InputError):
        MILRunner(tmp_path / "absent.mlpackage")


def test_flexible_shapes_are_read_and_enforced(ecbsr, lr, tmp_path) -> None:
    shape = ct.Shape((1, 3, ct.RangeDim(8, 32, default=16), ct.RangeDim(8, 32, default=16)))
    ep = torch.export.export(
        ecbsr,
        (lr,),
        dynamic_shapes=({2: torch.export.Dim("h", min=8, max=32), 3: torch.export.Dim("w", min=8, max=32)},),
    ).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.convert(  # FP32 as in _convert: ML Programs default to FP16 compute, too coarse for 1e-4
            ep,
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32,
            inputs=[ct.TensorType(name="x", shape=shape)],
        ).save(str(tmp_path / "dyn.mlpackage"))
    runner = MILRunner(tmp_path / "dyn.mlpackage")
    assert runner.input_specs["x"].shape_range == ((1, 1), (3, 3), (8, 32), (8, 32))
    x = torch.rand(1, 3, 12, 20)
    (out,) = runner.run({"x": x.numpy()}).values()
    with torch.no_grad():
        assert np.abs(out - ecbsr(x).numpy()).max() <= 1e-4
    with pytest.raises(InputError):
        runner.run({"x": np.zeros((1, 3, 40, 16), np.float32)})


def test_supported_ops_cover_the_brief() -> None:
    ops = set(supported_ops())
    for op in [
        "conv", "conv_transpose", "add", "sub", "mul", "real_div", "maximum", "minimum", "relu", "prelu",
        "leaky_relu", "sigmoid", "clip", "tanh", "pixel_shuffle", "depth_to_space", "space_to_depth", "concat",
        "reshape", "transpose", "slice_by_index", "slice_by_size", "pad", "upsample_nearest_neighbor",
        "upsample_bilinear", "resize", "cast", "const", "constexpr_affine_dequantize",
        "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_sparse_to_dense", "reduce_mean",
        "matmul", "linear", "softmax", "layer_norm", "gelu", "split", "expand_dims", "squeeze", "tile", "gather",
    ]:  # fmt: skip
        assert op in ops, op


def test_block_rearrangements_follow_their_definitions(tmp_path) -> None:
    """depth_to_space (DCR), space_to_depth and pixel_unshuffle (CRD) against their index formulas."""
    from coremltools.converters.mil import Builder as mb

    b, c, h, w = 2, 3, 4, 5

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, c * b * b, h, w))], opset_version=ct.target.iOS17)
    def prog(x):
        d2s = mb.depth_to_space(x=x, block_size=b)
        return (
            d2s,
            mb.space_to_depth(x=d2s, block_size=b),
            mb.pixel_unshuffle(x=d2s, downscale_factor=np.uint32(b)),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct.convert(
            prog, minimum_deployment_target=ct.target.iOS17, compute_precision=ct.precision.FLOAT32
        ).save(str(tmp_path / "d2s.mlpackage"))
    runner = MILRunner(tmp_path / "d2s.mlpackage")
    x = np.random.default_rng(0).random((1, c * b * b, h, w)).astype(np.float32)
    d2s, s2d, unshuffle = (runner.run({runner.input_names[0]: x})[n] for n in runner.output_names)
    expect = np.zeros((1, c, h * b, w * b), np.float32)
    for ci, hi, wi, i, j in np.ndindex(c, h, w, b, b):
        expect[0, ci, hi * b + i, wi * b + j] = x[0, (i * b + j) * c + ci, hi, wi]  # TensorFlow's DCR order
    np.testing.assert_array_equal(d2s, expect)
    np.testing.assert_array_equal(s2d, x)  # space_to_depth inverts depth_to_space
    ref = F.pixel_unshuffle(torch.from_numpy(expect), b).numpy()  # CRD order: c·b² + i·b + j
    np.testing.assert_array_equal(unshuffle, ref)
