"""The differentiable PyTorch function behind each form a model ships in.

float    the model as loaded (train form)
deploy   the fused form (``edge_sr.reparam``), what fp32 artifacts run
fp16     the deploy form cast to float16: the forward in fp16, the gradient reaches the float32 input
         through the cast
int8     the deploy form as a QAT-prepared PT2E graph (fake quantization, straight-through-estimator
         gradients) for the target's quantizer, observers calibrated then disabled: the int8 function of
         PTQ with the gradient of its float surrogate. The converted PT2E graph (quantize / dequantize ops
         with rounding) has zero gradient almost everywhere, so it cannot be explained directly.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from edge_sr.errors import ConfigError

logger = logging.getLogger(__name__)

Form = Literal["float", "deploy", "fp16", "int8"]
FORMS: tuple[Form, ...] = ("float", "deploy", "fp16", "int8")

Fn = Callable[[Tensor], Tensor]


def check_forms(forms: Sequence[str]) -> tuple[Form, ...]:
    """``forms`` without repeats, each one of :data:`FORMS`; ``ConfigError`` naming the choices otherwise."""
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        what = f"unknown form {bad[0]!r}" if bad else "nothing to compare"
        raise ConfigError(None, f"{what}; choose from {', '.join(FORMS)}")
    return tuple(dict.fromkeys(forms))  # type: ignore[arg-type]


def _deploy(model: nn.Module) -> nn.Module:
    from edge_sr.quantize import deploy_form

    return deploy_form(copy.deepcopy(model)).eval()


def fp16_fn(model: nn.Module) -> Fn:
    """The deploy form in float16, float32 in and out."""
    half = _deploy(model).half()
    return lambda x: half(x.half()).float()


def int8_fn(
    model: nn.Module, calib: Tensor, *, target: str = "executorch", keep_float: Sequence[str] | None = None
) -> Fn:
    """The fake-quantized deploy form for ``target``'s PT2E quantizer, calibrated on ``calib`` (N, C, H, W).

    ``keep_float``: layers left in float (default: the convs that read the image, as PTQ does by default).
    The graph is exported at ``calib``'s height and width (dynamic batch only): explain images of that size.
    """
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval

    from edge_sr.quantize.pt2e import calibrate, input_layers, make_keep_float_quantizer, prepare
    from edge_sr.quantize.sensitivity import target_quantizer

    deploy = _deploy(model)
    quantizer = target_quantizer(target, qat=True)
    keep = list(input_layers(deploy, calib[:1]) if keep_float is None else keep_float)
    if keep:
        quantizer = make_keep_float_quantizer(quantizer, keep)
    gm = prepare(deploy, quantizer, calib[:2], qat=True)
    calibrate(gm, calib.split(8))  # fake-quant observers see the calibration batches ...
    gm.apply(disable_observer)  # ... then the quantization parameters are fixed
    move_exported_model_to_eval(gm)
    logger.info("int8 (%s fake-quant, float layers: %s)", target, ", ".join(keep) or "none")
    return gm


def form_fn(
    form: Form,
    model: nn.Module,
    calib: Tensor,
    *,
    target: str = "executorch",
    keep_float: Sequence[str] | None = None,
) -> Fn:
    """The function to explain for ``form`` of ``model`` (eval mode, float32 in and out)."""
    if form == "float":
        return model.eval()
    if form == "deploy":
        return _deploy(model)
    if form == "fp16":
        return fp16_fn(model)
    return int8_fn(model, calib, target=target, keep_float=keep_float)


def calibration_of(image: Tensor) -> Tensor:
    """Calibration patches from the image alone: it and its three flips, (4, C, H, W)."""
    return torch.stack([image, image.flip(-1), image.flip(-2), image.flip(-1, -2)])
