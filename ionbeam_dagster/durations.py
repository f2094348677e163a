"""ISO 8601 durations as they travel in ionbeam messages ("PT1H", "P1D", "PT0.5S").

Only durations of a fixed length are accepted: windows are cut from the epoch by
arithmetic, and "one month" has no single length to cut with. Reference clients serialise
``timedelta`` with pydantic, which writes e.g. "P1DT6H", "PT10M", "PT0.5S"; everything it
writes parses here, and :func:`format_duration` writes the same canonical forms.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

__all__ = ["parse_duration", "format_duration"]

_NUMBER = r"(\d+(?:\.\d+)?)"
# Years and months are matched too, only so that the error can say why they are refused
# (no fixed length) instead of a bare "invalid". "At least one component, and T needs one
# after it" is checked in code, because a regex for it is unreadable.
_DURATION = re.compile(
    rf"P(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?"
)

_MICROSECONDS = {
    "W": Decimal(7 * 86_400_000_000),
    "D": Decimal(86_400_000_000),
    "H": Decimal(3_600_000_000),
    "M": Decimal(60_000_000),
    "S": Decimal(1_000_000),
}


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration of fixed length (weeks, days, hours, minutes, seconds).

    Fractions are accepted on any component as long as the total is a whole number of
    microseconds (the resolution of ``timedelta``); rounding silently would make two
    different durations compare equal.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r}: expected an ISO 8601 duration string such as PT10M")
    if text.startswith("-"):
        raise ValueError(f"{text!r}: negative durations are not allowed")
    match = _DURATION.fullmatch(text)
    if match is None or text == "P" or text.endswith("T"):
        raise ValueError(f"{text!r}: not an ISO 8601 duration such as PT10M, PT1H, P1D or P1DT6H")
    years, months, *fixed = match.groups()
    if years is not None or months is not None:
        raise ValueError(
            f"{text!r}: years and months have no fixed length; use weeks, days, hours, minutes or seconds"
        )
    total = Decimal(0)
    for unit, value in zip("WDHMS", fixed):
        if value is not None:
            total += Decimal(value) * _MICROSECONDS[unit]
    if total != total.to_integral_value():
        raise ValueError(f"{text!r}: finer than a microsecond, which a duration here cannot hold")
    try:
        return timedelta(microseconds=int(total))
    except OverflowError:
        raise ValueError(f"{text!r}: longer than a duration here can hold") from None


def format_duration(td: timedelta) -> str:
    """Write the canonical form: days, then hours, minutes and (fractional) seconds.

    Weeks are written as days ("P14D") because that is what pydantic (and so the
    reference) writes, and one spelling per duration keeps messages comparable.
    """
    if td < timedelta(0):
        raise ValueError(f"{td!r}: negative durations are not allowed")
    if td == timedelta(0):
        return "PT0S"
    hours, rest = divmod(td.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ["P"]
    if td.days:
        out.append(f"{td.days}D")
    if hours or minutes or seconds or td.microseconds:
        out.append("T")
        if hours:
            out.append(f"{hours}H")
        if minutes:
            out.append(f"{minutes}M")
        if seconds or td.microseconds:
            if td.microseconds:
                out.append(f"{seconds}.{td.microseconds:06d}".rstrip("0") + "S")
            else:
                out.append(f"{seconds}S")
    return "".join(out)
