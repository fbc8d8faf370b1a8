"""Model size and cost: parameters, multiply-accumulates per LR pixel, and a zoo summary.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode``, which sees every convolution (regular,
grouped, transposed), linear layer and matrix product at the dispatcher, so functional ``F.conv2d`` calls
inside training-time blocks count too (module hooks would miss them). Element-wise work (activations, BN in
train form, additions, interpolation, attention softmax) is not counted, as is customary in SR papers.
The model runs once on a small input on the ``meta`` device when it can (no compute, no memory), else on
the CPU; MACs scale with the pixel count, so dividing by the LR pixels gives a per-pixel figure.

Counting the whole zoo that way takes about 40 s per scale, so ``zoo_rows`` (``edge-sr models``) reads the
figures of the registered models from ``zoo_stats.json`` beside this file, which records the SHA-256 of the
model and re-parameterization sources it was computed from (:func:`source_digest`). When the sources differ
(a model changed and the file was not rewritten) or a model is not in it (one registered by a user), the
figures are counted as above. Rewrite it with ``python -m edge_sr.models.stats``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# 1280x720 output: what one 720p frame costs.
HD_OUTPUT = (720, 1280)
SHIPPED = Path(__file__).with_name("zoo_stats.json")
SHIPPED_SCALES = (2, 3, 4)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate


def macs_per_lr_pixel(model: nn.Module, scale: int | None = None, size: tuple[int, int] = (32, 32)) -> float:
    """Multiply-accumulates per input (LR) pixel, measured on a ``size`` input in eval mode.

    Args:
        model: an SR model, (N, C, H, W) -> (N, C, sH, sW), or a video model (per SR frame, see
            :func:`_probe_inputs`). Its device and dtype are used.
        scale: unused for the count (the model knows its scale); accepted for call-site clarity.
        size: input height and width; a multiple of common window sizes (8, 16) keeps windowed
            transformers free of padding.
    """
    del scale
    p = next(iter(model.parameters()), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    was_training = model.training
    model.eval()
    try:
        inputs, frames_out = _probe_inputs(model, size, device, dtype)
        macs = _count_macs(model, *inputs)
    finally:
        model.train(was_training)
    return macs / (size[0] * size[1] * frames_out)


# a whole-clip video model (BasicVSR-class) is counted over this many frames; its cost per frame hardly
# depends on the clip length (one flow per neighbour pair and direction)
CLIP_FRAMES = 7


def _registry_kind(arch: str) -> str | None:
    """The registry kind of ``arch``; None for a user's own class (``module:Class``), which is not registered."""
    from edge_sr.errors import ConfigError
    from edge_sr.models.registry import get_entry

    try:
        return get_entry(arch).kind
    except ConfigError:
        return None


def _probe_inputs(
    model: nn.Module, size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> tuple[tuple[torch.Tensor, ...], int]:
    """The inputs of one counted call and the SR frames it makes.

    An image model takes one (1, C, H, W) frame. A streaming step (``edge_sr.models.stream``) takes the frame
    and its initial state, and makes one frame. A sliding-window model with ``num_frame`` takes a
    (1, T, C, H, W) window and makes its centre frame; any other video model takes a clip of
    :data:`CLIP_FRAMES` frames and makes as many.
    """
    from edge_sr.models.card import card_of, has_card
    from edge_sr.models.stream import initial_state, stream_spec

    colors = card_of(model).colors if has_card(model) else 3
    frame = torch.zeros(1, colors, *size, device=device, dtype=dtype)
    spec = stream_spec(model)
    if spec is not None:
        state = initial_state(spec, frame, colors=colors, scale=card_of(model).scale)
        return (frame, *(state[s.name] for s in spec.state)), 1
    if not has_card(model) or _registry_kind(card_of(model).arch) != "video":
        return (frame,), 1
    window = getattr(model, "num_frame", None)
    t = int(window) if isinstance(window, int) else CLIP_FRAMES
    return (frame.unsqueeze(1).expand(1, t, colors, *size).contiguous(),), 1 if isinstance(window, int) else t


def _build(name: str, scale: int, meta: bool) -> nn.Module:
    from edge_sr.models.registry import create_model

    if not meta:
        return create_model(name, scale=scale)
    with torch.device("meta"):
        return create_model(name, scale=scale)


def model_summary(name: str, scale: int = 4) -> dict[str, Any]:
    """Parameters and cost of the registered model ``name`` at ``scale``.

    Returns:
        ``{"name", "family", "kind", "reparameterizable", "scale", "params", "macs_per_lr_pixel",
        "gmacs_720p"}`` where ``gmacs_720p`` is GMACs for one 1280x720 output frame. For a
        re-parameterizable model the figures are for the deploy form, with ``params_train`` and
        ``macs_per_lr_pixel_train`` added for the training form.
    """
    from edge_sr.models.registry import get_entry
    from edge_sr.reparam import reparameterize

    entry = get_entry(name)
    out: dict[str, Any] = {
        "name": name,
        "family": entry.family,
        "kind": entry.kind,
        "reparameterizable": entry.reparameterizable,
        "scale": scale,
    }
    model: nn.Module | None = None
    macs: float | None = None
    for meta in (True, False):  # the meta device first; some models compute values at build time
        try:
            model = _build(name, scale, meta)
            # flow estimators (SPyNet) work on frames of at least 64 pixels
            macs = macs_per_lr_pixel(model, size=(64, 64) if entry.kind == "video" else (32, 32))
            break
        except Exception as e:  # noqa: BLE001 - fall back to a real CPU run
            log.debug("meta-device count of %s failed (%s); running on the CPU", name, e)
            if not meta:
                raise
    assert model is not None and macs is not None
    if entry.reparameterizable:
        out["params_train"], out["macs_per_lr_pixel_train"] = count_params(model), macs
        model = reparameterize(model)  # the fusion rules are tensor algebra: they run on meta tensors too
        macs = macs_per_lr_pixel(model)
    lr_pixels = (HD_OUTPUT[0] // scale) * (HD_OUTPUT[1] // scale)
    out.update(params=count_params(model), macs_per_lr_pixel=macs, gmacs_720p=macs * lr_pixels / 1e9)
    return out


# --- the figures of the registered models, computed once and shipped ---


def source_digest() -> str:
    """SHA-256 over the sources the figures depend on: ``edge_sr/models`` and ``edge_sr/reparam``."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted([*root.glob("models/*.py"), *root.glob("reparam/*.py")]):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, dict[str, dict[str, Any]]]:
    """``{scale: {name: summary}}`` from ``zoo_stats.json`` when it matches the sources, else empty."""
    try:
        data = json.loads(SHIPPED.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("source_sha256") != source_digest():
        log.info("%s was computed from other model sources: counting the figures", SHIPPED.name)
        return {}
    return dict(data.get("scales", {}))


def shipped_summary(name: str, scale: int) -> dict[str, Any] | None:
    """``model_summary(name, scale)`` as shipped in ``zoo_stats.json``, or None when it has no valid entry."""
    row = _shipped().get(str(scale), {}).get(name)
    return dict(row) if row is not None else None


def write_shipped(path: Path = SHIPPED, scales: tuple[int, ...] = SHIPPED_SCALES) -> dict[str, Any]:
    """Count every registered model that builds at each of ``scales`` and write ``path`` (atomically)."""
    from edge_sr.io_utils import atomic_path
    from edge_sr.models.registry import list_models

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for scale in scales:
        rows = table.setdefault(str(scale), {})
        for name in list_models():
            try:
                rows[name] = model_summary(name, scale=scale)
            except Exception as e:  # noqa: BLE001 - a model that does not build at this scale is left out
                log.info("%s x%d not recorded: %s", name, scale, e)
    data = {"source_sha256": source_digest(), "scales": table}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _shipped.cache_clear()
    return data


# --- the zoo as a table: what `edge-sr models` prints ---


def zoo_rows(kind: str | None = None, scale: int = 4) -> list[dict[str, Any]]:
    """One ``model_summary`` per registered model, plus ``bundled``: ``{scale: checkpoint path}`` of its
    ``<name>_x<scale>`` files, and ``bundled_other``: ``{file stem: path}`` of bundled files of the same
    architecture under another name (``ecbvsr_m4c16_bd_x4``: the BD weights).

    A model that fails to build is listed with ``error`` set and no figures, so one broken family does
    not hide the others.
    """
    from edge_sr.models.checkpoint import read_metadata
    from edge_sr.models.registry import get_entry, list_models
    from edge_sr.weights import bundled_checkpoints

    bundled = bundled_checkpoints(None)
    # files of a model under another name (its BD weights, say): listed by file name beside the model's own
    others: dict[str, dict[str, str]] = {}
    for label, by_scale in bundled.items():
        for p in by_scale.values():
            arch = read_metadata(p).get("arch", label)
            if arch != label:
                others.setdefault(arch, {})[p.stem] = str(p)
    rows = []
    for name in list_models(kind=kind):  # type: ignore[arg-type]
        try:
            row = shipped_summary(name, scale) or model_summary(name, scale=scale)
        except Exception as e:  # noqa: BLE001 - listed, not fatal
            log.warning("model %s cannot be built: %s", name, e)
            entry = get_entry(name)
            row = {"name": name, "family": entry.family, "kind": entry.kind, "params": None}
            row.update(macs_per_lr_pixel=None, gmacs_720p=None, error=(str(e).splitlines() or [""])[0][:200])
        row["bundled"] = {str(s): str(p) for s, p in sorted(bundled.get(name, {}).items())}
        row["bundled_other"] = dict(sorted(others.get(name, {}).items()))
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:.0f}"


def zoo_table(kind: str | None = None, scale: int = 4) -> tuple[list[dict[str, Any]], str]:
    """``(rows, text)``: the rows of ``zoo_rows`` and a fixed-width table of them."""
    rows = zoo_rows(kind=kind, scale=scale)
    head = ("name", "family", "kind", "params", "MACs/LR px", f"GMACs 720p x{scale}", "bundled")
    body = []
    for r in rows:
        gm = r.get("gmacs_720p")
        files = [f"x{s}" for s in r["bundled"]] + list(r.get("bundled_other", {}))
        bundled = ",".join(files) or ("error: " + r["error"] if "error" in r else "-")
        kind_s = r["kind"] + (" (rep)" if r.get("reparameterizable") else "")
        gm_s = "-" if gm is None else f"{gm:.2f}"
        body.append(
            (r["name"], r["family"], kind_s, _fmt(r["params"]), _fmt(r["macs_per_lr_pixel"]), gm_s, bundled)
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *body)]
    note = "(rep): re-parameterizable, figures for the deploy form; GMACs for one 1280x720 output frame."
    return rows, "\n".join([*lines, "", note])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = write_shipped()
    print(f"{SHIPPED}: {sum(len(v) for v in written['scales'].values())} rows")
