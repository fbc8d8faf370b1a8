"""Training configuration: dataclasses are the schema; YAML / TOML files and ``--set key=value`` fill them.

Unknown keys raise, values are type-checked against the field types, and no string is ever executed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_sr.data.augment import AugmentConfig
from edge_sr.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "ecbsr_m4c16"
    scale: int = 4
    args: dict[str, Any] = field(default_factory=dict)  # constructor overrides, e.g. {"collapsed": true}


@dataclass
class DataConfig:
    train_folders: list[str] = field(default_factory=list)  # HR folders, LR made on the fly
    paired: str | None = None  # a paired LR/HR folder instead (HR + LR_bicubic/X{s}, or DIV2K layout)
    patch_size: int = 48  # LR patch side
    batch_size: int = 16  # per process
    workers: int = 0
    skip_small: bool = True  # drop images smaller than one HR patch (T91 has 78x78 images)
    holdout: int = 0  # hold this many images out of train_folders (evenly spread) for validation
    val_dir: str | None = None  # or a folder laid out like a benchmark folder (HR/ [+ LR_bicubic/X{s}/])
    val_max_size: int = 0  # crop validation HR images to at most this side (0: full images)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


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


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: Literal["l1", "charbonnier"] = "l1"
    charbonnier_eps: float = 1e-3
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
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; numbers written that way are numbers
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars, then type-checked)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(None, f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(None, f"unknown config key {key}")
            node = node[p]
        if parts[-1] not in node and not (len(parts) >= 2 and parts[-2] == "args"):
            raise ConfigError(None, f"unknown config key {key}")
        node[parts[-1]] = _parse_scalar(text)
    return from_dict(TrainConfig, data)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into a ``TrainConfig``, then apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(p, "no such config file")
        try:
            if p.suffix == ".toml":
                import tomllib

                data = tomllib.loads(p.read_text())
            else:
                import yaml

                data = yaml.safe_load(p.read_text()) or {}
        except Exception as e:
            raise ConfigError(p, f"cannot parse config ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(p, "config must be a mapping")
    try:
        cfg = from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(path, e.problem) from None
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    import yaml

    from edge_sr.io_utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
