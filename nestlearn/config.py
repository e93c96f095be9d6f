"""One typed config loader for model, run and recipe configs: nested dataclasses from YAML.

    obj = build(RunConfig, read_yaml(path))      # nested dataclasses, lists of them, tuples, numbers
    obj = override(obj, "model.cms.levels.1.lr", 0)
    data = to_dict(obj)                           # plain dicts and lists, ready for YAML or JSON

Unknown keys are named with their dotted path and the valid ones; a number where a float is expected
is coerced (YAML 1.1 reads ``1e-4`` as a string); a malformed YAML file is one line naming the file
and the line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """The mapping in a YAML file; a missing, malformed or non-mapping file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where}: malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} is a mapping of keys to values (got {type(data).__name__})")
    return data


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp``: dataclasses from mappings, lists and tuples element by element, floats
    from ints and numeric strings; anything else is passed through for the class to validate."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping of {tp.__name__} fields (got {value!r})")
        return build(tp, value, key + ".")
    if origin is list and isinstance(value, (list, tuple)):
        return [_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)] if args else list(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"{key} must have {len(args)} entries (got {list(value)!r})")
        each = args[:1] * len(value) if args and args[-1] is Ellipsis else args
        return tuple(_coerce(v, a, f"{key}.{i}") for i, (a, v) in enumerate(zip(each, value, strict=True))) \
            if args else tuple(value)
    if tp is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number (got {value!r})") from None
    return value


def build(cls: type[T], data: dict, path: str = "") -> T:
    """An instance of dataclass ``cls`` from nested mappings; unknown keys are an error that names
    the key's dotted path and the valid keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{path.rstrip('.') or cls.__name__} must be a mapping (got {data!r})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            raise ValueError(f"unknown config key '{path}{key}'; valid keys: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{path}{k}") for k, v in data.items()})


def to_dict(obj: Any) -> Any:
    """Plain dicts and lists (tuples become lists), for YAML and JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def override(obj: T, dotted: str, value: Any, path: str = "") -> T:
    """A copy of dataclass ``obj`` with the field at ``dotted`` (``"cms.levels.1.lr"``; list entries by
    index) set to ``value``, coerced to the field's type; an unknown key is named."""
    data = to_dict(obj)
    node, parts = data, dotted.split(".")
    for i, part in enumerate(parts):
        where = path + ".".join(parts[:i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"config key '{path}{dotted}': {part!r} is not an index of a list of {len(node)}")
            part = int(part)
        elif not isinstance(node, dict) or part not in node:
            valid = sorted(node) if isinstance(node, dict) else []
            raise ValueError(f"unknown config key '{where}'" + (f"; valid keys: {valid}" if valid else ""))
        if i == len(parts) - 1:
            node[part] = to_dict(value)
        else:
            node = node[part]
    return build(type(obj), data, path)


def parse_override(item: str) -> tuple[str, Any]:
    """``"model.dim=128"`` → ``("model.dim", 128)`` (the value read as YAML)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. model.dim=128)")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


__all__ = ["build", "override", "parse_override", "read_yaml", "to_dict"]
