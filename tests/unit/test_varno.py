"""The varno table, how canonical variables match it, catalog overrides, and unit conversion."""

from __future__ import annotations

import numpy as np
import pytest

from ionbeam_dagster.canonical import CanonicalName
from ionbeam_dagster.exporters.varno import (
    DEFAULT_MAPPING,
    VARNO_UNITS,
    NoVarno,
    VarnoMapping,
    VarnoMappingError,
    VarnoRule,
    unit_converter,
)


def resolve(text: str, mapping: VarnoMapping = DEFAULT_MAPPING) -> int:
    return mapping.resolve(CanonicalName.parse(text)).varno


def reason(text: str, mapping: VarnoMapping = DEFAULT_MAPPING) -> str:
    with pytest.raises(NoVarno) as caught:
        mapping.resolve(CanonicalName.parse(text))
    return caught.value.reason


def entry(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"standard_name": "wind_speed", "level": 2.0, "method": "point", "period": "PT0S", "varno": 112}
    return base | overrides


# --------------------------------------------------------------------------- the table


def test_varno_units_are_the_contract_table() -> None:
    assert dict(VARNO_UNITS) == {
        39: "K",
        40: "K",
        58: "1",
        62: "m",
        107: "Pa",
        108: "Pa",
        111: "degree",
        112: "m s-1",
        261: "m s-1",
    }


@pytest.mark.parametrize(
    ("name", "varno", "unit"),
    [
        ("air_temperature__degC__2.0__point__PT0S", 39, "K"),
        ("air_temperature__K__2.0__point__PT0S", 39, "K"),
        ("dew_point_temperature__degC__2.0__point__PT0S", 40, "K"),
        ("relative_humidity__percent__2.0__point__PT0S", 58, "1"),
        ("visibility_in_air__km__0.0__point__PT0S", 62, "m"),
        ("visibility_in_air__m__2.0__point__PT0S", 62, "m"),
        ("surface_air_pressure__hPa__0.0__point__PT0S", 107, "Pa"),
        ("surface_air_pressure__hPa__1.5__point__PT0S", 107, "Pa"),
        ("air_pressure__hPa__0.0__point__PT0S", 107, "Pa"),
        ("air_pressure_at_mean_sea_level__hPa__0.0__point__PT0S", 108, "Pa"),
        ("wind_from_direction__degree__10.0__point__PT0S", 111, "degree"),
        ("wind_from_direction__degree__10.0__mean__PT10M", 111, "degree"),
        ("wind_speed__m s-1__10.0__point__PT0S", 112, "m s-1"),
        ("wind_speed__km h-1__10.0__mean__PT10M", 112, "m s-1"),
        ("wind_speed_of_gust__m s-1__10.0__maximum__PT10M", 261, "m s-1"),
        ("wind_speed_of_gust__knots__10.0__maximum__PT1H", 261, "m s-1"),
        ("wind_speed_of_gust__m s-1__10.0__maximum__PT3S", 261, "m s-1"),
    ],
)
def test_defaults_map_the_contract_variables(name: str, varno: int, unit: str) -> None:
    target = DEFAULT_MAPPING.resolve(name)
    assert (target.varno, target.unit) == (varno, unit)


def test_period_is_compared_as_a_duration_not_as_text() -> None:
    assert resolve("wind_speed__m s-1__10.0__mean__PT600S") == 112
    assert VarnoRule("x", None, None, "PT60M", 1).period == "PT1H"


# --------------------------------------------------------------------------- explicit matching


def test_wind_at_another_level_is_not_mapped_and_the_reason_shows_the_mapped_level() -> None:
    # The reference exporter never exported wind because of exactly this mismatch; here it is
    # a reported reason, not a silently missing column.
    text = reason("wind_speed__m s-1__2.0__point__PT0S")
    assert "no varno mapping for wind_speed at level 2.0, method point, period PT0S" in text
    assert "wind_speed at level 10.0, method point, period PT0S -> varno 112" in text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # A daily maximum temperature is not "2 m temperature".
        ("air_temperature__degC__2.0__maximum__P1D", "method maximum"),
        ("air_temperature__degC__0.0__point__PT0S", "level 0.0"),
        ("air_pressure__hPa__2.0__point__PT0S", "level 2.0"),
        ("wind_speed_of_gust__m s-1__10.0__point__PT0S", "method point"),
        ("wind_speed__m s-1__10.0__mean__PT1H", "period PT1H"),
    ],
)
def test_near_misses_are_not_mapped(name: str, expected: str) -> None:
    assert expected in reason(name)


def test_unknown_standard_name_suggests_a_close_one() -> None:
    text = reason("air_temprature__degC__2.0__point__PT0S")
    assert "no rule for standard_name 'air_temprature'" in text and "did you mean 'air_temperature'?" in text


def test_the_most_specific_rule_wins_whatever_the_order() -> None:
    wildcard = VarnoRule("air_temperature", None, None, None, 40)
    exact = VarnoRule("air_temperature", 2.0, "point", "PT0S", 39)
    for rules in ([wildcard, exact], [exact, wildcard]):
        mapping = VarnoMapping(rules)
        assert resolve("air_temperature__K__2.0__point__PT0S", mapping) == 39
        assert resolve("air_temperature__K__5.0__point__PT0S", mapping) == 40


def test_equally_specific_rules_naming_different_varnos_are_ambiguous() -> None:
    mapping = VarnoMapping(
        [VarnoRule("air_temperature", 2.0, None, None, 39), VarnoRule("air_temperature", None, "point", None, 40)]
    )
    text = reason("air_temperature__K__2.0__point__PT0S", mapping)
    assert text.startswith("ambiguous varno mapping") and "varno 39" in text and "varno 40" in text


def test_a_rule_without_varno_excludes_what_it_matches() -> None:
    mapping = VarnoMapping([VarnoRule("air_temperature", 2.0, "point", "PT0S", None)])
    assert "excluded by the varno mapping" in reason("air_temperature__K__2.0__point__PT0S", mapping)


def test_mapping_refuses_two_rules_for_one_key_and_varnos_without_a_unit() -> None:
    rule = VarnoRule("air_temperature", 2.0, "point", "PT0S", 39)
    with pytest.raises(ValueError, match="two rules for one key"):
        VarnoMapping([rule, rule])
    with pytest.raises(ValueError, match="varno 41 has no unit"):
        VarnoMapping([VarnoRule("eastward_wind", 10.0, "point", "PT0S", 41)])
    assert VarnoMapping([VarnoRule("eastward_wind", 10.0, "point", "PT0S", 41)], {41: "m s-1"}).units[41] == "m s-1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"standard_name": "a__b"}, "standard_name:"),
        ({"level": True}, "level: expected a number, got bool"),
        ({"level": float("nan")}, "level: nan must be a finite number"),
        ({"method": ""}, "method: must not be empty"),
        ({"period": "P1M"}, "years and months"),
        ({"varno": 0}, "varno: 0 must be between 1"),
        ({"varno": 2**31 - 1}, "varno: 2147483647 must be between 1"),
        ({"varno": "39"}, "varno: expected an integer, got str"),
    ],
)
def test_rules_validate_their_fields(fields: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"standard_name": "x", "level": 2.0, "method": "point", "period": "PT0S", "varno": 39}
    with pytest.raises(ValueError, match=message):
        VarnoRule(**(args | fields))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- overrides


def test_overrides_from_catalog_dicts_add_and_replace_defaults() -> None:
    mapping = VarnoMapping.from_overrides(
        [
            # Netatmo anemometers sit at 2 m: map them to 112 explicitly (added rule).
            {"standard_name": "wind_speed", "level": 2, "method": "point", "period": "PT0S", "varno": 112},
            # Replace a default in place: stop exporting relative humidity.
            {"standard_name": "relative_humidity", "level": 2.0, "method": "point", "period": "PT0S", "varno": None},
            # A varno the built-in table lacks, with its unit.
            {"standard_name": "eastward_wind", "level": 10.0, "method": None, "period": None, "varno": 41, "unit": "m s-1"},
        ]
    )
    assert resolve("wind_speed__m s-1__2.0__point__PT0S", mapping) == 112
    assert resolve("wind_speed__m s-1__10.0__point__PT0S", mapping) == 112  # defaults kept
    assert "excluded" in reason("relative_humidity__percent__2.0__point__PT0S", mapping)
    target = mapping.resolve("eastward_wind__km h-1__10.0__mean__PT10M")
    assert (target.varno, target.unit) == (41, "m s-1")
    # The replacement sits where the default was; additions come after the defaults.
    keys = [rule.key for rule in mapping.rules]
    assert keys.index(("relative_humidity", 2.0, "point", "PT0S")) == 2
    assert keys[-2:] == [("wind_speed", 2.0, "point", "PT0S"), ("eastward_wind", 10.0, None, None)]
    assert len(mapping.rules) == len(DEFAULT_MAPPING.rules) + 2


def test_no_overrides_is_the_default_mapping() -> None:
    assert VarnoMapping.from_overrides([]) == DEFAULT_MAPPING


def test_overrides_can_build_on_another_base() -> None:
    first = VarnoMapping.from_overrides([entry(varno=41, unit="m s-1", standard_name="eastward_wind")])
    second = VarnoMapping.from_overrides([entry(varno=41, standard_name="northward_wind")], base=first)
    assert resolve("northward_wind__m s-1__2.0__point__PT0S", second) == 41
    assert resolve("eastward_wind__m s-1__2.0__point__PT0S", second) == 41
    with pytest.raises(VarnoMappingError, match=r"\[0\] \(northward_wind\): unit: 'K' is not the unit of varno 41"):
        VarnoMapping.from_overrides([entry(varno=41, unit="K", standard_name="northward_wind")], base=first)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"standard_name": "x"}, "expected a list of {standard_name, level, method, period, varno, unit} entries, got a mapping"),
        ("wind", "got str"),
        ([["wind_speed"]], "[0]: expected a mapping"),
        ([entry(levle=2.0)], "[0] (wind_speed): unknown key 'levle' (did you mean 'level'?)"),
        ([{"standard_name": "wind_speed", "varno": 112}], "[0] (wind_speed): level: required (null matches any)"),
        (
            [{"standard_name": "wind_speed", "level": 2.0, "method": "point", "period": "PT0S"}],
            "[0] (wind_speed): varno: required",
        ),
        ([entry(level="2 m")], "[0] (wind_speed): level: expected a number, got str"),
        ([entry(level=False)], "[0] (wind_speed): level: expected a number, got bool"),
        ([entry(method="point__x")], "[0] (wind_speed): method:"),
        ([entry(period="hourly")], "[0] (wind_speed): period: 'hourly': not an ISO 8601 duration"),
        ([entry(varno=True)], "[0] (wind_speed): varno: expected an integer, got bool"),
        ([entry(varno=2**31)], "[0] (wind_speed): varno: 2147483648 must be between 1 and 2147483646"),
        ([entry(varno=41)], "[0] (wind_speed): unit: required for varno 41"),
        ([entry(unit="km h-1")], "[0] (wind_speed): unit: 'km h-1' is not the unit of varno 112, which is 'm s-1'"),
        ([entry(varno=41, unit="bogus_unit")], "[0] (wind_speed): unit: 'bogus_unit' is not a unit"),
        ([entry(varno=None, unit="m s-1")], "[0] (wind_speed): unit: has no meaning when varno is null"),
        ([entry(standard_name=7)], "[0]: standard_name: expected a string, got int"),
        ([entry(), entry(level=2)], "[1] (wind_speed): duplicates entry [0]"),
        (
            [entry(varno=41, unit="m s-1"), entry(level=3.0, varno=41, unit="K")],
            "[1] (wind_speed): unit: 'K' differs from 'm s-1' given for varno 41 by entry [0]",
        ),
    ],
)
def test_overrides_name_the_entry_and_field_of_each_problem(entries: object, expected: str) -> None:
    with pytest.raises(VarnoMappingError) as caught:
        VarnoMapping.from_overrides(entries)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_overrides_report_every_problem_at_once() -> None:
    with pytest.raises(VarnoMappingError) as caught:
        VarnoMapping.from_overrides([entry(level="x"), entry(method=None), entry(standard_name="visibility_in_air", varno="62")])
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("[0] (wind_speed): level:")
    assert problems[1].startswith("[2] (visibility_in_air): varno:")
    assert str(caught.value) == "; ".join(problems)
    assert isinstance(caught.value, ValueError)  # the catalog loader catches ValueError


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("source", "target", "value", "expected"),
    [
        ("degC", "K", 20.5, 293.65),
        ("degF", "K", 32.0, 273.15),
        ("percent", "1", 55.0, 0.55),
        ("%", "1", 55.0, 0.55),
        ("hPa", "Pa", 1013.25, 101325.0),
        ("mbar", "Pa", 1000.0, 100000.0),
        ("km h-1", "m s-1", 36.0, 10.0),
        ("km/h", "m s-1", 36.0, 10.0),
        ("knots", "m s-1", 10.0, 10 * 1852 / 3600),
        ("kt", "m s-1", 10.0, 10 * 1852 / 3600),
        ("km", "m", 2.5, 2500.0),
        ("degree", "degree", 270.0, 270.0),
        ("degrees", "degree", 270.0, 270.0),
    ],
)
def test_unit_conversion(source: str, target: str, value: float, expected: float) -> None:
    converted = unit_converter(source, target)(np.array([value, np.nan]))
    assert converted.dtype == np.float64
    assert converted[0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(converted[1])


def test_same_unit_is_bit_for_bit_unchanged() -> None:
    values = np.array([0.1, 1 / 3, 1e-300])
    for source, target in (("K", "K"), ("m s-1", "m/s"), ("degree", "degrees")):
        assert np.array_equal(unit_converter(source, target)(values), values)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("m", "K", "unit 'm' cannot be converted to 'K'"),
        ("kg m-2", "Pa", "cannot be converted"),
        ("bogus_unit", "K", "unit 'bogus_unit' is not a unit udunits2 can parse"),
        ("unknown", "1", "unit 'unknown' is not a physical unit"),
        ("hours since 1970-01-01", "s", "is a time reference"),
    ],
)
def test_inconvertible_units_say_why(source: str, target: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        unit_converter(source, target)
