"""FP16 range check and mixed precision.

FP16 holds magnitudes up to 65504; below 2^-14 (6.1e-5) values are subnormal and lose precision, below 2^-24
(6.0e-8) they flush to zero. :func:`fp16_ranges` runs the calibration patches through the float model with a
forward hook on every leaf module and records, per layer, the largest |activation| and |weight| and the share of
non-zero activations that would be subnormal or zero in FP16. A layer *overflows* when any value exceeds the
FP16 maximum; it *underflows* when more than ``underflow_share`` of its non-zero outputs fall below the smallest
normal FP16.

Mixed precision (:func:`fp32_spans`, :func:`keep_fp32`): what stays FP32 is chosen so that every value FP16
cannot hold lives inside an FP32 region whose own output FP16 holds again. For each offending layer that is
the smallest enclosing module (the layer itself when only its weights are out of range, else its block: an
MLP, an attention block, a residual group) whose output is back in range, so the tensor operations between the
layers of that block (splits, products, reshapes) run in FP32 too. When only the whole model would do, the
offender and the layers after it in forward order, up to the first whose output is in range, are kept instead
(a chain of layers at the top level). Kept modules are wrapped in :class:`KeepFP32`, which keeps their
parameters float32 through ``model.half()`` and casts around them, so targets that export by casting the
torch model (ExecuTorch, ONNX) compute those modules in FP32 and the rest in FP16. CoreML and TFLite take one
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
    blocks: dict[str, LayerRange] = field(default_factory=dict)  # outputs of the non-leaf modules
    modules: list[str] = field(default_factory=list)  # every module name, in ``named_modules`` order

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
    the inputs of one streaming step, state included), and the output ranges of every non-leaf module
    (``blocks``, what :func:`fp32_spans` widens an offender to)."""
    model = model.eval()
    rows: dict[str, LayerRange] = {}
    blocks: dict[str, LayerRange] = {}
    hooks = []

    def hook(name: str, module: nn.Module, table: dict[str, LayerRange] = rows):  # noqa: ANN202
        def fn(_m: nn.Module, _inp: Any, out: Any) -> None:
            for t in out if isinstance(out, tuple | list) else (out,):
                if not isinstance(t, Tensor) or not t.is_floating_point():
                    continue
                r = table[name]
                a = t.detach().abs().float()
                # NaN counts as out of range (a float32 NaN has already overflowed upstream)
                r.max_abs = max(r.max_abs, float(a.max()) if not a.isnan().any() else float("inf"))
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
        elif name:
            blocks[name] = LayerRange(name=name, kind=type(m).__name__)
            hooks.append(m.register_forward_hook(hook(name, m, blocks)))
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
    for r in [*rows.values(), *blocks.values()]:
        r.overflow = r.max_abs > FP16_MAX or r.weight_max_abs > FP16_MAX
        r.underflow = r.subnormal_share > underflow_share
    names = [n for n, _ in model.named_modules() if n]
    return FP16Report(list(rows.values()), underflow_share, blocks=blocks, modules=names)


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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        y = self.module(*_cast(args, torch.float32), **_cast(kwargs, torch.float32))
        return _cast(y, torch.float16) if self.out_half else y

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # what the parent's forward reads of the wrapped module (heads, window size)
            return getattr(self._modules["module"], name)

    def _apply(self, fn: Any, recurse: bool = True) -> KeepFP32:  # type: ignore[override]
        # model.half() reaches here too: this layer's parameters and buffers stay float32, restored from
        # copies taken before the cast (a weight past 65504 would come back from float16 as inf)
        inner = self._modules["module"]
        assert inner is not None
        before = {
            n: t.detach().clone()
            for n, t in [*inner.named_parameters(), *inner.named_buffers()]
            if t.dtype == torch.float32
        }
        super()._apply(fn, recurse)
        for n, t in [*inner.named_parameters(), *inner.named_buffers()]:
            if n in before and t.is_floating_point() and t.dtype != torch.float32:
                t.data = before[n].to(t.device)
        return self


def _cast(x: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in ``x`` (a tensor, or tuples / lists / dicts of them) cast to ``dtype``."""
    if isinstance(x, Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, tuple | list):
        return type(x)(_cast(v, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _cast(v, dtype) for k, v in x.items()}
    return x


def _in_range(r: LayerRange) -> bool:
    return r.max_abs <= FP16_MAX and not r.underflow


def _chain_span(order: list[LayerRange], i: int) -> list[str]:
    """``order[i]`` and the layers after it (forward order) up to and including the first whose output FP16
    holds again: an offender's output must reach a layer that brings it back into range."""
    keep = []
    while i < len(order) and (order[i].overflow or order[i].underflow):
        keep.append(order[i].name)
        i += 1
    if i < len(order):  # the layer that consumes the out-of-range values
        keep.append(order[i].name)
    return keep


def fp32_spans(report: FP16Report) -> list[str]:
    """The modules to keep in FP32 (see the module docstring): for each offender, the smallest enclosing module
    whose output FP16 holds (the offender itself when only its weights are out of range); when none below the
    whole model does, the offender's chain of following layers. Forward order, none inside another."""
    order = [r for r in report.layers if r.name != "<output>"]
    keep: list[str] = []
    for i, r in enumerate(order):
        if not (r.overflow or r.underflow) or r.name in keep:
            continue
        if _in_range(r):  # only the weights are out of range: the layer alone
            keep.append(r.name)
            continue
        parts = r.name.split(".")
        parents = [".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)]
        block = next((p for p in parents if p in report.blocks and _in_range(report.blocks[p])), None)
        keep.extend([block] if block else [n for n in _chain_span(order, i) if n not in keep])
    inside = {k for k in keep for other in keep if k != other and k.startswith(other + ".")}
    rank = {n: j for j, n in enumerate(report.modules)}
    return sorted(dict.fromkeys(k for k in keep if k not in inside), key=lambda n: rank.get(n, 0))


def keep_fp32(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """A copy of ``model`` whose modules named in ``layers`` (forward order) run in FP32 after ``.half()``.

    A kept block hands float16 on; consecutive kept leaf layers form one span: float32 flows between them and
    the last one hands float16 on.
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
