"""Training configuration: dataclasses are the schema; YAML / TOML files and ``--set key=value`` fill them.

Unknown keys raise, values are type-checked against the field types and range-checked
(:mod:`edge_sr.train.config_checks`), and no string is ever executed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_sr.data.augment import AugmentConfig
from edge_sr.errors import ConfigError
from edge_sr.train.config_file import parse_yaml, read_config_file
from edge_sr.train.distill import DistillConfig


@dataclass
class ModelConfig:
    name: str = "ecbsr_m4c16"
    scale: int = 4
    args: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. {"collapsed": true}


@dataclass
class MotionConfig:
    """The synthetic camera path's ranges per frame (LR pixels; :class:`edge_sr.data.clips.Motion`)."""

    speed: float = 1.5  # velocity magnitude drawn in [0, speed]
    accel: float = 0.1  # standard deviation of the acceleration
    rotation: float = 0.5  # degrees per frame, drawn in [-rotation, rotation]
    zoom: float = 0.01  # relative zoom per frame, drawn in [-zoom, zoom]
    affine: float = 1.0  # share of clips rotated / zoomed (interpolated); others move by whole HR pixels


@dataclass
class VideoConfig:
    """Clips for a video (streaming) model; ignored for an image model.

    Sources, mixed by weight: ``synthetic`` (the still images of ``data.train_folders`` moved along a random
    camera path), ``frame_folders`` (videos as folders of frames), ``video_files`` (decoded video files).
    Validation: synthetic sequences of the ``data.holdout`` images held out of ``data.train_folders``.
    """

    frames: int = 7  # T, frames per training clip
    tbptt: int = 0  # detach the state every this many frames (0: back-propagate through the whole clip)
    reverse: float = 0.5  # probability of playing a clip backwards
    degradation: Literal["BI", "BD"] = "BI"
    synthetic: float = 1.0  # weight of the synthetic-motion source
    frame_folders: list[str] = field(default_factory=list)
    frame_folders_weight: float = 0.0
    video_files: list[str] = field(default_factory=list)
    video_files_weight: float = 0.0
    video_max_frames: int = 120  # frames decoded per video file (memory)
    video_downscale: int = 1  # reduce decoded frames by this factor before use as HR
    motion: MotionConfig = field(default_factory=MotionConfig)
    val_frames: int = 10  # frames per validation sequence


@dataclass
class DataConfig:
    train_folders: list[str] = field(default_factory=list)  # HR folders, LR made on the fly
    paired: str | None = None  # a paired LR/HR folder instead (HR + LR_bicubic/X{s}, or DIV2K layout)
    patch_size: int = 48  # LR patch side
    batch_size: int = 16  # per process
    workers: int = 0
    skip_small: bool = True  # drop images smaller than one HR patch (T91 has 78x78 images)
    # every training image also joins reduced by each of these factors (FSRCNN: 1, 0.9, 0.8, 0.7, 0.6)
    hr_scales: list[float] = field(default_factory=lambda: [1.0])
    holdout: int = 0  # hold this many images out of train_folders (evenly spread) for validation
    val_dir: str | None = None  # or a folder laid out like a benchmark folder (HR/ [+ LR_bicubic/X{s}/])
    val_max_size: int = 0  # crop validation HR images to at most this side (0: full images)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # arbitrary-scale models (LIIF): a factor drawn per sample from this range (empty: the model's scale), the
    # HR crop round(patch_size·s), and this many HR pixels per sample as query points
    scale_range: list[float] = field(default_factory=list)
    sample_q: int = 2304
    video: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_iters: int = 0
    min_lr: float = 1e-6
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    grad_clip: float = 0.0  # max gradient norm (0: off)
    # parameter-name prefixes to train (e.g. [state_in, conv_h]); the others stay at their --init values.
    # Empty: every parameter trains.
    train_only: list[str] = field(default_factory=list)


@dataclass
class QATConfig:
    """Quantization-aware training of a video (streaming) model's step: the training loop runs the step's
    fake-quant graph for ``target`` and exports it in INT8 at the end (``edge_sr.quantize.stream``)."""

    target: str | None = None  # executorch | tflite | coreml (their PT2E modes); None: float training
    mode: str | None = None  # the target's INT8 mode (default: its first)
    calib: str | None = None  # calibration sequences: a Vid4-style root, LR clip folders, or a video file
    calib_clips: int = 8
    calib_frames: int = 8
    input_size: tuple[int, int] = (180, 320)  # the artifact's LR frame (h, w)
    freeze_observers_after: float = 0.8  # share of the steps after which the scales stop moving
    keep_float: list[str] = field(default_factory=list)
    int8_io: bool = False
    output: str | None = None  # artifact path or folder (default: out_dir)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: Literal["l1", "charbonnier"] = "l1"
    charbonnier_eps: float = 1e-3
    # weights of the loss on Y, Cb, Cr (BT.601, as the Y-channel metrics) for an RGB model; None: on R, G, B
    loss_ycbcr: tuple[float, float, float] | None = None
    iters: int = 100_000
    ema_decay: float = 0.999  # 0 disables EMA
    val_every: int = 2_000
    save_every: int = 1_000
    log_every: int = 100
    out_dir: str = "runs/default"
    seed: int = 0
    threads: int = 0  # torch intra-op threads per process (0: torch's default)
    amp: bool = False  # autocast fp16 on CUDA
    device: str = "cpu"
    bn_freeze_at: int = (
        0  # RepSR: from this iteration on, BatchNorm uses frozen population statistics (0: never)
    )
    qat: QATConfig = field(default_factory=QATConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check / convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(None, f"{key}: {value!r} does not fit {tp}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                None, f"{key}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(None, f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, key) for v in value]
    if origin is tuple:
        inner = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(inner):
            raise ConfigError(None, f"{key}: expected {len(inner)} values, got {value!r}")
        return tuple(_convert(v, t, key) for v, t in zip(value, inner))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(None, f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(None, f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(None, f"{key}: expected true/false, got {value!r}")
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(None, f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: Any, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping; unknown keys raise."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(
            None, f"config key {prefix}{odd[0]!r} is not a name; valid keys: {', '.join(sorted(names))}"
        )
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            None, f"unknown config key {prefix}{unknown[0]}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _parse_scalar(text: str) -> Any:
    try:
        value = parse_yaml(text)
    except Exception:  # yaml.YAMLError, or a refused alias / nesting: keep the text, the type check decides
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; numbers written that way are numbers
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(
    cfg: TrainConfig, overrides: list[str], *, path: str | os.PathLike[str] | None = None
) -> TrainConfig:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars), then check every field.

    Args:
        cfg: The configuration to start from (not modified).
        overrides: ``key=value`` strings, dotted keys for nested fields (``optim.lr=1e-3``).
        path: The recipe file the configuration came from, for the messages.

    Raises:
        ConfigError: An unknown key, a value of the wrong type, or any field out of range
            (:func:`edge_sr.train.config_checks.check_config`).
    """
    from edge_sr.train.config_checks import check_config

    data = to_dict(cfg)
    overridden: set[str] = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(path, f"--set {item!r} is not key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(path, f"--set {item!r}: unknown config key {key}")
            node = node[p]
        if parts[-1] not in node and not (len(parts) >= 2 and parts[-2] == "args"):
            raise ConfigError(path, f"--set {item!r}: unknown config key {key}")
        node[parts[-1]] = _parse_scalar(text)
        overridden.add(key)
    try:
        out = from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(path, f"{e.problem} (from --set)" if overrides else e.problem) from None
    check_config(out, path, overridden)
    return out


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into a ``TrainConfig``, then apply overrides.

    The file is read by :func:`edge_sr.train.config_file.read_config_file` (size-limited, no YAML aliases,
    no duplicate keys); every field is then type- and range-checked, ``--set`` overrides included.

    Raises:
        ConfigError: One line naming the file, the field, its value and what is allowed.
    """
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    try:
        cfg = from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(path, e.problem) from None
    return apply_overrides(cfg, overrides or [], path=path)


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    import yaml

    from edge_sr.io_utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
