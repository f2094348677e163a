"""Aggregation windows: epoch-aligned ``[start, start + span)`` intervals in UTC.

The contract aligns windows to the Unix epoch; Dagster cuts time-window partitions with a
cron schedule. The two agree only for spans that divide a day evenly (then every epoch-
aligned boundary is also a cron tick), so :func:`check_span` refuses every other span up
front rather than letting partitions and windows drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ionbeam_dagster.durations import format_duration

__all__ = [
    "EPOCH",
    "ALLOWED_SPANS",
    "Window",
    "check_span",
    "window_of",
    "windows_overlapping",
    "cron_for_span",
    "partition_fmt",
    "partition_key",
    "window_from_partition_key",
    "to_ns",
    "from_ns",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

_MINUTE_SPANS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)
_HOUR_SPANS = (1, 2, 3, 4, 6, 8, 12)
ALLOWED_SPANS: tuple[timedelta, ...] = (
    *(timedelta(minutes=m) for m in _MINUTE_SPANS),
    *(timedelta(hours=h) for h in _HOUR_SPANS),
    _DAY,
)
_ALLOWED = frozenset(ALLOWED_SPANS)


def _require_utc(t: datetime, what: str) -> datetime:
    # A naive datetime here is a bug upstream (contracts already make every time aware);
    # guessing its zone would shift windows by hours without a trace.
    if not isinstance(t, datetime):
        raise TypeError(f"{what}: expected a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what}: {t.isoformat()} has no timezone; times must be timezone-aware UTC")
    return t.astimezone(UTC)


def to_ns(t: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float on the way)."""
    return (_require_utc(t, "time") - EPOCH) // _US * 1000


def from_ns(ns: int) -> datetime:
    """The aware UTC datetime of ``ns`` nanoseconds since the epoch, truncated to microseconds."""
    return EPOCH + timedelta(microseconds=ns // 1000)


@dataclass(frozen=True, order=True)
class Window:
    """A half-open interval ``[start, end)``; ordering is by start, then end."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start = _require_utc(self.start, "Window.start")
        end = _require_utc(self.end, "Window.end")
        if start >= end:
            raise ValueError(f"Window: start {start.isoformat()} must be before end {end.isoformat()}")
        # Normalised to UTC so that equal instants give equal (and equally hashed) windows.
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def start_ns(self) -> int:
        return to_ns(self.start)

    @property
    def end_ns(self) -> int:
        return to_ns(self.end)

    def contains(self, t: datetime) -> bool:
        return self.start <= _require_utc(t, "t") < self.end

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """True when ``[start, end)`` shares at least one instant with this window."""
        return _require_utc(start, "start") < self.end and self.start < _require_utc(end, "end")

    def __str__(self) -> str:
        return f"[{_iso(self.start)}, {_iso(self.end)})"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def check_span(span: timedelta) -> None:
    """Refuse spans that Dagster's cron-based partitions cannot reproduce from the epoch."""
    if not isinstance(span, timedelta):
        raise TypeError(f"aggregation_span: expected a timedelta, got {type(span).__name__}")
    if span in _ALLOWED:
        return
    text = format_duration(span) if span >= timedelta(0) else str(span)
    why = (
        "windows are Dagster time-window partitions, which are cut by a cron schedule, so a span "
        "must be expressible as one cron schedule aligned to the epoch"
    )
    if span <= timedelta(0):
        problem = "must be positive"
    elif span < _HOUR:
        problem = "does not divide an hour into whole minutes"
    elif span < _DAY:
        problem = "does not divide a day into whole hours"
    else:
        problem = "is longer than a day; only exactly P1D is allowed above an hour"
    allowed = "PT1M..PT30M dividing an hour (1,2,3,4,5,6,10,12,15,20,30 min), PT1H..PT12H dividing a day (1,2,3,4,6,8,12 h), or P1D"
    raise ValueError(f"{text} {problem}: {why}; allowed: {allowed}")


def window_of(t: datetime, span: timedelta) -> Window:
    """The window containing ``t`` (floor to the epoch-aligned boundary)."""
    check_span(span)
    offset = (_require_utc(t, "t") - EPOCH) // _US
    span_us = span // _US
    start = EPOCH + timedelta(microseconds=offset - offset % span_us)
    return Window(start, start + span)


def windows_overlapping(start: datetime, end: datetime, span: timedelta) -> list[Window]:
    """Every window sharing an instant with ``[start, end)``, oldest first."""
    start = _require_utc(start, "start")
    end = _require_utc(end, "end")
    if start >= end:
        return []
    out: list[Window] = []
    window = window_of(start, span)
    while window.start < end:
        out.append(window)
        window = Window(window.end, window.end + span)
    return out


def cron_for_span(span: timedelta) -> str:
    """The cron schedule whose ticks are exactly the window boundaries of ``span``."""
    check_span(span)
    if span == _DAY:
        return "0 0 * * *"
    if span < _HOUR:
        minutes = span // timedelta(minutes=1)
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours = span // _HOUR
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


def partition_fmt(span: timedelta) -> str:
    check_span(span)
    return "%Y-%m-%d" if span == _DAY else "%Y-%m-%dT%H:%M"


def partition_key(window: Window) -> str:
    return window.start.strftime(partition_fmt(window.span))


def window_from_partition_key(key: str, span: timedelta) -> Window:
    """Inverse of :func:`partition_key`; refuses keys that are not a window start of ``span``."""
    fmt = partition_fmt(span)
    try:
        start = datetime.strptime(key, fmt).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"partition key {key!r}: does not match the format {fmt!r}") from None
    window = window_of(start, span)
    # strptime accepts e.g. "2024-1-1"; insisting on the canonical spelling keeps one key per window.
    if window.start != start or partition_key(window) != key:
        raise ValueError(f"partition key {key!r}: is not the start of a {format_duration(span)} window")
    return window
