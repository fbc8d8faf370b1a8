"""Range checks of a ``TrainConfig``: every field, before anything is built or written.

The dataclasses in :mod:`edge_sr.train.config` give the types; this module gives the ranges. Each refusal is
one line naming the recipe file, the field (dotted path), its value and what is allowed. The model's
arguments get the checks a checkpoint's metadata gets (:func:`edge_sr.models.card.check_args`), then the
model is built on the ``meta`` device (no memory, no compute) and run on one batch of patches, which
proves the patch size fits the network (a window attention needs patches of at least its window).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sr.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from edge_sr.train.config import TrainConfig

TRAIN_SCALES = (2, 3, 4, 8)  # the zoo's factors; an architecture's constructor may allow fewer
MIN_PATCH = 8  # LR patch side, at least (the network may ask for more: see _check_patch)
MAX_PATCH = 1024
MAX_BATCH = 4096
MAX_PARAMS = 1 << 30  # a model past a billion parameters is a typo in model.args
MAX_SEED = (1 << 32) - 1

Check = tuple[Callable[[Any], bool], str]


def _int_in(lo: int, hi: int | None = None) -> Check:
    if hi is None:
        return (lambda v: v >= lo), f"an integer >= {lo}"
    return (lambda v: lo <= v <= hi), f"an integer in {lo} .. {hi}"


def _real(lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def ok(v: float) -> bool:
        return (
            math.isfinite(v)
            and (v > lo if lo_open else v >= lo)
            and (hi == math.inf or (v < hi if hi_open else v <= hi))
        )

    left = f"> {lo:g}" if lo_open else f">= {lo:g}"
    if hi == math.inf:
        return ok, f"a finite number {left}"
    return ok, f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def _each(check: Check) -> Check:
    ok, what = check
    return (lambda vs: all(ok(v) for v in vs)), f"a list of {what.removeprefix('a ').removeprefix('an ')}s"


_PROB = _real(0.0, 1.0)
_EVERY = _int_in(1)

# dotted field -> (predicate on the type-checked value, what is allowed)
RULES: dict[str, Check] = {
    "model.scale": ((lambda v: v in TRAIN_SCALES), f"one of {', '.join(map(str, TRAIN_SCALES))}"),
    "data.patch_size": _int_in(MIN_PATCH, MAX_PATCH),
    "data.batch_size": _int_in(1, MAX_BATCH),
    "data.workers": _int_in(0, 256),
    "data.hr_scales": (
        (lambda v: 0 < len(v) <= 16 and all(0.1 <= x <= 1 for x in v) and len(set(v)) == len(v)),
        "1 to 16 distinct factors in [0.1, 1]",
    ),
    "data.holdout": _int_in(0),
    "data.val_max_size": _int_in(0),
    "data.augment.flip": _PROB,
    "data.augment.rot90": _PROB,
    "data.augment.rgb_shuffle": _PROB,
    "data.augment.mixup": _PROB,
    "data.augment.mixup_alpha": _real(0.0, lo_open=True),
    "data.augment.cutmix": _PROB,
    "data.augment.cutmix_alpha": _real(0.0, lo_open=True),
    "data.augment.cutmixup": _PROB,
    "data.augment.blend": _PROB,
    "data.augment.blend_alpha": (
        (lambda v: all(_PROB[0](x) for x in v) and v[0] <= v[1]),
        "two numbers lo <= hi in [0, 1]",
    ),
    "data.video.frames": _int_in(1, 1024),
    "data.video.tbptt": _int_in(0),
    "data.video.reverse": _PROB,
    "data.video.synthetic": _real(0.0),
    "data.video.frame_folders_weight": _real(0.0),
    "data.video.video_files_weight": _real(0.0),
    "data.video.video_max_frames": _int_in(0),
    "data.video.video_downscale": _int_in(1, 16),
    "data.video.motion.speed": _real(0.0),
    "data.video.motion.accel": _real(0.0),
    "data.video.motion.rotation": _real(0.0, 45.0),
    "data.video.motion.zoom": _real(0.0, 0.5),
    "data.video.motion.affine": _PROB,
    "data.video.val_frames": _int_in(1, 1024),
    "optim.lr": _real(0.0, lo_open=True),
    "optim.weight_decay": _real(0.0),
    "optim.betas": _each(_real(0.0, 1.0, hi_open=True)),
    "optim.warmup_iters": _int_in(0),
    "optim.min_lr": _real(0.0),
    "optim.milestones": _each(_int_in(1)),
    "optim.gamma": _real(0.0, lo_open=True),
    "optim.grad_clip": _real(0.0),
    "charbonnier_eps": _real(0.0, lo_open=True),
    "iters": _int_in(1),
    "ema_decay": _real(0.0, 1.0, hi_open=True),
    "val_every": _EVERY,
    "save_every": _EVERY,
    "log_every": _EVERY,
    "seed": _int_in(0, MAX_SEED),
    "threads": (lambda v: 0 <= v <= 1024, "an integer in 0 .. 1024 (0: torch's default)"),
    "bn_freeze_at": _int_in(0),
    "distill.gt_weight": _real(0.0),
    "distill.output_weight": _real(0.0),
    "distill.feature_weight": _real(0.0),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_config(
    cfg: TrainConfig, path: str | os.PathLike[str] | None = None, overridden: Collection[str] = ()
) -> None:
    """Range-check every field of ``cfg``, the model's arguments and the output folder.

    Args:
        cfg: A type-checked configuration.
        path: The recipe it came from, for the messages.
        overridden: Dotted keys set by ``--set`` (their messages say so).

    Raises:
        ConfigError: ``<file>: <field> is <value>; expected <what is allowed>``.
    """

    def refuse(key: str, value: Any, expected: str) -> ConfigError:
        origin = " (from --set)" if any(key == k or key.startswith(k + ".") for k in overridden) else ""
        return ConfigError(path, f"{key} is {_show(value)}{origin}; expected {expected}")

    for key, (ok, what) in RULES.items():
        value = _get(cfg, key)
        if not ok(value):
            raise refuse(key, value, what)
    if cfg.optim.min_lr > cfg.optim.lr:
        raise refuse("optim.min_lr", cfg.optim.min_lr, f"at most optim.lr ({cfg.optim.lr:g})")
    _check_loss_and_data(cfg, refuse)
    _check_distill(cfg, refuse)
    _check_out_dir(cfg.out_dir, refuse)
    _check_device(cfg.device, refuse)
    _check_model(cfg, path, refuse)


def _check_loss_and_data(cfg: TrainConfig, refuse: Callable[[str, Any, str], ConfigError]) -> None:
    """YCbCr weights: none negative, one at least > 0; a per-pixel (coordinate) run has no planes to weigh.
    ``data.hr_scales`` reduces HR folders: not paired folders, not arbitrary-scale samples."""
    d = cfg.data
    if d.hr_scales != [1.0] and (d.paired or d.scale_range):
        what = "data.paired" if d.paired else "data.scale_range"
        raise refuse("data.hr_scales", d.hr_scales, f"[1.0] with {what} (it reduces data.train_folders)")
    w = cfg.loss_ycbcr
    if w is None:
        return
    if min(w) < 0 or max(w) == 0 or not all(math.isfinite(x) for x in w):
        raise refuse("loss_ycbcr", list(w), "three weights [Y, Cb, Cr] >= 0, one at least > 0")
    if d.scale_range:
        raise refuse("loss_ycbcr", list(w), "no YCbCr weights for an arbitrary-scale run (data.scale_range)")


def _check_distill(cfg: TrainConfig, refuse: Callable[[str, Any, str], ConfigError]) -> None:
    """Weights that leave some loss, pairs of two module names (the teacher file is read when training starts:
    a recipe may name the checkpoint another recipe is still to write)."""
    d = cfg.distill
    if d.teacher is None:
        return
    if d.gt_weight + d.output_weight + d.feature_weight * bool(d.features) == 0:
        raise refuse("distill.gt_weight", d.gt_weight, "a weight > 0 on at least one term")
    for pair in d.features:
        if len(pair) != 2 or not all(isinstance(n, str) and n for n in pair):
            raise refuse("distill.features", pair, "[student module, teacher module] pairs of names")
    if cfg.qat.target is not None:
        raise refuse("distill.teacher", d.teacher, "no teacher in a QAT run (distil the float model first)")
    if cfg.data.scale_range:
        raise refuse("distill.teacher", d.teacher, "no teacher for an arbitrary-scale run (data.scale_range)")


def _check_out_dir(out_dir: str, refuse: Callable[[str, Any, str], ConfigError]) -> None:
    """``out_dir`` is (or can become) a folder: it is no file, and no existing ancestor is a file."""
    if not out_dir.strip():
        raise refuse("out_dir", out_dir, "a folder path")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise refuse("out_dir", out_dir, "a folder (that path is a file)")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise refuse("out_dir", out_dir, f"a folder path ({parent} is a file, not a folder)")
            if not os.access(parent, os.W_OK | os.X_OK) and not p.exists():
                raise refuse("out_dir", out_dir, f"a folder that can be created ({parent} is not writable)")
            return


def _check_device(device: str, refuse: Callable[[str, Any, str], ConfigError]) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise refuse("device", device, "a torch device such as cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise refuse("device", device, "cpu: this machine has no CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise refuse("device", device, "cpu: this machine has no MPS device")


def _check_model(
    cfg: TrainConfig, path: str | os.PathLike[str] | None, refuse: Callable[[str, Any, str], ConfigError]
) -> None:
    """``model.args`` checked like checkpoint metadata, then the model built and run on ``meta``."""
    import torch

    from edge_sr.models.card import card_of, check_args
    from edge_sr.models.registry import create_model, get_entry
    from edge_sr.models.stream import stream_spec

    name, scale, args = cfg.model.name, cfg.model.scale, cfg.model.args
    get_entry(name)  # an unknown name: ConfigError listing the registered ones
    if "scale" in args:
        raise refuse("model.args.scale", args["scale"], "no scale in model.args: set model.scale")
    try:
        check_args(name, {**args, "scale": scale}, path or "config", field="model.args")
    except CheckpointError as e:
        raise ConfigError(path, e.problem) from None
    try:
        with torch.device("meta"):
            model = create_model(name, scale=scale, **args)
    except ConfigError as e:
        raise ConfigError(path, e.problem) from None
    except Exception as e:  # a value the constructor refuses (ValueError, AssertionError, RuntimeError ...)
        raise ConfigError(
            path, f"model {name} x{scale} refuses model.args {_show(args)}: {_first_line(e)}"
        ) from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMS:
        raise refuse("model.args", args, f"a model of at most {MAX_PARAMS:,} parameters, not {count:,}")
    colors = card_of(model).colors
    if cfg.loss_ycbcr is not None and colors != 3:
        raise refuse(
            "loss_ycbcr", list(cfg.loss_ycbcr), f"an RGB model ({name} has {colors} colour channel(s))"
        )
    if cfg.data.hr_scales != [1.0] and stream_spec(model) is not None:
        raise refuse("data.hr_scales", cfg.data.hr_scales, "[1.0] for a video model (it trains on clips)")
    _check_patch(model, cfg, colors, refuse)


def _check_patch(
    model: Any, cfg: TrainConfig, colors: int, refuse: Callable[[str, Any, str], ConfigError]
) -> None:
    """One training forward on ``meta`` tensors of the configured patch: (B, C, p, p) -> (B, C, p·s, p·s)."""
    import torch

    from edge_sr.models.stream import initial_state, stream_spec

    spec = stream_spec(model)

    def fits(p: int) -> bool:
        try:
            with torch.no_grad():
                x = torch.empty(batch, colors, p, p, device="meta")
                if spec is None:
                    y = model.train()(x)
                else:  # a video model: one step from the initial state
                    state = initial_state(spec, x, colors=colors, scale=cfg.model.scale)
                    y = model.train()(x, *(state[s.name] for s in spec.state))[0]
        except Exception:
            return False
        return tuple(y.shape[-2:]) == (p * cfg.model.scale, p * cfg.model.scale)

    batch, patch = max(2, cfg.data.batch_size), cfg.data.patch_size  # BatchNorm needs two values per channel
    if fits(patch):
        return
    bigger = [p for p in (16, 24, 32, 48, 64, 96, 128) if p > patch]
    smallest = next((p for p in bigger if fits(p)), None)
    if smallest is None:
        return  # the network does not run on meta tensors at all: nothing to conclude about the patch
    raise refuse("data.patch_size", patch, f"a patch {cfg.model.name} can take, e.g. {smallest} (LR pixels)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
