"""Host video models (BasicVSR, IconVSR, BasicVSR++, EDVR) exported as fixed windows of T frames.

Tiny random configurations (every offset conv random, so the deformable convolutions really deform) at the
smallest sizes their alignment takes. Each export is compared with the eager model on the same window; the
CoreML programs run on the MIL reference executor (``edge_sr.convert.coreml_mil``), whose ``resample`` kernel
is proven against ``grid_sample`` through coremltools' own conversion of it. The artifacts then run through
``Runner.clip_fn()`` and ``run_clip`` against the eager ``clip_fn`` on a short clip. One family per target
runs in the suite; the other pairs are marked slow (an export of these unrolled graphs takes 10-60 s here).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from edge_sr.convert import ExportSpec, export, read_manifest, target_module
from edge_sr.convert.clip import clip_contract
from edge_sr.convert.manifest import check_manifest
from torch import nn

from edge_sr.errors import ConfigError, ConversionError, InputError
from edge_sr.models import create_model
from edge_sr.runtime import clip_agreement, load
from edge_sr.runtime.clip import clip_fn, run_clip

# the smallest configurations (one block per trunk, two deformable groups)
TINY = {
    "basicvsr": {"num_feat": 8, "num_block": 1},
    "iconvsr": {
        "num_feat": 8,
        "num_block": 1,
        "temporal_padding": 1,
        "deformable_groups": 2,
        "num_extract_block": 1,
        "keyframe_stride": 2,
    },
    "basicvsrpp": {"mid_channels": 8, "num_blocks": 1, "deform_groups": 2},
    "edvr_m": {
        "num_feat": 8,
        "num_frame": 3,
        "deformable_groups": 2,
        "num_extract_block": 1,
        "num_reconstruct_block": 1,
    },
}
# (T, side): the fewest frames and the smallest side each model's alignment takes
WINDOW = {"basicvsr": (2, 32), "iconvsr": (3, 32), "basicvsrpp": (2, 64), "edvr_m": (3, 16)}
# max abs diff against the eager model on outputs of about [-1, 2]
FP32_TOL = 1e-4
FP16_TOL = 0.05


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **TINY[name]).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "conv_offset" in k:
                p.normal_(0, 0.05)
    return model


def _window(name: str) -> torch.Tensor:
    t, side = WINDOW[name]
    return torch.rand(1, t, 3, side, side, generator=torch.Generator().manual_seed(1))


def _export(name: str, target: str, out: Path, precision: str = "fp32", **opts: object):
    t, side = WINDOW[name]
    options = target_module(target).Options(**opts) if opts else None
    spec = ExportSpec(input_size=(side, side), frames=t, precision=precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(_tiny(name), target, out, spec, options=options)


def _check(art, name: str, tol: float) -> np.ndarray:
    """The artifact's backend on the test window equals the eager model within ``tol``; its output."""
    x = _window(name)
    with torch.no_grad():
        ref = _tiny(name)(x).numpy()
    y = np.asarray(load(art.path).backend.forward(x.numpy()), dtype=np.float32)
    assert y.shape == ref.shape
    diff = float(np.abs(y - ref).max())
    assert diff <= tol, (name, art.manifest["target"], diff)
    return y


@pytest.fixture(scope="module")
def onnx_basicvsr(tmp_path_factory: pytest.TempPathFactory):
    return _export("basicvsr", "onnx", tmp_path_factory.mktemp("onnx"))


# ---- the CoreML resample op on the MIL reference executor


class _Warps(nn.Module):
    """grid_sample in every (padding, align_corners) pairing the models and coremltools map, one graph."""

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        outs = [
            F.grid_sample(x, grid, mode="bilinear", padding_mode=pad, align_corners=align)
            for pad in ("zeros", "border", "reflection")
            for align in (True, False)
        ]
        return torch.cat(outs, dim=1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_resample_equals_grid_sample(tmp_path: Path, precision: str) -> None:
    ct = pytest.importorskip("coremltools")
    from edge_sr.convert.coreml_mil import MILRunner

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 9, 11, generator=gen)
    grid = torch.rand(1, 7, 5, 2, generator=gen) * 2.6 - 1.3  # a third of the samples outside the image
    ep = torch.export.export(_Warps().eval(), (x, grid)).run_decompositions({})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ct.convert(
            ep,
            inputs=[ct.TensorType(name="x", shape=x.shape), ct.TensorType(name="grid", shape=grid.shape)],
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
    ops = {op.op_type for f in ml._mil_program.functions.values() for op in f.operations}
    assert "resample" in ops
    ml.save(str(tmp_path / "warp.mlpackage"))
    runner = MILRunner(tmp_path / "warp.mlpackage")
    (y,) = runner.run({"x": x.numpy(), "grid": grid.numpy()}).values()
    ref = _Warps()(x, grid).numpy()
    tol = 2e-3 if precision == "fp16" else 1e-6
    assert float(np.abs(np.asarray(y, np.float32) - ref).max()) <= tol


# ---- the deformable convolution as CoreML takes it (no tensor above rank 5)


def test_deform_conv_has_no_tensor_above_rank_5() -> None:
    """What Core ML takes: the exported deformable convolution (strided too) stays within rank 5."""
    from edge_sr.models.deform import ModulatedDeformConv2d

    g = torch.Generator().manual_seed(0)
    n, c, h, w, groups = 2, 8, 7, 9, 4
    x = torch.rand(n, c, h, w, generator=g)
    for stride in (1, 2):
        conv = ModulatedDeformConv2d(c, 6, 3, stride=stride, padding=1, deform_groups=groups)
        ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
        offset = torch.randn(n, 2 * groups * 9, ho, wo, generator=g)
        mask = torch.rand(n, groups * 9, ho, wo, generator=g)
        ep = torch.export.export(conv, (x, offset, mask))
        assert max(len(n.meta["val"].shape) for n in ep.graph.nodes if "val" in n.meta) <= 5


# ---- the manifest's clip entry


def test_clip_manifest_entry_validated(onnx_basicvsr) -> None:
    m = onnx_basicvsr.manifest
    c = m["clip"]
    assert c == {
        "kind": "clip",
        "frames": 2,
        "overlap": 0,
        "input": "frames",
        "output": "sr",
        "layout": "NTCHW",
        "min_side": 32,
        "multiple": 1,
    }
    assert m["input_shape"] == {"mode": "fixed", "size": [32, 32]}
    assert m["inputs"][0]["shape"] == [1, 2, 3, 32, 32] and m["outputs"][0]["shape"] == [1, 2, 3, 128, 128]
    assert read_manifest(onnx_basicvsr.path)["clip"] == c
    bad = [
        ("kind", "stream"),
        ("frames", 0),
        ("overlap", 1),  # 2 * 1 is not under T = 2: a chunk would not advance
        ("input", "input"),
        ("layout", "NTHWC"),  # the manifest's layout is NCHW
        ("multiple", 0),
        ("min_side", 64),  # the fixed 32x32 is under it
    ]
    for field, value in bad:
        broken = copy.deepcopy(m)
        broken["clip"][field] = value
        with pytest.raises(InputError, match=f"clip.{field}|input_shape"):
            check_manifest(broken, "x.onnx.json")
    window = copy.deepcopy(m)
    window["clip"].update(kind="window", overlap=0)  # a window slides by one frame: overlap T - 1
    with pytest.raises(InputError, match="clip.overlap"):
        check_manifest(window, "x.onnx.json")
    json.dumps(m)  # the manifest stays JSON


# ---- bad inputs, refused before anything is exported


@pytest.mark.parametrize(
    ("name", "frames", "size", "match"),
    [
        ("edvr_m", 5, (16, 16), "exactly 3 frames"),
        ("iconvsr", 2, (32, 32), "at least 3 frames"),
        ("basicvsr", 1, (32, 32), "at least 2 frames"),
        ("edvr_m", 3, (18, 16), "multiples of 4"),
        ("edvr_m", 3, (12, 12), "at least 16"),
        ("basicvsrpp", 2, (32, 64), "at least 64"),
    ],
)
def test_window_the_model_cannot_take(
    name: str, frames: int, size: tuple[int, int], match: str, tmp_path
) -> None:
    spec = ExportSpec(input_size=size, frames=frames)
    with pytest.raises(ConversionError, match=match):
        export(_tiny(name), "onnx", tmp_path, spec)
    assert not any(tmp_path.iterdir())


def test_frames_and_shapes_refused_where_they_do_not_apply(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="--frames"):
        export(create_model("espcn", scale=2), "onnx", tmp_path, ExportSpec(frames=3))
    with pytest.raises(ConversionError, match="one frame size"):
        export(_tiny("basicvsr"), "onnx", tmp_path, ExportSpec(dynamic=(32, 64), frames=2))
    with pytest.raises(ConfigError, match="frames 0"):
        ExportSpec(frames=0)
    assert clip_contract(create_model("espcn", scale=2)) is None


# ---- each family on each target equals PyTorch

# the pairs that run in the suite: every target once, the ONNX deformable convolution in both forms
CORE = {
    ("basicvsr", "onnx", "fp32", "native"),
    ("edvr_m", "onnx", "fp32", "native"),
    ("edvr_m", "onnx", "fp32", "decomposed"),
    ("edvr_m", "onnx", "fp16", "native"),
    ("edvr_m", "executorch", "fp32", ""),
    ("edvr_m", "tflite", "fp32", ""),
    ("edvr_m", "coreml", "fp32", ""),
}
# ExecuTorch 1.5's XNNPACK partitioner refuses IconVSR's graph ("Invalid partition, found dependency cycles")
KNOWN = {
    ("iconvsr", "executorch"): "ExecuTorch 1.5's XNNPACK partitioner finds a dependency cycle in IconVSR"
}


def _marks(n: str, t: str, p: str, d: str) -> list[pytest.MarkDecorator]:
    marks = [] if (n, t, p, d) in CORE else [pytest.mark.slow]
    if (n, t) in KNOWN:
        marks.append(pytest.mark.xfail(raises=ConversionError, reason=KNOWN[n, t]))
    return marks


CASES = [
    pytest.param(n, t, p, d, marks=_marks(n, t, p, d), id=f"{n}-{t}-{p}{d and '-' + d}")
    for n in TINY
    for t in ("onnx", "executorch", "tflite", "coreml")
    for p in ("fp32", "fp16")
    for d in (("native", "decomposed") if t == "onnx" else ("",))
]


@pytest.mark.parametrize(("name", "target", "precision", "deform"), CASES)
def test_family_on_target_equals_torch(name: str, target: str, precision: str, deform: str, tmp_path) -> None:
    if target == "coreml":
        pytest.importorskip("coremltools")
    opts = {"deform_conv": deform} if deform else {}
    art = _export(name, target, tmp_path, precision, **opts)
    _check(art, name, FP32_TOL if precision == "fp32" else FP16_TOL)
    info, clip = art.manifest["target_info"], art.manifest["clip"]
    assert clip["kind"] == ("window" if name == "edvr_m" else "clip") and clip["frames"] == WINDOW[name][0]
    has_deform = name != "basicvsr"
    if target == "onnx":
        native = has_deform and deform == "native"
        assert ("DeformConv" in info["ops"]) == native
        assert info["opset"] == (19 if native else 18)
        # the flow warp (and a decomposed deformable convolution) is GridSample; EDVR has no flow
        assert ("GridSample" in info["ops"]) == (name != "edvr_m" or not native)
    elif target == "executorch":
        # grid_sampler_2d has no XNNPACK kernel: it runs on the portable kernels and splits the graph
        assert info["portable_ops"].get("grid_sampler_2d", 0) >= 1
        assert info["delegate_calls"] >= 2
    elif target == "tflite":
        assert "GATHER_ND" in info["ops"]  # grid_sample lowered to gathers
    else:
        assert "resample" in info["ops"]


# ---- the artifact through Runner.clip_fn() and run_clip equals the eager model through clip_fn


def _clip_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_runner_clip_fn_runs_like_eager(onnx_basicvsr, tmp_path: Path) -> None:
    from dataclasses import replace

    runner = load(onnx_basicvsr.path)
    fn = runner.clip_fn()
    assert (fn.kind, fn.frames, fn.size, fn.scale, fn.min_side) == ("clip", 2, (32, 32), 4, 32)
    frames = _clip_frames(5, 40, 44)  # 5 frames in chunks of 2; 40x44 in tiles of 32x32
    got = list(run_clip(fn, frames, tile_overlap=4))
    eager = replace(clip_fn(_tiny("basicvsr")), frames=fn.frames, min_frames=fn.min_frames, size=fn.size)
    want = list(run_clip(eager, frames, tile_overlap=4))
    assert len(got) == len(want) == 5 and got[0].shape == (160, 176, 3)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)) <= FP32_TOL
    with pytest.raises(InputError, match="window of shape"):
        fn.fn(np.zeros((3, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="run_clip"):
        runner.run(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError, match="run_clip"):
        runner.stream()
    agree = clip_agreement(runner, _tiny("basicvsr"))  # what `edge-sr convert` checks a window with
    assert agree["frames"] == 2 and agree["size"] == [32, 32] and agree["max_abs_diff"] <= FP32_TOL
    image = export(create_model("espcn", scale=2), "onnx", tmp_path, ExportSpec(input_size=(16, 16)))
    with pytest.raises(InputError, match="clip entry"):
        load(image.path).clip_fn()


def test_verify_video_on_a_clip_artifact(onnx_basicvsr, tmp_path: Path) -> None:
    from seqdata import make_sequence_set

    from edge_sr.verify import verify_video

    data = make_sequence_set(tmp_path / "seq", {"alpha": (5, 160, 176)})  # LR 40x44: 4 tiles of 32x32
    report = verify_video(onnx_basicvsr.path, reference=_tiny("basicvsr"), data=data, record=False)
    assert report.passed and report.max_abs_diff <= FP32_TOL and report.clips[0].frames == 5
    assert report.psnr == pytest.approx(report.psnr_float, abs=1e-3)
    with pytest.raises(ConfigError, match="the reference model is x2"):
        verify_video(onnx_basicvsr.path, reference=_tiny_x2_basicvsr(), data=data, record=False)


def _tiny_x2_basicvsr() -> nn.Module:
    torch.manual_seed(0)
    return create_model("basicvsr", scale=2, **TINY["basicvsr"]).eval()
