"""INT8 and FP16 for a streaming (video) step, with one scale / zero point per state pair.

    seqs = load_sequences(".../Vid4", input_size=(180, 320), scale=4)     # or synthetic_sequences(...)
    gm, entry, q = quantize_step(model, "tflite", seqs)  # PT2E graph, manifest entry, the quantizer
    art = stream_ptq(model, "executorch", seqs, out="out/")              # -> edge_sr.convert.Artifact
    report = stream_fp16_check(model, seqs)                               # FP16 ranges, state included
    step = prepare_stream_qat(model, "executorch", seqs)   # QAT: train Unrolled(step) over clips, then
    art = finish_stream_qat(step, out="out/")              # shared state parameters, convert, export

Calibration streams the float step over the sequences (:func:`.sequences.step_inputs`), so the state inputs
see the values they take in use. Left alone, a quantizer gives a state input and the output that becomes it
(``hidden`` / ``hidden_out``, ``prev_sr`` / ``sr``, ``prev`` / ``cur``) different scales: the app would have to
requantize every frame, and with float I/O the state would drift by a rounding per frame. Here:

1. :func:`make_state_output_quantizer` wraps the target's PT2E quantizer and gives every output that feeds a state
   an output observer where the target's annotators left it float (litert-torch does not annotate the final
   add of RRN's SR output);
2. after calibration, :func:`share_state_qparams` joins the observers of each pair (and everything already
   sharing one with them, e.g. XNNPACK's ``cat`` inputs) and makes them all report one scale / zero point: the
   union of the ranges they cover. ``convert_pt2e`` then writes the same parameters on both sides, and the
   converters keep them (read back from each artifact by :mod:`edge_sr.quantize.stream_io`).

ONNX's INT8 (onnxruntime QDQ, not PT2E) gets the same parameters through its ``TensorQuantOverrides``
(:func:`edge_sr.quantize.stream_io.quantize_onnx_step`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from edge_sr.quantize.sequences import SequenceSet, step_inputs
from torch import Tensor, nn

from edge_sr.errors import ConfigError

__all__ = [
    "ClampFrames",
    "QATStep",
    "finish_stream_qat",
    "prepare_stream_qat",
    "retarget_stream_qat",
    "make_state_output_quantizer",
    "quantize_step",
    "share_state_qparams",
    "stream_fp16_check",
    "stream_fp16_export",
    "stream_ptq",
]


# ops that move values without changing them: a quantized tensor's parameters pass through them
_PASS = {
    torch.ops.aten.pixel_unshuffle.default,
    torch.ops.aten.pixel_shuffle.default,
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten.permute.default,
    torch.ops.aten.clone.default,
    torch.ops.aten.clamp.default,  # ClampFrames: exact for frames in [0, 1]
    torch.ops.aten.cat.default,  # a converter propagates the concat's quantization to its inputs
}


def _observer(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    m = gm.get_submodule(str(node.target))
    return m if hasattr(m, "calculate_qparams") else None


def input_observers(gm: torch.fx.GraphModule, index: int) -> list[nn.Module]:
    """The observers that fix the quantization of graph input ``index`` (through value-preserving ops)."""
    todo = [[n for n in gm.graph.nodes if n.op == "placeholder"][index]]
    found: list[nn.Module] = []
    seen: set[torch.fx.Node] = set()
    while todo:
        node = todo.pop()
        for user in node.users:
            obs = _observer(gm, user)
            if obs is not None:
                found.append(obs)
            elif user.op == "call_function" and user.target in _PASS and user not in seen:
                seen.add(user)
                todo.append(user)
    return found


def _output_node(gm: torch.fx.GraphModule, index: int) -> torch.fx.Node:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return out.args[0][index]


def output_observer(gm: torch.fx.GraphModule, index: int) -> nn.Module | None:
    """The observer of graph output ``index`` (through value-preserving ops), or None when it is float."""
    node: Any = _output_node(gm, index)
    while isinstance(node, torch.fx.Node):
        obs = _observer(gm, node)
        if obs is not None:
            return obs
        if node.op != "call_function" or node.target not in _PASS:
            return None
        node = node.args[0]
    return None


def make_state_output_quantizer(inner: Any, outputs: Sequence[int]) -> Any:
    """Wrap a PT2E quantizer so that the graph outputs ``outputs`` (those feeding a state) are quantized."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    class StateOutputQuantizer(Quantizer):
        """Delegates to ``inner``; then annotates the producer of each state output the inner left float,
        with the activation spec the inner gives other outputs."""

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return inner.transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = inner.annotate(model)
            specs = [
                a.output_qspec
                for n in model.graph.nodes
                if (a := n.meta.get("quantization_annotation")) is not None
                and isinstance(a.output_qspec, QuantizationSpec)
                and a.output_qspec.dtype in (torch.int8, torch.uint8)
                and a.output_qspec.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)
            ]
            if not specs:
                return model
            for i in outputs:
                node = _output_node(model, i)
                while node.op == "call_function" and node.target in _PASS - {torch.ops.aten.cat.default}:
                    node = node.args[0]  # type: ignore[assignment]
                ann = node.meta.get("quantization_annotation")
                if ann is None:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        output_qspec=specs[0], _annotated=True
                    )
                elif ann.output_qspec is None:
                    ann.output_qspec = specs[0]
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            inner.validate(model)

    return StateOutputQuantizer()


def _covered(obs: nn.Module) -> tuple[float, float, int, int, Any]:
    """(lowest, highest) value ``obs``'s own parameters represent, its integer range and its qscheme."""
    scale, zp = obs.calculate_qparams()  # type: ignore[operator]
    qmin, qmax = int(obs.quant_min), int(obs.quant_max)  # type: ignore[arg-type]
    s, z = float(scale.flatten()[0]), int(zp.flatten()[0])
    return (qmin - z) * s, (qmax - z) * s, qmin, qmax, getattr(obs, "qscheme", None)


def share_state_qparams(gm: torch.fx.GraphModule, spec: Any) -> list[dict[str, Any]]:
    """Make each state input and the tensor that becomes it (``StateTensor.next``) report one scale / zero
    point: the observers of both (and those already shared with them) take the union of the ranges they
    cover. Call after calibration, before ``convert_pt2e``. Returns one entry per group for the manifest.

    Raises:
        ConfigError: a state tensor quantized on one side only, or observers of different integer types.
    """
    names_in = spec.input_names
    names_out = spec.output_names
    parent: dict[int, int] = {}
    mods: dict[int, nn.Module] = {}
    members: dict[int, list[str]] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    def add(obs: nn.Module, name: str) -> int:
        parent.setdefault(id(obs), id(obs))
        mods[id(obs)] = obs
        members.setdefault(id(obs), []).append(name)
        return id(obs)

    def observers_of(name: str) -> list[nn.Module]:
        if name in names_out:
            obs = output_observer(gm, names_out.index(name))
            return [obs] if obs is not None else []
        return input_observers(gm, names_in.index(name))

    for s in spec.state:
        ids = [add(o, s.name) for o in observers_of(s.name)] + [add(o, s.next) for o in observers_of(s.next)]
        if not ids:
            continue  # float on both sides: nothing to share
        if not observers_of(s.name) or not observers_of(s.next):
            raise ConfigError(None, f"state {s.name!r} is quantized on one side only ({s.name} / {s.next})")
        for i in ids[1:]:
            parent[find(i)] = find(ids[0])
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(find(i), []).append(i)
    entries = []
    for ids in groups.values():
        covered = [_covered(mods[i]) for i in ids]
        if len({(c[2], c[3]) for c in covered}) != 1:
            raise ConfigError(None, "the observers of a state pair use different integer types")
        lo, hi = min(0.0, *(c[0] for c in covered)), max(0.0, *(c[1] for c in covered))
        qmin, qmax, qscheme = covered[0][2], covered[0][3], covered[0][4]
        if qscheme == torch.per_tensor_symmetric:
            scale = max(-lo, hi) / ((qmax - qmin) / 2)
            zp = 0 if qmin < 0 else (qmax + qmin + 1) // 2
        else:
            scale = (hi - lo) / (qmax - qmin)
            zp = int(min(qmax, max(qmin, round(qmin - lo / scale))))
        scale = max(scale, 1e-8)
        scale_t = torch.tensor([scale], dtype=torch.float32)
        zp_t = torch.tensor([zp], dtype=torch.int32)
        for i in ids:
            # convert_pt2e asks each observer / fake-quant for its parameters: all answer the group's
            mods[i].calculate_qparams = lambda s=scale_t, z=zp_t: (s.clone(), z.clone())  # type: ignore[assignment]
        names = sorted({n for i in ids for n in members[i]})
        entries.append({"tensors": names, "scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax})
    return entries


class ClampFrames(nn.Module):
    """``model`` with its frame inputs clamped to [0, 1] first (:class:`.pt2e.ClampInput` for a step: an
    unannotated op that keeps a converter from turning the frames into int8 inputs). State passes as is."""

    def __init__(self, model: nn.Module, frames: int) -> None:
        super().__init__()
        self.model, self.frames = model, frames

    def forward(self, *inputs: Tensor) -> Any:
        n = self.frames
        return self.model(*(x.clamp(0.0, 1.0) for x in inputs[:n]), *inputs[n:])


def _prepare_step(
    model: nn.Module, target: str, seqs: SequenceSet, spec: Any, *, qat: bool, observe: bool = True
) -> tuple[torch.fx.GraphModule, nn.Module, Any, SequenceSet, Any, str, Any]:
    """The step's PT2E graph for ``target`` (observers for PTQ, fake-quant for QAT), every state output
    annotated, calibrated on ``seqs`` streamed in order (``observe=False``: traced on them only, for a graph
    whose observer state is loaded next); returns (prepared graph, the deploy form, stream spec, the sequences
    in the model's colours, the target module, the mode, the target's quantizer)."""
    from edge_sr.quantize import deploy_form, target_and_mode
    from edge_sr.quantize.pt2e import calibrate, check_layers, make_keep_float_quantizer, prepare

    from edge_sr.models.stream import stream_spec

    mod, mode = target_and_mode(target, spec)
    if mode not in mod.PT2E_MODES:
        what = (
            "cannot take QAT (it runs through PT2E)"
            if qat
            else "is not a PT2E mode; see edge_sr.quantize.stream_io"
        )
        raise ConfigError(None, f"{target} {mode} {what}")
    deploy = deploy_form(model)
    sspec = stream_spec(deploy)
    if sspec is None:
        raise ConfigError(None, f"{type(model).__name__} is not a streaming (video) model")
    seqs = _for_model(seqs, deploy)
    steps = list(step_inputs(deploy, seqs))
    net: nn.Module = deploy
    keep = tuple(spec.keep_float)
    if mod.FLOAT_IO_CLAMP and not spec.int8_io:
        net, keep = ClampFrames(deploy, len(sspec.frames)), tuple(f"model.{k}" for k in keep)
    q = mod.quantizer(qat=qat, mode=mode)
    annotate = q
    if keep:
        check_layers(net, keep)
        annotate = make_keep_float_quantizer(q, keep)
    sources = [sspec.output_names.index(s.next) for s in sspec.state if s.next in sspec.output_names]
    prepared = prepare(net, make_state_output_quantizer(annotate, sources), steps[-1], qat=qat)
    if observe:
        calibrate(prepared, steps)
    return prepared, deploy, sspec, seqs, mod, mode, q


def quantize_step(
    model: nn.Module, target: str, seqs: SequenceSet, spec: Any = None
) -> tuple[torch.fx.GraphModule, dict[str, Any], Any]:
    """PTQ of a streaming step for a PT2E target: (converted graph, manifest entry, the quantizer).

    Every conv is quantized (``float_input_layers`` does not apply: the first conv reads the state too);
    ``keep_float`` names module paths of the model. The entry's ``state`` lists each shared group.
    """
    from edge_sr.quantize import QuantSpec
    from edge_sr.quantize.pt2e import convert

    spec = spec or QuantSpec()
    prepared, _, sspec, seqs, mod, mode, q = _prepare_step(model, target, seqs, spec, qat=False)
    groups = share_state_qparams(prepared, sspec)
    gm = convert(prepared, fold_quantize=mod.FOLD_QUANTIZE)
    entry = {
        "scheme": mod.quant_scheme(mode),
        "mode": mode,
        "method": "ptq",
        "calibration": seqs.manifest_entry(),
        "keep_float": list(spec.keep_float),
        "float_input_layers": [],
        "int8_io": spec.int8_io,
        "state": groups,
    }
    return gm, entry, q


def _for_model(seqs: SequenceSet, model: nn.Module) -> SequenceSet:
    from edge_sr.models import card_of, has_card

    return seqs.with_colors(card_of(model).colors) if has_card(model) else seqs


def stream_ptq(
    model: nn.Module,
    target: str,
    seqs: SequenceSet,
    spec: Any = None,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
) -> Any:
    """INT8 artifact of a streaming step for ``target`` (calibrated on ``seqs``, state pairs sharing one
    scale / zero point); returns ``edge_sr.convert.Artifact``. The step is exported at ``seqs.input_size``."""
    from edge_sr.convert import ExportSpec, export
    from edge_sr.quantize import QuantSpec, deploy_form, target_and_mode

    from edge_sr.models import carry_card

    spec = spec or QuantSpec()
    mod, mode = target_and_mode(target, spec)
    if mode not in mod.PT2E_MODES:  # onnxruntime's QDQ: the same shared parameters as overrides
        from edge_sr.quantize.stream_io import quantize_onnx_step

        return quantize_onnx_step(model, seqs, spec, out=out, source=source)
    gm, entry, q = quantize_step(model, target, seqs, spec)
    carry_card(deploy_form(model), gm)
    espec = ExportSpec(input_size=seqs.input_size, precision="int8")
    return export(
        gm, target, out, espec, source=source, quantization=entry, options=mod.quant_options(q, mode)
    )


def stream_fp16_check(model: nn.Module, seqs: SequenceSet, *, underflow_share: float = 0.01) -> Any:
    """Per-layer ranges of the float step streamed over ``seqs`` (state included) against FP16's range."""
    from edge_sr.quantize import deploy_form
    from edge_sr.quantize.fp16 import fp16_ranges

    deploy = deploy_form(model)
    steps = list(step_inputs(deploy, _for_model(seqs, deploy)))
    return fp16_ranges(deploy, steps, underflow_share=underflow_share)


def stream_fp16_export(
    model: nn.Module,
    target: str,
    seqs: SequenceSet,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    mixed: bool = True,
) -> Any:
    """FP16 artifact of a streaming step after the range check over ``seqs`` (state included); offending
    layers stay FP32 where the target computes FP16 by casting (``FP16_BY_CAST``), as for images."""
    from edge_sr.quantize import deploy_form, export_fp16_checked

    deploy = deploy_form(model)
    report = stream_fp16_check(deploy, seqs)
    return export_fp16_checked(
        deploy, target, report, seqs.manifest_entry(), seqs.input_size, out=out, source=source, mixed=mixed
    )


class QATStep(nn.Module):
    """A fake-quant (``prepare_qat_pt2e``) graph of a step that still reads as a streaming model: its class
    carries the step's ``STREAM`` and the model's card, so a video training loop (``Unrolled``) runs it over
    clips exactly as it runs the float step. Built by :func:`prepare_stream_qat`."""

    STREAM: Any = None

    def __init__(self, graph: torch.fx.GraphModule, frames: int, meta: dict[str, Any]) -> None:
        super().__init__()
        self.graph, self.frames, self.meta = graph, frames, meta

    def forward(self, *inputs: Tensor) -> Any:
        return self.graph(*inputs)

    def train(self, mode: bool = True) -> QATStep:
        # an exported graph refuses nn.Module.train(): PT2E switches its fake-quant / dropout itself
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.training = mode
        return self


def prepare_stream_qat(
    model: nn.Module, target: str, seqs: SequenceSet, spec: Any = None, *, observe: bool = True
) -> QATStep:
    """The QAT half that a video training loop drives: the step's fake-quant graph for ``target`` (the
    target's QAT quantizer; every state output annotated), its observers calibrated on ``seqs`` in stream
    order. Train it like the float step (it shares nothing with ``model``), call
    :func:`torchao.quantization.pt2e.disable_observer` on it for the last steps, then
    :func:`finish_stream_qat`.
    """
    import dataclasses

    from edge_sr.quantize import QuantSpec

    from edge_sr.models import carry_card

    spec = spec or QuantSpec()
    prepared, deploy, sspec, seqs, mod, mode, q = _prepare_step(
        model, target, seqs, spec, qat=True, observe=observe
    )
    cls = type("QATStep", (QATStep,), {"STREAM": sspec})  # stream_spec reads the class
    meta = {"target": target, "mode": mode, "quantizer": q, "calibration": seqs.manifest_entry()}
    meta["spec"] = dataclasses.replace(spec)
    return carry_card(deploy, cls(prepared, len(sspec.frames), meta))  # type: ignore[return-value]


def retarget_stream_qat(step: QATStep, model: nn.Module, seqs: SequenceSet) -> QATStep:
    """The trained fake-quant ``step`` traced again at the frame size of ``seqs`` (the size the artifact is
    exported at: a training patch is smaller than a phone's frame, and the traced graph fixes the size), with
    its trained weights and fake-quant / observer state; the observers stay off, so the scales are the trained
    ones. ``model``: the float model the step was prepared from (its deploy form and card)."""
    from torchao.quantization.pt2e import disable_observer

    fresh = prepare_stream_qat(model, step.meta["target"], seqs, step.meta["spec"], observe=False)
    fresh.load_state_dict(step.state_dict())
    fresh.apply(disable_observer)
    fresh.meta["calibration"] = {**step.meta["calibration"], "input_size": list(seqs.clips.shape[-2:])}
    return fresh


def finish_stream_qat(
    step: QATStep,
    *,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    qat: dict[str, Any] | None = None,
) -> Any:
    """Share the state pairs' parameters, convert the trained fake-quant step and export it (INT8 at the
    calibration size); ``qat`` (iterations, losses, data) goes into the manifest's quantization entry."""
    from edge_sr.convert import ExportSpec, export, target_module
    from edge_sr.quantize.pt2e import convert

    from edge_sr.models import carry_card

    meta, sspec = step.meta, type(step).STREAM
    mod = target_module(meta["target"])
    groups = share_state_qparams(step.graph, sspec)
    gm = carry_card(step, convert(step.graph, fold_quantize=mod.FOLD_QUANTIZE))
    spec = meta["spec"]
    entry = {
        "scheme": mod.quant_scheme(meta["mode"]),
        "mode": meta["mode"],
        "method": "qat",
        "calibration": meta["calibration"],
        "keep_float": list(spec.keep_float),
        "float_input_layers": [],
        "int8_io": spec.int8_io,
        "state": groups,
        "qat": qat or {},
    }
    size = tuple(meta["calibration"]["input_size"])
    espec = ExportSpec(input_size=(int(size[0]), int(size[1])), precision="int8")
    options = mod.quant_options(meta["quantizer"], meta["mode"])
    return export(gm, meta["target"], out, espec, source=source, quantization=entry, options=options)
