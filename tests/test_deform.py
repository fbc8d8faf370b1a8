"""Modulated deformable convolution in plain PyTorch against a direct float64 loop written here.

The reference follows the CUDA kernel's definition, not the implementation under test: for every output
pixel, every kernel tap and every input channel it reads the offset pair (dy, dx) of the channel's
deformable group, samples the input bilinearly by hand (a corner outside the image counts as zero, a point
at or beyond -1 / size reads nothing) and accumulates weight · mask · sample.
"""

from __future__ import annotations

import math

import pytest
import torch

from edge_sr.models.deform import DCNv2Pack, ModulatedDeformConv2d, modulated_deform_conv2d


def _bilinear(img: torch.Tensor, y: float, x: float) -> float:
    """img (H, W) at (y, x); zero outside, the im2col rule of the DCN kernels."""
    h, w = img.shape
    if not (-1 < y < h and -1 < x < w):
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    total = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img[yy, xx])
    return total


def _reference(x, offset, mask, weight, bias, stride, pad, dil, groups, dg):  # noqa: ANN001, ANN202
    n, c, h, w = x.shape
    out_c, cin_g, kh, kw = weight.shape
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    out = torch.zeros(n, out_c, ho, wo, dtype=torch.float64)
    per_dg, per_out = c // dg, out_c // groups
    for b in range(n):
        for o in range(out_c):
            grp = o // per_out
            for oy in range(ho):
                for ox in range(wo):
                    acc = float(bias[o]) if bias is not None else 0.0
                    for ci in range(cin_g):
                        ch = grp * cin_g + ci
                        g = ch // per_dg
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = float(offset[b, g * 2 * kh * kw + 2 * k, oy, ox])
                                dx = float(offset[b, g * 2 * kh * kw + 2 * k + 1, oy, ox])
                                m = float(mask[b, g * kh * kw + k, oy, ox])
                                y = oy * stride - pad + i * dil + dy
                                xx = ox * stride - pad + j * dil + dx
                                acc += float(weight[o, ci, i, j]) * m * _bilinear(x[b, ch], y, xx)
                    out[b, o, oy, ox] = acc
    return out


CASES = [
    # (n, c, h, w, out, k, stride, pad, dil, groups, dg)
    (1, 4, 5, 6, 3, 3, 1, 1, 1, 1, 2),
    (2, 4, 6, 5, 4, 3, 2, 1, 1, 2, 4),
    (1, 6, 4, 7, 2, 2, 1, 0, 2, 1, 3),
    (1, 2, 3, 3, 2, 1, 1, 0, 1, 1, 1),
]


@pytest.mark.parametrize("case", CASES)
def test_equals_the_direct_loop(case: tuple[int, ...]) -> None:
    n, c, h, w, out_c, k, stride, pad, dil, groups, dg = case
    gen = torch.Generator().manual_seed(sum(case))
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    # offsets up to ±4 px: many taps land partly or wholly outside the image
    offset = (torch.rand(n, 2 * dg * k * k, ho, wo, generator=gen, dtype=torch.float64) - 0.5) * 8
    # a share of exact integer offsets (bilinear weights 0 / 1) and points exactly on the border
    offset[:, ::3] = offset[:, ::3].round()
    offset[..., 0, 0] = -1.0 - torch.arange(offset.shape[1], dtype=torch.float64) % 2
    mask = torch.rand(n, dg * k * k, ho, wo, generator=gen, dtype=torch.float64)
    weight = torch.randn(out_c, c // groups, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(out_c, generator=gen, dtype=torch.float64)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, pad, dil, groups, dg)
    want = _reference(x, offset, mask, weight, bias, stride, pad, dil, groups, dg)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # the samples outside really happened: moving every tap far outside leaves the bias alone
    far = modulated_deform_conv2d(x, offset + 100, mask, weight, bias, stride, pad, dil, groups, dg)
    torch.testing.assert_close(far, bias.view(1, -1, 1, 1).expand_as(far))


def test_zero_offsets_and_unit_mask_are_a_plain_conv() -> None:
    gen = torch.Generator().manual_seed(0)
    conv = ModulatedDeformConv2d(8, 6, 3, stride=1, padding=1, groups=2, deform_groups=4).double()
    x = torch.randn(2, 8, 9, 7, generator=gen, dtype=torch.float64)
    offset = torch.zeros(2, 2 * 4 * 9, 9, 7, dtype=torch.float64)
    mask = torch.ones(2, 4 * 9, 9, 7, dtype=torch.float64)
    want = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1, groups=2)
    torch.testing.assert_close(conv(x, offset, mask), want, rtol=1e-12, atol=1e-12)


def test_pack_keys_and_sigmoid_mask() -> None:
    pack = DCNv2Pack(8, 8, 3, padding=1, deform_groups=2).double()
    assert sorted(pack.state_dict()) == ["bias", "conv_offset.bias", "conv_offset.weight", "weight"]
    assert pack.conv_offset.out_channels == 2 * 3 * 9
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 6, 6, generator=gen, dtype=torch.float64)
    feat = torch.randn(1, 8, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pack.conv_offset.weight.normal_(0, 0.3, generator=gen)
        pack.conv_offset.bias.normal_(0, 0.3, generator=gen)
    o1, o2, m = torch.chunk(pack.conv_offset(feat), 3, dim=1)
    want = _reference(x, torch.cat((o1, o2), 1), torch.sigmoid(m), pack.weight, pack.bias, 1, 1, 1, 1, 2)
    torch.testing.assert_close(pack(x, feat), want, rtol=1e-10, atol=1e-10)


def test_exports_with_torch_export() -> None:
    pack = DCNv2Pack(4, 4, 3, padding=1, deform_groups=2).eval()
    x, feat = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    ep = torch.export.export(pack, (x, feat))
    torch.testing.assert_close(ep.module()(x, feat), pack(x, feat))
