"""Words for a value's kind in error messages ("expected a list, got a mapping")."""

from __future__ import annotations

from collections.abc import Mapping


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
