from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ionbeam_dagster.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0S", timedelta(0)),
        ("PT30S", timedelta(seconds=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT10M", timedelta(minutes=10)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("P2DT6H", timedelta(days=2, hours=6)),
        ("P1W", timedelta(weeks=1)),
        ("PT600S", timedelta(minutes=10)),  # non-canonical spellings still parse
        ("PT90M", timedelta(minutes=90)),
        ("P1DT0S", timedelta(days=1)),
        ("PT1.5M", timedelta(seconds=90)),
        ("PT0.000001S", timedelta(microseconds=1)),
    ],
)
def test_parse_duration_accepts_fixed_length_iso8601(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P1Y", "P2M", "P1Y2M3DT4H", "P1MT1H"])
def test_parse_duration_refuses_years_and_months_saying_why(text: str) -> None:
    with pytest.raises(ValueError, match="years and months have no fixed length"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-PT1H", "-P1D"])
def test_parse_duration_refuses_negative(text: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "1H", "PT1h", "pt1h", "PT1H ", " PT1H", "PT-1S", "PTS", "P1.S", "PT1H1H", "1 day"])
def test_parse_duration_refuses_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        parse_duration(text)


def test_parse_duration_refuses_sub_microsecond_precision() -> None:
    with pytest.raises(ValueError, match="finer than a microsecond"):
        parse_duration("PT0.0000001S")


def test_parse_duration_refuses_overflow() -> None:
    with pytest.raises(ValueError, match="longer than"):
        parse_duration("P99999999999D")


def test_parse_duration_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="expected an ISO 8601 duration string"):
        parse_duration(3600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(seconds=30), "PT30S"),
        (timedelta(milliseconds=500), "PT0.5S"),
        (timedelta(microseconds=1), "PT0.000001S"),
        (timedelta(minutes=10), "PT10M"),
        (timedelta(minutes=90), "PT1H30M"),
        (timedelta(hours=1), "PT1H"),
        (timedelta(days=1), "P1D"),
        (timedelta(days=2, hours=6), "P2DT6H"),
        (timedelta(weeks=2), "P14D"),
        (timedelta(days=1, seconds=1.25), "P1DT1.25S"),
    ],
)
def test_format_duration_writes_the_canonical_form(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


def test_format_duration_matches_what_pydantic_writes() -> None:
    # The reference serialises timedelta with pydantic; identical text keeps messages comparable.
    from pydantic import TypeAdapter

    adapter = TypeAdapter(timedelta)
    for td in (timedelta(0), timedelta(minutes=10), timedelta(days=1, hours=6), timedelta(seconds=0.5)):
        assert adapter.dump_json(td).decode().strip('"') == format_duration(td)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_format_then_parse_round_trips(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td
