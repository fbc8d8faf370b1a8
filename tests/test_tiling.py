"""Tiled inference equals untiled inference when the overlap covers the receptive field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_sr.errors import ConfigError
from edge_sr.models import create_model
from edge_sr.tiling import count_tiles, plan_axis, tiled_apply


def _random_net(scale: int) -> nn.Module:
    # Four 3x3 convs: receptive-field radius 4 (in LR pixels); pixel shuffle adds none.
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.PReLU(8),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
    ).eval()


def _ecbsr(scale: int) -> nn.Module:
    torch.manual_seed(0)
    return create_model("ecbsr_m4c8", scale=scale).eval()  # 6 3x3 layers: radius 6


@pytest.mark.parametrize(
    "length,tile,overlap", [(10, 16, 4), (16, 16, 4), (17, 16, 4), (61, 16, 3), (100, 24, 5)]
)
def test_plan_partitions_the_axis_with_context(length: int, tile: int, overlap: int) -> None:
    spans = plan_axis(length, tile, overlap)
    assert spans[0].keep0 == 0 and spans[-1].keep1 == length
    for a, b in zip(spans[:-1], spans[1:]):
        assert a.keep1 == b.keep0 and a.start < b.start
    for i, s in enumerate(spans):
        assert 0 <= s.start and s.start + s.size <= length and s.size == min(tile, length)
        assert s.start <= s.keep0 < s.keep1 <= s.start + s.size
        if i > 0:
            assert s.keep0 - s.start >= overlap  # context kept on inner sides
        if i < len(spans) - 1:
            assert s.start + s.size - s.keep1 >= overlap


@pytest.mark.parametrize("make,rf", [(_ecbsr, 6), (_random_net, 4)])
@pytest.mark.parametrize("tile,batch", [(20, 1), ((20, 28), 3), (24, 4)])
def test_tiled_equals_untiled(make, rf: int, tile, batch: int) -> None:  # noqa: ANN001
    scale = 3
    net = make(scale)
    x = torch.rand(1, 3, 33, 41)
    with torch.no_grad():
        ref = net(x)
    calls: list[tuple[int, ...]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return net(t)

    y = tiled_apply(fn, x, scale=scale, tile=tile, overlap=rf, batch=batch)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() <= 1 / 255
    assert len(calls) == -(-count_tiles(33, 41, tile, rf) // batch)
    assert max(c[0] for c in calls) <= batch


def test_too_small_overlap_shows_seams() -> None:
    # Sanity check of the test above: without enough context, tiling does change the result.
    net = _ecbsr(2)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        ref = net(x)
    y = tiled_apply(net, x, scale=2, tile=16, overlap=1)
    assert (y - ref).abs().max().item() > 1 / 255


def test_exact_tile_mode_feeds_one_shape() -> None:
    net = _random_net(2)
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        ref = net(x)
    shapes = set()

    def fn(t: torch.Tensor) -> torch.Tensor:
        shapes.add(tuple(t.shape[-2:]))
        return net(t)

    y = tiled_apply(fn, x, scale=2, tile=20, overlap=4, batch=2, exact=True)
    assert shapes == {(20, 20)} and y.shape == ref.shape
    assert (y - ref).abs().max().item() <= 1 / 255


def test_exact_tile_mode_pads_small_images() -> None:
    net = _random_net(2)
    x = torch.rand(1, 3, 11, 30)
    shapes = set()

    def fn(t: torch.Tensor) -> torch.Tensor:
        shapes.add(tuple(t.shape[-2:]))
        return net(t)

    y = tiled_apply(fn, x, scale=2, tile=16, overlap=4, exact=True)
    assert shapes == {(16, 16)} and y.shape == (1, 3, 22, 60)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 5), mode="reflect")  # what the runner saw, rows 11..15
    with torch.no_grad():
        ref = net(padded)[..., :22, :]
    assert (y - ref).abs().max().item() <= 1 / 255


def test_integer_buffers_and_channel_change() -> None:
    net = _random_net(2)
    x = torch.rand(1, 3, 30, 30)
    x8 = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        ref = net(x8.float() / 255).clamp(0, 1)
    y8 = tiled_apply(net, x8, scale=2, tile=16, overlap=4, out_dtype=torch.uint8, channels_last=True)
    assert y8.dtype == torch.uint8 and y8.shape == (1, 3, 60, 60)
    assert y8[0].permute(1, 2, 0).is_contiguous()
    assert (y8.float() / 255 - ref).abs().max().item() <= 1 / 255 + 1e-6
    y16 = tiled_apply(net, x, scale=2, tile=16, overlap=4, out_dtype=torch.uint16)
    assert (y16.to(torch.int32).float() / 65535 - ref).abs().max().item() <= 1 / 255
    gray = tiled_apply(lambda t: net(t).mean(1, keepdim=True), x, scale=2, tile=16, overlap=4)
    assert gray.shape == (1, 1, 60, 60)


def test_tile_must_exceed_twice_the_overlap() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        tiled_apply(lambda t: t, torch.rand(1, 3, 40, 40), scale=1, tile=16, overlap=8)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_bands_arrive_in_order_and_equal_the_whole(batch: int) -> None:
    from edge_sr.tiling import tiled_bands

    net = _random_net(2)
    x = torch.rand(1, 3, 45, 38)
    whole = tiled_apply(net, x, scale=2, tile=16, overlap=4, out_dtype=torch.uint8)
    got: list[tuple[int, torch.Tensor]] = []
    tiled_bands(
        net, x, lambda r0, band: got.append((r0, band.clone())), scale=2, tile=16, overlap=4, batch=batch,
        out_dtype=torch.uint8, channels_last=True,
    )  # fmt: skip
    assert [r0 for r0, _ in got] == sorted(r0 for r0, _ in got) and got[0][0] == 0
    assert len(got) == len(plan_axis(45, 16, 4))  # one band per tile row: memory follows the tile
    assert all(b.shape[-2] <= (16 - 4) * 2 for _, b in got)
    assert torch.equal(torch.cat([b for _, b in got], 2), whole)
