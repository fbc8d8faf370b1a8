"""Checkpoints: ``.safetensors`` whose metadata holds the model card (``arch``, ``args``, ``scale``, ``form``).

Foreign ``.pth`` / ``.pt`` files (official releases) are read with ``torch.load(weights_only=True)`` only,
never unpickling code; ``params`` / ``params_ema`` / ``state_dict`` / ``model`` wrappers and ``module.``
prefixes are unwrapped.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edge_sr.errors import CheckpointError
from edge_sr.io_utils import atomic_path
from edge_sr.models.card import Form, ModelCard, card_of, has_card
from edge_sr.reparam import has_fusable, reparameterize

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt")  # edge-sr safetensors; foreign PyTorch state dicts
_WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "generator")


def model_form(model: nn.Module) -> Form:
    """The form the model's card names; without a card, "train" while any block can still be fused."""
    if has_card(model):
        return card_of(model).form
    return "train" if has_fusable(model) else "deploy"


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    args: dict[str, Any] | None = None,
    form: Form | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write the model's weights and its card to ``path`` (``.safetensors``), atomically.

    ``arch``, ``args`` and ``form`` override (or, for a module without a card, supply) the card's fields.

    Raises:
        CheckpointError: The model has no card and no ``arch`` was given.
    """
    from safetensors.torch import save_file

    own = card_of(model) if has_card(model) else None
    arch = arch or (own.arch if own else None)
    if not arch:
        raise CheckpointError(path, "the model has no registry name; pass arch=")
    args = dict(args if args is not None else own.args if own else {})
    if "scale" not in args:
        if own is None:
            raise CheckpointError(
                path, "the model has no card, so its scale is unknown; pass args={'scale': …}"
            )
        args["scale"] = own.scale
    card = ModelCard.from_args(arch, args, form=form or model_form(model))
    meta = {
        "arch": card.arch,
        "args": json.dumps(dict(card.args), sort_keys=True),
        "scale": str(card.scale),
        "form": card.form,
        "format": "edge-sr/1",
    }
    meta.update(extra or {})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of an edge-sr ``.safetensors`` checkpoint, with ``args`` decoded and ``scale`` an int."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "no such file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(p, f"not a readable safetensors file ({e})") from None
    if "arch" not in meta:
        raise CheckpointError(
            p, "no 'arch' in the metadata: not an edge-sr checkpoint (pass --model for foreign weights)"
        )
    meta["args"] = json.loads(meta.get("args", "{}"))
    meta["scale"] = int(meta.get("scale", meta["args"].get("scale", 0)))
    meta.setdefault("form", "train")
    return meta


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or (safely) ``.pth/.pt``, unwrapping common wrappers."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "no such file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "file is empty")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p))
        except Exception as e:
            raise CheckpointError(p, f"not a readable safetensors file ({e})") from None
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(p, f"cannot be loaded with weights_only=True ({msg})") from None
    for _ in range(3):  # nested wrappers, e.g. {"state_dict": {"params": ...}}
        if isinstance(sd, dict):
            key = next((k for k in _WRAPPERS if k in sd and isinstance(sd[k], dict)), None)
            if key is not None:
                sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(p, "does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_into(model: nn.Module, state: dict[str, Tensor], path: str | os.PathLike[str]) -> nn.Module:
    """Load ``state`` strictly; a missing or unexpected key is a ``CheckpointError`` listing the keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise CheckpointError(path, "; ".join(parts))
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            path,
            f"shape mismatch for {len(bad)} keys, e.g. {k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}",
        )
    model.load_state_dict(state, strict=True)
    return model


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checkpoint(
    path: str | os.PathLike[str], *, model: str | None = None, scale: int | None = None, **overrides: Any
) -> nn.Module:
    """Rebuild a model from a checkpoint, in eval mode.

    An edge-sr ``.safetensors`` file carries ``arch`` and ``args``. A foreign file needs ``model=`` (a zoo
    name) plus ``scale`` and any architecture overrides. A ``deploy``-form checkpoint is rebuilt by fusing
    a fresh train-form model (structure only) before loading the weights. The model carries its card, with
    ``source`` the checkpoint path.
    """
    from edge_sr.models.registry import create_model

    p = Path(path)
    form: Form | None = None  # a foreign checkpoint is in the form its architecture is built in
    if model is None:
        if p.suffix != ".safetensors":
            raise CheckpointError(
                p, "a foreign checkpoint needs the architecture: pass --model NAME (see `edge-sr models`)"
            )
        meta = read_metadata(p)
        if scale is not None and scale != meta["scale"]:
            raise CheckpointError(p, f"this checkpoint is a x{meta['scale']} model, not x{scale}")
        args = dict(meta["args"])
        args.update(overrides)
        arch, form = meta["arch"], meta["form"]
        args.setdefault("scale", meta["scale"])
    else:
        arch = model
        args = {**overrides, "scale": scale or overrides.get("scale", 4)}
    net = create_model(arch, **args)
    if form == "deploy":
        net = reparameterize(net)
    load_into(net, load_state_dict_file(p), p)
    card = card_of(net)
    dataclasses.replace(card, form=form or card.form, source=str(p)).attach(net)
    return net.eval()
