"""When may a window be built? The contract's domain rules, free of any store or scheduler.

A window has a *desired* event set (the ingestions recorded for it) and an *observed* hash
(the desired set's hash when it was last built). The coordinator keeps both in Redis; this
module only decides, so every rule can be tested with plain values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from ionbeam_dagster.contracts import format_time
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.windows import Window, from_ns

__all__ = [
    "EventSpan",
    "event_set_hash",
    "Decision",
    "WindowReadiness",
    "assess_window",
    "first_gap",
    "oldest_first",
    "DEFAULT_MAX_GAP",
]

# The reference ignores gaps up to one second as timing noise between consecutive
# ingestions (one ends at :59.999, the next starts at :00).
DEFAULT_MAX_GAP = timedelta(seconds=1)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class EventSpan:
    """One ingestion as the coordinator sees it: its id and the time range it stored."""

    id: str
    start_ns: int
    end_ns: int


def event_set_hash(ids: Iterable[str]) -> str:
    """sha256 of the sorted, de-duplicated ids joined by "," (the reference's definition).

    The same ingestions delivered twice, or in another order, give the same hash, so they
    cause no rebuild.
    """
    return hashlib.sha256(",".join(sorted(set(ids))).encode("utf-8")).hexdigest()


class Decision(str, Enum):
    BUILD = "build"
    UP_TO_DATE = "up_to_date"
    WAIT_FOR_CUTOFF = "wait_for_cutoff"
    WAIT_FOR_DATA = "wait_for_data"


@dataclass(frozen=True)
class WindowReadiness:
    decision: Decision
    desired_hash: str
    reason: str
    # Set only for WAIT_FOR_CUTOFF: the window becomes buildable then without any new
    # event, so the coordinator must come back by itself (the reference never did).
    retry_at: datetime | None


def _ns(td: timedelta) -> int:
    return td // _US * 1000


def first_gap(window: Window, events: Iterable[EventSpan], max_gap: timedelta = DEFAULT_MAX_GAP) -> tuple[int, int] | None:
    """The first stretch of ``window`` (in ns) longer than ``max_gap`` that no event covers.

    Events are clipped to the window; gaps of at most ``max_gap`` are bridged, at the two
    edges too (an ingestion starting 0.5 s after the window start still covers it).
    """
    start, end = window.start_ns, window.end_ns
    tolerance = _ns(max_gap)
    spans = sorted(
        (max(event.start_ns, start), min(event.end_ns, end))
        for event in events
        if event.start_ns <= end and event.end_ns >= start
    )
    covered_to = start
    for span_start, span_end in spans:
        if span_start - covered_to > tolerance:
            return covered_to, span_start
        covered_to = max(covered_to, span_end)
    if end - covered_to > tolerance:
        return covered_to, end
    return None


def assess_window(
    window: Window,
    events: Sequence[EventSpan],
    observed_hash: str | None,
    *,
    now: datetime,
    subject_to_change_window: timedelta,
    allow_incomplete: bool,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> WindowReadiness:
    """Decide what to do with ``window``, given the events recorded for it.

    ``events`` is the window's desired set as the caller recorded it; which events belong
    to a window is the caller's decision, and all of them enter the hash. Checks run in
    the contract's order: no data, already built, STC cutoff, then coverage.
    """
    desired = event_set_hash(event.id for event in events)
    if not events:
        return WindowReadiness(Decision.WAIT_FOR_DATA, desired, f"no ingestion recorded for window {window}", None)
    count = len({event.id for event in events})
    if desired == observed_hash:
        return WindowReadiness(
            Decision.UP_TO_DATE, desired, f"window {window} was built from these {count} ingestion(s)", None
        )
    cutoff = window.end + subject_to_change_window
    if now < cutoff:
        return WindowReadiness(
            Decision.WAIT_FOR_CUTOFF,
            desired,
            f"window {window} may still change until {format_time(cutoff)} "
            f"(subject_to_change_window {format_duration(subject_to_change_window)})",
            cutoff,
        )
    gap = first_gap(window, events, max_gap)
    if allow_incomplete:
        coverage = "covered" if gap is None else "partly covered (allow_incomplete_windows)"
        return WindowReadiness(Decision.BUILD, desired, f"window {window} {coverage} by {count} ingestion(s)", None)
    if gap is not None:
        gap_start, gap_end = gap
        return WindowReadiness(
            Decision.WAIT_FOR_DATA,
            desired,
            f"no ingestion covers {format_time(from_ns(gap_start))} to {format_time(from_ns(gap_end))} "
            f"({format_duration(timedelta(microseconds=(gap_end - gap_start) // 1000))}) of window {window}",
            None,
        )
    return WindowReadiness(Decision.BUILD, desired, f"window {window} covered by {count} ingestion(s)", None)


T = TypeVar("T")


def _item_window(item: Any) -> Window:
    # WindowState.due() yields (dataset, window) pairs; other callers pass objects.
    window = item[1] if isinstance(item, tuple) else item.window
    if not isinstance(window, Window):
        raise TypeError(f"oldest_first: expected a Window, got {type(window).__name__}; pass key=")
    return window


def _item_dataset(item: Any) -> str:
    if isinstance(item, tuple):
        dataset = item[0]
    else:
        dataset = getattr(item, "dataset", "")
    return str(getattr(dataset, "name", dataset))


def oldest_first(
    items: Iterable[T],
    key: Callable[[T], Window] = _item_window,
    dataset: Callable[[T], str] = _item_dataset,
) -> list[T]:
    """Oldest window (by end) first across datasets; ties by start, then dataset name.

    By end because a window that closed earlier has waited longer for its consumers; the
    name only makes the order deterministic.
    """

    def order(item: T) -> tuple[datetime, datetime, str]:
        window = key(item)
        return window.end, window.start, dataset(item)

    return sorted(items, key=order)
