"""Dynamic H / W export whose shape assumptions are proven for every size in the range, then dropped.

Window attention pads to a multiple of the window, ``ws·ceil(h / ws)``; ``torch.export``'s shape solver cannot
prove facts about such expressions over a range ("the padding is smaller than h", "there is more than one
window"), so a plain dynamic export fails with ``Constraints violated``. Exported with
``prefer_deferred_runtime_asserts_over_guards``, those facts become ``_assert_scalar`` nodes in the graph
instead. ExecuTorch's edge dialect refuses the symbolic ops they use (``sym_not``, ``mod``), and its
``to_executorch`` would drop them anyway, unchecked.

Here each assertion is evaluated on every (H, W) of the declared range, vectorized over the grid, before it
is removed: an artifact is only written when every size it accepts satisfies the assumptions it was traced
under. A failing size is reported with the assertion and a range that avoids it.

    ep = export_proven(model, example, dynamic_shapes, axes=(2, 3))   # ConversionError when a size fails
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edge_sr.errors import ConversionError

logger = logging.getLogger(__name__)

GRID_CHUNK = 1 << 22  # (H, W) points evaluated at once


def _np_analysis() -> Any:
    """torch's Python reference semantics for sympy shape expressions, on numpy arrays (element-wise logic)."""
    from torch.utils._sympy.reference import PythonReferenceAnalysis

    # the reference versions use Python's `not` / `and` / `max`, which numpy arrays refuse
    elementwise = {
        "not_": np.logical_not,
        "and_": np.logical_and,
        "or_": np.logical_or,
        "eq": np.equal,
        "ne": np.not_equal,
        "maximum": np.maximum,
        "minimum": np.minimum,
    }
    return type(
        "NumpyAnalysis", (PythonReferenceAnalysis,), {k: staticmethod(f) for k, f in elementwise.items()}
    )


def _input_symbols(ep: Any, axes: Sequence[int]) -> list[Any]:
    """The sympy symbols of the user input's dynamic axes (H then W); ints for axes export specialized."""
    user = set(ep.graph_signature.user_inputs)
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user)
    shape = node.meta["val"].shape
    return [shape[a].node.expr if isinstance(shape[a], torch.SymInt) else int(shape[a]) for a in axes]


def _assert_nodes(ep: Any) -> list[Any]:
    return [
        n
        for n in ep.graph.nodes
        if n.op == "call_function" and n.target is torch.ops.aten._assert_scalar.default
    ]


def _condition(node: Any) -> Any:
    """The sympy expression an ``_assert_scalar`` node checks (True when export already knows it holds)."""
    cond = node.args[0]
    val = cond.meta.get("val") if isinstance(cond, torch.fx.Node) else cond
    return val.node.expr if isinstance(val, torch.SymBool) else bool(val)


def _range(ep: Any, sym: Any) -> tuple[int, int]:
    vr = ep.range_constraints[sym]
    return int(vr.lower), int(vr.upper)


def check_asserts(ep: Any, axes: Sequence[int]) -> int:
    """Evaluate every shape assertion in ``ep``'s graph on each (H, W) of its range; returns how many held.

    Raises:
        ConversionError: an assertion is false for some size in range (naming it, a failing size and a
            range that avoids the failures), or it involves a size other than the input's H / W.
    """
    import sympy

    nodes = _assert_nodes(ep)
    if not nodes:
        return 0
    syms = _input_symbols(ep, axes)
    dyn = [s for s in syms if not isinstance(s, int)]
    ranges = [_range(ep, s) for s in dyn]
    grids = [np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in ranges]
    analysis = _np_analysis()
    for node in nodes:
        expr = _condition(node)
        if expr is True or expr == sympy.true:
            continue
        if expr is False or expr == sympy.false:
            raise ConversionError(None, f"the traced graph asserts something false: {node.args[1:]}")
        if not expr.free_symbols <= set(dyn):
            raise ConversionError(
                None, f"the graph assumes {expr}, which involves sizes other than the input's H and W"
            )
        failing = _failing_points(expr, dyn, grids, analysis)
        if failing is not None:
            raise ConversionError(None, _failure_message(expr, failing, ranges))
    return len(nodes)


def _failing_points(expr: Any, syms: list[Any], grids: list[np.ndarray], analysis: Any) -> Any:
    """(k, len(syms)) sizes where ``expr`` is false (None when it holds everywhere)."""
    from torch.utils._sympy.interp import sympy_interp as interp

    if len(syms) == 1:
        ok = np.broadcast_to(interp(analysis, {syms[0]: grids[0]}, expr), grids[0].shape)
        bad = grids[0][~ok]
        return bad[:, None] if bad.size else None
    hs, ws = grids
    rows = max(1, GRID_CHUNK // len(ws))
    found = []
    for start in range(0, len(hs), rows):
        h, w = np.meshgrid(hs[start : start + rows], ws, indexing="ij")
        ok = np.broadcast_to(interp(analysis, {syms[0]: h, syms[1]: w}, expr), h.shape)
        if not ok.all():
            found.append(np.stack([h[~ok], w[~ok]], axis=1))
    return np.concatenate(found) if found else None


def _failure_message(expr: Any, failing: np.ndarray, ranges: list[tuple[int, int]]) -> str:
    size = "x".join(str(int(v)) for v in failing[0])
    msg = f"the traced graph assumes {expr}, false at size {size} ({len(failing)} sizes in range fail)"
    lo_needed = int(failing.min(axis=1).max()) + 1
    hi = min(r[1] for r in ranges)
    if lo_needed <= hi:
        msg += f"; a dynamic range of {lo_needed}:{hi} avoids them"
    return msg


def strip_asserts(ep: Any) -> int:
    """Remove the ``_assert_scalar`` nodes (and the shape arithmetic only they used); returns how many."""
    graph = ep.graph_module.graph
    nodes = _assert_nodes(ep)
    for node in nodes:
        graph.erase_node(node)
    graph.eliminate_dead_code()
    ep.graph_module.recompile()
    return len(nodes)


def export_proven(
    model: nn.Module, example: Tensor, dynamic_shapes: Any, *, axes: Sequence[int] = (2, 3)
) -> Any:
    """``torch.export`` with ``dynamic_shapes``; shape assertions proven over the range, then removed.

    ``axes``: the input's H and W axes, (2, 3) for NCHW, (1, 2) for NHWC.
    """
    ep = torch.export.export(
        model, (example,), dynamic_shapes=dynamic_shapes, prefer_deferred_runtime_asserts_over_guards=True
    )
    proven = check_asserts(ep, axes)
    if proven:
        logger.info("%d shape assertions hold for every size in range; removed from the graph", proven)
        strip_asserts(ep)
    return ep


def lowering_without_asserts() -> Any:
    """A context in which re-tracing (``run_decompositions``, ``to_edge``) does not re-insert the proven,
    removed assertions from the shape environment."""
    import torch._dynamo.config as dynamo_config

    return dynamo_config.patch(do_not_emit_runtime_asserts=True)


def export_dynamic(
    model: nn.Module, example: Tensor, *, min_size: int, max_size: int, shape_asserts: bool = True
) -> Any:
    """``torch.export`` with dynamic H and W in [min_size, max_size]: one program for every size in range.

    Window reshapes after padding give sizes like ``ws·ceil(h / ws)``; the shape solver cannot prove facts
    such as "the padding is smaller than h" over a range, so they become runtime assertions in the graph
    (``prefer_deferred_runtime_asserts_over_guards``) instead of failing the export. ``shape_asserts=False``
    proves each of them on every size of the range and removes them (``export_proven``): ``ConversionError``
    when a size fails.

    Raises:
        ConfigError: ``min_size`` is smaller than the model's attention window.
    """
    from edge_sr.errors import ConfigError
    from edge_sr.models.swin_common import min_tile_size

    ws = min_tile_size(model)
    if min_size < ws:
        raise ConfigError(None, f"min_size {min_size} is smaller than the attention window {ws}")
    h = torch.export.Dim("h", min=min_size, max=max_size)
    w = torch.export.Dim("w", min=min_size, max=max_size)
    if not shape_asserts:
        return export_proven(model, example, ({2: h, 3: w},), axes=(2, 3))
    return torch.export.export(
        model, (example,), dynamic_shapes=({2: h, 3: w},), prefer_deferred_runtime_asserts_over_guards=True
    )
