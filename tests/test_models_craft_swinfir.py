"""CRAFT and SwinFIR / SwinFIR-T: official key layouts detected exactly, published sizes, the rewritten ops
equal to the official ones, and export (ONNX / ExecuTorch over a dynamic range, Core ML / TFLite fixed).

Tiny configurations with random weights. SwinFIR's Fourier unit runs ``torch.fft`` by default; its ``dft``
form (matrix products) is what the targets without complex FFT ops take, and it is proven equal here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models import (
    card_of,
    create_model,
    get_entry,
    list_models,
    load_checkpoint,
    load_state_dict_file,
)
from edge_sr.models.craft import rectangle_index, rectangle_offsets, roll_hw
from edge_sr.models.detect import detect, detectors
from edge_sr.models.swinfir import (
    FourierUnit,
    irfft2_dft,
    mirror_pad_next_window,
    rfft2_dft,
    use_fourier,
)

MINE = ("craft", "swinfir")

# (arch, the full constructor arguments): none of them a registry default
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "craft": ("craft", {
        "scale": 3, "embed_dim": 32, "depths": (1, 2), "num_heads": (2, 4), "split_size_0": 2, "split_size_1": 4,
        "mlp_ratio": 1.5, "qkv_bias": False, "img_range": 1.0, "resi_connection": "1conv",
    }),
    "craft-identity": ("craft", {
        "scale": 2, "embed_dim": 32, "depths": (1,), "num_heads": (2,), "split_size_0": 4, "split_size_1": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "img_range": 1.0, "resi_connection": "identity",
    }),
    "swinfir": ("swinfir", {
        "scale": 2, "img_size": 16, "embed_dim": 12, "depths": (2, 1), "num_heads": (3, 2), "window_size": 4,
        "mlp_ratio": 1.5, "qkv_bias": True, "patch_norm": False, "resi_connection": "SFB",
        "upsampler": "pixelshuffle", "num_feat": 8, "img_range": 1.0, "fourier": "fft",
    }),
    "swinfir-t": ("swinfir_t", {
        "scale": 3, "img_size": 12, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": False, "patch_norm": True, "resi_connection": "HSFB",
        "upsampler": "pixelshuffledirect", "img_range": 1.0, "fourier": "fft",
    }),
    "swinfir-real": ("swinfir", {
        "scale": 4, "img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "patch_norm": True, "resi_connection": "HSFB",
        "upsampler": "nearest+conv", "num_feat": 4, "img_range": 1.0, "fourier": "fft",
    }),
}  # fmt: skip

# the export tests' tiny models: one group of depth 1-2, window (or rectangle lcm) 4
TINY = {
    "craft": {"embed_dim": 32, "depths": (1,), "num_heads": (2,), "split_size_0": 2, "split_size_1": 4},
    "swinfir": {"img_size": 8, "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8},
}  # fmt: skip


def _build(arch: str, args: dict[str, Any], seed: int = 0) -> nn.Module:
    """The model with every trainable tensor random (zero-initialised biases and norms included)."""
    model = create_model(arch, **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _x(h: int = 9, w: int = 11, seed: int = 1) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))  # not a window multiple


# ---- published configurations


def _params(arch: str, scale: int, **overrides: Any) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(arch, scale=scale, **overrides).parameters())


@pytest.mark.parametrize(("scale", "readme"), [(2, 737), (3, 744), (4, 753)])
def test_craft_parameters_match_the_release(scale: int, readme: int) -> None:
    # the official README: 737K / 744K / 753K at x2 / x3 / x4 (here 737 756 / 744 251 / 753 344)
    assert _params("craft", scale) // 1000 == readme


@pytest.mark.parametrize("arch", ["swinfir", "swinfir_t"])
def test_swinfir_is_swinir_with_each_group_conv_replaced_by_an_sfb(arch: str) -> None:
    """SwinFIR's size from its definition: the SwinIR body of the same configuration, each group's closing
    3x3 conv replaced by a spatial-frequency block (the official README gives no parameter count)."""
    dim, depths = (180, (6,) * 6) if arch == "swinfir" else (60, (6, 5, 5, 6))
    red = 1 if arch == "swinfir" else 2
    swinir = "swinir_classical" if arch == "swinfir" else "swinir_lightweight"
    base = _params(
        swinir, 4, img_size=60, window_size=12, embed_dim=dim, depths=depths, num_heads=(6,) * len(depths)
    )
    half = dim // 2
    sfb = (
        2 * (dim * (dim // red) * 9) + dim // red + dim  # S: two 3x3 convs
        + dim * half + half  # F.conv1
        + (2 * half) ** 2 + 2 * half  # F.fu.conv_layer on (real, imag)
        + half * dim + dim  # F.conv2
        + 2 * dim * dim + dim  # fusion
    )  # fmt: skip
    conv = dim * dim * 9 + dim
    n = _params(arch, 4)
    assert n == base + len(depths) * (sfb - conv)
    assert n == (14_497_923 if arch == "swinfir" else 966_696)


# ---- official layouts round-trip and are detected exactly


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_layout_detected_exactly(case: str, tmp_path) -> None:
    arch, args = CASES[case]
    model = _build(arch, args)
    wrapper = ("params", "params_ema")[sorted(CASES).index(case) % 2]
    path = tmp_path / f"{case}.pth"
    torch.save({wrapper: model.state_dict(), "iter": 1000}, path)
    state = load_state_dict_file(path)
    d = detect(state, path=path)
    assert (d.arch, d.args, d.layout, d.form) == (arch, args, "official", "train")
    assert d.family == get_entry(arch).family
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(state), strict=True)
    with torch.no_grad():
        assert torch.equal(net(_x()), model(_x()))


def test_released_configurations_keep_their_names() -> None:
    table = detectors()
    for arch, fam in (("craft", "craft"), ("swinfir", "swinfir"), ("swinfir_t", "swinfir")):
        for scale in (2, 3, 4):
            with torch.device("meta"):
                sd = create_model(arch, scale=scale).state_dict()
            d = table[fam](sd)
            assert d is not None and d.arch == arch and d.scale == scale
    with torch.device("meta"):
        sd = create_model("craft").state_dict()
    d = table["craft"](sd)
    assert d is not None and (d.args["split_size_0"], d.args["split_size_1"]) == (4, 16)
    assert "split_size_0" in d.assumed  # the order of the sides is not in the shapes
    with torch.device("meta"):
        d = table["swinfir"](create_model("swinfir").state_dict())
    assert d is not None and d.args["img_size"] == 60 and d.args["window_size"] == 12


def test_each_detector_answers_only_for_its_own_family() -> None:
    table = detectors()
    states: list[tuple[str, str, dict[str, Tensor]]] = []
    for name in list_models():
        try:
            with torch.device("meta"):
                states.append((get_entry(name).family, name, create_model(name, scale=2).state_dict()))
        except Exception:  # a family that cannot be built on meta is not reachable here
            continue
    with torch.device("meta"):
        for case, (arch, args) in CASES.items():
            states.append((get_entry(arch).family, case, create_model(arch, **args).state_dict()))
    for mine in MINE:
        for fam, name, sd in states:
            assert (table[mine](sd) is not None) == (fam == mine), f"the {mine} detector on {name}"


# ---- bad input


def test_declared_configuration_that_does_not_fit_is_named(tmp_path) -> None:
    arch, args = CASES["swinfir"]
    path = tmp_path / "swinfir_x2.pth"
    torch.save({"params_ema": _build(arch, args).state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model="swinfir", window_size=8)  # the file's window is 4
    msg = str(e.value)  # the window's tables named, with the file's and the declared shapes
    assert (
        "window_size 4 (declared 8)" in msg or "relative_position_bias_table (49, 3) vs model (225, 3)" in msg
    )
    assert "\n" not in msg
    arch, args = CASES["craft"]
    path = tmp_path / "craft_x3.pth"
    torch.save({"params": _build(arch, args).state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model="craft", depths=(1, 1))  # the file's second group has two steps
    msg = str(e.value)
    assert "(declared (1, 1))" in msg or "unexpected keys layers.1.residual_group.hf_blocks.1." in msg
    assert "\n" not in msg
    assert isinstance(load_checkpoint(path), nn.Module)  # detected, it loads


@pytest.mark.parametrize("name", sorted(TINY))
def test_input_smaller_than_a_window_is_refused(name: str) -> None:
    model = create_model(name, scale=2, **TINY[name]).eval()
    with pytest.raises(ConfigError, match="smaller than the attention window 4") as e:
        model(torch.rand(1, 3, 3, 12))
    assert "\n" not in str(e.value)
    assert model(torch.rand(1, 3, 4, 5)).shape == (1, 3, 8, 10)  # one window: padded, then cropped


def test_craft_needs_a_position_bias_width() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        create_model("craft", embed_dim=24, num_heads=(2,) * 4)


# ---- the rewritten ops equal the official ones


@pytest.mark.parametrize("shift", [(2, 8), (-2, -8), (-1, 3), (0, -5)])
def test_roll_equals_torch_roll(shift: tuple[int, int]) -> None:
    x = torch.randn(2, 16, 12, 3)
    assert torch.equal(roll_hw(x, *shift, (1, 2)), torch.roll(x, shift, dims=(1, 2)))


@pytest.mark.parametrize(("hs", "ws"), [(4, 16), (16, 4), (2, 3)])
def test_rectangle_tables_pair_each_offset_with_its_index(hs: int, ws: int) -> None:
    index, offsets = rectangle_index(hs, ws), rectangle_offsets(hs, ws)
    assert index.shape == (hs * ws, hs * ws) and offsets.shape == ((2 * hs - 1) * (2 * ws - 1), 2)
    coords = [(i, j) for i in range(hs) for j in range(ws)]
    for a in (0, 5 % (hs * ws), hs * ws - 1):
        for b in range(hs * ws):
            want = (coords[a][0] - coords[b][0], coords[a][1] - coords[b][1])
            assert tuple(offsets[index[a, b]].tolist()) == want


@pytest.mark.parametrize("size", [(4, 4), (9, 11), (12, 7)])
def test_mirror_padding_is_the_official_flip_concatenation(size: tuple[int, int]) -> None:
    ws, (h, w) = 4, size
    x = torch.randn(1, 2, h, w)
    hp, wp = (h // ws + 1) * ws, (w // ws + 1) * ws
    ref = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :hp]
    ref = torch.cat([ref, torch.flip(ref, [3])], 3)[:, :, :, :wp]
    assert torch.equal(mirror_pad_next_window(x, ws), ref)


@pytest.mark.parametrize("size", [(8, 8), (9, 11), (12, 7), (5, 16)])
def test_dft_matmuls_equal_torch_fft(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g)
    spec = torch.fft.rfft2(x, norm="ortho")
    re, im = rfft2_dft(x)
    torch.testing.assert_close(re, spec.real, atol=2e-6, rtol=0)
    torch.testing.assert_close(im, spec.imag, atol=2e-6, rtol=0)
    # any (re, im): irfft ignores the imaginary part of the zero (and even-width Nyquist) column
    a, b = torch.randn(2, *spec.shape, generator=g)
    ref = torch.fft.irfft2(torch.complex(a, b), s=size, norm="ortho")
    torch.testing.assert_close(irfft2_dft(a, b, size), ref, atol=5e-6, rtol=0)


def test_fourier_unit_and_model_forms_agree() -> None:
    unit = FourierUnit(3, "fft").eval()
    x = torch.randn(1, 3, 9, 10)
    with torch.no_grad():
        ref = unit(x)
        unit.fourier = "dft"
        torch.testing.assert_close(unit(x), ref, atol=1e-5, rtol=0)
    model = _build("swinfir", {"scale": 2, **TINY["swinfir"]}, seed=4)
    with torch.no_grad():
        ref = model(_x())
        got = use_fourier(model, "dft")(_x())
    assert (got - ref).abs().max() < 1e-4
    assert card_of(model).args["fourier"] == "dft"


# ---- export


def _tiny(name: str, fourier: str = "fft") -> nn.Module:
    model = _build(name, {"scale": 2, **TINY[name]}, seed=2)
    return use_fourier(model, "dft") if fourier == "dft" else model


def _compare(model: nn.Module, runner: Any, sizes: list[tuple[int, int]]) -> None:
    for size in sizes:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = runner.forward(x.numpy())
        assert got.shape == ref.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert np.abs(got - ref).max() <= 1e-4, size


# ExecuTorch's lowering of these graphs takes most of a minute each: marked slow
DYNAMIC = [
    ("craft", "fft", "onnx"),
    ("swinfir", "fft", "onnx"),
    pytest.param("craft", "fft", "executorch", marks=pytest.mark.slow),
    pytest.param("swinfir", "fft", "executorch", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "fourier", "target"), DYNAMIC)
def test_one_artifact_serves_every_size_of_the_range(name: str, fourier: str, target: str, tmp_path) -> None:
    """ONNX takes SwinFIR's FFT (its DFT op); ExecuTorch has no complex tensors: export takes the ``dft`` form."""
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    model = _tiny(name, fourier)
    art = export(model, target, tmp_path, ExportSpec(input_size=(16, 20), dynamic=(8, 24)))
    _compare(model, load(art.path), [(16, 16), (13, 22), (8, 24), (23, 9)])


# TFLite's lowering of these graphs takes most of a minute each on two cores: slow
FIXED = [
    ("craft", "fft", "coreml"),
    pytest.param("craft", "fft", "tflite", marks=pytest.mark.slow),
    ("swinfir", "fft", "coreml"),
    pytest.param("swinfir", "fft", "tflite", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "fourier", "target"), FIXED)
def test_fixed_size_coreml_and_tflite(name: str, fourier: str, target: str, tmp_path) -> None:
    """At a size that is not a window multiple (padding and crop inside the artifact); Core ML checked by
    the reference execution of the saved program off macOS."""
    from edge_sr.convert import ExportSpec, export, target_module

    from edge_sr.runtime import load

    model = _tiny(name, fourier)
    art = export(
        model, target, tmp_path / f"{name}{target_module(target).SUFFIX}", ExportSpec(input_size=(10, 14))
    )
    # SwinFIR as loaded (FFT) is exported in its DFT form: these targets have no complex tensors
    assert art.manifest["args"]["fourier" if name == "swinfir" else "split_size_1"] == (
        "dft" if name == "swinfir" else 4
    )
    _compare(model, load(art.path), [(10, 14)])


def test_export_takes_the_dft_form_where_a_target_has_no_complex_tensors() -> None:
    from edge_sr.models.card import card_of

    net = create_model("swinfir", scale=2, **TINY["swinfir"]).eval()
    assert net.fourier == "fft"
    for target in ("coreml", "tflite", "executorch"):
        dft = net.for_target(target)
        assert dft is not net and dft.fourier == "dft" and card_of(dft).args["fourier"] == "dft"
        x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.allclose(dft(x), net(x), atol=1e-5)
    assert net.for_target("onnx") is net and net.fourier == "fft"
