"""Config is data: YAML mappings into frozen dataclasses, checked field by field.

An error names the file, the dotted field, the value seen and the type expected; an unknown key
names the closest valid one. Nothing here can import or run code (`yaml.safe_load` only).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from edgekd._registry import did_you_mean
from edgekd.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror}).") from e


def from_mapping(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, naming `source` and the field in every error."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {_describe(data)}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown field {prefix}{key!r}.{did_you_mean(str(key), list(fields))}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing required field {prefix}{name!r}.")
            continue
        values[name] = coerce(hints[name], data[name], source, f"{prefix}{name}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from e


def coerce(tp: Any, value: Any, source: str, field: str) -> Any:
    """Check `value` against the annotation `tp`; return it in the dataclass's own shape."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(arg, value, source, field)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, source, f"{field}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(source, field, value, "a list")
        item = args[0] if args else Any
        return tuple(coerce(item, v, source, f"{field}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(source, field, value, "a mapping")
        kt, vt = args or (Any, Any)
        return {
            coerce(kt, k, source, f"{field}") if kt is not Any else k: coerce(vt, v, source, f"{field}.{k}")
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(source, field, value, "a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(source, field, value, "an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(source, field, value, "true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(source, field, value, "a string")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise _type_error(source, field, value, "a path")
        return Path(value)
    if origin is typing.Literal:
        if value not in args:
            raise _type_error(source, field, value, f"one of {', '.join(map(repr, args))}")
        return value
    raise TypeError(f"edgekd bug: no coercion for annotation {tp!r} ({field})")


def to_mapping(obj: Any) -> Any:
    """The inverse of `from_mapping`: plain dicts, lists and scalars, ready for `yaml.safe_dump`."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_directory(what: str, path: Path) -> None:
    """`path` is a directory or can be made one: neither it nor an existing parent is a file. `what`
    names the option in the error (e.g. "cache_dir (--cache-dir)")."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"lies under {part}, which is a file"
                raise ConfigError(f"{what} {path} {where}; give a directory (it is created if missing).")
            return


def _type_error(source: str, field: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{source}: field {field!r} must be {expected}, got {_describe(value)}.")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
