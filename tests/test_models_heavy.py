"""Heavy SR families: official state-dict layouts, loading official-style files, value-range handling,
window pieces equal to their reference definitions, FP16 range checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.errors import CheckpointError, ConfigError
from edge_sr.models import create_model, list_models, load_checkpoint
from edge_sr.models.hat import overlapping_windows
from edge_sr.models.swin_common import (
    cyclic_shift,
    min_tile_size,
    pad_to_window,
    relative_position_index,
    relative_position_index_overlap,
    shifted_window_mask,
)

TINY: dict[str, dict] = {
    "edsr_baseline": {"n_resblocks": 2, "n_feats": 8},
    "edsr": {"n_resblocks": 2, "n_feats": 8},
    "rcan": {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
    "swinir_classical": {
        "img_size": 16, "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "num_feat": 8,
    },
    "swinir_lightweight": {"img_size": 16, "embed_dim": 12, "depths": (2, 2), "num_heads": (2, 3), "window_size": 4},
    "hat_s": {
        "embed_dim": 12, "depths": (2,), "num_heads": (2,), "window_size": 4, "compress_ratio": 3,
        "squeeze_factor": 4, "num_feat": 8,
    },
    "hat": {
        "embed_dim": 12, "depths": (2, 2), "num_heads": (3, 2), "window_size": 4, "compress_ratio": 2,
        "squeeze_factor": 3, "num_feat": 8,
    },
}  # fmt: skip
DEFAULTS = {"edsr_baseline": (16, 64, 1.0), "edsr": (32, 256, 0.1)}
DIV2K_MEAN = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)


# ---- the official layouts, written out from the official code's structure -------------------------------
def _conv(sd: dict, key: str, cout: int, cin: int, k: int) -> None:
    sd[f"{key}.weight"], sd[f"{key}.bias"] = (cout, cin, k, k), (cout,)


def _linear(sd: dict, key: str, cout: int, cin: int) -> None:
    sd[f"{key}.weight"], sd[f"{key}.bias"] = (cout, cin), (cout,)


def _norm(sd: dict, key: str, c: int) -> None:
    sd[f"{key}.weight"], sd[f"{key}.bias"] = (c,), (c,)


def _upsampler(sd: dict, prefix: str, scale: int, f: int) -> None:
    # official Upsampler: (conv 4F, PixelShuffle(2)) per power of 2, or (conv 9F, PixelShuffle(3))
    if scale == 3:
        _conv(sd, f"{prefix}.0", 9 * f, f, 3)
    else:
        for i in range(int(math.log2(scale))):
            _conv(sd, f"{prefix}.{2 * i}", 4 * f, f, 3)


def official_layout(name: str, cfg: dict, scale: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official implementation for a zoo entry (parameters and persistent buffers)."""
    sd: dict[str, tuple[int, ...]] = {}
    if name in ("edsr_baseline", "edsr", "rcan"):
        f = cfg["n_feats"]
        _conv(sd, "sub_mean", 3, 3, 1)
        _conv(sd, "add_mean", 3, 3, 1)
        _conv(sd, "head.0", f, 3, 3)
        if name == "rcan":
            g, nb, r = cfg["n_resgroups"], cfg["n_resblocks"], cfg["reduction"]
            for gi in range(g):
                for b in range(nb):
                    p = f"body.{gi}.body.{b}.body"
                    _conv(sd, f"{p}.0", f, f, 3)
                    _conv(sd, f"{p}.2", f, f, 3)
                    _conv(sd, f"{p}.3.conv_du.0", f // r, f, 1)
                    _conv(sd, f"{p}.3.conv_du.2", f, f // r, 1)
                _conv(sd, f"body.{gi}.body.{nb}", f, f, 3)
            _conv(sd, f"body.{g}", f, f, 3)
        else:
            n = cfg["n_resblocks"]
            for b in range(n):
                _conv(sd, f"body.{b}.body.0", f, f, 3)
                _conv(sd, f"body.{b}.body.2", f, f, 3)
            _conv(sd, f"body.{n}", f, f, 3)
        _upsampler(sd, "tail.0", scale, f)
        _conv(sd, "tail.1", 3, f, 3)
        return sd

    c, ws = cfg["embed_dim"], cfg["window_size"]
    is_hat = name.startswith("hat")
    _conv(sd, "conv_first", c, 3, 3)
    _norm(sd, "patch_embed.norm", c)
    if is_hat:
        ows = ws + int(ws * 0.5)
        sd["relative_position_index_SA"] = (ws * ws, ws * ws)
        sd["relative_position_index_OCA"] = (ws * ws, ows * ows)
    for i, (depth, heads) in enumerate(zip(cfg["depths"], cfg["num_heads"])):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}"
            _norm(sd, f"{p}.norm1", c)
            sd[f"{p}.attn.relative_position_bias_table"] = ((2 * ws - 1) ** 2, heads)
            _linear(sd, f"{p}.attn.qkv", 3 * c, c)
            _linear(sd, f"{p}.attn.proj", c, c)
            _norm(sd, f"{p}.norm2", c)
            _linear(sd, f"{p}.mlp.fc1", 2 * c, c)
            _linear(sd, f"{p}.mlp.fc2", c, 2 * c)
            if is_hat:
                cr, sf = cfg["compress_ratio"], cfg["squeeze_factor"]
                _conv(sd, f"{p}.conv_block.cab.0", c // cr, c, 3)
                _conv(sd, f"{p}.conv_block.cab.2", c, c // cr, 3)
                _conv(sd, f"{p}.conv_block.cab.3.attention.1", c // sf, c, 1)
                _conv(sd, f"{p}.conv_block.cab.3.attention.3", c, c // sf, 1)
            else:
                sd[f"{p}.attn.relative_position_index"] = (ws * ws, ws * ws)
                if j % 2 == 1:
                    nw = (cfg["img_size"] // ws) ** 2
                    sd[f"{p}.attn_mask"] = (nw, ws * ws, ws * ws)
        if is_hat:
            p = f"layers.{i}.residual_group.overlap_attn"
            _norm(sd, f"{p}.norm1", c)
            _linear(sd, f"{p}.qkv", 3 * c, c)
            sd[f"{p}.relative_position_bias_table"] = ((ws + ows - 1) ** 2, heads)
            _linear(sd, f"{p}.proj", c, c)
            _norm(sd, f"{p}.norm2", c)
            _linear(sd, f"{p}.mlp.fc1", 2 * c, c)
            _linear(sd, f"{p}.mlp.fc2", c, 2 * c)
        _conv(sd, f"layers.{i}.conv", c, c, 3)
    _norm(sd, "norm", c)
    _conv(sd, "conv_after_body", c, c, 3)
    if name == "swinir_lightweight":
        _conv(sd, "upsample.0", 3 * scale * scale, c, 3)
    else:
        nf = cfg["num_feat"]
        _conv(sd, "conv_before_upsample.0", nf, c, 3)
        _upsampler(sd, "upsample", scale, nf)
        _conv(sd, "conv_last", 3, nf, 3)
    return sd


def official_buffer(key: str, cfg: dict) -> torch.Tensor | None:
    """Values of the index / mask buffers as the official formulas give them."""
    ws = cfg.get("window_size", 0)
    if key.endswith("relative_position_index") or key == "relative_position_index_SA":
        return ref_rpi(ws, ws)
    if key == "relative_position_index_OCA":
        return ref_rpi(ws, ws + ws // 2)
    if key.endswith("attn_mask"):
        return ref_mask(cfg["img_size"], cfg["img_size"], ws, ws // 2)
    return None


def synthetic_official_file(name: str, cfg: dict, scale: int, path, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_layout(name, cfg, scale).items():
        buf = official_buffer(k, cfg)
        sd[k] = buf if buf is not None else torch.randn(shape, generator=g) * 0.05
    if "sub_mean.weight" in sd:  # the official MeanShift values, as released files hold them
        for key, sign in (("sub_mean", -1), ("add_mean", 1)):
            sd[f"{key}.weight"] = torch.eye(3).view(3, 3, 1, 1)
            sd[f"{key}.bias"] = sign * 255.0 * DIV2K_MEAN.flatten()
    torch.save({"params": sd}, path)
    return sd


# ---- reference definitions (loops, torch.roll, nn.Unfold) -------------------------------------------------
def ref_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    m = win.unsqueeze(1) - win.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def ref_rpi(ws: int, ows: int) -> torch.Tensor:
    # query coordinates in a ws window, key coordinates in an ows window (ows == ws: plain Swin)
    qi = [(a, b) for a in range(ws) for b in range(ws)]
    ki = [(a, b) for a in range(ows) for b in range(ows)]
    if ows == ws:  # Swin: (dy + ws - 1) * (2ws - 1) + (dx + ws - 1), with d = query - key
        return torch.tensor(
            [[(y - v + ws - 1) * (2 * ws - 1) + (x - u + ws - 1) for (v, u) in ki] for (y, x) in qi]
        )
    off, stride = ws - ows + 1, ws + ows - 1  # HAT OCA: d = key - query
    return torch.tensor([[(v - y + off) * stride + (u - x + off) for (v, u) in ki] for (y, x) in qi])


@pytest.mark.parametrize("name", sorted(TINY))
def test_registered_heavy(name: str) -> None:
    assert name in list_models(kind="heavy")


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_layout_matches_official_and_runs(name: str, scale: int) -> None:
    cfg = TINY[name]
    model = create_model(name, scale=scale, **cfg).eval()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_layout(name, cfg, scale)
    x = torch.rand(1, 3, 9, 11)  # not a window multiple
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 9 * scale, 11 * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["edsr_baseline", "edsr"])
def test_edsr_defaults(name: str) -> None:
    m = create_model(name, scale=2)
    blocks, feats, res_scale = DEFAULTS[name]
    assert m.head[0].out_channels == feats and len(m.body) == blocks + 1 and m.body[0].res_scale == res_scale


def test_full_size_layouts() -> None:
    # the released configurations build with the official key counts and shapes
    rcan = create_model("rcan", scale=4)
    assert rcan.state_dict()["body.0.body.0.body.3.conv_du.0.weight"].shape == (4, 64, 1, 1)
    assert "body.9.body.20.weight" in rcan.state_dict() and "body.10.weight" in rcan.state_dict()
    sw = create_model("swinir_classical", scale=2).state_dict()
    assert sw["layers.5.residual_group.blocks.5.attn_mask"].shape == (64, 64, 64)
    assert sw["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"].shape == (225, 6)
    light = create_model("swinir_lightweight", scale=4).state_dict()
    assert light["upsample.0.weight"].shape == (48, 60, 3, 3) and "layers.3.conv.weight" in light
    hs = create_model("hat_s", scale=4).state_dict()
    assert hs["layers.0.residual_group.blocks.0.conv_block.cab.0.weight"].shape == (6, 144, 3, 3)
    assert hs["relative_position_index_OCA"].shape == (256, 576)
    assert hs["layers.5.residual_group.overlap_attn.relative_position_bias_table"].shape == (39 * 39, 6)


@pytest.mark.parametrize("name", sorted(TINY))
def test_official_file_loads_and_changes_output(name: str, tmp_path) -> None:
    cfg, scale = TINY[name], 3 if name.startswith("rcan") else 2
    path = tmp_path / f"{name}.pth"
    sd = synthetic_official_file(name, cfg, scale, path)
    x = torch.rand(1, 3, 12, 10)
    fresh = create_model(name, scale=scale, **cfg).eval()
    loaded = load_checkpoint(path, model=name, scale=scale, **cfg)
    again = load_checkpoint(path, model=name, scale=scale, **cfg)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k].to(v.dtype)), k
    with torch.no_grad():
        y0, y1, y2 = fresh(x), loaded(x), again(x)
    assert (y0 - y1).abs().max() > 1e-3
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", ["edsr", "swinir_classical", "hat"])
def test_layout_errors_list_keys(name: str, tmp_path) -> None:
    cfg = TINY[name]
    path = tmp_path / "m.pth"
    sd = synthetic_official_file(name, cfg, 2, path)
    dropped = sorted(sd)[3]
    del sd[dropped]
    torch.save({"params": sd}, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(path, model=name, scale=2, **cfg)
    synthetic_official_file(name, cfg, 2, path)
    # a ×2 file asked for as ×3: the upsampler's shapes say ×2
    with pytest.raises(CheckpointError, match=f"the weights are a x2 {name}.* model, not x3"):
        load_checkpoint(path, model=name, scale=3, **cfg)


@pytest.mark.parametrize("name", sorted(TINY))
def test_value_range_and_mean(name: str) -> None:
    # Zeroing the last conv leaves only the mean path: output = DIV2K mean in our [0, 1] contract,
    # which checks rgb_range scaling (EDSR/RCAN: 255 inside) and the mean handling.
    model = create_model(name, scale=2, **TINY[name]).eval()
    if name == "swinir_lightweight":
        last = model.upsample[0]
    else:
        last = model.tail[1] if hasattr(model, "tail") else model.conv_last
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    with torch.no_grad():
        y = model(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(y, DIV2K_MEAN.expand_as(y), atol=1e-5, rtol=0)


def test_meanshift_holds_official_values() -> None:
    sd = create_model("edsr_baseline", scale=2).state_dict()
    torch.testing.assert_close(sd["sub_mean.bias"], -255.0 * DIV2K_MEAN.flatten())
    torch.testing.assert_close(sd["add_mean.weight"], torch.eye(3).view(3, 3, 1, 1))
    assert not any(
        p.requires_grad for p in create_model("rcan", scale=2, **TINY["rcan"]).sub_mean.parameters()
    )


# ---- window pieces against their reference definitions ---------------------------------------------------
@pytest.mark.parametrize(("h", "w", "ws"), [(8, 8, 4), (12, 16, 4), (16, 24, 8)])
def test_mask_equals_reference(h: int, w: int, ws: int) -> None:
    torch.testing.assert_close(shifted_window_mask(h, w, ws, ws // 2), ref_mask(h, w, ws, ws // 2))


def test_index_buffers_equal_reference() -> None:
    torch.testing.assert_close(relative_position_index(4), ref_rpi(4, 4))
    torch.testing.assert_close(relative_position_index_overlap(4, 6), ref_rpi(4, 6))
    torch.testing.assert_close(relative_position_index_overlap(16, 24), ref_rpi(16, 24))


def test_shift_equals_roll_and_overlap_equals_unfold() -> None:
    x = torch.randn(2, 12, 8, 5)
    for s in (-2, 3):
        torch.testing.assert_close(cyclic_shift(x, s), torch.roll(x, (s, s), dims=(1, 2)))
    kv = torch.randn(2, 6, 12, 8)  # (B, 2C, H, W), C = 3
    ws, ows = 4, 6
    unf = nn.Unfold(kernel_size=ows, stride=ws, padding=(ows - ws) // 2)(kv)  # (B, 2C·ows², nW)
    ref = unf.reshape(2, 6, ows * ows, -1).permute(0, 3, 2, 1).reshape(-1, ows * ows, 6)  # (B·nW, ows², 2C)
    torch.testing.assert_close(overlapping_windows(kv, ws, ows), ref)


@pytest.mark.parametrize("name", ["swinir_classical", "hat_s"])
def test_padding_matches_official_test_time_padding(name: str) -> None:
    # official test code: reflect-pad to the window multiple, run, crop
    model = create_model(name, scale=2, **TINY[name]).eval()
    x = torch.rand(1, 3, 10, 13)
    padded = F.pad(x, (0, 3, 0, 2), mode="reflect")
    assert pad_to_window(x, 4).shape[-2:] == (12, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :20, :26], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["swinir_classical", "swinir_lightweight", "hat_s", "hat"])
def test_tile_smaller_than_window(name: str) -> None:
    model = create_model(name, scale=2, **TINY[name])
    assert min_tile_size(model) == 4
    assert min_tile_size(create_model("hat", scale=4)) == 16
    with pytest.raises(ConfigError, match="smaller than the attention window 4"):
        model(torch.rand(1, 3, 3, 9))


def test_unknown_argument_raises() -> None:
    with pytest.raises(ConfigError):
        create_model("swinir_classical", scale=2, embed_dims=12)
    with pytest.raises(ConfigError):
        create_model("hat", scale=5)


# ---- FP16 ranges -------------------------------------------------------------------------------------------
def test_fp16_ranges_flag_overflow_and_underflow() -> None:
    from edge_sr.quantize.fp16 import fp16_ranges

    model = create_model("swinir_classical", scale=2, **TINY["swinir_classical"]).eval()
    x = torch.rand(1, 3, 8, 8)
    fc1_name = "layers.0.residual_group.blocks.1.mlp.fc1"
    report = fp16_ranges(model, [x])
    rows = {r.name: r for r in report.layers}
    assert fc1_name in rows and "<output>" in rows
    # nothing overflows and (beyond subnormals, which the offender list also counts) nothing flushes to zero
    assert [r.name for r in report.layers if r.overflow or r.flushed > 0.01 * r.nonzero] == []
    assert rows["conv_first"].max_abs > 0 and rows["conv_first"].nonzero > 0
    fc1 = model.layers[0].residual_group.blocks[1].mlp.fc1
    with torch.no_grad():
        fc1.weight.mul_(1e8)  # fc1 overflows fp16
    report = fp16_ranges(model, [x])
    rows = {r.name: r for r in report.layers}
    assert fc1_name in report.offenders
    assert rows[fc1_name].overflow
    assert "conv_first" not in report.offenders
    with torch.no_grad():
        fc1.weight.mul_(1e-8)
        model.conv_first.weight.mul_(1e-9)
        model.conv_first.bias.zero_()  # conv_first's outputs sit below fp16's smallest subnormal
    rows = {r.name: r for r in fp16_ranges(model, [x]).layers}
    assert rows["conv_first"].underflow and not rows["conv_first"].overflow
    assert rows["conv_first"].flushed > 0


def test_gpu_bench_without_cuda_says_so(capsys) -> None:
    from edge_sr.cli import main

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the benchmark would run")
    assert main(["bench", "gpu"]) == 2
    assert "CUDA" in capsys.readouterr().err
