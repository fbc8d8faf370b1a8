"""edge_sr.quantize: INT8 PTQ per target, int8 I/O, QAT, FP16 range check, sensitivity, the quantize verb.

Tiny ECBSR (4 blocks x 8 channels, x2) on 24x24 inputs, a handful of calibration patches.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from edge_sr.quantize import QuantSpec, fp16_check, from_tensors, load_calibration, ptq, sensitivity
from edge_sr.quantize.fp16 import FP16_MAX, fp16_ranges, fp32_spans, keep_fp32
from torch import nn

DATA = DATA_ROOT
SET5_HR = DATA / "benchmarks" / "Set5" / "HR"
SIZE = 24


def _smooth(size: int = SIZE) -> torch.Tensor:
    """(1, 3, size, size): gradients and one soft ring, the kind of image SR int8 should handle well."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    ring = 0.5 + 0.5 * torch.cos(6 * torch.hypot(xx - 0.5, yy - 0.5))
    return torch.stack([xx, yy, 0.6 * ring + 0.4 * xx])[None]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    from edge_sr.models import create_model

    torch.manual_seed(0)
    return create_model("ecbsr_m4c8", scale=2).eval()


@pytest.fixture(scope="module")
def calib():
    g = torch.Generator().manual_seed(1)
    s = _smooth()
    patches = torch.cat([s, 0.7 * s.flip(-1) + 0.3 * torch.rand(5, 3, SIZE, SIZE, generator=g)]).clamp(0, 1)
    return from_tensors(patches)


def _psnr_vs_float(model: nn.Module, path: Path) -> float:
    from edge_sr.runtime import load

    x = _smooth()
    with torch.no_grad():
        ref = model(x)[0].permute(1, 2, 0).numpy()
    y = load(path).run(x[0].permute(1, 2, 0).numpy())
    return 10 * math.log10(1.0 / float(np.mean((y - ref) ** 2)))


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx"])
def test_ptq_runs_and_is_close_to_float(model, calib, target, tmp_path):
    art = ptq(model, target, calib, out=tmp_path)
    assert art.path.exists() and art.manifest["precision"] == "int8"
    q = art.manifest["quantization"]
    assert q["method"] == "ptq" and q["calibration"]["count"] == calib.count
    assert q["calibration"]["input_size"] == [SIZE, SIZE]
    assert art.manifest["input_shape"] == {"mode": "fixed", "size": [SIZE, SIZE]}
    assert art.manifest["inputs"][0]["dtype"] == "float32"  # float I/O by default on every target
    assert _psnr_vs_float(model, art.path) > 35.0


def test_tflite_int8_io_runs_through_runtime(model, calib, tmp_path):
    art = ptq(model, "tflite", calib, QuantSpec(int8_io=True), out=tmp_path)
    inp = art.manifest["inputs"][0]
    assert inp["dtype"] == "int8"
    assert inp["quant"]["scale"] > 0 and -128 <= inp["quant"]["zero_point"] <= 127
    on_disk = json.loads(art.manifest_path.read_text())
    assert on_disk["inputs"][0]["quant"] == inp["quant"]
    assert _psnr_vs_float(model, art.path) > 35.0


def test_onnx_quantizes_every_conv_and_keeps_float_layers(model, calib, tmp_path):
    every = QuantSpec(float_input_layers=False)
    art = ptq(model, "onnx", calib, every, out=tmp_path / "a.onnx")
    facts = art.manifest["quantization"]["onnxruntime"]
    assert facts["quantized_convs"] == facts["convs"] and "QuantizeLinear" in facts["ops"]
    assert art.manifest["quantization"]["float_input_layers"] == []
    kept = ptq(
        model,
        "onnx",
        calib,
        QuantSpec(keep_float=("body.1.0",), float_input_layers=False),
        out=tmp_path / "b.onnx",
    )
    kfacts = kept.manifest["quantization"]["onnxruntime"]
    assert kfacts["excluded_nodes"] and kfacts["quantized_convs"] == facts["convs"] - 1
    # the int8 convs that read the image get 7-bit weights (no u8 x s8 int16 saturation without VNNI)
    assert facts["reduced_range_weights"] == ["body.0.0.weight", "residual.kernel"]
    q = _onnx_int8_weights(art.path)
    assert all(int(np.abs(q[w]).max()) == 64 for w in facts["reduced_range_weights"])  # 255 x 64 x 2 < 2^15
    assert max(int(np.abs(v).max()) for k, v in q.items() if k.startswith("body.1.")) == 127
    # the default: the head conv and the residual conv read the image and stay float
    default = ptq(model, "onnx", calib, out=tmp_path / "c.onnx")
    dq = default.manifest["quantization"]
    assert dq["float_input_layers"] == ["body.0.0", "residual"] == dq["keep_float"]
    assert dq["onnxruntime"]["quantized_convs"] == facts["convs"] - 2
    assert dq["onnxruntime"]["reduced_range_weights"] == []  # the first int8 conv reads a feature map


def _onnx_int8_weights(path: Path) -> dict[str, np.ndarray]:
    """Conv weight initializer name -> its stored int8 values (``<name>_quantized``)."""
    import onnx
    from onnx import numpy_helper

    inits = onnx.load(str(path)).graph.initializer
    sfx = "_quantized"
    return {
        i.name[: -len(sfx)]: numpy_helper.to_array(i) for i in inits if i.name.endswith(f"weight{sfx}")
    } | {i.name[: -len(sfx)]: numpy_helper.to_array(i) for i in inits if i.name.endswith(f"kernel{sfx}")}


def test_input_layers_are_the_convs_that_read_the_image(model):
    from edge_sr.quantize import deploy_form
    from edge_sr.quantize.pt2e import ClampInput, input_layers

    from edge_sr.models import create_model

    x = _smooth()
    deploy = deploy_form(model)
    assert input_layers(deploy, x) == ["body.0.0", "residual"]
    assert input_layers(ClampInput(deploy), x) == ["model.body.0.0", "model.residual"]  # through the clamp
    espcn = create_model("espcn", scale=2).eval()
    first = next(n for n, m in espcn.named_modules() if isinstance(m, nn.Conv2d))
    assert input_layers(espcn, x) == [first]


def test_ptq_input_layers_float_on_pt2e(model, calib, tmp_path):
    """ExecuTorch: the default leaves the head conv's weight float (no dequantize feeds it); the opt-out
    quantizes it, and int8 I/O (the image itself quantized) turns the default off."""
    from edge_sr.convert.executorch import quantizer
    from edge_sr.quantize.pt2e import quantize_model

    art = ptq(model, "executorch", calib, out=tmp_path / "a.pte")
    assert art.manifest["quantization"]["float_input_layers"] == ["body.0.0", "residual"]
    assert _psnr_vs_float(model, art.path) > 30
    tfl = ptq(model, "tflite", calib, QuantSpec(int8_io=True), out=tmp_path / "b.tflite")
    assert tfl.manifest["quantization"]["float_input_layers"] == []
    deploy = model_deploy(model)
    for keep, head_quantized in (((), True), (("body.0.0",), False)):
        gm = quantize_model(deploy, quantizer(), [calib.patches], calib.patches[:2], keep_float=keep)
        head = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default)
        assert ("dequantize" in str(getattr(head.args[1], "target", ""))) == head_quantized


def test_coreml_weight_only_quantizes_every_conv(model, calib, tmp_path):
    art = ptq(model, "coreml", calib, QuantSpec(mode="weights"), out=tmp_path)
    convs = art.manifest["quantization"]["convs"]
    # 6 body convs (the first has only 3*8*9 = 216 weights, under coremltools' default threshold) + residual
    assert len(convs) == 7 and set(convs.values()) == {"int8"}
    assert art.manifest["quantization"]["weight_threshold"] == 0


def test_coreml_palettize_keeps_every_conv_close_to_float(model, calib, tmp_path):
    art = ptq(model, "coreml", calib, QuantSpec(mode="palettize"), out=tmp_path)
    assert set(art.manifest["quantization"]["convs"].values()) == {"lut"}
    # 6-bit LUTs of trained-size convs stay close to float; the residual's 0/1 kernel is stored exactly
    assert _psnr_vs_float(model, art.path) > 35


def test_coreml_w8a8_lowers(model, calib, tmp_path):
    from collections import Counter

    from edge_sr.convert.coreml import compressed_convs
    from edge_sr.convert.coreml_mil import load_program

    art = ptq(model, "coreml", calib, QuantSpec(float_input_layers=False), out=tmp_path / "all")
    assert set(compressed_convs(art.path).values()) == {"int8"}
    # by default the head conv (first) and the residual conv (last in the program) stay float
    kinds = list(compressed_convs(ptq(model, "coreml", calib, out=tmp_path / "default").path).values())
    assert kinds[0] == kinds[-1] == "float" and set(kinds[1:-1]) == {"int8"}
    ops = Counter(op.op_type for f in load_program(art.path).functions.values() for op in f.operations)
    assert ops["quantize"] >= 6 and ops["dequantize"] >= 6  # activations quantized too (W8A8)
    # the reference executor runs the quantize / dequantize ops: the int8 program stays close to float
    assert _psnr_vs_float(model, art.path) > 30


def test_coreml_quantizer_skips_only_annotators_that_cannot_match():
    """CoreMLQuantizer's annotators whose anchor op is absent from the graph are skipped; the rest run."""
    from edge_sr.convert.coreml import annotators_for
    from executorch.backends.apple.coreml.quantizer._coreml_quantizer import _AnnotationPatternRegistry

    names = list(_AnnotationPatternRegistry.get_annotators())
    sr = {"aten.conv2d.default", "aten.relu.default", "aten.add.Tensor", "aten.pixel_shuffle.default"}
    kept = annotators_for(sr, names)
    assert {"conv", "conv_act", "add", "add_act"} <= set(kept)
    assert not any(w in name for name in kept for w in ("bn", "linear", "mul", "matmul"))
    assert "max_pool2d" in kept and "flatten" in kept  # no anchor known: always run
    with_bn = annotators_for(sr | {"aten._native_batch_norm_legit_no_training.default"}, names)
    assert {"conv_bn", "conv_bn_act"} <= set(with_bn) and "linear_bn" not in with_bn
    more = annotators_for(sr | {"aten.linear.default", "aten.mul.Tensor", "aten.matmul.default"}, names)
    assert {"linear", "linear_act", "mul", "mul_act", "matmul", "matmul_act"} <= set(more)
    assert "linear_bn_act" not in more
    # activations: each maps to the ops its patterns hold; the quantizer leaves the module's lists as they were
    import torch.nn.functional as F
    from edge_sr.convert.coreml import _activation_ops
    from executorch.backends.apple.coreml.quantizer import _coreml_quantizer_utils as utils

    assert _activation_ops()[F.relu] == [{"aten.relu.default"}, {"aten.relu_.default"}]
    assert _activation_ops()[F.relu6] == [{"aten.relu6.default"}, {"aten.relu6_.default"}]
    # a graph of conv + relu + add: its convs annotated, the module's activation lists restored after
    from edge_sr.convert.coreml import quantizer as coreml_quantizer
    from edge_sr.quantize import deploy_form

    from edge_sr.models import create_model

    before = utils._supported_activations
    net = deploy_form(create_model("ecbsr_m4c8", scale=2, blocks=1, channels=4, act="relu").eval())
    gm = torch.export.export(net, (torch.rand(1, 3, 8, 8),)).module()
    coreml_quantizer().annotate(gm)
    convs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert convs and all("quantization_annotation" in n.meta for n in convs)
    assert utils._supported_activations is before and len(before) == 11
    assert annotators_for(set(), names) == [
        n for n in names if not any(w in n for w in ("conv", "linear", "add", "mul"))
    ]


def test_keep_float_leaves_layer_unquantized(model, calib):
    from edge_sr.convert.executorch import quantizer
    from edge_sr.quantize.pt2e import quantize_model

    gm = quantize_model(
        model_deploy(model), quantizer(), [calib.patches], calib.patches[:2], keep_float=["body.0.0"]
    )
    quantized_convs = [
        n
        for n in gm.graph.nodes
        if n.target == torch.ops.aten.conv2d.default
        and getattr(n.args[0], "target", None) is not None
        and "dequantize" in str(n.args[0].target)
    ]
    first = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    assert first not in quantized_convs and len(quantized_convs) >= 5


def model_deploy(model: nn.Module) -> nn.Module:
    from edge_sr.quantize import deploy_form

    return deploy_form(model)


def test_sensitivity_ranks_layers(model, calib):
    rep = sensitivity(model, "executorch", calib)
    names = rep.ranking()
    assert len(names) == 6 and set(names) == {f"body.{i}.0" for i in range(5)} | {"body.5"}
    sq = [r.sqnr_db for r in rep.layers]
    assert sq == sorted(sq) and all(math.isfinite(v) and v > 10 for v in sq)
    assert rep.full_sqnr_db <= sq[0] + 0.5  # quantizing everything costs at least the worst single layer


class _Overflow(nn.Module):
    """A conv whose output passes FP16's maximum, then a conv bringing it back."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Conv2d(3, 4, 1)
        self.small = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.big.weight.fill_(4e4)
            self.big.bias.zero_()
            self.small.weight.fill_(1e-5)

    def forward(self, x):
        return self.small(self.big(x))


def test_fp16_overflow_detector_flags_the_layer():
    calib = from_tensors(torch.rand(2, 3, 8, 8) * 0.5 + 0.5)
    rep = fp16_ranges(_Overflow(), calib.batches())
    big = next(r for r in rep.layers if r.name == "big")
    assert big.overflow and big.max_abs > FP16_MAX
    assert rep.offenders == ["big"]
    assert fp32_spans(rep) == ["big", "small"]  # small consumes the out-of-range values
    mixed = keep_fp32(_Overflow(), fp32_spans(rep)).half()
    assert mixed.big.module.weight.dtype == torch.float32 and mixed.small.module.weight.dtype == torch.float32
    x = calib.patches[:1]
    assert torch.isfinite(mixed(x.half()).float()).all()
    assert not torch.isfinite(_Overflow().half()(x.half())).all()


def test_fp16_check_passes_a_normal_model(model, calib):
    assert fp16_check(model, calib).ok


@pytest.mark.skipif(not SET5_HR.is_dir(), reason="needs ../shared/data")
def test_calibration_from_hr_folder_is_reproducible():
    a = load_calibration(SET5_HR, count=3, input_size=(20, 24), scale=4, seed=5)
    b = load_calibration(SET5_HR, count=3, input_size=(20, 24), scale=4, seed=5)
    c = load_calibration(SET5_HR, count=3, input_size=(20, 24), scale=4, seed=6)
    assert a.patches.shape == (3, 3, 20, 24) and torch.equal(a.patches, b.patches)
    assert not torch.equal(a.patches, c.patches)
    assert a.manifest_entry() == {**a.manifest_entry(), "count": 3, "seed": 5, "source": "hr-bicubic"}


def test_calibration_errors(tmp_path):
    from edge_sr.errors import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_calibration(tmp_path / "empty", count=1, input_size=(8, 8), scale=2)
    if SET5_HR.is_dir():
        with pytest.raises(InputError, match="asked for 9"):
            load_calibration(SET5_HR, count=9, input_size=(8, 8), scale=2)


@pytest.mark.skipif(not (DATA / "train" / "T91").is_dir(), reason="needs ../shared/data/train/T91")
@pytest.mark.parametrize("target", ["tflite", "coreml"])
def test_qat_exports_on_every_pt2e_target(model, calib, target, tmp_path):
    """QAT (a few steps) then INT8 export with each target's own quantizer; the result runs and stays close
    to float (CoreML W8A8 through the reference execution of its quantize / dequantize ops)."""
    from edge_sr.quantize import qat

    art = qat(model, target, [DATA / "train" / "T91"], calib=calib, iters=4, lr=1e-5, out=tmp_path)
    assert art.manifest["quantization"]["method"] == "qat"
    assert _psnr_vs_float(model, art.path) > 30


@pytest.mark.skipif(not (DATA / "train" / "T91").is_dir(), reason="needs ../shared/data/train/T91")
def test_qat_leaves_the_callers_model_alone(calib, tmp_path):
    """A model with nothing to fuse is its own deploy form; QAT must train a copy of it, not the caller's
    weights (the exported graph shares them), or the float reference it is compared with moves too."""
    from edge_sr.quantize import qat

    from edge_sr.models import create_model

    torch.manual_seed(0)
    net = create_model("espcn", scale=2).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    qat(net, "executorch", [DATA / "train" / "T91"], calib=calib, iters=3, lr=1e-2, out=tmp_path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.skipif(not (DATA / "train" / "T91").is_dir(), reason="needs ../shared/data/train/T91")
def test_train_form_qat_runs(calib, tmp_path):
    """QAT on the multi-branch graph quantizes every branch: with its input branches left float, the
    lowered program crashed ExecuTorch's runtime. One body block: every ECB branch kind, with less to lower."""
    from edge_sr.quantize import qat

    from edge_sr.models import create_model

    torch.manual_seed(0)
    model = create_model("ecbsr_m4c8", scale=2, blocks=1).eval()
    art = qat(
        model,
        "executorch",
        [DATA / "train" / "T91"],
        calib=calib,
        iters=2,
        lr=1e-6,
        form="train",
        out=tmp_path,
    )
    assert art.manifest["quantization"]["float_input_layers"] == []
    assert _psnr_vs_float(model, art.path) > 30


def _bundled() -> list[tuple[str, int]]:
    from edge_sr.weights import bundled_checkpoints

    return [(a, s) for a, by in sorted(bundled_checkpoints().items()) for s in sorted(by)]


def test_every_scale_has_a_bundled_default_model():
    from edge_sr.weights import bundled_checkpoints

    assert sorted(bundled_checkpoints()["ecbsr_m4c16"]) == [2, 3, 4]


@pytest.mark.parametrize(("arch", "scale"), _bundled())
def test_bundled_models_stay_int8_between_convs_on_xnnpack(calib, tmp_path, arch: str, scale: int):
    """The bundled models' ReLUs fold into XNNPACK's int8 convolutions: the INT8 program converts between
    float and int8 only at its borders (after the float head, on the float residual, before the output),
    never around an activation. A PReLU model needs two conversions per layer (PReLU runs in float)."""
    from edge_sr.models import load_checkpoint
    from edge_sr.profile import profile
    from edge_sr.weights import bundled_checkpoints

    model = load_checkpoint(bundled_checkpoints()[arch][scale])
    art = ptq(model, "executorch", calib, out=tmp_path / f"{arch}_x{scale}")
    names = [o.name for o in profile(art.path, runs=1, warmup=1, threads=1, peak=False).ops]
    int8_convs = [n for n in names if n.startswith("Convolution") and "QC8" in n]
    # the body convs + tail; the head reads the image in float
    assert len(int8_convs) == len(model.backbone) - 1, names
    assert not any("PReLU" in n or "Clamp" in n for n in names), names
    assert sum(n.startswith("Convert") for n in names) == 3, names
