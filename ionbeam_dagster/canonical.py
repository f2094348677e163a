"""Canonical variable names: ``{standard_name}__{cf_unit}__{level}__{method}__{period}``.

The name is a column name in every dataset and the key exporters map variables by, so it
must parse back into exactly its parts. That is why each text part is refused if it
contains ``__`` or starts or ends with ``_`` (either would make the split ambiguous), and
why the level must be written the way Python prints a float (``2.0``, not ``2``): two
spellings of one name would become two columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["CanonicalName", "SEPARATOR", "part_problem", "level_problem"]

SEPARATOR = "__"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_PARTS = ("standard_name", "cf_unit", "method", "period")
_ORDER = ("standard_name", "cf_unit", "level", "method", "period")


def part_problem(value: object) -> str | None:
    """Why ``value`` cannot be a text part of a canonical name, or None if it can.

    Exposed so that message validation (contracts) reports the same rule per field.
    """
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if SEPARATOR in value:
        return f"{value!r} must not contain {SEPARATOR!r} (it separates the parts of a canonical name)"
    if value.startswith("_") or value.endswith("_"):
        return f"{value!r} must not start or end with '_' (the canonical name would not split back)"
    if _CONTROL.search(value):
        return f"{value!r} must not contain control characters"
    return None


def level_problem(level: object) -> str | None:
    """Why ``level`` cannot be a level, or None; bools are refused because True prints as 1.0."""
    if isinstance(level, bool) or not isinstance(level, int | float):
        return f"expected a number, got {type(level).__name__}"
    if not math.isfinite(level):
        return f"{level!r} must be a finite number"
    return None


@dataclass(frozen=True)
class CanonicalName:
    standard_name: str
    cf_unit: str
    level: float = 0.0
    method: str = "point"
    period: str = "PT0S"

    def __post_init__(self) -> None:
        for part in _TEXT_PARTS:
            problem = part_problem(getattr(self, part))
            if problem is not None:
                raise ValueError(f"canonical name {part}: {problem}")
        problem = level_problem(self.level)
        if problem is not None:
            raise ValueError(f"canonical name level: {problem}")
        # An int level would print as "2", not "2.0", and break the name's one spelling.
        object.__setattr__(self, "level", float(self.level))

    def __str__(self) -> str:
        return SEPARATOR.join((self.standard_name, self.cf_unit, repr(self.level), self.method, self.period))

    @classmethod
    def parse(cls, text: str) -> CanonicalName:
        """Split a canonical name into its parts; the error names the part at fault."""
        if not isinstance(text, str):
            raise ValueError(f"canonical name: expected a string, got {type(text).__name__}")
        parts = text.split(SEPARATOR)
        if len(parts) != len(_ORDER):
            raise ValueError(
                f"canonical name {text!r}: has {len(parts)} parts separated by {SEPARATOR!r}, "
                f"expected {len(_ORDER)} ({', '.join(_ORDER)})"
            )
        standard_name, cf_unit, level_text, method, period = parts
        level = _parse_level(text, level_text)
        try:
            return cls(standard_name, cf_unit, level, method, period)
        except ValueError as exc:
            raise ValueError(f"{exc} (in {text!r})") from None


def _parse_level(text: str, level_text: str) -> float:
    try:
        level = float(level_text)
    except ValueError:
        raise ValueError(f"canonical name level: {level_text!r} is not a number (in {text!r})") from None
    if not math.isfinite(level):
        raise ValueError(f"canonical name level: {level_text!r} must be a finite number (in {text!r})")
    if repr(level) != level_text:
        raise ValueError(
            f"canonical name level: {level_text!r} is not written as a float; expected {repr(level)!r} (in {text!r})"
        )
    return level
