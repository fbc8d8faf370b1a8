"""FP16 range check and mixed precision.

FP16 holds magnitudes up to 65504; below 2^-14 (6.1e-5) values are subnormal and lose precision, below 2^-24
(6.0e-8) they flush to zero. :func:`fp16_ranges` runs the calibration patches through the float model with a
forward hook on every leaf module and records, per layer, the largest |activation| and |weight| and the share of
non-zero activations that would be subnormal or zero in FP16. A layer *overflows* when any value exceeds the
FP16 maximum; it *underflows* when more than ``underflow_share`` of its non-zero outputs fall below the smallest
normal FP16.

Mixed precision (:func:`keep_fp32`): the offending layers are wrapped in :class:`KeepFP32`, which keeps their
parameters float32 through ``model.half()`` and casts around them, so targets that export by casting the
torch model (ExecuTorch, ONNX) compute those layers in FP32 and the rest in FP16. CoreML and TFLite take one
compute precision for the whole program from their converters here, so they report offenders without a fix.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
FP16_MIN_SUBNORMAL = 2.0**-24


@dataclass
class LayerRange:
    """Ranges seen at one layer's output over the calibration data."""

    name: str
    kind: str
    max_abs: float = 0.0
    weight_max_abs: float = 0.0
    nonzero: int = 0
    subnormal: int = 0  # below the smallest normal FP16 (precision lost)
    flushed: int = 0  # below the smallest subnormal FP16 (becomes 0)
    overflow: bool = False
    underflow: bool = False

    @property
    def subnormal_share(self) -> float:
        return self.subnormal / self.nonzero if self.nonzero else 0.0


@dataclass
class FP16Report:
    """Per-layer ranges and the layers FP16 cannot hold."""

    layers: list[LayerRange] = field(default_factory=list)
    underflow_share: float = 0.01

    @property
    def offenders(self) -> list[str]:
        return [r.name for r in self.layers if r.overflow or r.underflow]

    @property
    def ok(self) -> bool:
        return not self.offenders

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "offenders": self.offenders,
            "underflow_share": self.underflow_share,
            "layers": [{**asdict(r), "subnormal_share": r.subnormal_share} for r in self.layers],
        }


@torch.no_grad()
def fp16_ranges(
    model: nn.Module, batches: Iterable[Tensor | tuple[Tensor, ...]], *, underflow_share: float = 0.01
) -> FP16Report:
    """Activation and weight ranges of every leaf module of ``model`` (float32) over ``batches`` (a tuple:
    the inputs of one streaming step, state included)."""
    model = model.eval()
    rows: dict[str, LayerRange] = {}
    hooks = []

    def hook(name: str, module: nn.Module):  # noqa: ANN202
        def fn(_m: nn.Module, _inp: Any, out: Any) -> None:
            if not isinstance(out, Tensor) or not out.is_floating_point():
                return
            r = rows[name]
            a = out.detach().abs().float()
            r.max_abs = max(r.max_abs, float(a.max()))
            nz = a[a > 0]
            r.nonzero += int(nz.numel())
            r.subnormal += int((nz < FP16_MIN_NORMAL).sum())
            r.flushed += int((nz < FP16_MIN_SUBNORMAL).sum())

        return fn

    for name, m in model.named_modules():
        if name and not list(m.children()):
            w = max((float(p.detach().abs().max()) for p in m.parameters(recurse=False)), default=0.0)
            rows[name] = LayerRange(name=name, kind=type(m).__name__, weight_max_abs=w)
            hooks.append(m.register_forward_hook(hook(name, m)))
    rows["<output>"] = LayerRange(name="<output>", kind="output")
    try:
        for x in batches:
            # a tuple: the inputs of one streaming step; its outputs (SR frame and state) all count
            ys = model(*x) if isinstance(x, tuple) else model(x)
            for y in ys if isinstance(ys, tuple) else (ys,):
                hook("<output>", model)(model, None, y)
    finally:
        for h in hooks:
            h.remove()
    for r in rows.values():
        r.overflow = r.max_abs > FP16_MAX or r.weight_max_abs > FP16_MAX
        r.underflow = r.subnormal_share > underflow_share
    return FP16Report(layers=list(rows.values()), underflow_share=underflow_share)


class KeepFP32(nn.Module):
    """Runs ``module`` in float32 inside a half model.

    The input is cast to float32; the output goes back to float16 only when ``out_half`` (the last layer of
    a float32 span), else it stays float32 for the next kept layer, because a value FP16 cannot hold must
    not pass through FP16 between two FP32 layers.
    """

    def __init__(self, module: nn.Module, *, out_half: bool = True) -> None:
        super().__init__()
        self.module = module
        self.out_half = out_half

    def forward(self, x: Tensor) -> Tensor:
        y = self.module(x.float())
        return y.half() if self.out_half else y

    def _apply(self, fn: Any, recurse: bool = True) -> KeepFP32:  # type: ignore[override]
        super()._apply(fn, recurse)
        # model.half() reaches here too: put this layer's parameters and buffers back to float32
        for t in list(self.module.parameters()) + list(self.module.buffers()):
            if t.is_floating_point():
                t.data = t.data.float()
        return self


def fp32_spans(report: FP16Report) -> list[str]:
    """The layers to keep in FP32: each offender, then the layers after it (forward order) up to and
    including the first whose output FP16 holds again, since an offender's output must reach a layer that
    brings it back into range without passing through FP16."""
    order = [r for r in report.layers if r.name != "<output>"]
    keep: list[str] = []
    i = 0
    while i < len(order):
        if order[i].overflow or order[i].underflow:
            while i < len(order) and (order[i].overflow or order[i].underflow):
                keep.append(order[i].name)
                i += 1
            if i < len(order):  # the layer that consumes the out-of-range values
                keep.append(order[i].name)
        i += 1
    return keep


def keep_fp32(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """A copy of ``model`` whose modules named in ``layers`` (forward order) run in FP32 after ``.half()``.

    Consecutive names form one span: float32 flows between them; the last one hands float16 on.
    """
    model = copy.deepcopy(model)
    names = [n for n in layers if n != "<output>"]
    order = [n for n, m in model.named_modules() if n and not list(m.children())]
    for name in names:
        nxt = order.index(name) + 1 if name in order else len(order)
        out_half = nxt >= len(order) or order[nxt] not in names
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, KeepFP32(getattr(parent, child), out_half=out_half))
    return model
