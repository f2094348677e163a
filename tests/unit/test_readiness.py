from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ionbeam_dagster.readiness import (
    Decision,
    EventSpan,
    WindowReadiness,
    assess_window,
    event_set_hash,
    first_gap,
    oldest_first,
)
from ionbeam_dagster.windows import Window, to_ns

T0 = datetime(2024, 1, 15, 14, 0, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)
W = Window(T0, T0 + H)
AFTER = T0 + 2 * H  # a "now" past the window and any STC used below unless stated


def ev(id: str, start: datetime, end: datetime) -> EventSpan:
    return EventSpan(id, to_ns(start), to_ns(end))


def assess(events: list[EventSpan], observed: str | None = None, *, now: datetime = AFTER, stc: timedelta = timedelta(0), allow_incomplete: bool = False) -> WindowReadiness:
    return assess_window(W, events, observed, now=now, subject_to_change_window=stc, allow_incomplete=allow_incomplete)


# ---------------------------------------------------------------- hash


def test_event_set_hash_is_sha256_of_sorted_ids_joined_by_comma() -> None:
    assert event_set_hash(["b", "a", "c"]) == hashlib.sha256(b"a,b,c").hexdigest()


def test_event_set_hash_ignores_order_and_repeats() -> None:
    assert event_set_hash(["a", "b"]) == event_set_hash(["b", "a", "a"])
    assert event_set_hash(["a"]) != event_set_hash(["a", "b"])


def test_decisions_are_strings() -> None:
    assert Decision.BUILD == "build" and isinstance(Decision.WAIT_FOR_DATA, str)


# ---------------------------------------------------------------- coverage


def test_no_events_waits_for_data() -> None:
    result = assess([])
    assert result.decision is Decision.WAIT_FOR_DATA
    assert result.desired_hash == event_set_hash([])
    assert result.retry_at is None
    assert "no ingestion" in result.reason


def test_full_coverage_by_one_event_builds() -> None:
    result = assess([ev("a", T0, T0 + H)])
    assert result.decision is Decision.BUILD
    assert result.desired_hash == event_set_hash(["a"])
    assert result.retry_at is None


def test_events_reaching_beyond_the_window_are_clipped_and_cover_it() -> None:
    assert assess([ev("a", T0 - H, T0 + 2 * H)]).decision is Decision.BUILD


def test_overlapping_events_in_any_order_cover_the_window() -> None:
    events = [ev("c", T0 + 40 * 60 * S, T0 + H), ev("a", T0, T0 + 25 * 60 * S), ev("b", T0 + 20 * 60 * S, T0 + 45 * 60 * S)]
    assert assess(events).decision is Decision.BUILD


def test_partial_coverage_waits_naming_the_gap() -> None:
    result = assess([ev("a", T0, T0 + 30 * 60 * S)])
    assert result.decision is Decision.WAIT_FOR_DATA
    assert "2024-01-15T14:30:00Z to 2024-01-15T15:00:00Z (PT30M)" in result.reason
    assert result.retry_at is None


def test_a_gap_longer_than_one_second_blocks() -> None:
    events = [ev("a", T0, T0 + 30 * 60 * S), ev("b", T0 + 30 * 60 * S + 1.5 * S, T0 + H)]
    result = assess(events)
    assert result.decision is Decision.WAIT_FOR_DATA
    assert "2024-01-15T14:30:00Z to 2024-01-15T14:30:01.500000Z (PT1.5S)" in result.reason


@pytest.mark.parametrize("gap", [timedelta(0), timedelta(milliseconds=500), S])
def test_a_gap_of_at_most_one_second_does_not_block(gap: timedelta) -> None:
    events = [ev("a", T0, T0 + 30 * 60 * S), ev("b", T0 + 30 * 60 * S + gap, T0 + H)]
    assert assess(events).decision is Decision.BUILD


def test_only_the_first_of_several_gaps_is_named() -> None:
    events = [ev("a", T0 + 10 * 60 * S, T0 + 20 * 60 * S), ev("b", T0 + 30 * 60 * S, T0 + H)]
    assert "2024-01-15T14:00:00Z to 2024-01-15T14:10:00Z" in assess(events).reason


@pytest.mark.parametrize(
    ("start_offset", "end_offset", "decision"),
    [
        (timedelta(milliseconds=500), timedelta(0), Decision.BUILD),  # starts just after the window start
        (S, S, Decision.BUILD),  # exactly the tolerance at both edges
        (timedelta(0), timedelta(milliseconds=999), Decision.BUILD),  # ends just before the window end
        (timedelta(seconds=1.5), timedelta(0), Decision.WAIT_FOR_DATA),
        (timedelta(0), timedelta(seconds=2), Decision.WAIT_FOR_DATA),
    ],
)
def test_edges_are_covered_with_the_same_tolerance(start_offset: timedelta, end_offset: timedelta, decision: Decision) -> None:
    # The reference's sources cover e.g. [14:00:00.5, 14:59:59.9]: timing noise, not missing data.
    assert assess([ev("a", T0 + start_offset, T0 + H - end_offset)]).decision is decision


def test_events_outside_the_window_cover_nothing_but_enter_the_hash() -> None:
    # Membership is the caller's decision (it recorded the event for this window).
    events = [ev("a", T0, T0 + H), ev("b", T0 + H, T0 + 2 * H)]
    result = assess(events)
    assert result.decision is Decision.BUILD
    assert result.desired_hash == event_set_hash(["a", "b"])
    assert assess([ev("b", T0 + H, T0 + 2 * H)]).decision is Decision.WAIT_FOR_DATA


def test_first_gap_reports_ns_bounds() -> None:
    assert first_gap(W, [ev("a", T0, T0 + H)]) is None
    assert first_gap(W, [ev("a", T0 + 10 * S, T0 + H)]) == (W.start_ns, to_ns(T0 + 10 * S))
    assert first_gap(W, [ev("a", T0, T0 + 10 * S)], max_gap=H) is None


def tile(lengths: list[int], gaps_ns: list[int]) -> list[EventSpan]:
    """Events laid end to end over W, the i-th starting gaps_ns[i] after the previous ends."""
    usable = W.end_ns - W.start_ns - sum(gaps_ns[1 : len(lengths)])
    total = sum(lengths)
    events, cursor = [], W.start_ns
    for i, length in enumerate(lengths):
        start = cursor + (gaps_ns[i] if i else 0)
        end = W.end_ns if i == len(lengths) - 1 else start + usable * length // total
        events.append(EventSpan(f"e{i}", start, end))
        cursor = end
    return events[::-1]  # arrival order is not time order


lengths = st.lists(st.integers(min_value=1, max_value=600), min_size=2, max_size=12)
small_gaps = st.lists(st.integers(min_value=0, max_value=1_000_000_000), min_size=12, max_size=12)


@given(lengths, small_gaps)
def test_events_tiling_the_window_with_gaps_up_to_one_second_always_build(lengths: list[int], gaps_ns: list[int]) -> None:
    result = assess(tile(lengths, gaps_ns))
    assert result.decision is Decision.BUILD, result.reason


@given(lengths, small_gaps, st.integers(min_value=1, max_value=11), st.integers(min_value=1_000_000_001, max_value=60 * 10**9))
def test_one_gap_over_one_second_always_blocks(lengths: list[int], gaps_ns: list[int], where: int, big_gap: int) -> None:
    gaps_ns = list(gaps_ns)
    gaps_ns[min(where, len(lengths) - 1)] = big_gap
    result = assess(tile(lengths, gaps_ns))
    assert result.decision is Decision.WAIT_FOR_DATA


# ---------------------------------------------------------------- rebuild decision


def test_a_late_event_rebuilds() -> None:
    first = assess([ev("a", T0, T0 + H)])
    assert first.decision is Decision.BUILD
    observed = first.desired_hash  # what the builder records after building
    late = assess([ev("a", T0, T0 + H), ev("late", T0 + 5 * 60 * S, T0 + 6 * 60 * S)], observed)
    assert late.decision is Decision.BUILD
    assert late.desired_hash != observed


def test_a_repeated_event_does_not_rebuild() -> None:
    observed = assess([ev("a", T0, T0 + H)]).desired_hash
    again = assess([ev("a", T0, T0 + H), ev("a", T0, T0 + H)], observed)
    assert again.decision is Decision.UP_TO_DATE
    assert again.desired_hash == observed
    assert again.retry_at is None


def test_up_to_date_wins_over_missing_coverage_and_the_cutoff() -> None:
    # A window built with allow_incomplete (or before a policy change) is not rebuilt by the
    # same events, whatever the other rules say now.
    events = [ev("a", T0, T0 + 10 * 60 * S)]
    observed = event_set_hash(["a"])
    assert assess(events, observed).decision is Decision.UP_TO_DATE
    assert assess(events, observed, now=T0, stc=H).decision is Decision.UP_TO_DATE


# ---------------------------------------------------------------- subject to change


def test_stc_holds_the_window_until_end_plus_stc_then_it_builds_without_new_events() -> None:
    events = [ev("a", T0, T0 + H)]
    stc = timedelta(hours=6)
    cutoff = T0 + H + stc
    held = assess(events, now=T0 + H, stc=stc)
    assert held.decision is Decision.WAIT_FOR_CUTOFF
    assert held.retry_at == cutoff
    assert "2024-01-15T21:00:00Z" in held.reason and "PT6H" in held.reason
    assert assess(events, now=cutoff - timedelta(microseconds=1), stc=stc).decision is Decision.WAIT_FOR_CUTOFF
    # Time passing alone makes it buildable: the same events, re-examined at retry_at.
    at_cutoff = assess(events, now=held.retry_at, stc=stc)
    assert at_cutoff.decision is Decision.BUILD
    assert at_cutoff.desired_hash == held.desired_hash


def test_zero_stc_builds_as_soon_as_the_window_has_ended() -> None:
    events = [ev("a", T0, T0 + H)]
    waiting = assess(events, now=T0 + 30 * 60 * S)
    assert waiting.decision is Decision.WAIT_FOR_CUTOFF and waiting.retry_at == T0 + H
    assert assess(events, now=T0 + H).decision is Decision.BUILD


def test_a_late_event_inside_the_stc_waits_for_the_cutoff() -> None:
    observed = event_set_hash(["a"])
    result = assess([ev("a", T0, T0 + H), ev("b", T0, T0 + H)], observed, now=T0 + 2 * H, stc=6 * H)
    assert result.decision is Decision.WAIT_FOR_CUTOFF
    assert result.retry_at == T0 + 7 * H


def test_cutoff_is_checked_before_coverage() -> None:
    result = assess([ev("a", T0, T0 + 10 * 60 * S)], now=T0, stc=H)
    assert result.decision is Decision.WAIT_FOR_CUTOFF


# ---------------------------------------------------------------- allow_incomplete_windows


def test_allow_incomplete_builds_with_partial_coverage() -> None:
    result = assess([ev("a", T0 + 20 * 60 * S, T0 + 30 * 60 * S)], allow_incomplete=True)
    assert result.decision is Decision.BUILD
    assert "partly covered" in result.reason


def test_allow_incomplete_still_waits_for_the_cutoff_and_for_any_data() -> None:
    assert assess([ev("a", T0, T0 + 10 * 60 * S)], now=T0, allow_incomplete=True).decision is Decision.WAIT_FOR_CUTOFF
    assert assess([], allow_incomplete=True).decision is Decision.WAIT_FOR_DATA


# ---------------------------------------------------------------- order


@dataclass(frozen=True)
class Item:
    dataset: str
    window: Window


def hourly(hour: int) -> Window:
    return Window(T0 + hour * H, T0 + (hour + 1) * H)


def test_oldest_window_first_across_datasets() -> None:
    daily = Window(datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC))  # ends latest
    ten_min = Window(T0, T0 + 10 * 60 * S)  # ends earliest
    items = [Item("b", hourly(1)), Item("a", daily), Item("c", hourly(0)), Item("z", ten_min), Item("a", hourly(0))]
    ordered = oldest_first(items)
    assert ordered == [Item("z", ten_min), Item("a", hourly(0)), Item("c", hourly(0)), Item("b", hourly(1)), Item("a", daily)]


def test_same_end_orders_by_start_then_name() -> None:
    long = Window(T0 - 2 * H, T0 + H)
    assert oldest_first([Item("a", hourly(0)), Item("b", long)]) == [Item("b", long), Item("a", hourly(0))]


def test_oldest_first_accepts_dataset_window_pairs_and_custom_keys() -> None:
    pairs = [("b", hourly(2)), ("a", hourly(2)), ("c", hourly(1))]
    assert oldest_first(pairs) == [("c", hourly(1)), ("a", hourly(2)), ("b", hourly(2))]
    windows = [hourly(3), hourly(1), hourly(2)]
    assert oldest_first(windows, key=lambda w: w, dataset=lambda w: "") == [hourly(1), hourly(2), hourly(3)]
