"""ESRT and LBNet: the papers' parameter counts, official keys and detection round trips, the export rewrites
(patch unfold / fold as convolutions, the chunked attention without a data-dependent split) equal to the
official ops, bad input, and export through every target (ONNX and ExecuTorch: one artifact for a range of
sizes; CoreML and TFLite at a fixed size), each compared with PyTorch."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError, ConversionError
from edge_sr.models import create_model, get_entry, list_models, load_checkpoint, load_state_dict_file
from edge_sr.models import esrt as esrt_module
from edge_sr.models.detect import detect, detectors
from edge_sr.models.esrt import PatchFold, PatchUnfold, chunked_attention

MINE = ("esrt", "lbnet")

# (arch, full constructor arguments), none of them the registry default
CASES: dict[str, tuple[str, dict]] = {
    "esrt": ("esrt", {"scale": 3, "n_feats": 16, "n_blocks": 2, "num_heads": 8}),
    "lbnet": ("lbnet", {"scale": 2, "n_feat": 16, "num_heads": 8, "reduction": 2, "rgb_range": 255.0}),
    "lbnet-t": ("lbnet_t", {"scale": 4, "n_feat": 16, "num_heads": 6, "reduction": 1, "rgb_range": 255.0}),
}
# the export models: one body, x2
TINY = {"esrt": {"n_feats": 16, "n_blocks": 1}, "lbnet": {"n_feat": 16}}
# the smallest side of an exported range: ESRT attends in quarters of H·W (N // 4 >= 4 needs 16 pixels),
# LBNet in sixteenths (256 pixels)
LOW = {"esrt": 4, "lbnet": 16}


def _build(arch: str, args: dict, seed: int = 0) -> nn.Module:
    """The model with every parameter random (so no zero bias or unit scale hides a wrong key)."""
    model = create_model(arch, **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _x(h: int, w: int, seed: int = 1) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _meta(name: str, **args) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **args)


# ---- published sizes and official keys


# (entry, scale, parameters of the official code, the paper's / README's count)
PUBLISHED = [
    ("esrt", 4, 751_767, 751_000),
    ("esrt", 3, 770_263, 770_000),
    ("esrt", 2, 677_783, 677_000),
    ("lbnet", 4, 741_668, 742_000),
    ("lbnet", 3, 735_599, 736_000),
    ("lbnet", 2, 731_264, 731_000),
    ("lbnet_t", 4, 410_501, 410_000),
    ("lbnet_t", 3, 407_078, 407_000),
    ("lbnet_t", 2, 404_633, 404_000),
]


@pytest.mark.parametrize(("name", "scale", "exact", "paper"), PUBLISHED)
def test_parameter_counts_match_the_papers(name: str, scale: int, exact: int, paper: int) -> None:
    n = sum(p.numel() for p in _meta(name, scale=scale).parameters())
    assert n == exact
    assert abs(n - paper) / paper < 0.002
    assert get_entry(name).kind == "heavy"


def test_official_key_names_and_shapes() -> None:
    e = _meta("esrt", scale=4).state_dict()
    p = "body.0.encoder1.encoder"
    assert tuple(e["head.0.weight"].shape) == (32, 3, 3, 3)
    assert tuple(e[f"{p}.layer1.conv.weight"].shape) == (16, 32, 3, 3)
    assert tuple(e[f"{p}.layer1.relu.weight"].shape) == (16,)
    assert tuple(e[f"{p}.weight1.scale"].shape) == (1,)  # stored, unused in the forward, as officially
    assert f"{p}.layer4.conv.bias" not in e and f"{p}.layer4.conv.weight" in e
    assert tuple(e[f"{p}.atten.conv_du.0.weight"].shape) == (2, 32, 1, 1)
    assert tuple(e["body.0.encoder3.alise2.conv.weight"].shape) == (32, 64, 1, 1)
    assert tuple(e["body.0.attention.atten.reduce.weight"].shape) == (144, 288)
    assert tuple(e["body.0.attention.atten.qkv.weight"].shape) == (432, 144)
    assert "body.0.attention.atten.qkv.bias" not in e and "body.0.attention.atten.proj.bias" in e
    assert tuple(e["body.0.attention.mlp.fc1.weight"].shape) == (72, 288)
    assert tuple(e["tail.0.2.weight"].shape) == (128, 32, 3, 3)
    assert tuple(e["up.1.conv.weight"].shape) == (3, 32, 3, 3)
    assert not any("unfold" in k or "fold." in k for k in e)  # the one-hot kernels are not stored
    lb = _meta("lbnet", scale=4).state_dict()
    assert tuple(lb["sub_mean.weight"].shape) == (3, 3, 1, 1) and "add_mean.bias" in lb
    assert tuple(lb["r1.c1.weight"].shape) == (32, 32, 1, 1)  # grouped 1x1 (groups 2)
    assert tuple(lb["r3.b2.sa.conv1.weight"].shape) == (1, 2, 7, 7)
    assert tuple(lb["r1.b1.se.conv_du.0.weight"].shape) == (4, 64, 1, 1)
    assert tuple(lb["attention2.atten.reduce.weight"].shape) == (144, 288)
    assert tuple(lb["tail.0.weight"].shape) == (48, 32, 3, 3)
    lt = _meta("lbnet_t", scale=4).state_dict()
    assert tuple(lt["attention.atten.reduce.weight"].shape) == (162, 162)  # LBNet-T: no narrowing


# ---- detection


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_layout_detected_exactly(case: str, tmp_path) -> None:
    arch, args = CASES[case]
    model = _build(arch, args)
    wrapper = ("params", "params_ema")[sorted(CASES).index(case) % 2]
    path = tmp_path / f"{case}.pth"
    torch.save({wrapper: model.state_dict()}, path)
    state = load_state_dict_file(path)
    d = detect(state, path=path)
    assert (d.arch, d.args, d.layout, d.form) == (arch, args, "official", "train")
    assert "num_heads" in d.assumed
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(state), strict=True)
    x = _x(6, 7) if arch == "esrt" else _x(16, 17)  # both have a remainder chunk
    with torch.no_grad():
        assert torch.equal(net(x), model(x))
    if arch != "esrt":
        assert d.value_range == 255.0 and d.mean == pytest.approx((0.4488, 0.4371, 0.4040))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scale_read_from_the_upsampler(case: str, scale: int) -> None:
    arch, args = CASES[case]
    args = {**args, "scale": scale}
    assert detect(_meta(arch, **args).state_dict()).args == args


def test_each_detector_refuses_the_other_families() -> None:
    table = detectors()
    states = {}
    for name in list_models():
        try:
            states[name] = (get_entry(name).family, _meta(name, scale=2).state_dict())
        except Exception:  # a family that cannot be built on meta is not reachable here
            continue
    for case, (arch, args) in CASES.items():
        states[case] = (get_entry(arch).family, _meta(arch, **args).state_dict())
    assert {fam for fam, _ in states.values()} >= set(MINE)
    for key, (fam, sd) in states.items():
        for mine in MINE:
            got = table[mine](sd)
            assert (got is not None) == (fam == mine), f"the {mine} detector on {key}"
        if fam in MINE:  # and no other family claims ours
            for other, fn in table.items():
                if other != fam:
                    assert fn(sd) is None, f"the {other} detector answered for {key}"


def test_declared_configuration_that_does_not_fit_is_named(tmp_path) -> None:
    arch, args = CASES["esrt"]
    path = tmp_path / "esrt_x3.pth"
    torch.save(_build(arch, args).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model="esrt", n_blocks=1)  # the file has two bodies
    assert re.search(r"body\.1\.|n_blocks", str(e.value)) and "\n" not in str(e.value)
    arch, args = CASES["lbnet"]
    path = tmp_path / "lbnet_x2.pth"
    torch.save(_build(arch, args).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model="lbnet", reduction=1)  # the file narrows by 2
    assert re.search(r"attention\.atten\.reduce\.weight|reduction", str(e.value)) and "\n" not in str(e.value)


# ---- the rewrites equal the official ops


def test_patch_unfold_and_fold_equal_nn_unfold_and_fold() -> None:
    x = torch.randn(2, 5, 7, 9)
    tokens = PatchUnfold(5)(x)
    ref = F.unfold(F.pad(x, (1, 1, 1, 1)), 3).permute(0, 2, 1)  # the official "same" extraction
    assert torch.equal(tokens, ref)
    t = torch.randn(2, 63, 45)
    got = PatchFold(5)(t, 7, 9)
    want = F.fold(t.permute(0, 2, 1), (7, 9), 3, padding=1)
    # up to 9 overlapping float32 values summed in another order: a few ulp of sums of magnitude ~5
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _official_split(q: Tensor, k: Tensor, v: Tensor, parts: int, scale: float) -> Tensor:
    size = math.ceil(q.shape[2] // parts)
    out = []
    for qc, kc, vc in zip(q.split(size, -2), k.split(size, -2), v.split(size, -2), strict=True):
        out.append(((qc @ kc.transpose(-2, -1)) * scale).softmax(-1) @ vc)
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("parts", [4, 16])
@pytest.mark.parametrize("n", [4, 15, 16, 17, 31, 255, 256, 257, 271, 300])
def test_chunked_attention_equals_the_official_split(parts: int, n: int) -> None:
    if n < parts:
        pytest.skip("fewer tokens than chunks: refused before the attention")
    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(2, 3, n, 5, generator=g) for _ in range(3))
    got = chunked_attention(q, k, v, parts, 0.4)
    torch.testing.assert_close(got, _official_split(q, k, v, parts, 0.4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", MINE)
def test_whole_model_equals_the_official_ops(name: str, monkeypatch) -> None:
    model = _build(name, {"scale": 2, **TINY[name]}, seed=4)
    # a divisible and an indivisible token count, and (LBNet) a map under 16 chunks of 16: the official loop
    sizes = [(4, 8), (5, 7)] if name == "esrt" else [(17, 19), (9, 11)]
    with torch.no_grad():
        got = [model(_x(*s)) for s in sizes]
    monkeypatch.setattr(esrt_module, "chunked_attention", _official_split)
    monkeypatch.setattr(
        PatchUnfold, "forward", lambda self, x: F.unfold(F.pad(x, (1,) * 4), 3).permute(0, 2, 1)
    )
    monkeypatch.setattr(
        PatchFold, "forward", lambda self, t, h, w: F.fold(t.permute(0, 2, 1), (h, w), 3, padding=1)
    )
    with torch.no_grad():
        for s, y in zip(sizes, got, strict=True):
            torch.testing.assert_close(y, model(_x(*s)), atol=2e-5, rtol=0)


# ---- bad input


def test_too_small_inputs_and_bad_constructor_arguments_are_one_line_errors() -> None:
    esrt = create_model("esrt", scale=2, **TINY["esrt"]).eval()
    lbnet = create_model("lbnet", scale=2, **TINY["lbnet"]).eval()
    with pytest.raises(ConfigError, match="esrt: input 1x8 is too small"):
        esrt(torch.rand(1, 3, 1, 8))
    with pytest.raises(ConfigError, match=r"lbnet: input 3x5 is too small.*at least 16"):
        lbnet(torch.rand(1, 3, 3, 5))
    with pytest.raises(ConfigError, match="scale 5"):
        create_model("esrt", scale=5)
    with pytest.raises(ConfigError, match="at least 16"):
        create_model("esrt", n_feats=8)
    with pytest.raises(ConfigError, match="even"):
        create_model("lbnet", n_feat=17)
    with pytest.raises(ConfigError, match="not divisible by num_heads 7"):
        create_model("lbnet", n_feat=16, num_heads=7)


def test_export_range_below_the_attention_chunks_is_refused(tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    model = create_model("lbnet", scale=2, **TINY["lbnet"]).eval()
    with pytest.raises(ConversionError, match=r"a dynamic range of 16:20 avoids them"):
        export(model, "executorch", tmp_path, ExportSpec(input_size=(16, 16), dynamic=(12, 20)))
    assert not list(tmp_path.iterdir())


# ---- export: one graph for a range of sizes (ONNX, ExecuTorch, PT2), fixed sizes (CoreML, TFLite)
# Every family's graph is hundreds of ops (ESRT's decoder runs five times per block, LBNet's CNN twice and
# each transformer three times): the lowerings that take most of a minute or more are marked slow.


def _tiny(name: str) -> nn.Module:
    model = _build(name, {"scale": 2, **TINY[name]}, seed=7)
    if name == "lbnet":  # random weights on [0, 255] give outputs near 100: bring them back near [0, 1]
        with torch.no_grad():  # so the 1e-4 bound means what it means for trained weights
            model.tail[0].weight.mul_(0.02)
            model.tail[0].bias.mul_(0.02)
    return model


def _check_runner(model: nn.Module, path, sizes) -> None:  # noqa: ANN001
    from edge_sr.runtime import load

    runner = load(path)
    for size in sizes:
        x = _x(*size, seed=size[0] * 31 + size[1])
        with torch.no_grad():
            ref = model(x).numpy()
        got = runner.forward(x.numpy())
        assert got.shape == ref.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert np.abs(got - ref).max() <= 1e-4, size


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("esrt", "onnx"),
        ("lbnet", "onnx"),
        ("esrt", "pt2"),
        pytest.param("lbnet", "pt2", marks=SLOW),
        pytest.param("esrt", "executorch", marks=SLOW),
        pytest.param("lbnet", "executorch", marks=SLOW),  # several minutes
    ],
)
def test_one_program_all_sizes(name: str, target: str, tmp_path) -> None:
    """One artifact for sides lo..hi: the smallest (equal chunks only), odd by odd (a remainder chunk), the
    largest."""
    from edge_sr.convert import ExportSpec, export

    model = _tiny(name)
    lo, hi = LOW[name], LOW[name] + 4
    art = export(model, target, tmp_path, ExportSpec(input_size=(lo + 1, lo + 2), dynamic=(lo, hi)))
    _check_runner(model, art.path, [(lo, lo), (lo + 1, lo + 3), (hi, lo + 1)])


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("esrt", "coreml"),
        pytest.param("lbnet", "coreml", marks=SLOW),
        pytest.param("esrt", "tflite", marks=SLOW),
        pytest.param("lbnet", "tflite", marks=SLOW),
    ],
)
def test_fixed_size_coreml_and_tflite(name: str, target: str, tmp_path) -> None:
    """CoreML (the saved program run by the MIL reference executor) and TFLite at a fixed size with an odd
    side (pooling floors, the attention has a remainder chunk)."""
    from edge_sr.convert import ExportSpec, export, target_module

    model = _tiny(name)
    size = (LOW[name] + 1, LOW[name] + 2)
    art = export(
        model, target, tmp_path / f"{name}{target_module(target).SUFFIX}", ExportSpec(input_size=size)
    )
    _check_runner(model, art.path, [size])
