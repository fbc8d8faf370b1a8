"""Reading a recipe file safely: the one YAML / TOML reader of edge-sr.

A recipe is a small mapping, so the reader refuses what only a hostile or broken file needs: files past
``MAX_CONFIG_BYTES``, YAML aliases (``*name``: a nine-level alias "bomb" expands to a billion nodes once
something walks it), nesting past ``MAX_DEPTH`` and a key given twice in one mapping (YAML would keep
the last one silently).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from edge_sr.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a recipe is a few hundred bytes
MAX_DEPTH = 32  # mappings / lists inside each other


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, without deep nesting, and with duplicate keys an error."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} refused (write the value out)", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # unhashable: SafeLoader's own error follows
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# a recipe has no dates: "2024-01-01" stays text (and "0000-00-00" no ValueError out of the constructor)
_StrictLoader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the strict loader (``yaml.YAMLError`` on a refused or malformed document)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a constructor refusing a value
        raise yaml.constructor.ConstructorError(None, None, f"unreadable value ({e})", None) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{e.problem}{where}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.toml`` or YAML (any other suffix) recipe into a mapping.

    Raises:
        ConfigError: One line naming the file: missing, not a regular file, too large, not UTF-8, not
            parseable, refused (alias, duplicate key, deep nesting) or not a mapping.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(p, "no such config file")
    if not p.is_file():
        raise ConfigError(p, "not a regular file; expected a .yaml, .yml or .toml recipe")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(p, f"cannot read config ({e.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            p, f"config is larger than {MAX_CONFIG_BYTES >> 10} KiB; a recipe is a small mapping"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(p, f"config is not UTF-8 text (byte {e.start})") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(p, f"cannot parse config ({_yaml_problem(e)})") from None
    except RecursionError:
        raise ConfigError(p, "cannot parse config (nested too deeply)") from None
    except Exception as e:  # tomllib.TOMLDecodeError and anything else a parser raises
        raise ConfigError(p, f"cannot parse config ({str(e).splitlines()[0] if str(e) else e!r})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(p, f"config must be a mapping, not a {type(data).__name__}")
    return data
