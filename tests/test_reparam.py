"""Structural re-parameterization: every fusion rule, every re-parameterizable zoo model, BN freezing,
and `edge-sr reparam`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_args import FAMILY_TINY
from torch import nn

from edge_sr.cli import main
from edge_sr.errors import CheckpointError
from edge_sr.models import (
    card_of,
    create_model,
    get_entry,
    list_models,
    load_checkpoint,
    reparameterize_checkpoint,
    save_checkpoint,
)
from edge_sr.models.checkpoint import read_metadata
from edge_sr.reparam import (
    FreezableBatchNorm2d,
    check_equivalent,
    conv3xc,
    edge_filter_branch,
    expand_squeeze_bn,
    freeze_batchnorm,
    fuse_conv_bn,
    has_fusable,
    identity_bn,
    identity_kernel,
    merge_1x1_kxk,
    merge_kxk_1x1,
    pad_with_bias,
    reparameterize,
    repsr_block,
    sum_branches,
)

TINY = {
    "ecbsr": {"blocks": 1, "channels": 4},
    "ecbvsr": {"blocks": 1, "channels": 4},
    "repsr": {"blocks": 1, "channels": 4},
    "span": {"feature_channels": 4},
    **FAMILY_TINY,
}
REP = [n for n in list_models() if get_entry(n).reparameterizable]
# every model at x3; the smallest of each family also at x2 and x4 (the tail conv and residual change with s)
CASES = [(n, 3) for n in REP] + [(n, s) for n in ("ecbsr_m4c8", "repsr_m4c16", "span_ch48") for s in (2, 4)]
SIZES = [(1, 3, 17, 23), (2, 3, 9, 15), (1, 3, 24, 8)]  # odd sizes: borders everywhere


def _x(*shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype)


def _bn(c: int, *, affine: bool = True, eps: float = 1e-5, dtype=torch.float64) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, affine=affine, eps=eps).to(dtype)
    bn.running_mean.copy_(torch.randn(c, dtype=dtype))
    bn.running_var.copy_(torch.rand(c, dtype=dtype) + 0.1)
    if affine:
        bn.weight.data.copy_(torch.randn(c, dtype=dtype))
        bn.bias.data.copy_(torch.randn(c, dtype=dtype))
    return bn.eval()


# --- rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])  # a large eps catches a hard-coded one
@pytest.mark.parametrize("bias", [True, False])
def test_fuse_conv_bn(affine: bool, eps: float, bias: bool) -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=bias).double()
    bn = _bn(5, affine=affine, eps=eps)
    x = _x(2, 3, 9, 7)
    w, b = fuse_conv_bn(conv.weight, conv.bias, bn)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-12)


def test_fuse_conv_bn_needs_running_stats() -> None:
    with pytest.raises(ValueError, match="running statistics"):
        fuse_conv_bn(torch.randn(2, 2, 1, 1), None, nn.BatchNorm2d(2, track_running_stats=False))


def test_merge_1x1_kxk_exact_at_borders() -> None:
    w1, b1, w2, b2 = _x(6, 3, 1, 1), _x(6), _x(4, 6, 3, 3), _x(4)
    x = _x(1, 3, 8, 11)
    ref = F.conv2d(pad_with_bias(F.conv2d(x, w1, b1), b1), w2, b2)  # 1x1, pad with bias, valid 3x3
    # identical to 1x1 -> 3x3 on a zero-padded input (what the branch stands for)
    assert torch.allclose(ref, F.conv2d(F.conv2d(F.pad(x, (1, 1, 1, 1)), w1, b1), w2, b2), atol=1e-12)
    w, b = merge_1x1_kxk(w1, b1, w2, b2)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), ref, atol=1e-12)
    # zero padding of the 1x1 output instead would be wrong exactly at the borders
    wrong = F.conv2d(F.conv2d(x, w1, b1), w2, b2, padding=1)
    assert (wrong - ref)[..., 0, :].abs().max() > 1e-3


def test_merge_kxk_1x1() -> None:
    w1, b1, w2, b2 = _x(6, 3, 3, 3), _x(6), _x(4, 6, 1, 1), _x(4)
    x = _x(2, 3, 7, 10)
    w, b = merge_kxk_1x1(w1, b1, w2, b2)
    assert torch.allclose(
        F.conv2d(x, w, b, padding=1), F.conv2d(F.conv2d(x, w1, b1, padding=1), w2, b2), atol=1e-12
    )


def test_identity_kernel_and_identity_bn() -> None:
    x = _x(1, 4, 6, 5)
    assert torch.equal(F.conv2d(x, identity_kernel(4, dtype=torch.float64), padding=1), x)
    bn = _bn(4)
    w, b = identity_bn(4, bn)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), bn(x), atol=1e-12)


def test_sum_branches_pads_smaller_kernels() -> None:
    a, b = (_x(4, 3, 3, 3), _x(4)), (_x(4, 3, 1, 1), _x(4))
    x = _x(1, 3, 6, 9)
    w, bias = sum_branches(a, b)
    ref = F.conv2d(x, *a, padding=1) + F.conv2d(x, *b)
    assert w.shape[-1] == 3 and torch.allclose(F.conv2d(x, w, bias, padding=1), ref, atol=1e-12)


@pytest.mark.parametrize("seq_type", ["conv1x1-sobelx", "conv1x1-sobely", "conv1x1-laplacian"])
def test_edge_filter_branch_matches_ecb(seq_type: str) -> None:
    from edge_sr.models.ecbsr import SeqConv3x3

    torch.manual_seed(0)
    seq = SeqConv3x3(seq_type=seq_type, in_channels=3, out_channels=5).double()
    seq.scale.data.normal_()
    x = _x(2, 3, 10, 7)
    w, b = edge_filter_branch(seq.k0, seq.b0, seq.scale, seq.mask, seq.bias)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), seq(x), atol=1e-12)
    if seq_type == "conv1x1-laplacian":  # the fixed filter really is the Laplacian
        assert seq.mask[0, 0].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]


def test_expand_squeeze_bn_and_repsr_block_rule() -> None:
    e3, bn3, s3 = (_x(8, 4, 3, 3), _x(8)), _bn(8, eps=1e-3), (_x(4, 8, 1, 1), _x(4))
    e1, bn1, s1 = (_x(8, 4, 1, 1), _x(8)), _bn(8, affine=False), (_x(4, 8, 1, 1), _x(4))
    x = _x(2, 4, 9, 6)

    def path(e, bn, s, k):
        return F.conv2d(bn(F.conv2d(x, *e, padding=k // 2)), *s)

    w, b = expand_squeeze_bn(e3, bn3, s3)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), path(e3, bn3, s3, 3), atol=1e-12)
    w, b = repsr_block([(e3, bn3, s3), (e1, bn1, s1)], identity_channels=4)
    ref = path(e3, bn3, s3, 3) + path(e1, bn1, s1, 1) + x
    assert torch.allclose(F.conv2d(x, w, b, padding=1), ref, atol=1e-12)


def test_conv3xc_rule_matches_official_definition() -> None:
    first, mid, last, skip = (
        (_x(6, 3, 1, 1), _x(6)),
        (_x(8, 6, 3, 3), _x(8)),
        (_x(4, 8, 1, 1), _x(4)),
        (_x(4, 3, 1, 1), _x(4)),
    )
    x = _x(1, 3, 12, 5)
    ref = F.conv2d(F.conv2d(F.conv2d(F.pad(x, (1, 1, 1, 1)), *first), *mid), *last) + F.conv2d(x, *skip)
    w, b = conv3xc(first, mid, last, skip)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), ref, atol=1e-12)


# --- every re-parameterizable zoo model ------------------------------------------------------------------


class _Step(nn.Module):
    """A video step as an image model: the state made from the frame (the previous frame mirrored, a hidden
    state from its first channel), the output and the next hidden state flattened side by side, so the
    equivalence check covers both outputs and every input of the step."""

    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.sigmoid(x[:, :1]).expand(-1, self.step.channels, -1, -1)
        sr, hidden_out = self.step(x, x.flip(-1), hidden)
        return torch.cat((sr.flatten(1), hidden_out.flatten(1)), dim=1)


def _trained(name: str, scale: int) -> nn.Module:
    """A tiny model after a few Adam steps in train mode: moved weights and non-trivial BN statistics."""
    torch.manual_seed(0)
    m = create_model(name, scale=scale, **TINY[get_entry(name).family]).train()
    if get_entry(name).kind == "video":
        return _trained_step(m)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):
        x = torch.rand(4, 3, 12, 12)
        loss = (m(x) - F.interpolate(x, scale_factor=scale, mode="nearest")).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


def test_every_reparameterizable_family_is_covered() -> None:
    assert {get_entry(n).family for n in REP} >= {"ecbsr", "repsr", "span"}


def _trained_step(step: nn.Module) -> nn.Module:
    m = _Step(step).train()
    with torch.no_grad():  # the recurrent input starts at zero: give it weights to fuse
        step.state_in.weight.normal_(0, 0.1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):
        loss = m(torch.rand(4, 3, 12, 12)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_zoo_model_fuses_exactly(name: str, scale: int) -> None:
    m = _trained(name, scale)
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    for bn in bns:  # the BN statistics moved away from their init
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    deploy = reparameterize(m)
    assert has_fusable(m) and not has_fusable(deploy)
    kinds = {type(x) for x in deploy.modules()}
    assert not any(issubclass(k, nn.BatchNorm2d) for k in kinds)
    if get_entry(name).family in ("ecbsr", "repsr"):  # plain convs + activations + pixel shuffle
        leaf = {k.__name__ for k in kinds}
        assert leaf <= {
            "PlainSR",
            "Sequential",
            "Conv2d",
            "PReLU",
            "Identity",
            "NearestResidual",
            "PixelShuffle",
        }
    xs = [torch.rand(*s) for s in SIZES]
    r32 = check_equivalent(m, deploy, xs, atol=1e-5)
    assert r32.passed, r32
    m64 = copy.deepcopy(m).double()
    r64 = check_equivalent(m64, reparameterize(m64), [x.double() for x in xs], atol=1e-10)
    assert r64.passed, r64
    # the fusion must not alter the train-form model (reparameterize works on a copy)
    assert has_fusable(m)


def test_check_equivalent_detects_a_difference() -> None:
    m = _trained("repsr_m4c16", 2)
    deploy = reparameterize(m)
    deploy.body[0][0].bias.data[0] += 1e-3
    assert not check_equivalent(m, deploy, [torch.rand(1, 3, 8, 8)], atol=1e-5).passed


# --- RepSR's BatchNorm freezing -----------------------------------------------------------------------


def test_freeze_batchnorm_uses_population_statistics_in_train_mode() -> None:
    m = _trained("repsr_m4c16", 2)
    assert freeze_batchnorm(m) == sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) > 0
    m.train()  # a trainer calling train() must not undo the freeze
    stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    x = torch.rand(2, 3, 12, 12)
    y_train = m(x)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in stats.items())  # no statistics update
    deploy = reparameterize(m)
    assert (y_train - deploy(x)).abs().max() < 1e-5  # train-mode output == deploy output
    y_train.abs().mean().backward()  # gamma / beta still learn
    bn = next(b for b in m.modules() if isinstance(b, FreezableBatchNorm2d))
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    freeze_batchnorm(m, frozen=False)
    m.train()
    assert bn.training


def test_freeze_batchnorm_converts_plain_batchnorm() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    keys = set(net.state_dict())
    freeze_batchnorm(net)
    net.train()
    assert isinstance(net[1], FreezableBatchNorm2d) and not net[1].training
    assert set(net.state_dict()) == keys


# --- checkpoints and `edge-sr reparam` -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ecbsr_m4c8", "repsr_m4c16", "span_ch48"])
def test_reparameterize_checkpoint(name: str, tmp_path) -> None:
    m = _trained(name, 2).eval()
    src = save_checkpoint(m, tmp_path / "train.safetensors")
    assert read_metadata(src)["form"] == "train"
    r = reparameterize_checkpoint(src, tmp_path / "deploy.safetensors")
    assert r.checked and r.max_abs_diff is not None and r.max_abs_diff <= 1e-9
    assert r.params_deploy < r.params_train
    meta = read_metadata(r.out)
    assert meta["form"] == "deploy" and meta["arch"] == name and meta["args"] == card_of(m).args
    back = load_checkpoint(r.out)
    assert not has_fusable(back)
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        assert (back(x) - m(x)).abs().max() < 1e-5
    with pytest.raises(CheckpointError, match="already fused"):
        reparameterize_checkpoint(r.out, tmp_path / "again.safetensors")


def test_reparam_cli(tmp_path, capsys) -> None:
    src = save_checkpoint(_trained("ecbsr_m4c8", 3).eval(), tmp_path / "t.safetensors")
    out = tmp_path / "d.safetensors"
    assert main(["reparam", str(src), "-o", str(out), "--check", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["arch"] == "ecbsr_m4c8" and rep["max_abs_diff"] <= 1e-9 and out.is_file()
    assert main(["reparam", str(out), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "already fused" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
    not_rep = save_checkpoint(
        create_model("espcn", scale=2, features=4, mid_features=4), tmp_path / "e.safetensors"
    )
    assert main(["reparam", str(not_rep), "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "nothing to fuse" in capsys.readouterr().err


def test_bench_reparam_writes_its_section(tmp_path) -> None:
    from edge_sr.bench.reparam import bench_reparam

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# b\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n")
    rows = bench_reparam(["ecbsr_m4c8"], input_size=(8, 12), runs=1, doc=doc, command="cmd", cpu_time=True)
    (r,) = rows
    assert r.params_deploy < r.params_train and r.macs_deploy < r.macs_train and r.ms_train > 0 < r.ms_deploy
    text = doc.read_text()
    assert "keep me" in text and "<!-- reparam:begin -->" in text and "| ecbsr_m4c8 |" in text
    assert "Command: `cmd`" in text and "torch " in text
