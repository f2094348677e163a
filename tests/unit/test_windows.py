from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ionbeam_dagster.windows import (
    ALLOWED_SPANS,
    Window,
    check_span,
    cron_for_span,
    from_ns,
    partition_fmt,
    partition_key,
    to_ns,
    window_from_partition_key,
    window_of,
    windows_overlapping,
)

T0 = datetime(2024, 1, 15, 14, 0, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# ---------------------------------------------------------------- check_span


@pytest.mark.parametrize("minutes", [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30])
def test_check_span_accepts_minutes_dividing_an_hour(minutes: int) -> None:
    check_span(timedelta(minutes=minutes))


@pytest.mark.parametrize("hours", [1, 2, 3, 4, 6, 8, 12])
def test_check_span_accepts_hours_dividing_a_day(hours: int) -> None:
    check_span(timedelta(hours=hours))


def test_check_span_accepts_exactly_one_day() -> None:
    check_span(D)


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        (timedelta(minutes=7), "PT7M does not divide an hour"),
        (timedelta(minutes=45), "PT45M does not divide an hour"),
        (timedelta(seconds=30), "PT30S does not divide an hour into whole minutes"),
        (timedelta(minutes=90), "PT1H30M does not divide a day"),
        (timedelta(hours=5), "PT5H does not divide a day"),
        (timedelta(days=2), "P2D is longer than a day"),
        (timedelta(weeks=1), "P7D is longer than a day"),
        (timedelta(0), "must be positive"),
        (timedelta(minutes=-10), "must be positive"),
    ],
)
def test_check_span_refuses_spans_cron_cannot_express_and_says_why(span: timedelta, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_span(span)
    assert problem in str(info.value)
    assert "cron" in str(info.value)


# ---------------------------------------------------------------- Window


def test_window_span_ns_and_half_open_contains() -> None:
    w = Window(T0, T0 + H)
    assert w.span == H
    assert w.start_ns == 1_705_327_200 * 10**9
    assert w.end_ns == w.start_ns + 3600 * 10**9
    assert w.contains(T0)
    assert w.contains(T0 + H - timedelta(microseconds=1))
    assert not w.contains(T0 + H)
    assert not w.contains(T0 - timedelta(microseconds=1))


def test_window_overlaps_is_half_open() -> None:
    w = Window(T0, T0 + H)
    assert w.overlaps(T0 - H, T0 + timedelta(seconds=1))
    assert w.overlaps(T0 + 10 * M, T0 + 20 * M)
    assert not w.overlaps(T0 - H, T0)  # touches the start only
    assert not w.overlaps(T0 + H, T0 + 2 * H)  # starts at the (excluded) end


def test_window_normalises_other_offsets_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    w = Window(datetime(2024, 1, 15, 15, 0, tzinfo=cet), datetime(2024, 1, 15, 16, 0, tzinfo=cet))
    assert w == Window(T0, T0 + H)
    assert w.start.tzinfo is UTC


def test_window_refuses_naive_times_and_empty_intervals() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        Window(datetime(2024, 1, 1), datetime(2024, 1, 2))
    with pytest.raises(ValueError, match="must be before end"):
        Window(T0, T0)


def test_windows_order_by_start_then_end() -> None:
    a, b, c = Window(T0, T0 + H), Window(T0, T0 + 2 * H), Window(T0 + H, T0 + 2 * H)
    assert sorted([c, b, a]) == [a, b, c]


def test_ns_conversions_are_exact() -> None:
    t = utc(2024, 1, 1, 0, 0, 0, 123456)
    assert to_ns(t) == 1_704_067_200_123_456_000
    assert from_ns(to_ns(t)) == t


# ---------------------------------------------------------------- window_of


def test_window_of_floors_to_the_epoch_aligned_boundary() -> None:
    # The reference's own example: PT1H, 14:23:45 -> [14:00, 15:00).
    assert window_of(utc(2024, 1, 15, 14, 23, 45), H) == Window(T0, T0 + H)
    assert window_of(utc(2024, 1, 15, 14, 23, 45), 10 * M) == Window(utc(2024, 1, 15, 14, 20), utc(2024, 1, 15, 14, 30))
    assert window_of(utc(2024, 1, 15, 14, 23, 45), 3 * H) == Window(utc(2024, 1, 15, 12), utc(2024, 1, 15, 15))
    assert window_of(utc(2024, 1, 15, 23, 59, 59), D) == Window(utc(2024, 1, 15), utc(2024, 1, 16))


def test_window_of_a_boundary_is_the_window_starting_there() -> None:
    assert window_of(T0, H).start == T0


def test_window_of_before_the_epoch_still_floors() -> None:
    assert window_of(utc(1969, 12, 31, 23, 59), H) == Window(utc(1969, 12, 31, 23), utc(1970, 1, 1))


def test_window_of_refuses_unsupported_spans() -> None:
    with pytest.raises(ValueError, match="PT7M"):
        window_of(T0, 7 * M)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(ALLOWED_SPANS),
)
def test_window_of_contains_t_and_is_aligned_to_the_epoch(t: datetime, span: timedelta) -> None:
    w = window_of(t, span)
    assert w.contains(t)
    assert w.span == span
    assert w.start_ns % (span // timedelta(microseconds=1) * 1000) == 0


# ---------------------------------------------------------------- windows_overlapping


def test_windows_overlapping_is_half_open() -> None:
    assert windows_overlapping(T0, T0 + H, 10 * M) == [Window(T0 + i * 10 * M, T0 + (i + 1) * 10 * M) for i in range(6)]
    assert windows_overlapping(T0 + 5 * M, T0 + 25 * M, 10 * M) == [
        Window(T0, T0 + 10 * M),
        Window(T0 + 10 * M, T0 + 20 * M),
        Window(T0 + 20 * M, T0 + 30 * M),
    ]
    # an instant past the end boundary reaches into the next window
    assert windows_overlapping(T0, T0 + H + timedelta(microseconds=1), H) == [Window(T0, T0 + H), Window(T0 + H, T0 + 2 * H)]


def test_windows_overlapping_is_empty_for_empty_or_reversed_ranges() -> None:
    assert windows_overlapping(T0, T0, H) == []
    assert windows_overlapping(T0 + H, T0, H) == []


# ---------------------------------------------------------------- cron and partitions


@pytest.mark.parametrize(
    ("span", "cron"),
    [
        (M, "* * * * *"),
        (5 * M, "*/5 * * * *"),
        (10 * M, "*/10 * * * *"),
        (30 * M, "*/30 * * * *"),
        (H, "0 * * * *"),
        (3 * H, "0 */3 * * *"),
        (12 * H, "0 */12 * * *"),
        (D, "0 0 * * *"),
    ],
)
def test_cron_for_span(span: timedelta, cron: str) -> None:
    assert cron_for_span(span) == cron


def test_cron_for_span_refuses_unsupported_spans() -> None:
    with pytest.raises(ValueError, match="PT7M"):
        cron_for_span(7 * M)


@pytest.mark.parametrize("span", ALLOWED_SPANS)
def test_cron_ticks_are_the_window_boundaries(span: timedelta) -> None:
    # Every window start matches the cron fields; a minute strictly inside a window does not.
    minute, hour, *_ = cron_for_span(span).split()

    def fires(t: datetime) -> bool:
        def field_ok(field: str, value: int) -> bool:
            if field == "*":
                return True
            if field.startswith("*/"):
                return value % int(field[2:]) == 0
            return value == int(field)

        return field_ok(minute, t.minute) and field_ok(hour, t.hour)

    start = window_of(utc(2024, 3, 5, 7, 42), span).start
    t = start
    while t < start + span:
        assert fires(t) == (t == start), (span, t)
        t += M


def test_partition_fmt() -> None:
    assert partition_fmt(10 * M) == "%Y-%m-%dT%H:%M"
    assert partition_fmt(12 * H) == "%Y-%m-%dT%H:%M"
    assert partition_fmt(D) == "%Y-%m-%d"


def test_partition_keys_round_trip() -> None:
    w = Window(utc(2024, 1, 15, 14, 20), utc(2024, 1, 15, 14, 30))
    assert partition_key(w) == "2024-01-15T14:20"
    assert window_from_partition_key("2024-01-15T14:20", 10 * M) == w
    day = Window(utc(2024, 1, 15), utc(2024, 1, 16))
    assert partition_key(day) == "2024-01-15"
    assert window_from_partition_key("2024-01-15", D) == day


@pytest.mark.parametrize(
    ("key", "span", "problem"),
    [
        ("2024-01-15T14:25", 10 * M, "is not the start of a PT10M window"),
        ("2024-01-15", 10 * M, "does not match the format"),
        ("2024-01-15T00:00", D, "does not match the format"),
        ("2024-1-15T14:20", 10 * M, "is not the start"),
        ("nonsense", H, "does not match the format"),
    ],
)
def test_window_from_partition_key_refuses_keys_that_are_not_window_starts(key: str, span: timedelta, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        window_from_partition_key(key, span)
    assert problem in str(info.value)
    assert repr(key) in str(info.value)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(ALLOWED_SPANS),
)
def test_partition_key_round_trips_for_every_span(t: datetime, span: timedelta) -> None:
    w = window_of(t, span)
    assert window_from_partition_key(partition_key(w), span) == w
