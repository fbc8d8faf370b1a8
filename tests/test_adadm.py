"""AdaDM (adaptive deviation modulation) as the ``adadm=True`` option of EDSR and RCAN.

The official AdaDM EDSR (``njulj/AdaDM``) is written out here as key names and as a functional forward
pass (BatchNorm with running statistics, the deviation of the block input, ``exp(phi(log s))``); a file in
that layout must be detected with exactly its arguments, load strictly and give the functional output. The
modulation is the only difference from plain normalization, and the models convert on ONNX and
ExecuTorch with PyTorch's output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import CheckpointError
from edge_sr.models import create_model, load_checkpoint, load_state_dict_file
from edge_sr.models.detect import detect, detectors
from edge_sr.models.edsr import ResBlockAdaDM
from edge_sr.models.rcan import RCABAdaDM

EDSR_ARGS: dict[str, Any] = {
    "scale": 3, "n_resblocks": 3, "n_feats": 12, "res_scale": 1.0, "rgb_range": 255.0, "adadm": True,
}  # fmt: skip
RCAN_ARGS: dict[str, Any] = {
    "scale": 2, "n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4, "rgb_range": 255.0,
    "adadm": True,
}  # fmt: skip
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every trainable tensor and every BatchNorm statistic random (a fresh BatchNorm is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.add_(1.0)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 20)  # type: ignore[union-attr]
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 400 + 50)  # type: ignore[union-attr]
                m.num_batches_tracked.fill_(1000)  # type: ignore[union-attr]
            if isinstance(m, ResBlockAdaDM | RCABAdaDM):
                m.phi.weight.fill_(0.8)
                m.phi.bias.fill_(-0.3)  # type: ignore[union-attr]
    return model.eval()


def _x(seed: int = 1, h: int = 9, w: int = 11) -> Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- the official layout and forward pass, written out from njulj/AdaDM (src/model/edsr.py, common.py)


def official_edsr_adadm_layout(scale: int, n_resblocks: int, f: int) -> dict[str, tuple[int, ...]]:
    sd: dict[str, tuple[int, ...]] = {}

    def conv(key: str, cout: int, cin: int, k: int) -> None:
        sd[f"{key}.weight"], sd[f"{key}.bias"] = (cout, cin, k, k), (cout,)

    conv("head.0", f, 3, 3)
    for i in range(n_resblocks):
        conv(f"body.{i}.conv1", f, f, 3)
        conv(f"body.{i}.conv2", f, f, 3)
        conv(f"body.{i}.phi", 1, 1, 1)
        for n in ("norm1", "norm2"):
            for k in BN_KEYS:
                sd[f"body.{i}.{n}.{k}"] = () if k == "num_batches_tracked" else (f,)
    conv(f"body.{n_resblocks}", f, f, 3)
    if scale == 3:
        conv("tail.0.0", 9 * f, f, 3)
    else:
        for j in range(int(math.log2(scale))):
            conv(f"tail.0.{2 * j}", 4 * f, f, 3)
    conv("tail.1", 3, f, 3)
    return sd


def _conv(sd: dict[str, Tensor], key: str, x: Tensor) -> Tensor:
    w = sd[f"{key}.weight"]
    return F.conv2d(x, w, sd[f"{key}.bias"], padding=w.shape[-1] // 2)


def _bn(sd: dict[str, Tensor], key: str, x: Tensor) -> Tensor:
    return F.batch_norm(
        x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"], sd[f"{key}.bias"]
    )


def official_edsr_adadm(sd: dict[str, Tensor], x255: Tensor, res_scale: float) -> Tensor:
    """The official AdaDM EDSR in eval mode on [0, 255] input (no mean shift)."""
    feat = _conv(sd, "head.0", x255)
    h, i = feat, 0
    while f"body.{i}.conv1.weight" in sd:
        s = h.std(dim=(1, 2, 3), keepdim=True)
        r = _conv(sd, f"body.{i}.conv2", _bn(sd, f"body.{i}.norm2", F.relu(_conv(sd, f"body.{i}.conv1", _bn(sd, f"body.{i}.norm1", h)))))  # fmt: skip
        h = r * res_scale * torch.exp(_conv(sd, f"body.{i}.phi", torch.log(s))) + h
        i += 1
    h = _conv(sd, f"body.{i}", h) + feat
    j = 0
    while f"tail.0.{j}.weight" in sd:
        h = _conv(sd, f"tail.0.{j}", h)
        h = F.pixel_shuffle(h, int(math.isqrt(h.shape[1] // feat.shape[1])))
        j += 2
    return _conv(sd, "tail.1", h)


# ---- layout, defaults, detection, strict load


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_key_names_and_shapes(scale: int) -> None:
    model = create_model("edsr_baseline", scale=scale, n_resblocks=2, n_feats=8, adadm=True)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_edsr_adadm_layout(scale, 2, 8)
    block = model.body[0]
    assert isinstance(block, ResBlockAdaDM)
    assert block.phi.weight.item() == 1.0 and block.phi.bias.item() == 0.0  # type: ignore[union-attr]
    # the plain model keeps its names: the option adds nothing when off
    plain = create_model("edsr_baseline", scale=scale, n_resblocks=2, n_feats=8).state_dict()
    assert {"sub_mean.weight", "body.0.body.0.weight"} <= set(plain)
    assert not any(".norm" in k or ".phi." in k for k in plain)


def test_released_configuration() -> None:
    with torch.device("meta"):
        full = create_model("edsr_adadm", scale=4)
        plain = create_model("edsr", scale=4)
    assert (len(full.body) - 1, full.head[0].out_channels, full.body[0].res_scale) == (32, 256, 0.1)
    n_full = sum(p.numel() for p in full.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    # per block: two BatchNorms (weight + bias, 256 each) and phi (1 + 1); the mean shifts (2 x 12) go
    assert n_full - n_plain == 32 * (4 * 256 + 2) - 24
    assert round(n_full / 1e6, 2) == 43.12  # EDSR x4: 43.1 M in the paper; AdaDM adds 0.03 M


@pytest.mark.parametrize("wrapper", [None, "params"])
def test_official_file_detected_loaded_strictly_equal(wrapper: str | None, tmp_path) -> None:
    model = _randomize(create_model("edsr_baseline", **EDSR_ARGS))
    sd = model.state_dict()
    path = tmp_path / "EDSR_AdaDM_DIV2K_X3.pt"
    torch.save(sd if wrapper is None else {wrapper: sd}, path)
    state = load_state_dict_file(path)
    d = detect(state, path=path)
    assert (d.arch, d.args, d.layout, d.mean, d.value_range) == (
        "edsr_baseline",
        EDSR_ARGS,
        "adadm",
        None,
        255.0,
    )
    assert {"res_scale", "rgb_range"} <= set(d.assumed)
    net = load_checkpoint(path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = _x()
    with torch.no_grad():
        got = net(x)
        reference = official_edsr_adadm(sd, x * 255.0, res_scale=1.0) / 255.0
    assert torch.equal(got, model(x))
    assert (got - reference).abs().max() < 1e-5
    # asked for as a plain EDSR, the file is refused (its blocks are not plain ones)
    with pytest.raises(CheckpointError, match=r"adadm True \(declared False\)|do not fit"):
        load_checkpoint(path, model="edsr_baseline", adadm=False)


def test_full_width_file_is_named_edsr_adadm() -> None:
    with torch.device("meta"):
        sd = create_model("edsr_adadm", scale=2).state_dict()
    d = detect(sd)
    assert (d.arch, d.layout) == ("edsr_adadm", "adadm")
    assert d.args == {
        "scale": 2,
        "n_resblocks": 32,
        "n_feats": 256,
        "res_scale": 0.1,
        "rgb_range": 255.0,
        "adadm": True,
    }


def test_rcan_adadm_detected_and_plain_rcan_initialises_it(tmp_path) -> None:
    model = _randomize(create_model("rcan", **RCAN_ARGS), seed=2)
    sd = model.state_dict()
    assert {
        "body.1.body.1.norm2.running_var",
        "body.0.body.0.phi.weight",
        "body.0.body.0.body.3.conv_du.2.bias",
    } <= set(sd)
    path = tmp_path / "rcan_adadm.pth"
    torch.save({"params_ema": sd}, path)
    d = detect(load_state_dict_file(path))
    assert (d.arch, d.args, d.layout) == ("rcan", RCAN_ARGS, "official")
    net = load_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(net(_x(3)), model(_x(3)))
    # plain RCAN's names are a subset: its weights start an AdaDM RCAN; only the AdaDM parts are new
    plain = {k for k in create_model("rcan", **{**RCAN_ARGS, "adadm": False}).state_dict()}
    assert plain < set(sd)
    assert {k.rsplit(".", 2)[-2] for k in set(sd) - plain} == {"norm1", "norm2", "phi"}
    d_plain = detect(create_model("rcan", **{**RCAN_ARGS, "adadm": False}).state_dict())
    assert "adadm" not in d_plain.args


def test_detectors_tell_the_variants_apart() -> None:
    table = detectors()
    edsr_adadm = create_model("edsr_baseline", **EDSR_ARGS).state_dict()
    rcan_adadm = create_model("rcan", **RCAN_ARGS).state_dict()
    assert table["rcan"](edsr_adadm) is None
    assert table["edsr"](rcan_adadm) is None
    # AdaDM blocks with a mean shift are no published layout
    assert table["edsr"]({**edsr_adadm, **create_model("edsr_baseline", scale=3).state_dict()}) is None
    for fam, fn in table.items():
        if fam not in ("edsr", "rcan"):
            assert fn(edsr_adadm) is None, fam
            assert fn(rcan_adadm) is None, fam


# ---- what the modulation does


def _plain_norm_block(block: ResBlockAdaDM, x: Tensor) -> Tensor:
    """The block with normalization and no modulation: x + res_scale · conv2(norm2(relu(conv1(norm1(x)))))."""
    return x + block.res_scale * block.conv2(block.norm2(F.relu(block.conv1(block.norm1(x)))))


@pytest.mark.parametrize("cls", [ResBlockAdaDM, RCABAdaDM])
def test_modulation_is_the_only_difference(cls: type) -> None:
    torch.manual_seed(0)
    block = cls(8, 0.5) if cls is ResBlockAdaDM else cls(8, 2)
    _randomize(block)
    x = torch.randn(2, 8, 6, 7) * 30
    s = x.std(dim=(1, 2, 3), keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(block.modulation(x), torch.exp(0.8 * torch.log(s) - 0.3))
        y = block(x)
        block.phi.weight.zero_()
        block.phi.bias.zero_()
        unmodulated = block(x)
        if cls is ResBlockAdaDM:
            torch.testing.assert_close(unmodulated, _plain_norm_block(block, x), rtol=0, atol=1e-5)
        # exp(phi(log s)) = s^0.8 · e^-0.3 times the residual, nothing else
        torch.testing.assert_close(y - x, (unmodulated - x) * s**0.8 * math.exp(-0.3), rtol=1e-5, atol=1e-4)
    assert (y - unmodulated).abs().max() > 1e-2


def test_deviation_survives_normalization() -> None:
    """Training-mode BatchNorm makes the residual blind to the input's scale; the modulation gives it back:
    with phi the identity, block(k·x) = k·block(x), and without it the residual does not grow with k."""
    torch.manual_seed(0)
    block = ResBlockAdaDM(8, 1.0).train()
    x, k = torch.randn(4, 8, 10, 10), 7.0
    with torch.no_grad():
        torch.testing.assert_close(block(k * x), k * block(x), rtol=1e-4, atol=1e-4)
        block.phi.weight.zero_()
        res1, resk = block(x) - x, block(k * x) - k * x
    torch.testing.assert_close(res1, resk, rtol=1e-4, atol=1e-4)


# ---- export


# the AdaDM ops (BatchNorm, std, log, 1x1 conv, exp) are the same in both families; RCAN adds none
@pytest.mark.parametrize(("arch", "target"), [("edsr", "onnx"), ("edsr", "executorch"), ("rcan", "onnx")])
def test_export_matches_pytorch(arch: str, target: str, tmp_path) -> None:
    from edge_sr.convert import ExportSpec, export

    from edge_sr.runtime import load

    if arch == "edsr":
        model = _randomize(
            create_model("edsr_baseline", **{**EDSR_ARGS, "scale": 2, "n_resblocks": 2, "n_feats": 8})
        )
    else:
        model = _randomize(
            create_model("rcan", **{**RCAN_ARGS, "n_resgroups": 1, "n_feats": 8, "reduction": 2})
        )
    art = export(model, target, tmp_path, ExportSpec(input_size=(12, 16)))
    x = _x(5, 12, 16)
    got = load(art.path).forward(x.numpy())
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape == (1, 3, 24, 32)
    assert np.abs(got - ref).max() < 1e-4
