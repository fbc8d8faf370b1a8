"""Multiply-accumulates of a forward pass: counted on a module, or for the model behind an artifact."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


def count_macs(model: Any, height: int, width: int, *, modules: Any = None) -> int:
    """Multiply-accumulates of one forward pass at an (height, width) input.

    Every Conv2d / ConvTranspose2d / Linear is counted from its weight and output shape (activations and
    pixel shuffle are free by this convention). Runs the model once on a (1, 3, height, width) input with
    forward hooks; ``modules`` given, ``model`` is a call without arguments that runs them (a video step).
    """
    import torch
    from torch import nn

    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            # (N, Cout, Ho, Wo) outputs, each Cin/groups * kh * kw MACs
            total += out.numel() * m.weight[0].numel()
        elif isinstance(m, nn.ConvTranspose2d):
            # each input pixel scatters Cout/groups * kh * kw MACs per input channel
            total += inp[0].numel() * m.weight[0].numel()
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in (modules if modules is not None else model).modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model() if modules is not None else model(torch.zeros(1, 3, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def model_gmacs(
    path: Path, manifest: dict[str, Any] | None, height: int, width: int, *, model: nn.Module | None = None
) -> float | None:
    """GMACs of the deploy-form model behind an artifact or a checkpoint at (height, width).

    Args:
        path: the artifact or ``.safetensors`` checkpoint (whose metadata names the architecture).
        manifest: the artifact's manifest (``arch``, ``args``, ``scale``), None for a checkpoint.
        height: input height.
        width: input width.
        model: the checkpoint's model, already loaded (counted as it is, fused first).

    Returns:
        GMACs, or None when the architecture is unknown.
    """
    from edge_sr.models import create_model
    from edge_sr.models.stats import macs_per_lr_pixel
    from edge_sr.models.stream import is_stream_model
    from edge_sr.reparam import has_fusable, reparameterize

    if model is not None:
        from edge_sr.models import card_of

        if is_stream_model(model):
            return stream_macs(model, height, width) / 1e9
        fused = reparameterize(copy.deepcopy(model)) if has_fusable(model) else model
        return macs_per_lr_pixel(fused.eval(), card_of(model).scale) * height * width / 1e9
    if path.suffix == ".safetensors":
        from edge_sr.models.checkpoint import read_metadata

        manifest = read_metadata(path)
    if not manifest or not manifest.get("arch"):
        return None
    args = dict(manifest.get("args") or manifest.get("config") or {})
    if "scale" in manifest:
        args.setdefault("scale", int(manifest["scale"]))
    try:
        model = create_model(manifest["arch"], **args).eval()
    except Exception as e:  # an unknown arch from a foreign manifest: say so, profile the rest
        log.warning("cannot rebuild %s to count MACs (%s)", manifest.get("arch"), e)
        return None
    if has_fusable(model):
        model = reparameterize(model)
    if is_stream_model(model):
        return stream_macs(model, height, width) / 1e9
    return macs_per_lr_pixel(model, args.get("scale", 4)) * height * width / 1e9


def stream_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one step of a video model for an (height, width) LR frame, its state at the
    initial values (convs cost the same whatever the state holds)."""
    import torch

    from edge_sr.models.card import card_of
    from edge_sr.models.stream import initial_state, stream_spec

    spec = stream_spec(model)
    assert spec is not None
    card = card_of(model)
    frame = torch.zeros(1, card.colors, height, width)
    state = initial_state(spec, frame, colors=card.colors, scale=card.scale)
    return count_macs(
        lambda: model(*(frame for _ in spec.frames), *state.values()), height, width, modules=model
    )
