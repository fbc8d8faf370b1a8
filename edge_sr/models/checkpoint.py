"""Checkpoints: ``.safetensors`` whose metadata holds the model card (``arch``, ``args``, ``scale``, ``form``).

Foreign ``.pth`` / ``.pt`` files (official releases) are read with ``torch.load(weights_only=True)`` only,
never unpickling code; ``params`` / ``params_ema`` / ``state_dict`` / ``model`` wrappers and ``module.``
prefixes are unwrapped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from edge_sr.errors import CheckpointError, EdgeSRError
from edge_sr.io_utils import atomic_path
from edge_sr.models.card import Form, ModelCard, card_of, check_args, check_metadata, has_card
from edge_sr.reparam import has_fusable, reparameterize

if TYPE_CHECKING:
    from edge_sr.models.detect import Detection

# edge-sr safetensors; foreign state dicts (safetensors, PyTorch pickles, Lightning checkpoints)
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
_WRAPPERS = (
    "params_ema",
    "params",
    "state_dict",
    "model",
    "net",
    "generator",
    "net_g",
    "model_state_dict",
    "sd",  # LIIF: {'model': {'name', 'args', 'sd'}}
)
# a first key component every key shares that is a wrapper's, not the model's: DataParallel, GAN trainers,
# Lightning modules, torch.compile
_PREFIXES = ("module", "generator", "model", "net", "net_g", "netG", "_orig_mod")
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTEGER_BUFFERS = (
    "num_batches_tracked",
    "relative_position_index",
    "aligned_relative_position_index",
)  # name prefixes of integer buffers


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
    """The model card in an edge-sr ``.safetensors`` checkpoint's metadata, validated before any torch call.

    ``edge_sr.models.card.check_metadata`` checks each field (``arch`` registered, ``args`` a JSON object of
    the architecture's constructor keywords with values of their types and ranges, ``scale``, ``form``,
    ``colors``).

    Returns:
        The metadata with ``args`` a dict, ``scale`` and ``colors`` ints and ``form`` set.

    Raises:
        CheckpointError: Missing or unreadable file, no card, or a field of the wrong type or range.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "no such file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(p, f"not a readable safetensors file ({_first_line(e)})") from None
    if "arch" not in meta:
        raise CheckpointError(
            p, "no 'arch' in the metadata: not an edge-sr checkpoint (pass --model for foreign weights)"
        )
    return check_metadata(meta, p)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or, safely, ``.pth`` / ``.pt`` / ``.ckpt``.

    Pickles are read with ``torch.load(weights_only=True)`` only: nothing in the file executes, and a pickle
    that needs a global outside torch's allowed set is refused with that global's name. Wrappers are
    unwrapped (``params_ema`` preferred over ``params``, then ``state_dict``, ``model``, ``net``,
    ``generator``; nested ones too), and a prefix every key shares (``module.``, ``generator.``, ``model.``,
    ``net_g.``, ``_orig_mod.`` ...) is dropped.

    Raises:
        CheckpointError: Missing, empty, truncated or unreadable file, a refused global, no state dict of
            tensors, or weights that are not finite floating point (:func:`check_weights`).
    """
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
            raise CheckpointError(p, f"not a readable safetensors file ({_first_line(e)})") from None
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(p, _pickle_problem(e, p)) from None
    sd = unwrap_state(sd)
    if sd is None:
        raise CheckpointError(p, "does not hold a state dict of tensors")
    check_weights(sd, p)
    return sd


def unwrap_state(obj: Any) -> dict[str, Tensor] | None:
    """The state dict inside ``obj`` (wrappers and shared key prefixes removed), or None when there is none.

    Non-tensor entries beside the tensors (an ``epoch`` counter, a ``_metadata`` record) are dropped once a
    wrapper has been found; a bare dict must hold tensors only.
    """
    wrapped = False
    for _ in range(4):  # nested wrappers, e.g. {"state_dict": {"params": ...}}
        if not isinstance(obj, dict):
            return None
        key = next((k for k in _WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
        if key is None:
            break
        obj, wrapped = obj[key], True
    if not isinstance(obj, dict) or not obj:
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors or (not wrapped and len(tensors) != len(obj)):
        return None
    for _ in range(3):
        first = next(iter(tensors)).split(".", 1)[0] + "."
        if first[:-1] not in _PREFIXES or not all(k.startswith(first) for k in tensors):
            break
        tensors = {k[len(first) :]: v for k, v in tensors.items()}
    return tensors


def _pickle_problem(e: BaseException, path: Path) -> str:
    """One line for a ``torch.load(weights_only=True)`` refusal: the global it needed, a truncated archive,
    or the first line of the error."""
    import zipfile

    text = str(e)
    m = re.search(r"GLOBAL ([\w.]+)", text)  # "Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y"
    if m:
        return (
            f"refused: the pickle needs the global {m.group(1)!r}, which safe loading (weights_only=True) does "
            "not allow; nothing was executed (save the state dict alone, or as .safetensors)"
        )
    with contextlib.suppress(OSError):
        with path.open("rb") as f:
            zip_header = f.read(4) == b"PK\x03\x04"
        if zip_header and not zipfile.is_zipfile(path):
            return "truncated or corrupt file (a torch.save archive without its end)"
    if "central directory" in text or "failed reading zip archive" in text or "Ran out of input" in text:
        return "truncated or corrupt file (the archive cannot be read)"
    return f"cannot be loaded with weights_only=True ({_first_line(e)})"


def check_weights(state: dict[str, Tensor], path: str | os.PathLike[str]) -> None:
    """Every weight floating point (``WEIGHT_DTYPES``) and finite.

    The only integer tensors a zoo model holds are BatchNorm step counters and attention index tables
    (``INTEGER_BUFFERS``); :func:`check_shapes` also refuses an integer tensor where the model has a weight.

    Raises:
        CheckpointError: Names the first tensor of another dtype, or holding NaN / Inf.
    """
    for k, v in state.items():
        if not v.is_floating_point() and v.dtype != torch.bool and not v.is_complex():
            if k.rsplit(".", 1)[-1].startswith(INTEGER_BUFFERS):
                continue
        if v.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(path, f"tensor {k!r} is {_dtype(v)}; expected float32, float16 or bfloat16")
        if not bool(torch.isfinite(v).all()):
            what = "NaN" if bool(torch.isnan(v).any()) else "Inf"
            raise CheckpointError(path, f"tensor {k!r} holds {what}; expected finite weights")


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_into(model: nn.Module, state: dict[str, Tensor], path: str | os.PathLike[str]) -> nn.Module:
    """Load ``state`` strictly; a missing or unexpected key is a ``CheckpointError`` listing the keys."""
    check_shapes(model.state_dict(), state, path)
    model.load_state_dict(state, strict=True)
    return model


def check_shapes(
    want: dict[str, Tensor], state: dict[str, Tensor], path: str | os.PathLike[str], *, what: str = ""
) -> None:
    """The keys of ``state`` are those of ``want`` (a model's state dict; ``meta`` tensors do) and each
    tensor has the wanted shape; where the model holds a floating-point weight, ``state`` does too.

    Raises:
        CheckpointError: Lists missing and unexpected keys, or up to 3 tensors of another shape with both
            shapes (a scale that disagrees with the weights shows here, in the upsampler's 3·s² channels),
            or the first integer tensor where the model has a weight.
    """
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing or unexpected:
        parts = [what] if what else []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise CheckpointError(path, "; ".join(parts))
    bad = [k for k in want if tuple(want[k].shape) != tuple(state[k].shape)]
    if bad:
        shown = ", ".join(f"{k} {tuple(state[k].shape)} vs model {tuple(want[k].shape)}" for k in bad[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        prefix = f"{what}; " if what else ""
        raise CheckpointError(path, f"{prefix}shape mismatch for {len(bad)} keys: {shown}{more}")
    for k, w in want.items():
        if w.is_floating_point() and not state[k].is_floating_point():
            raise CheckpointError(
                path, f"tensor {k!r} is {_dtype(state[k])}; expected float32, float16 or bfloat16"
            )


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def has_edge_sr_metadata(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a ``.safetensors`` file whose metadata names an architecture (an edge-sr card)."""
    from safetensors import safe_open

    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    try:
        with safe_open(str(p), framework="pt") as f:
            return "arch" in (f.metadata() or {})
    except Exception:  # unreadable: the reader's own error says why
        return False


def inspect_checkpoint(
    path: str | os.PathLike[str], *, model: str | None = None, scale: int | None = None, **overrides: Any
) -> Detection:
    """What ``load_checkpoint`` would build from ``path``, without building it.

    An edge-sr checkpoint answers from its card (layout ``"edge-sr"``); any other file is detected from its
    keys and shapes (:func:`edge_sr.models.detect.detect`), among the family of ``model`` when one is named.
    ``scale`` and ``overrides`` apply on top: a scale the weights cannot tell (SRCNN, FSRCNN) is set, one
    that disagrees with the weights is refused.

    Raises:
        CheckpointError: Unreadable file, nothing or two architectures fit, or ``scale`` disagrees.
    """
    return _inspect(Path(path), model, scale, overrides)[0]


def _inspect(
    p: Path, model: str | None, scale: int | None, overrides: dict[str, Any]
) -> tuple[Detection, dict[str, Tensor] | None]:
    """:func:`inspect_checkpoint`, plus the foreign file's state dict (None for an edge-sr file, whose
    weights are read once the card is known)."""
    from edge_sr.models.detect import Detection, detect
    from edge_sr.models.registry import get_entry

    if has_edge_sr_metadata(p):
        meta = read_metadata(p)
        if model is not None and model != meta["arch"]:
            raise CheckpointError(p, f"this checkpoint is a {meta['arch']} model; --model {model} disagrees")
        if scale is not None and scale != meta["scale"]:
            raise CheckpointError(p, f"this checkpoint is a x{meta['scale']} model, not x{scale}")
        if overrides:
            check_args(meta["arch"], overrides, p, field="argument")
        args = {**meta["args"], **overrides}
        args.setdefault("scale", meta["scale"])
        return Detection(meta["arch"], args, form=meta["form"], layout="edge-sr"), None
    if model is not None:
        try:
            family = get_entry(model).family
        except EdgeSRError as e:
            raise CheckpointError(p, f"--model: {e.problem}") from None
    state = load_state_dict_file(p)
    if model is None:
        det = detect(state, path=p)
    else:
        try:
            det = detect(state, path=p, family=family)
        except CheckpointError:  # the named entry, as given: the strict load names what does not fit
            det = Detection(model, {"scale": scale or 4}, assumed={"scale": "not detected"})
    if overrides:
        check_args(model or det.arch, overrides, p, field="argument")
        read = {k: v for k, v in det.args.items() if k not in det.assumed and k != "scale"}
        clash = [k for k in sorted(overrides) if k in read and _norm(overrides[k]) != _norm(read[k])]
        if clash:
            said = ", ".join(f"{k} {read[k]!r} (declared {overrides[k]!r})" for k in clash)
            raise CheckpointError(
                p, f"the weights of this {det.arch} have {said}; drop or fix the declared value"
            )
    wanted = scale if scale is not None else overrides.get("scale")
    if det.rescale is not None and wanted is not None and wanted != det.scale:
        try:
            det = det.rescale(int(wanted))  # a multi-scale file: that scale's upsampler
        except CheckpointError as e:
            raise CheckpointError(p, e.problem) from None
    args = dict(det.args)
    assumed = dict(det.assumed)
    if scale is not None and scale != det.scale:
        if "scale" not in det.assumed:
            raise CheckpointError(
                p,
                f"the weights are a x{det.scale} {det.arch} model, not x{scale} (the upsampler's shapes say so)",
            )
        args["scale"] = scale
    if scale is not None or "scale" in overrides:
        assumed.pop("scale", None)
    elif "scale" in assumed and (named := scale_in_name(p)) is not None:
        args["scale"] = named
        assumed["scale"] = f"x{named} from the file name (the weights do not tell); --scale overrides"
    for k in overrides:
        assumed.pop(k, None)
    args.update(overrides)
    return dataclasses.replace(det, arch=model or det.arch, args=args, assumed=assumed), state


def _norm(v: Any) -> Any:
    """Lists and tuples compare equal (a JSON list against a tuple default)."""
    return [_norm(x) for x in v] if isinstance(v, list | tuple) else v


def scale_in_name(path: str | os.PathLike[str]) -> int | None:
    """The factor a file name states, as releases name them (``fsrcnn_x3.pth``, ``RealESRGAN_x4plus``,
    ``4x_foo``, ``x2.pt``), or None when it states none or two."""
    stem = Path(path).stem.lower()
    found = {int(m) for m in re.findall(r"(?:^|[^a-z0-9])x([2-8])(?![0-9])", stem)}
    found |= {int(m) for m in re.findall(r"(?:^|[^a-z0-9])([2-8])x(?![a-z0-9])", stem)}
    return found.pop() if len(found) == 1 else None


def load_checkpoint(
    path: str | os.PathLike[str], *, model: str | None = None, scale: int | None = None, **overrides: Any
) -> nn.Module:
    """Rebuild a model from a checkpoint, in eval mode.

    An edge-sr ``.safetensors`` file carries ``arch`` and ``args``, validated field by field before any torch
    call (:func:`read_metadata`). Any other file (``.pth`` / ``.pt`` / ``.ckpt`` / ``.safetensors`` without a
    card: an official release, a BasicSR or traiNNer run, a challenge entry) is read safely
    (:func:`load_state_dict_file`) and its architecture detected from key names and shapes
    (:func:`inspect_checkpoint`); ``model=`` restricts detection to that zoo entry's family, and ``scale`` /
    ``overrides`` apply on top. A ``deploy``-form checkpoint is rebuilt by fusing a fresh train-form model
    (structure only) before loading the weights. The model carries its card, with ``source`` the path.

    The weights must be floating point and finite (:func:`check_weights`) and fit the model the card builds
    exactly (keys and shapes, checked on a ``meta``-device skeleton before the model is allocated). A
    ``scale`` that disagrees with the weights is refused for every architecture whose upsampler has
    ``colors·s²`` channels or one stage per factor of 2; SRCNN (bicubic first) and FSRCNN (a transposed
    convolution whose kernel does not depend on the scale) have no weight whose shape depends on the scale,
    so for them the card's (or the caller's) scale is trusted.

    Raises:
        CheckpointError: Unreadable file, invalid card, no or two architectures fit, weights of another dtype,
            non-finite or of other shapes, or arguments the architecture's constructor refuses.
    """
    return load_detected(path, model=model, scale=scale, **overrides)[0]


def load_detected(
    path: str | os.PathLike[str], *, model: str | None = None, scale: int | None = None, **overrides: Any
) -> tuple[nn.Module, Detection]:
    """:func:`load_checkpoint`, with what :func:`inspect_checkpoint` says of the file (read and detected once)."""
    p = Path(path)
    det, raw = _inspect(p, model, scale, overrides)
    arch, args, form = det.arch, dict(det.args), det.form
    state = det.state(raw if raw is not None else load_state_dict_file(p))
    skeleton = _build(arch, args, form, p, device="meta")
    if skeleton is not None:  # keys and shapes checked before any memory is allocated for the model
        what = f"the weights do not fit {arch}({_args_text(args)})"
        check_shapes(skeleton.state_dict(), state, p, what=what)
    net = _build(arch, args, form, p, device=None)
    assert net is not None  # the real build raises rather than returning None
    load_into(net, state, p)
    card = card_of(net)
    dataclasses.replace(card, form=form, source=str(p)).attach(net)
    return net.eval(), det


def _build(
    arch: str, args: dict[str, Any], form: Form | None, path: Path, *, device: str | None
) -> nn.Module | None:
    """``create_model(arch, **args)`` (fused for the deploy form); a constructor's refusal becomes a
    ``CheckpointError`` naming the file and the arguments. On the ``meta`` device a failure returns None:
    the real build then gives the authoritative error."""
    from edge_sr.errors import EdgeSRError
    from edge_sr.models.registry import create_model

    try:
        with torch.device(device) if device else contextlib.nullcontext():
            net = create_model(arch, **args)
            return reparameterize(net) if form == "deploy" else net
    except Exception as e:
        if device is not None:
            return None
        if not isinstance(
            e, EdgeSRError | ValueError | RuntimeError | TypeError | ArithmeticError | LookupError
        ):
            raise
        problem = e.problem if isinstance(e, EdgeSRError) else _first_line(e)
        raise CheckpointError(path, f"{arch}({_args_text(args)}) cannot be built: {problem}") from None


def _args_text(args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(args.items()))
    return text if len(text) <= 120 else text[:117] + "..."
