"""Types of values read from JSON or YAML someone else wrote (image configs, specs,
version.json): checked once where they are parsed, so later code holds typed values.
The callers raise their own error, which names the file and the field."""

from __future__ import annotations


def string_list(value: object) -> tuple[str, ...] | None:
    """`value` as a tuple when it is a list of strings; None when it is anything else
    (a string too: Docker's shell form is stored as a list already)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


__all__ = ["string_list"]
