from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ionbeam_dagster.canonical import CanonicalName


def test_str_prints_level_as_a_float() -> None:
    name = CanonicalName("air_temperature", "degC", 2.0)
    assert str(name) == "air_temperature__degC__2.0__point__PT0S"


def test_integer_levels_are_held_and_printed_as_floats() -> None:
    name = CanonicalName("air_temperature", "degC", 2)
    assert name.level == 2.0 and isinstance(name.level, float)
    assert str(name) == "air_temperature__degC__2.0__point__PT0S"


def test_defaults_match_the_contract() -> None:
    assert str(CanonicalName("air_pressure", "Pa")) == "air_pressure__Pa__0.0__point__PT0S"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("air_temperature__degC__2.0__point__PT0S", CanonicalName("air_temperature", "degC", 2.0, "point", "PT0S")),
        ("wind_speed__m s-1__10.0__mean__PT10M", CanonicalName("wind_speed", "m s-1", 10.0, "mean", "PT10M")),
        ("precipitation_amount__kg/m2__0.0__sum__PT1H", CanonicalName("precipitation_amount", "kg/m2", 0.0, "sum", "PT1H")),
        ("depth__m__-1.5__point__PT0S", CanonicalName("depth", "m", -1.5)),
        ("x__1__1e+20__point__PT0S", CanonicalName("x", "1", 1e20)),
    ],
)
def test_parse_splits_into_the_parts(text: str, expected: CanonicalName) -> None:
    assert CanonicalName.parse(text) == expected
    assert str(CanonicalName.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("air_temperature__degC__2.0__point", "has 4 parts"),
        ("air_temperature__degC__2.0__point__PT0S__extra", "has 6 parts"),
        ("air_temperature", "has 1 parts"),
        ("__degC__2.0__point__PT0S", "standard_name: must not be empty"),
        ("air_temperature____2.0__point__PT0S", "cf_unit: must not be empty"),
        ("air_temperature__degC____point__PT0S", "level: '' is not a number"),
        ("air_temperature__degC__two__point__PT0S", "level: 'two' is not a number"),
        ("air_temperature__degC__2__point__PT0S", "level: '2' is not written as a float; expected '2.0'"),
        ("air_temperature__degC__ 2.0__point__PT0S", "level: ' 2.0' is not written as a float"),
        ("air_temperature__degC__nan__point__PT0S", "level: 'nan' must be a finite number"),
        ("air_temperature__degC__inf__point__PT0S", "level: 'inf' must be a finite number"),
        ("air_temperature__degC__2.0__point__", "period: must not be empty"),
        ("air_temperature___degC__2.0__point__PT0S", "cf_unit: '_degC' must not start or end with '_'"),
        ("air_temperature_mean__degC__2.0__point_a__PT0S", None),  # single underscores are fine
        ("air\ttemperature__degC__2.0__point__PT0S", "standard_name: 'air\\ttemperature' must not contain control characters"),
    ],
)
def test_parse_names_the_part_at_fault(text: str, part: str | None) -> None:
    if part is None:
        assert str(CanonicalName.parse(text)) == text
        return
    with pytest.raises(ValueError) as info:
        CanonicalName.parse(text)
    assert part in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"standard_name": ""}, "standard_name: must not be empty"),
        ({"standard_name": "air__temperature"}, "standard_name: 'air__temperature' must not contain '__'"),
        ({"standard_name": "_air"}, "must not start or end with '_'"),
        ({"cf_unit": "degC_"}, "cf_unit: 'degC_' must not start or end with '_'"),
        ({"method": "po\x00int"}, "method: 'po\\x00int' must not contain control characters"),
        ({"period": "PT0S\x7f"}, "period: 'PT0S\\x7f' must not contain control characters"),
        ({"level": math.nan}, "level: nan must be a finite number"),
        ({"level": math.inf}, "level: inf must be a finite number"),
        ({"level": True}, "level: expected a number, got bool"),
        ({"level": "2.0"}, "level: expected a number, got str"),
        ({"cf_unit": 1}, "cf_unit: expected a string, got int"),
    ],
)
def test_constructor_refuses_parts_that_would_not_parse_back(kwargs: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {"standard_name": "air_temperature", "cf_unit": "degC"} | kwargs
    with pytest.raises(ValueError) as info:
        CanonicalName(**fields)  # type: ignore[arg-type]
    assert problem in str(info.value)


# Parts as a real catalogue has them: letters, digits, single underscores, and units with
# spaces, slashes, signs and dots ("m s-1", "kg/m2", "W m-2", "1").
_part_alphabet = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs"),
)


def _valid_part(text: str) -> bool:
    return bool(text) and "__" not in text and not text.startswith("_") and not text.endswith("_")


parts = st.text(alphabet=_part_alphabet, min_size=1, max_size=30).filter(_valid_part)
units = st.one_of(
    st.sampled_from(["m s-1", "kg/m2", "W m-2", "degC", "K", "1", "%", "hPa", "m/s", "kg m-2 s-1", "µg/m³"]),
    parts,
)
levels = st.one_of(
    st.sampled_from([0.0, 2.0, 10.0, -0.0, 1.5, 1e-7, 1e20]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-10_000, max_value=10_000),
)


@given(parts, units, levels, parts, parts)
def test_format_then_parse_round_trips(standard_name: str, cf_unit: str, level: float, method: str, period: str) -> None:
    name = CanonicalName(standard_name, cf_unit, level, method, period)
    text = str(name)
    parsed = CanonicalName.parse(text)
    assert parsed == name
    assert str(parsed) == text
    # the level keeps its sign bit too (-0.0 stays "-0.0")
    assert math.copysign(1.0, parsed.level) == math.copysign(1.0, float(level))


@given(st.text(max_size=60))
def test_parse_either_round_trips_or_raises_value_error(text: str) -> None:
    try:
        name = CanonicalName.parse(text)
    except ValueError as exc:
        assert str(exc).startswith("canonical name")
        return
    assert str(name) == text


spaced_units = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+.^()", min_size=1, max_size=6),
    min_size=2,
    max_size=4,
).flatmap(lambda words: st.sampled_from([" ", "/", " / "]).map(lambda sep: sep.join(words)))


@given(parts, spaced_units, levels)
def test_units_with_spaces_and_slashes_survive(standard_name: str, cf_unit: str, level: float) -> None:
    assert " " in cf_unit or "/" in cf_unit
    text = str(CanonicalName(standard_name, cf_unit, level))
    assert CanonicalName.parse(text).cf_unit == cf_unit
