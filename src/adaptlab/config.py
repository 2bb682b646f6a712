"""Config loading: YAML file + ``key=value`` overrides + CLI flags, validated by pydantic.

Precedence (later wins): model defaults < YAML file < ``key=value`` overrides < explicit flags.
Keys are dotted paths (``training.learning_rate=3e-5``); values are parsed as YAML scalars, so
``num_train_epochs=3`` is an int, ``fp16=true`` a bool and ``labels=[A,B]`` a list. Unknown keys and wrong
types are :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from adaptlab.errors import ConfigError
from adaptlab.runs import atomic_write_text

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}``."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. training.num_train_epochs=3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_dotted(nested, key, value)
    return nested


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {dotted!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def load_config(
    model: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> T:
    """Build a validated config of type ``model``; see module docstring for precedence."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    return validate_config(model, data, f" (from {path})" if path else "")


def validate_config(model: type[T], data: dict[str, Any], source: str = "") -> T:
    """``model`` built from ``data``; every problem becomes one ConfigError naming its key path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            elif err["type"] == "value_error":  # our own validators: the message already says what is wrong
                problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid config{source}: " + "; ".join(problems)) from None


def save_config(config: BaseModel, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) so a run can be reproduced."""
    data = config.model_dump(mode="json", by_alias=True)
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

