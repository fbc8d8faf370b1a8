"""SRFormer / SRFormer-light and DAT / DAT-S / DAT-light: published sizes, official layouts, official
semantics, detection, refusals and export.

The official-semantics tests transcribe the parts of the official forward passes most easily got wrong
(PSA's key/value folding and its aligned bias index, the permuted-window mask, DAT's shifted dual windows
with ``torch.roll`` and zero padding, DAT's channel attention) and compare the zoo modules with them on
random weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models import create_model, get_entry, list_models, load_state_dict_file
from edge_sr.models.dat import DAT, dual_window_masks, roll_hw
from edge_sr.models.detect import detect, detectors
from edge_sr.models.srformer import SRFormer, aligned_relative_position_index, permuted_window_mask
from edge_sr.models.swin_common import relative_position_index, window_partition

MINE = ("srformer", "dat")

# (arch, full constructor arguments): none of them a registry default
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "srformer": ("srformer", {
        "scale": 3, "img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 1.5, "qkv_bias": False, "patch_norm": False, "resi_connection": "3conv",
        "upsampler": "pixelshuffle", "num_feat": 8, "img_range": 1.0,
    }),
    "srformer-light": ("srformer_light", {
        "scale": 2, "img_size": 8, "embed_dim": 12, "depths": (2,), "num_heads": (3,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "patch_norm": True, "resi_connection": "1conv",
        "upsampler": "pixelshuffledirect", "img_range": 1.0,
    }),
    "srformer-real-unshifted": ("srformer", {  # a patch of one window: no shift, no mask stored
        "scale": 4, "img_size": 4, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4,
        "mlp_ratio": 2.0, "qkv_bias": True, "patch_norm": True, "resi_connection": "1conv",
        "upsampler": "nearest+conv", "num_feat": 4, "img_range": 1.0,
    }),
    "dat": ("dat", {
        "scale": 2, "img_size": 8, "embed_dim": 32, "depths": (3,), "num_heads": (4,), "split_size": (2, 4),
        "expansion_factor": 2.0, "qkv_bias": True, "resi_connection": "1conv", "upsampler": "pixelshuffle",
        "num_feat": 8, "img_range": 1.0,
    }),
    "dat-s": ("dat_s", {
        "scale": 3, "img_size": 16, "embed_dim": 32, "depths": (1, 1), "num_heads": (2, 2),
        "split_size": (8, 16), "expansion_factor": 1.0, "qkv_bias": False, "resi_connection": "3conv",
        "upsampler": "pixelshuffle", "num_feat": 8, "img_range": 1.0,
    }),
    "dat-light-unshifted": ("dat_light", {  # no shifted block: no mask, the size is the releases' 64
        "scale": 4, "img_size": 64, "embed_dim": 32, "depths": (2,), "num_heads": (2,), "split_size": (4, 4),
        "expansion_factor": 2.0, "qkv_bias": True, "resi_connection": "3conv",
        "upsampler": "pixelshuffledirect", "img_range": 1.0,
    }),
}  # fmt: skip


def _build(arch: str, args: dict[str, Any], seed: int = 0) -> nn.Module:
    """The model with every trainable tensor and BatchNorm statistic random."""
    model = create_model(arch, **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _x(h: int = 9, w: int = 11, seed: int = 1) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- published configurations (meta device: shapes only)

RELEASED = [  # (arch, overrides, scale, parameters reported by the paper / official README, in millions)
    ("srformer", {}, 2, 10.40),  # the paper's 24×24 windows (SwinIR comparison table, ×2)
    ("srformer", {"window_size": 22, "img_size": 64}, 4, None),  # the DF2K releases' configuration
    ("srformer_light", {}, 4, 0.873),
    ("dat", {}, 4, 14.80),
    ("dat_s", {}, 4, 11.21),
    ("dat", {"expansion_factor": 2.0}, 4, 11.21),  # DAT-2
    ("dat_light", {}, 4, 0.573),
]


@pytest.mark.parametrize(("arch", "overrides", "scale", "paper"), RELEASED)
def test_published_configurations(arch: str, overrides: dict, scale: int, paper: float | None) -> None:
    with torch.device("meta"):
        model = create_model(arch, scale=scale, **overrides)
    if paper is not None:
        n = sum(p.numel() for p in model.parameters())
        assert abs(n / 1e6 - paper) / paper < 0.005, n
    d = detect(model.state_dict())  # proven against the model it describes: unique and exact
    assert d.arch == arch and d.scale == scale
    for k, v in overrides.items():
        want = (
            -(-v // overrides.get("window_size", 24)) * overrides.get("window_size", 24)
            if k == "img_size"
            else v
        )
        assert d.args[k] == want, k  # img_size: the patch resolution, rounded up to the window as officially


def test_released_srformer_buffers_are_the_official_shapes() -> None:
    # DF2K ×4 release: img_size 64, window 22 -> 66×66 patches, 9 windows of 484 queries × 121 keys
    with torch.device("meta"):
        sd = create_model("srformer", scale=4, window_size=22, img_size=64).state_dict()
    p = "layers.5.residual_group.blocks.5"
    assert tuple(sd[f"{p}.attn_mask"].shape) == (9, 484, 121)
    assert tuple(sd[f"{p}.attn.aligned_relative_position_index"].shape) == (484, 121)
    assert tuple(sd[f"{p}.attn.relative_position_bias_table"].shape) == (21 * 21, 6)
    assert f"{p[:-1]}4.attn_mask" not in sd


def test_released_dat_buffers_are_the_official_shapes() -> None:
    with torch.device("meta"):
        sd = create_model("dat", scale=4).state_dict()
    shifted = {k.split(".attn.")[0] for k in sd if k.endswith("attn_mask_0")}
    # groups 0, 2, 4: blocks 2; groups 1, 3, 5: blocks 0 and 4
    assert shifted == {f"layers.{i}.blocks.{j}" for i in range(6) for j in ((2,) if i % 2 == 0 else (0, 4))}
    assert tuple(sd["layers.0.blocks.2.attn.attn_mask_0"].shape) == (16, 256, 256)
    assert tuple(sd["layers.0.blocks.0.attn.attns.1.rpe_biases"].shape) == (15 * 63, 2)
    assert tuple(sd["layers.0.blocks.1.attn.temperature"].shape) == (6, 1, 1)
    assert tuple(sd["layers.0.blocks.0.attn.attns.0.pos.pos3.2.weight"].shape) == (3, 5)


# ---- official layout round trip


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
    assert d.family == get_entry(arch).family and d.mean is not None
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(state), strict=True)
    with torch.no_grad():
        assert torch.equal(net(_x()), model(_x()))


@pytest.mark.parametrize("case", ["srformer", "dat"])
def test_files_without_buffers_get_them_back(case: str) -> None:
    arch, args = CASES[case]
    model = _build(arch, args)
    full = model.state_dict()
    sd = {k: v for k, v in full.items() if "attn_mask" not in k and "aligned_relative" not in k}
    assert len(sd) < len(full)
    d = detect(sd)
    assert d.layout == "official-nobuffers" and "img_size" in d.assumed
    net = create_model(d.arch, **d.args).eval()
    net.load_state_dict(d.state(sd), strict=True)
    with torch.no_grad():
        assert torch.equal(net(_x()), model(_x()))


# ---- official semantics


def _official_psa_mask(h: int, w: int, ws: int) -> Tensor:
    """The official ``calculate_mask`` of SRFormer, slice loops and all (its column slices included)."""
    p = s = ws // 2
    full, half = torch.zeros(1, h, w, 1), torch.zeros(1, h // 2, w // 2, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for vs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            full[:, hs, vs, :] = cnt
            cnt += 1
    cnt = 0
    for hs in (slice(0, -p), slice(-p, -s), slice(-s, None)):
        for vs in (slice(0, -p), slice(-p, -p), slice(-p, None)):
            half[:, hs, vs, :] = cnt
            cnt += 1
    q, k = window_partition(full, ws)[..., 0], window_partition(half, p)[..., 0]
    diff = q[:, :, None] - k[:, None, :]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize(("h", "w", "ws"), [(8, 8, 4), (8, 16, 4), (24, 12, 4), (44, 66, 22), (48, 48, 24)])
def test_permuted_window_mask_is_the_official_one(h: int, w: int, ws: int) -> None:
    assert torch.equal(permuted_window_mask(h, w, ws), _official_psa_mask(h, w, ws))


@pytest.mark.parametrize("ws", [4, 6, 22])
def test_aligned_index_is_the_official_one(ws: int) -> None:
    p = ws // 2
    idx = relative_position_index(p).reshape(p, p, 1, 1, p * p).repeat(1, 1, 2, 2, 1)
    official = idx.permute(0, 2, 1, 3, 4).reshape(4 * p * p, p * p)
    assert torch.equal(aligned_relative_position_index(ws), official)


def _official_psa(attn: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """SRFormer's ``PSA.forward`` as written officially (one 7-D fold of the key/value channels)."""
    b_, n, c = x.shape
    p, h = attn.permuted, attn.num_heads
    kv = attn.kv(x).reshape(b_, p, 2, p, 2, 2, c // 4).permute(0, 1, 3, 5, 2, 4, 6)
    kv = kv.reshape(b_, n // 4, 2, h, c // h).permute(2, 0, 3, 1, 4)
    q = attn.q(x).reshape(b_, n, 1, h, c // h).permute(2, 0, 3, 1, 4)[0] * attn.scale
    a = q @ kv[0].transpose(-2, -1)
    index = aligned_relative_position_index(2 * p).view(-1)
    a = a + attn.relative_position_bias_table[index].view(n, n // 4, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        a = (a.view(b_ // nw, nw, h, n, n // 4) + mask.unsqueeze(1).unsqueeze(0)).view(-1, h, n, n // 4)
    return attn.proj((a.softmax(-1) @ kv[1]).transpose(1, 2).reshape(b_, n, c))


def test_psa_is_the_official_attention() -> None:
    arch, args = CASES["srformer-light"]
    attn = _build(arch, args).layers[0].residual_group.blocks[1].attn
    mask = permuted_window_mask(8, 12, 4)  # 6 windows
    x = torch.randn(2 * 6, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask.repeat(2, 1, 1)), _official_psa(attn, x, mask))
        torch.testing.assert_close(attn(x), _official_psa(attn, x, None))


def _official_dat_masks(h: int, w: int, s0: int, s1: int) -> tuple[Tensor, Tensor]:
    def one(rs: int, cs: int) -> Tensor:
        img, cnt = torch.zeros(1, h, w, 1), 0
        for hs in (slice(0, -rs), slice(-rs, -(rs // 2)), slice(-(rs // 2), None)):
            for vs in (slice(0, -cs), slice(-cs, -(cs // 2)), slice(-(cs // 2), None)):
                img[:, hs, vs, :] = cnt
                cnt += 1
        win = img.view(1, h // rs, rs, w // cs, cs, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, rs * cs)
        d = win.unsqueeze(1) - win.unsqueeze(2)
        return d.masked_fill(d != 0, -100.0).masked_fill(d == 0, 0.0)

    return one(s0, s1), one(s1, s0)


@pytest.mark.parametrize(("h", "w", "split"), [(8, 8, (2, 4)), (16, 32, (8, 16)), (64, 64, (8, 32))])
def test_dual_window_masks_are_the_official_ones(h: int, w: int, split: tuple[int, int]) -> None:
    for got, want in zip(dual_window_masks(h, w, split), _official_dat_masks(h, w, *split)):
        assert torch.equal(got, want)


def test_roll_is_torch_roll() -> None:
    x = torch.randn(2, 6, 8, 3)
    for dh, dw in [(1, 2), (-1, -2), (3, 0), (0, -4)]:
        assert torch.equal(roll_hw(x, dh, dw), torch.roll(x, (dh, dw), dims=(1, 2)))


def _official_window_attention(att: nn.Module, qkv: Tensor, h: int, w: int, mask: Tensor | None) -> Tensor:
    """DAT's ``Spatial_Attention.forward``: (3, B, L, C') padded tokens -> (B, H', W', C')."""
    hs, ws, heads = att.hs, att.ws, att.num_heads
    b, _, c = qkv[0].shape
    n = hs * ws

    def im2win(t: Tensor) -> Tensor:
        t = t.transpose(-2, -1).reshape(b, c, h, w).view(b, c, h // hs, hs, w // ws, ws)
        t = t.permute(0, 2, 4, 3, 5, 1).reshape(-1, n, c)
        return t.reshape(-1, n, heads, c // heads).permute(0, 2, 1, 3)

    q, k, v = im2win(qkv[0]) * att.scale, im2win(qkv[1]), im2win(qkv[2])
    a = q @ k.transpose(-2, -1)
    pos = att.pos(att.rpe_biases)
    a = a + pos[att.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        a = (a.view(b, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
    y = (a.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    y = y.view(b, h // hs, w // ws, hs, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h, w, -1)


def _official_spatial(mod: nn.Module, x: Tensor, h: int, w: int, shifted: bool) -> Tensor:
    """DAT's ``Adaptive_Spatial_Attention.forward``: zero padding, ``torch.roll``, both branches, AIM."""
    b, L, c = x.shape
    s0, s1 = mod.split
    qkv = mod.qkv(x).reshape(b, -1, 3, c).permute(2, 0, 1, 3)
    v = qkv[2].transpose(-2, -1).reshape(b, c, h, w)
    m = max(s0, s1)
    pr, pb = (m - w % m) % m, (m - h % m) % m
    qkv = F.pad(qkv.reshape(3 * b, h, w, c).permute(0, 3, 1, 2), (0, pr, 0, pb))
    qkv = qkv.reshape(3, b, c, -1).transpose(-2, -1)
    hh, ww = h + pb, w + pr
    if shifted:
        m0, m1 = _official_dat_masks(hh, ww, s0, s1)
        q5 = qkv.reshape(3, b, hh, ww, c)
        q0 = torch.roll(q5[..., : c // 2], (-(s0 // 2), -(s1 // 2)), dims=(2, 3)).reshape(3, b, -1, c // 2)
        q1 = torch.roll(q5[..., c // 2 :], (-(s1 // 2), -(s0 // 2)), dims=(2, 3)).reshape(3, b, -1, c // 2)
        x1 = torch.roll(_official_window_attention(mod.attns[0], q0, hh, ww, m0), (s0 // 2, s1 // 2), (1, 2))
        x2 = torch.roll(_official_window_attention(mod.attns[1], q1, hh, ww, m1), (s1 // 2, s0 // 2), (1, 2))
    else:
        x1 = _official_window_attention(mod.attns[0], qkv[..., : c // 2], hh, ww, None)
        x2 = _official_window_attention(mod.attns[1], qkv[..., c // 2 :], hh, ww, None)
    att = torch.cat([x1[:, :h, :w].reshape(b, L, c // 2), x2[:, :h, :w].reshape(b, L, c // 2)], dim=2)
    conv_x = mod.dwconv(v)
    channel_map = mod.channel_interaction(conv_x).permute(0, 2, 3, 1).reshape(b, 1, c)
    spatial_map = mod.spatial_interaction(att.transpose(-2, -1).reshape(b, c, h, w))
    att = att * torch.sigmoid(channel_map)
    conv_x = (torch.sigmoid(spatial_map) * conv_x).permute(0, 2, 3, 1).reshape(b, L, c)
    return mod.proj(att + conv_x)


def _official_channel(mod: nn.Module, x: Tensor, h: int, w: int) -> Tensor:
    """DAT's ``Adaptive_Channel_Attention.forward``."""
    b, n, c = x.shape
    heads = mod.num_heads
    qkv = mod.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = (t.transpose(-2, -1) for t in qkv)
    v_ = v.reshape(b, c, n).view(b, c, h, w)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    a = ((q @ k.transpose(-2, -1)) * mod.temperature).softmax(-1)
    att = (a @ v).permute(0, 3, 1, 2).reshape(b, n, c)
    conv_x = mod.dwconv(v_)
    channel_map = mod.channel_interaction(att.transpose(-2, -1).reshape(b, c, h, w))
    spatial_map = mod.spatial_interaction(conv_x).permute(0, 2, 3, 1).reshape(b, n, 1)
    att = att * torch.sigmoid(spatial_map)
    conv_x = (conv_x * torch.sigmoid(channel_map)).permute(0, 2, 3, 1).reshape(b, n, c)
    return mod.proj(att + conv_x)


@pytest.mark.parametrize(("h", "w"), [(5, 7), (8, 8), (3, 9)])
def test_dat_attention_is_the_official_one(h: int, w: int) -> None:
    arch, args = CASES["dat"]
    blocks = _build(arch, args).layers[0].blocks
    x = torch.randn(2, h * w, 32)
    with torch.no_grad():
        for j, shifted in ((0, False), (2, True)):
            assert blocks[j].attn.shifted == shifted
            torch.testing.assert_close(
                blocks[j].attn(x, h, w), _official_spatial(blocks[j].attn, x, h, w, shifted)
            )
        torch.testing.assert_close(blocks[1].attn(x, h, w), _official_channel(blocks[1].attn, x, h, w))


# ---- detection refuses other families


def _meta_states() -> list[tuple[str, str, dict[str, Tensor]]]:
    out = []
    for name in list_models():
        try:
            with torch.device("meta"):
                out.append((get_entry(name).family, name, create_model(name, scale=4).state_dict()))
        except Exception:  # a family that cannot be built on meta is not reachable here
            continue
    with torch.device("meta"):
        for case, (arch, args) in CASES.items():
            out.append((get_entry(arch).family, case, create_model(arch, **args).state_dict()))
    return out


def test_each_detector_refuses_the_other_families() -> None:
    table = detectors()
    states = _meta_states()
    assert len({f for f, _, _ in states}) > 10
    for fam in MINE:
        for other, name, sd in states:
            got = table[fam](sd)
            if other == fam:
                assert got is not None, f"the {fam} detector missed {name}"
            else:
                assert got is None, f"the {fam} detector answered for {name}"


# ---- bad input


def test_srformer_tile_smaller_than_the_window_is_refused() -> None:
    arch, args = CASES["srformer"]
    model = create_model(arch, **args).eval()
    with pytest.raises(ConfigError, match="tile 3x9 is smaller than the attention window 4"):
        model(torch.rand(1, 3, 3, 9))


def test_dat_pads_inputs_smaller_than_its_window() -> None:
    arch, args = CASES["dat"]
    with torch.no_grad():
        assert create_model(arch, **args).eval()(torch.rand(1, 3, 1, 3)).shape == (1, 3, 2, 6)


def test_window_or_depths_that_differ_from_the_model_are_named() -> None:
    arch, args = CASES["srformer"]
    sd = create_model(arch, **args).state_dict()
    with pytest.raises(CheckpointError, match=r"window_size 4 \(model 8\)"):
        create_model(arch, **{**args, "window_size": 8, "img_size": 16}).load_state_dict(sd)
    with pytest.raises(CheckpointError, match=r"depths \(2,\) \(model \(2, 2\)\)"):
        create_model(arch, **{**args, "depths": (2, 2), "num_heads": (2, 2)}).load_state_dict(sd)
    arch, args = CASES["dat"]
    sd = create_model(arch, **args).state_dict()
    with pytest.raises(CheckpointError, match=r"split_size \(2, 4\) \(model \(4, 8\)\)"):
        create_model(arch, **{**args, "split_size": (4, 8)}).load_state_dict(sd)
    with pytest.raises(CheckpointError, match=r"depths \(3,\) \(model \(2,\)\)"):
        create_model(arch, **{**args, "depths": (2,)}).load_state_dict(sd)


def test_declared_configuration_that_does_not_fit_the_file_is_refused(tmp_path) -> None:
    from edge_sr.models import load_checkpoint

    arch, args = CASES["dat"]
    path = tmp_path / "dat_x2.pth"
    torch.save({"params": create_model(arch, **args).state_dict()}, path)
    with pytest.raises(
        CheckpointError, match=r"do not fit dat\(.*shape mismatch .*rpe_biases \(21, 2\) vs model \(105, 2\)"
    ):
        load_checkpoint(path, model="dat", split_size=(4, 8))
    with pytest.raises(
        CheckpointError, match=r"the weights of this dat have depths \(3,\) \(declared \(2,\)\)"
    ):
        load_checkpoint(path, model="dat", depths=(2,), num_heads=(4,))


@pytest.mark.parametrize(
    ("cls", "bad", "match"),
    [
        (SRFormer, {"window_size": 5}, "must be even"),
        (SRFormer, {"embed_dim": 10, "depths": (1,), "num_heads": (2,)}, "multiple of 4"),
        (SRFormer, {"upsampler": "nearest+conv", "scale": 2}, "x4 only"),
        (DAT, {"split_size": (3, 4)}, "the larger a multiple of the smaller"),
        (DAT, {"embed_dim": 16}, "at least 32"),
        (DAT, {"num_heads": (3,), "depths": (1,)}, "even divisors"),
        (DAT, {"img_size": 20}, "not a multiple of the window side 32"),
    ],
)
def test_constructor_refusals(cls: type, bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**bad)


# ---- export: one ONNX / ExecuTorch program for every size of a range; CoreML and TFLite at a fixed size

EXPORT = {
    "srformer": ("srformer", {
        "img_size": 8, "embed_dim": 8, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8,
    }),
    "dat": ("dat", {
        "img_size": 8, "embed_dim": 32, "depths": (3,), "num_heads": (2,), "split_size": (2, 4),
        "expansion_factor": 1.0, "num_feat": 8,
    }),
}  # fmt: skip
SIZES = [(8, 8), (13, 22), (24, 24), (9, 17)]


def _export_model(fam: str) -> nn.Module:
    arch, args = EXPORT[fam]
    return _build(arch, {"scale": 2, **args}, seed=2)


# ExecuTorch and PT2 prove the graph's shape assumptions on every size of the range before lowering: minutes
# per family on two cores (SwinIR and HAT run that path in tests/test_transformer_export.py), so slow here
@pytest.mark.parametrize(
    "target",
    ["onnx", pytest.param("executorch", marks=pytest.mark.slow), pytest.param("pt2", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("fam", sorted(EXPORT))
def test_one_program_all_sizes(fam: str, target: str, tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    model = _export_model(fam)
    art = export(model, target, tmp_path, ExportSpec(input_size=(16, 20), dynamic=(8, 24)))
    runner = load(art.path)
    for size in SIZES:
        x = torch.rand(1, 3, *size)
        got = runner.forward(x.numpy())
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == ref.shape == (1, 3, 2 * size[0], 2 * size[1])
        assert np.abs(got - ref).max() <= 1e-4, size


@pytest.mark.parametrize(
    "target", ["coreml", pytest.param("tflite", marks=pytest.mark.slow)]
)  # TFLite lowering: most of a minute
@pytest.mark.parametrize("fam", sorted(EXPORT))
def test_fixed_size_coreml_and_tflite(fam: str, target: str, tmp_path) -> None:
    """At 10×14, not a window multiple: padding, masks and crop are inside the artifact."""
    from edge_sr.convert import ExportSpec, export, target_module

    from edge_sr.runtime import load

    model = _export_model(fam)
    x = _x(10, 14, seed=3)
    art = export(
        model, target, tmp_path / f"{fam}{target_module(target).SUFFIX}", ExportSpec(input_size=(10, 14))
    )
    with torch.no_grad():
        ref = model(x).numpy()
    got = load(art.path).forward(x.numpy())
    assert got.shape == ref.shape == (1, 3, 20, 28)
    assert np.abs(got - ref).max() <= 1e-4
