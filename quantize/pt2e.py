"""The one PT2E flow every target's INT8 goes through.

    export (dynamic batch) -> prepare_pt2e | prepare_qat_pt2e (target's quantizer) -> calibrate | fine-tune
    -> convert_pt2e -> a GraphModule with quantize / dequantize ops that ``edge_sr.convert.export`` lowers

The graph is exported with a dynamic batch dimension: calibration runs batches of patches, QAT trains on
batches, and the converted graph is re-exported at batch 1 for the artifact. A graph exported at one batch size
guards that size, and the deploy export then fails.

Layers kept in float (``keep_float``) are handled here for every quantizer at once: the target's quantizer
annotates the graph, then :class:`KeepFloatQuantizer` removes the annotations of the nodes that belong to the
named modules, so those ops see dequantized inputs and run in float. :func:`input_layers` names the convs that
read the image itself (the head conv, a conv-made residual); ``QuantSpec.float_input_layers`` keeps them float.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_BATCH = 1024


def export_dynamic_batch(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> torch.fx.GraphModule:
    """``torch.export`` ``model`` with a dynamic batch dimension; returns the graph module to quantize.

    ``example``: (N, C, H, W), or one such tensor per input of a streaming step (frames, then state), all
    with the same N; N < 2 is repeated to 2 (torch.export specializes sizes 0 and 1).
    """
    from torch.export import Dim

    inputs = example if isinstance(example, tuple) else (example,)
    inputs = tuple(x.expand(2, *x.shape[1:]).contiguous() if x.shape[0] < 2 else x for x in inputs)
    import inspect

    batch = Dim("batch", min=1, max=MAX_BATCH)
    dims: tuple[Any, ...] = tuple({0: batch} for _ in inputs)
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        dims = (dims,)  # forward(*inputs): torch.export sees one argument holding the tuple
    ep = torch.export.export(model.eval(), inputs, dynamic_shapes=dims)
    return ep.module()


def module_path(node: torch.fx.Node) -> str | None:
    """The dotted path (``body.2.0``) of the innermost module ``node`` was traced from, or None."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    # torch.export writes "L['self'].body.2.0" in some versions, "body.2.0" in others
    for prefix in ("L['self'].", "L__self__."):
        path = path.removeprefix(prefix)
    return path


def _matches(path: str | None, names: Iterable[str]) -> bool:
    return path is not None and any(path == n or path.startswith(n + ".") for n in names)


def make_keep_float_quantizer(inner: Any, keep_float: Sequence[str]) -> Any:
    """Wrap a PT2E quantizer so nodes of the modules in ``keep_float`` are left unannotated (float)."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFloatQuantizer(Quantizer):
        """Delegates to ``inner``; afterwards strips the annotations of the kept-float modules."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.keep_float = tuple(keep_float)
            self.stripped: list[str] = []

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return self.inner.transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = self.inner.annotate(model)
            for node in model.graph.nodes:
                if _matches(module_path(node), self.keep_float) and "quantization_annotation" in node.meta:
                    del node.meta["quantization_annotation"]
                    self.stripped.append(node.name)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            self.inner.validate(model)

    return KeepFloatQuantizer()


_CONVS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)


def input_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Module paths of the convs that read the model's input directly (through no other conv), in order.

    For the zoo's plain nets: the head conv and the residual conv that repeats the input channels. They see
    the 3-channel image, whose int8 form costs the most accuracy per MAC (the image is the one activation no
    later layer can correct) and runs slower than float on XNNPACK (3-channel int8 transposes and GEMMs).
    A conv traced in the model's own ``forward`` (no module path) cannot be named and is left out.
    """
    check_colors(model, example)
    gm = torch.export.export(model.eval(), (example[:1],)).module()
    inputs = {n for n in gm.graph.nodes if n.op == "placeholder"}
    found: list[str] = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _CONVS:
            continue
        src = node.args[0]
        # walk back through the ops in between (a clamp, a cast, a view); another conv ends the walk
        while isinstance(src, torch.fx.Node) and src.op == "call_function" and src.target not in _CONVS:
            src = next((a for a in src.args if isinstance(a, torch.fx.Node)), None)
        path = module_path(node)
        if src in inputs and path and path not in found:
            found.append(path)
    return found


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d modules of ``model`` in forward order (the layers quantization acts on)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name]


def check_layers(model: nn.Module, names: Sequence[str]) -> None:
    """``ConfigError`` naming the choices when a ``keep_float`` name is not a module of ``model``."""
    known = {n for n, _ in model.named_modules() if n}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(
            None, f"no layer named {', '.join(bad)}; quantizable layers: {', '.join(conv_layers(model))}"
        )


def check_colors(model: nn.Module, example: Tensor) -> None:
    """``ConfigError`` when calibration patches have other channels than the model's card says (a Y-channel
    model calibrated on RGB patches); a model without a card (or wrapped without one) is not checked."""
    from edge_sr.models import card_of, has_card

    net = model if has_card(model) else getattr(model, "model", None)  # ClampInput keeps its model inside
    if net is None or not has_card(net):
        return
    colors = card_of(net).colors
    if example.ndim == 4 and example.shape[1] != colors:
        raise ConfigError(
            None,
            f"the calibration patches have {example.shape[1]} channels but the model takes {colors}"
            + (" (Y): load them with colors=1 (CalibrationSet.with_colors(1))" if colors == 1 else ""),
        )


def prepare(
    model: nn.Module, quantizer: Any, example: Tensor | tuple[Tensor, ...], *, qat: bool = False
) -> torch.fx.GraphModule:
    """Export with a dynamic batch and insert observers (``prepare_pt2e``) or fake-quant (``prepare_qat_pt2e``).

    The exported module shares its parameters with ``model``; QAT trains them, so it works on a copy and the
    caller's model stays as it was.

    Raises:
        ConfigError: ``example`` has other channels than the model's card (:func:`check_colors`).
    """
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    check_colors(model, example[0] if isinstance(example, tuple) else example)
    gm = export_dynamic_batch(copy.deepcopy(model) if qat else model, example)
    return prepare_qat_pt2e(gm, quantizer) if qat else prepare_pt2e(gm, quantizer)


@torch.no_grad()
def calibrate(prepared: torch.fx.GraphModule, batches: Iterable[Tensor | tuple[Tensor, ...]]) -> int:
    """Run calibration batches through the observers (a tuple: the inputs of one streaming step); returns
    the number of samples seen."""
    n = 0
    for x in batches:
        if isinstance(x, tuple):
            prepared(*x)
            n += int(x[0].shape[0])
        else:
            prepared(x)
            n += int(x.shape[0])
    return n


def convert(prepared: torch.fx.GraphModule, *, fold_quantize: bool = True) -> torch.fx.GraphModule:
    """``convert_pt2e``: observers / fake-quant -> quantize / dequantize ops with fixed parameters."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    return _allow_train_eval(convert_pt2e(prepared, fold_quantize=fold_quantize))


def _allow_train_eval(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Exported graphs refuse ``.eval()`` / ``.train()``; ``edge_sr.convert.export`` calls ``model.eval()`` and
    uses the result, so map both onto the PT2E helpers and return the module as ``nn.Module`` does."""
    import types

    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
        return self

    def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
        move_exported_model_to_eval(self)
        return self

    gm.train = types.MethodType(_train, gm)  # type: ignore[method-assign]
    gm.eval = types.MethodType(_eval, gm)  # type: ignore[method-assign]
    return gm


def fine_tune(
    prepared: torch.fx.GraphModule,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    iters: int,
    lr: float,
    freeze_observers_after: float = 0.8,
) -> list[float]:
    """QAT: L1 fine-tuning of a ``prepare_qat_pt2e`` graph on (LR, HR) batches; returns the loss per step.

    Adam with the learning rate decayed from ``lr`` to 0 on a cosine over ``iters`` steps. Observers follow
    the changing weights and activations for the first ``freeze_observers_after`` share of the steps, then
    are frozen so the last steps train against fixed quantization parameters.
    """
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_train

    move_exported_model_to_train(prepared)
    params = [p for p in prepared.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(None, "the prepared graph has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / iters))
    )
    freeze_at = math.ceil(iters * freeze_observers_after)
    losses: list[float] = []
    for step, (x, y) in enumerate(loader):
        if step >= iters:
            break
        if step == freeze_at:
            prepared.apply(disable_observer)
        loss = (prepared(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    logger.info(
        "QAT: %d steps, L1 %.5f -> %.5f", len(losses), losses[0] if losses else 0, losses[-1] if losses else 0
    )
    return losses


def quantize_model(
    model: nn.Module,
    quantizer: Any,
    calib_batches: Iterable[Tensor],
    example: Tensor,
    *,
    keep_float: Sequence[str] = (),
    fold_quantize: bool = True,
) -> torch.fx.GraphModule:
    """PTQ in one call: prepare (with ``keep_float`` honoured), calibrate, convert."""
    if keep_float:
        check_layers(model, keep_float)
        quantizer = make_keep_float_quantizer(quantizer, keep_float)
    prepared = prepare(model, quantizer, example)
    calibrate(prepared, calib_batches)
    return convert(prepared, fold_quantize=fold_quantize)


class ClampInput(nn.Module):
    """``x.clamp(0, 1)`` then ``model``: an op no quantizer annotates in front of the first conv.

    Converters fold a quantize at the graph input into an int8 input tensor; with this float op first the
    input stays float32 (the quantize happens inside). Exact for inputs in [0, 1], the model contract.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.clamp(0.0, 1.0))


def sqnr(ref: Tensor, test: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(‖ref‖² / ‖ref − test‖²)."""
    noise = float((ref.double() - test.double()).pow(2).sum())
    signal = float(ref.double().pow(2).sum())
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)
