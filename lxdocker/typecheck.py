"""Types of values read from JSON or YAML someone else wrote (image configs, specs,
version.json): checked once where they are parsed, so later code holds typed values.
The callers raise their own error, which names the file (these say what is wrong)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from lxdocker.errors import quoted


def string_list(value: object) -> tuple[str, ...] | None:
    """`value` as a tuple when it is a list of strings; None when it is anything else
    (a string too: Docker's shell form is stored as a list already)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def wrong_field(obj: object) -> str | None:
    """Why a field of dataclass `obj` (recursively) does not have its annotated type, or
    None: str, int (not bool), None, unions, tuple[X, ...], dict[K, V] and dataclasses
    are checked; a field with another annotation is left alone. For records made from
    JSON with `cls(**data)`, which checks names but not types."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if not _has_type(value, hints[f.name]):
            return f"{f.name!r} must be {_type_name(hints[f.name])}, not {quoted(value, 60)}"
        inner = [value] if _is_record(value) else list(value) if isinstance(value, tuple) else []
        for item in inner:
            if _is_record(item) and (why := wrong_field(item)) is not None:
                return why
    return None


def _is_record(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _has_type(value: object, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None) or hint is None:
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(_has_type(value, a) for a in args)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, float):
        return isinstance(value, hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, tuple) and all(_has_type(v, args[0]) for v in value)
    if origin is dict and len(args) == 2:
        return isinstance(value, dict) and all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items()
        )
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


__all__ = ["string_list", "wrong_field"]
