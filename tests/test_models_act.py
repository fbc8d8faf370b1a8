"""ACT (Yoo et al., WACV 2023): the published size, the official forward written out with ``F.unfold`` /
``F.fold``, official-layout round trips through detection, refusals, and export to every target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError, ConversionError
from edge_sr.models import create_model, get_entry, list_models, load_checkpoint, load_state_dict_file
from edge_sr.models.act import (
    check_declared,
    fold_large_tokens,
    from_tokens,
    large_token_permutation,
    large_tokens,
    to_tokens,
)
from edge_sr.models.detect import detect, detectors

# Two stages (so the crosswise fusion MLP / CNN run), token 2: a cross-scale token is 4 px.
TINY = {
    "n_feats": 8, "n_resgroups": 2, "n_resblocks": 1, "reduction": 4, "token_size": 2, "n_heads": 8,
    "n_layers": 4, "expansion_ratio": 2, "n_fusionblocks": 2, "rgb_range": 255.0,
}  # fmt: skip
# The released token size (3) and a head count that does not divide the width (36 / 8): inner widths differ.
TINY3 = {**TINY, "n_feats": 4, "token_size": 3, "n_resgroups": 3, "n_resblocks": 2, "reduction": 2}
# The smallest graph, for export: one stage.
EXPORT = {**TINY, "n_resgroups": 1, "n_layers": 2, "n_fusionblocks": 1}


def _build(args: dict, scale: int = 2, seed: int = 0) -> nn.Module:
    """The model with every trainable tensor random (norms and biases included; the mean shift stays)."""
    model = create_model("act", scale=scale, **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _x(h: int, w: int, seed: int = 1) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- the published configuration


def test_published_parameter_count() -> None:
    # The paper compares sizes in a table of EDSR (43 M), RCAN, SwinIR and IPT: ACT is about 46 M, the
    # count of the official code's ACT at x4 (frozen mean shifts excluded).
    with torch.device("meta"):
        model = create_model("act", scale=4)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == 46_177_411
    assert abs(n / 1e6 - 46.0) / 46.0 < 0.01
    sd = model.state_dict()
    assert tuple(sd["linear_encoding.weight"].shape) == (576, 576)
    assert tuple(sd["mhsa_block.3.0.fn.to_qkv.weight"].shape) == (1728, 576)
    assert tuple(sd["csta_block.3.0.1.weight"].shape) == (288, 1152)
    assert tuple(sd["csta_block.0.3.3.weight"].shape) == (1152, 288)
    assert tuple(sd["csta_block.0.1.fn.to_kv.weight"].shape) == (576, 288)
    assert tuple(sd["fusion_block.3.3.body.2.weight"].shape) == (128, 128, 1, 1)
    assert "fusion_block.0.0.body.0.bias" not in sd  # bias-free 1x1 convs
    assert tuple(sd["head.2.body.0.weight"].shape) == (64, 64, 5, 5)
    assert tuple(sd["cnn_branch.0.body.11.body.3.conv_du.0.weight"].shape) == (4, 64, 1, 1)
    assert {"cnn_branch.4.weight", "fusion_mlp.2.3.bias", "fusion_cnn.2.2.weight", "tail.0.2.weight"} <= set(
        sd
    )
    assert {"sub_mean.weight", "add_mean.bias"} <= set(sd)
    assert "fusion_mlp.3.0.weight" not in sd  # one fewer than the fusion blocks


# ---- the official forward, written out with unfold / fold


def _conv(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd.get(f"{name}.bias"), padding=w.shape[-1] // 2)


def _lin(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _ln(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"])


def _attention(sd, name: str, xq: Tensor, xkv: Tensor | None, heads: int, dim_head: int) -> Tensor:  # noqa: ANN001
    if xkv is None:
        q, k, v = _lin(sd, f"{name}.to_qkv", xq).chunk(3, dim=-1)
    else:
        q = _lin(sd, f"{name}.to_q", xq)
        k, v = _lin(sd, f"{name}.to_kv", xkv).chunk(2, dim=-1)
    q, k, v = (z.reshape(z.shape[0], z.shape[1], heads, -1).permute(0, 2, 1, 3) for z in (q, k, v))
    attn = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * dim_head**-0.5, dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", attn, v).permute(0, 2, 1, 3).flatten(2)
    return _lin(sd, f"{name}.to_out.0", out)


def _ffn(sd, name: str, x: Tensor) -> Tensor:  # noqa: ANN001
    return _lin(sd, f"{name}.net.3", F.gelu(_lin(sd, f"{name}.net.0", x)))


def _mlp(sd, name: str, x: Tensor) -> Tensor:  # noqa: ANN001
    return _lin(sd, f"{name}.3", F.gelu(_lin(sd, f"{name}.1", _ln(sd, f"{name}.0", x))))


def _res(sd, name: str, x: Tensor) -> Tensor:  # noqa: ANN001
    return _conv(sd, f"{name}.body.2", F.relu(_conv(sd, f"{name}.body.0", x))) + x


def _rcan_group(sd, name: str, x: Tensor, blocks: int) -> Tensor:  # noqa: ANN001
    h = x
    for b in range(blocks):
        p = f"{name}.body.{b}.body"
        r = _conv(sd, f"{p}.2", F.relu(_conv(sd, f"{p}.0", h)))
        gate = _conv(
            sd, f"{p}.3.conv_du.2", F.relu(_conv(sd, f"{p}.3.conv_du.0", r.mean((2, 3), keepdim=True)))
        )
        h = r * torch.sigmoid(gate) + h
    return _conv(sd, f"{name}.body.{blocks}", h) + x


def official_act(sd: dict[str, Tensor], x: Tensor, a: dict) -> Tensor:
    """The official ``ACT.forward`` on [0, 255] input whose sides are multiples of the token size."""
    t, nf, heads = a["token_size"], a["n_feats"], a["n_heads"]
    dim = nf * t * t
    dim_head = dim // heads
    h, w = x.shape[-2:]
    x = _conv(sd, "head.0", _conv(sd, "sub_mean", x))
    x = _res(sd, "head.2", _res(sd, "head.1", x))
    identity = x
    tok = F.unfold(x, t, stride=t).transpose(1, 2)
    tok = _lin(sd, "linear_encoding", tok) + tok
    f = x
    for i in range(a["n_fusionblocks"]):
        p, c = f"mhsa_block.{i}", f"csta_block.{i}"
        tok = _attention(sd, f"{p}.0.fn", _ln(sd, f"{p}.0.norm", tok), None, heads, dim_head) + tok
        tok = _ffn(sd, f"{p}.1.fn", _ln(sd, f"{p}.1.norm", tok)) + tok
        ta, tb = tok.split(dim // 2, dim=-1)
        tb = F.fold(tb.transpose(1, 2), (h, w), t, stride=t)
        tb = _mlp(sd, f"{c}.0", F.unfold(tb, 2 * t, stride=t).transpose(1, 2))
        a0, b0 = ta, tb
        ta = (
            _attention(
                sd, f"{c}.1.fn", _ln(sd, f"{c}.1.norm", ta), _ln(sd, f"{c}.1.norm2", b0), heads // 2, dim_head
            )
            + ta
        )
        tb = (
            _attention(
                sd, f"{c}.2.fn", _ln(sd, f"{c}.2.norm", tb), _ln(sd, f"{c}.2.norm2", a0), heads // 2, dim_head
            )
            + tb
        )
        tb = F.fold(_mlp(sd, f"{c}.3", tb).transpose(1, 2), (h, w), 2 * t, stride=t)
        tb = F.unfold(tb, t, stride=t).transpose(1, 2)
        tok = torch.cat([ta, tb], dim=-1)
        tok = _ffn(sd, f"{c}.4.fn", _ln(sd, f"{c}.4.norm", tok)) + tok
        x = _rcan_group(sd, f"cnn_branch.{i}", x, a["n_resblocks"])
        tok_res, x_res = tok, x
        f = torch.cat([x, F.fold(tok.transpose(1, 2), (h, w), t, stride=t)], dim=1)
        g = f
        for k in range(4):
            g = _res(sd, f"fusion_block.{i}.{k}", g)
        f = f + g
        if i != a["n_fusionblocks"] - 1:
            xt, x = f.split(nf, dim=1)
            tok = _mlp(sd, f"fusion_mlp.{i}", F.unfold(xt, t, stride=t).transpose(1, 2)) + tok_res
            x = _conv(sd, f"fusion_cnn.{i}.2", F.relu(_conv(sd, f"fusion_cnn.{i}.0", x))) + x_res
    x = _conv(sd, "conv_last", f) + identity
    j = 0
    while f"tail.0.{j}.weight" in sd:
        y = _conv(sd, f"tail.0.{j}", x)
        x = F.pixel_shuffle(y, int(round((y.shape[1] / x.shape[1]) ** 0.5)))
        j += 2
    return _conv(sd, "add_mean", _conv(sd, "tail.1", x))


@pytest.mark.parametrize(
    ("args", "scale", "size"), [(TINY, 2, (8, 12)), (TINY3, 3, (9, 12)), (TINY, 4, (6, 4))]
)
def test_equals_the_official_forward(args: dict, scale: int, size: tuple[int, int]) -> None:
    model = _build(args, scale, seed=scale)
    x = _x(*size)
    with torch.no_grad():
        ref = official_act(model.state_dict(), x * 255.0, args) / 255.0
        got = model(x)
    assert got.shape == ref.shape == (1, 3, size[0] * scale, size[1] * scale)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=0)


def test_other_sizes_are_the_official_forward_on_the_reflect_padded_input() -> None:
    model = _build(TINY3, 2)
    x = _x(7, 10)  # token 3: padded to 9 x 12
    with torch.no_grad():
        ref = official_act(model.state_dict(), F.pad(x, (0, 2, 0, 2), mode="reflect") * 255.0, TINY3) / 255.0
        torch.testing.assert_close(model(x), ref[..., :14, :20], atol=2e-6, rtol=0)


def test_token_reshapes_equal_unfold_and_fold() -> None:
    t, c, n, m = 3, 2, 4, 5
    x = torch.randn(2, c, n * t, m * t)
    tok = to_tokens(x, t)
    assert torch.equal(tok, F.unfold(x, t, stride=t).transpose(1, 2))
    assert torch.equal(from_tokens(tok, t, n, m), x)
    big = large_tokens(tok, n, m)  # quadrant-major order; unfold's is channel-major
    official = F.unfold(x, 2 * t, stride=t).transpose(1, 2)
    assert torch.equal(big, official[..., large_token_permutation(c, t)])
    y = torch.randn_like(official)
    folded = F.unfold(F.fold(y.transpose(1, 2), x.shape[-2:], 2 * t, stride=t), t, stride=t).transpose(1, 2)
    ours = fold_large_tokens(y[..., large_token_permutation(c, t)], n, m)
    torch.testing.assert_close(ours, folded, atol=1e-6, rtol=0)


# ---- official files: detection round trip


@pytest.mark.parametrize("wrapper", ["params", "params_ema", "lightning"])
def test_official_file_detected_exactly(wrapper: str, tmp_path) -> None:
    model = _build(TINY3, 3)
    path = tmp_path / "act_sr_x3.pt"
    sd = model.state_dict()
    if wrapper == "lightning":  # the official training checkpoint: the LightningModule holds the net as .net
        torch.save({"state_dict": {f"net.{k}": v for k, v in sd.items()}, "epoch": 150}, path)
    else:
        torch.save({wrapper: sd, "epoch": 150}, path)
    state = load_state_dict_file(path)
    d = detect(state, path=path)
    assert (d.arch, d.args, d.layout, d.form) == ("act", {"scale": 3, **TINY3}, "official", "train")
    assert d.family == "act" and d.value_range == 255.0 and d.mean == pytest.approx((0.4488, 0.4371, 0.4040))
    assert set(d.assumed) == {"n_heads", "rgb_range"}
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(state), strict=True)
    x = _x(9, 11)
    with torch.no_grad():
        assert torch.equal(net(x), model(x))
    loaded = load_checkpoint(path)  # the product path: detection, strict load
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scale_and_sizes_read_from_the_shapes(scale: int) -> None:
    args = {**TINY, "n_resblocks": 3, "n_layers": 6, "expansion_ratio": 3, "reduction": 2}
    with torch.device("meta"):
        sd = create_model("act", scale=scale, **args).state_dict()
    assert detect(sd).args == {"scale": scale, **args}


def test_published_configuration_detected() -> None:
    with torch.device("meta"):
        sd = create_model("act", scale=3).state_dict()
    d = detect(sd)
    assert d.arch == "act" and d.args == {
        "scale": 3, "n_feats": 64, "n_resgroups": 4, "n_resblocks": 12, "reduction": 16, "token_size": 3,
        "n_heads": 8, "n_layers": 8, "expansion_ratio": 4, "n_fusionblocks": 4, "rgb_range": 255.0,
    }  # fmt: skip


def test_detector_answers_only_for_act() -> None:
    table = detectors()
    with torch.device("meta"):
        ours = [create_model("act", scale=2, **TINY).state_dict(), create_model("act", scale=4).state_dict()]
        for name in list_models():
            fam = get_entry(name).family
            if fam == "act":
                continue
            try:
                other = create_model(name, scale=2).state_dict()
            except Exception:  # a family that cannot be built on meta (or at x2) is not reachable here
                continue
            assert table["act"](other) is None, f"the act detector answered for {name}"
    for fam, fn in table.items():
        if fam != "act":
            for sd in ours:
                assert fn(sd) is None, f"the {fam} detector answered for ACT"


# ---- refusals


def test_declared_configuration_that_the_weights_contradict(tmp_path) -> None:
    with torch.device("meta"):
        sd = create_model("act", scale=2, **TINY).state_dict()
    assert check_declared(sd, {"scale": 2, **TINY}).args == {"scale": 2, **TINY}
    assert check_declared(sd, {**TINY, "n_heads": 4}).arch == "act"  # not stored: the declared one is taken
    with pytest.raises(
        CheckpointError, match=r"they have token_size 2 \(declared 3\), n_layers 4 \(declared 8\)"
    ):
        check_declared(sd, {**TINY, "token_size": 3, "n_layers": 8}, path="act_x2.pth")
    with pytest.raises(CheckpointError, match="not an ACT state dict"):
        check_declared({"conv.weight": torch.zeros(1)}, TINY)
    # the product path names the arguments it built and the tensors that do not fit
    path = tmp_path / "act_x2.pth"
    torch.save(_build(TINY).state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"the weights of this act have token_size 2 \(declared 3\)",
    ):
        load_checkpoint(path, model="act", token_size=3)


def test_input_smaller_than_one_cross_scale_token() -> None:
    from edge_sr.convert.dynamic import export_dynamic

    model = _build(TINY)
    assert model.min_tile_size == 4
    with pytest.raises(ConfigError, match=r"input 3x9 is smaller than one cross-scale token \(4 px") as e:
        model(_x(3, 9))
    assert "\n" not in str(e.value)
    assert model(_x(4, 4)).shape == (1, 3, 8, 8)  # exactly one cross-scale token
    with pytest.raises(ConfigError, match="smaller than the attention window 4"):
        export_dynamic(model, _x(8, 8), min_size=3, max_size=16)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"n_layers": 3}, "n_layers 3 must be even"),
        ({"n_feats": 7}, "n_feats 7 must be even"),
        ({"n_fusionblocks": 3}, "n_fusionblocks 3 needs as many CNN groups"),
        ({"n_heads": 1}, "n_heads 1 must be between 2"),
        ({"scale": 5}, "scale 5 is not supported"),
    ],
)
def test_configuration_errors(bad: dict, match: str) -> None:
    args = {**TINY, **bad}
    scale = args.pop("scale", 2)
    with pytest.raises(ConfigError, match=match):
        create_model("act", scale=scale, **args)


# ---- export: one dynamic graph for ONNX / ExecuTorch / PT2, fixed CoreML / TFLite


DYN_SIZES = [(5, 5), (5, 9), (12, 16), (13, 22), (24, 7)]  # token 2: odd sizes are padded inside the graph


def _check_runner(model: nn.Module, path, sizes) -> None:  # noqa: ANN001
    from edge_sr.runtime import load

    runner = load(path)
    for size in sizes:
        x = _x(*size, seed=size[0] * 31 + size[1])
        with torch.no_grad():
            ref = model(x).numpy()
        got = runner.forward(x.numpy())
        assert got.shape == ref.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert np.abs(got - ref).max() < 1e-4, size


@pytest.mark.parametrize(
    "target",
    ["onnx", pytest.param("executorch", marks=pytest.mark.slow), pytest.param("pt2", marks=pytest.mark.slow)],
)
def test_one_program_all_sizes(target: str, tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    model = _build(EXPORT)
    art = export(model, target, tmp_path, ExportSpec(input_size=(12, 16), dynamic=(5, 24)))
    _check_runner(model, art.path, DYN_SIZES)


@pytest.mark.slow
def test_dynamic_range_down_to_one_token_is_refused(tmp_path) -> None:
    """A single cross-scale token per axis is a different graph: the traced one assumes more than one."""
    from edge_sr.convert import ExportSpec, export

    with pytest.raises(ConversionError, match=r"false at size 4x4 .*a dynamic range of 5:24 avoids them"):
        export(_build(EXPORT), "executorch", tmp_path, ExportSpec(input_size=(12, 16), dynamic=(4, 24)))


@pytest.mark.parametrize(
    "target", ["coreml", pytest.param("tflite", marks=pytest.mark.slow)]
)  # TFLite lowering: most of a minute
def test_fixed_size_coreml_and_tflite(target: str, tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export, target_module

    model = _build(EXPORT)
    art = export(
        model, target, tmp_path / f"act{target_module(target).SUFFIX}", ExportSpec(input_size=(10, 13))
    )
    _check_runner(model, art.path, [(10, 13)])
