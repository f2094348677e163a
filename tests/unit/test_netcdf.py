"""CF-NetCDF export of a dataset window: CF-1.8 DSG attributes, exact values, both feature types."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xarray as xr

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.exporters.netcdf import FILL_VALUE, NetcdfStats, write_netcdf
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=1)
DATASET = "synthetic"
VERSION = "0f5c2a8e-5d1b-4c55-9a57-2f1f7d7c3e10"

T2M = "air_temperature__degC__2.0__point__PT0S"
T2M_MAX = "air_temperature__degC__2.0__maximum__PT1H"
RAIN = "precipitation_amount__kg m-2__0.0__sum__PT10M"
HUMIDITY = "relative_humidity__percent__2.0__point__PT0S"
PRESSURE = "air_pressure__hPa__0.0__point__PT0S"
WIND = "wind_speed__m s-1__10.0__point__PT0S"


def dataset_table(*, stations: int = 12, interval: timedelta = timedelta(minutes=5)) -> pa.Table:
    """Synthetic observations in the contract's dataset schema, plus the awkward cases.

    Added: a second temperature sharing the standard_name (max over an hour), a 10-minute
    rain sum with nulls, NaNs in the 2 m temperature, a per-station text label and a numeric
    column that is not a canonical name. Rows are shuffled so nothing relies on input order.
    """
    raw = generate_observations(START, END, stations=stations, interval=interval)
    mapping = DataIngestionMap.model_validate(synthetic_ingestion_map())
    names = {mapping.datetime.column: "timestamp", mapping.lat.column: "latitude", mapping.lon.column: "longitude"}
    names |= {v.column: v.canonical_name for v in mapping.canonical_variables}
    table = raw.rename_columns([names.get(c, c) for c in raw.column_names])
    n = table.num_rows
    rows = np.arange(n)
    t2m = table[T2M].to_numpy().copy()
    t2m[rows % 7 == 3] = np.nan
    table = table.set_column(table.column_names.index(T2M), T2M, pa.array(t2m))
    table = table.append_column(T2M_MAX, pa.array(t2m + 1.5))
    table = table.append_column(RAIN, pa.array([None if r % 5 == 0 else float(r % 3) for r in rows], type=pa.float64()))
    table = table.append_column(
        "network", pc.binary_join_element_wise("net-", pc.utf8_slice_codeunits(table["station_id"], 3, 8), "")
    )
    table = table.append_column("quality_flag", pa.array(rows % 2, type=pa.int8()))
    shuffle = np.random.default_rng(7).permutation(n)
    return table.take(pa.array(shuffle))


def write(table: pa.Table, path: Path, **kwargs) -> NetcdfStats:
    args = {
        "window_start": START,
        "window_end": END,
        "dataset": DATASET,
        "dataset_version": VERSION,
        "sources": ["synthetic", "netatmo"],
    } | kwargs
    return write_netcdf(table, path, **args)


@contextlib.contextmanager
def opened(path: Path, **kwargs) -> Iterator[xr.Dataset]:
    with xr.open_dataset(path, **kwargs) as ds:
        yield ds.load()


def expected_rows(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(station id, time ns, value) of the input, sorted by station then time."""
    ordered = table.sort_by([("station_id", "ascending"), ("timestamp", "ascending")])
    values = ordered[column].cast(pa.float64()).to_numpy()
    times = ordered["timestamp"].cast(pa.int64()).to_numpy()
    return np.asarray(ordered["station_id"].to_pylist(), dtype=object), times, values


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return dataset_table()


@pytest.fixture(scope="module")
def written(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NetcdfStats]:
    path = tmp_path_factory.mktemp("netcdf") / "window.nc"
    return path, write(table, path)


# --------------------------------------------------------------------------- timeSeries


def test_global_attributes_are_cf_1_8_with_window_and_provenance(
    table: pa.Table, written: tuple[Path, NetcdfStats]
) -> None:
    with opened(written[0]) as ds:
        attrs = ds.attrs
    assert attrs["Conventions"] == "CF-1.8"
    assert attrs["featureType"] == "timeSeries"
    assert attrs["ionbeam_dataset"] == DATASET
    assert attrs["ionbeam_dataset_version"] == VERSION
    assert attrs["time_coverage_start"] == "2024-01-01T00:00:00Z"
    assert attrs["time_coverage_end"] == "2024-01-01T01:00:00Z"
    assert attrs["time_coverage_duration"] == "PT1H"
    assert "synthetic" in attrs["source"] and "netatmo" in attrs["source"]
    assert DATASET in attrs["title"]
    assert VERSION in attrs["history"] and "ionbeam-dagster" in attrs["history"]
    assert attrs["geospatial_lat_min"] == pc.min(table["latitude"]).as_py()
    assert attrs["geospatial_lat_max"] == pc.max(table["latitude"]).as_py()
    assert attrs["geospatial_lon_min"] == pc.min(table["longitude"]).as_py()
    assert attrs["geospatial_lon_max"] == pc.max(table["longitude"]).as_py()


def test_stations_are_timeseries_instances_with_one_position_each(
    table: pa.Table, written: tuple[Path, NetcdfStats]
) -> None:
    with opened(written[0]) as ds:
        assert ds["station_id"].dims == ("station",)
        assert ds["station_id"].attrs["cf_role"] == "timeseries_id"
        ids = list(ds["station_id"].values)
        assert ids == sorted(set(table["station_id"].to_pylist()))
        first = table.group_by("station_id").aggregate([("latitude", "min"), ("longitude", "min")])
        position = dict(
            zip(
                first["station_id"].to_pylist(),
                zip(first["latitude_min"].to_pylist(), first["longitude_min"].to_pylist()),
            )
        )
        assert ds["lat"].dims == ds["lon"].dims == ("station",)
        assert [(float(a), float(o)) for a, o in zip(ds["lat"].values, ds["lon"].values)] == [position[i] for i in ids]
        assert ds["lat"].attrs["standard_name"] == "latitude" and ds["lat"].attrs["units"] == "degrees_north"
        assert ds["lon"].attrs["standard_name"] == "longitude" and ds["lon"].attrs["units"] == "degrees_east"
        # Contiguous ragged array: row_size counts each station's consecutive obs elements.
        assert ds["row_size"].attrs["sample_dimension"] == "obs"
        counts = dict(zip(*np.unique(np.asarray(table["station_id"].to_pylist()), return_counts=True)))
        assert list(ds["row_size"].values) == [counts[i] for i in ids]
        assert int(ds["row_size"].sum()) == ds.sizes["obs"] == table.num_rows


@pytest.mark.parametrize("column", [T2M, T2M_MAX, RAIN, HUMIDITY, PRESSURE, WIND])
def test_values_equal_the_input_rows_per_station_and_time(
    table: pa.Table, written: tuple[Path, NetcdfStats], column: str
) -> None:
    path, stats = written
    name = stats.variable_names[column]
    with opened(path) as ds:
        station_of_obs = np.repeat(ds["station_id"].values, ds["row_size"].values)
        times = ds["time"].values.astype("datetime64[ns]").astype(np.int64)
        values = ds[name].values
    ids, expected_times, expected = expected_rows(table, column)
    np.testing.assert_array_equal(station_of_obs, ids)
    np.testing.assert_array_equal(times, expected_times)
    # NaN and null input both come back as NaN at the same places (assert_array_equal treats NaN as equal).
    np.testing.assert_array_equal(values, expected)
    assert np.isnan(values).any() == np.isnan(expected).any()


def test_missing_values_are_stored_as_the_fill_value_and_decode_to_nan(
    table: pa.Table, written: tuple[Path, NetcdfStats]
) -> None:
    path, stats = written
    with opened(path, mask_and_scale=False) as raw, opened(path) as decoded:
        for column in (T2M, RAIN):
            name = stats.variable_names[column]
            assert raw[name].attrs["_FillValue"] == FILL_VALUE
            missing = raw[name].values == FILL_VALUE
            assert (
                missing.sum()
                == pc.sum(pc.or_kleene(pc.is_null(table[column]), pc.is_nan(table[column])).cast(pa.int64())).as_py()
                > 0
            )
            assert not np.isnan(raw[name].values).any()
            np.testing.assert_array_equal(np.isnan(decoded[name].values), missing)


@pytest.mark.parametrize(
    ("column", "name", "standard_name", "units", "cell_methods", "height"),
    [
        (T2M, "air_temperature", "air_temperature", "degC", "time: point", "height_2m"),
        (
            T2M_MAX,
            "air_temperature_maximum_pt1h",
            "air_temperature",
            "degC",
            "time: maximum (interval: 1 hour)",
            "height_2m",
        ),
        (
            RAIN,
            "precipitation_amount",
            "precipitation_amount",
            "kg m-2",
            "time: sum (interval: 10 minutes)",
            "height_0m",
        ),
        (HUMIDITY, "relative_humidity", "relative_humidity", "percent", "time: point", "height_2m"),
        (PRESSURE, "air_pressure", "air_pressure", "hPa", "time: point", "height_0m"),
        (WIND, "wind_speed", "wind_speed", "m s-1", "time: point", "height_10m"),
    ],
)
def test_data_variables_carry_cf_attributes(
    written: tuple[Path, NetcdfStats],
    column: str,
    name: str,
    standard_name: str,
    units: str,
    cell_methods: str,
    height: str,
) -> None:
    path, stats = written
    assert stats.variable_names[column] == name
    with opened(path, decode_cf=False) as raw:
        attrs = raw[name].attrs
        assert raw[name].dims == ("obs",)
        assert attrs["standard_name"] == standard_name
        assert attrs["units"] == units
        assert attrs["cell_methods"] == cell_methods
        assert "_FillValue" in attrs
        assert attrs["coordinates"].split() == ["time", "lat", "lon", "station_id", height]
        assert attrs["ionbeam_canonical_name"] == column
        assert raw[height].attrs["standard_name"] == "height"


def test_each_level_has_one_scalar_height_coordinate(written: tuple[Path, NetcdfStats]) -> None:
    with opened(written[0]) as ds:
        for name, level in (("height_0m", 0.0), ("height_2m", 2.0), ("height_10m", 10.0)):
            height = ds[name]
            assert height.dims == () and float(height) == level
            assert height.attrs["standard_name"] == "height"
            assert height.attrs["units"] == "m"
            assert height.attrs["positive"] == "up"
        assert sorted(n for n in ds.variables if str(n).startswith("height")) == [
            "height_0m",
            "height_10m",
            "height_2m",
        ]


def test_time_is_a_cf_time_variable_decoding_to_the_input_instants(written: tuple[Path, NetcdfStats]) -> None:
    with opened(written[0], decode_cf=False) as raw:
        attrs = raw["time"].attrs
        assert attrs["standard_name"] == "time"
        assert attrs["calendar"] == "standard"
        # Every synthetic timestamp is a whole second, so the coarsest exact unit is seconds.
        assert attrs["units"] == "seconds since 1970-01-01 00:00:00"
        assert raw["time"].dtype == np.int64
        assert "_FillValue" not in attrs


@pytest.mark.parametrize(
    ("offset_ns", "units"),
    [
        (0, "seconds"),
        (250_000_000, "milliseconds"),
        (1_500_000, "microseconds"),  # 1.5 ms: whole microseconds, not milliseconds
        (7, "nanoseconds"),
    ],
)
def test_time_keeps_every_nanosecond_with_the_coarsest_exact_unit(tmp_path: Path, offset_ns: int, units: str) -> None:
    base = np.array([0, 60, 3599], dtype=np.int64) * 1_000_000_000 + int(START.timestamp()) * 1_000_000_000
    ts = base + offset_ns
    table = pa.table(
        {
            "timestamp": pa.array(ts, type=pa.timestamp("ns", tz="UTC")),
            "latitude": [50.0] * 3,
            "longitude": [7.0] * 3,
            "station_id": ["a"] * 3,
            T2M: [1.0, 2.0, 3.0],
        }
    )
    path = tmp_path / "t.nc"
    write(table, path)
    with opened(path, decode_cf=False) as raw:
        assert raw["time"].attrs["units"] == f"{units} since 1970-01-01 00:00:00"
    with opened(path) as ds:
        np.testing.assert_array_equal(ds["time"].values.astype("datetime64[ns]").astype(np.int64), ts)


def test_text_columns_become_labels_per_station_or_per_observation(
    tmp_path: Path, table: pa.Table, written: tuple[Path, NetcdfStats]
) -> None:
    with opened(written[0]) as ds:
        # `network` is constant within each station, so it is stored once per station.
        assert ds["network"].dims == ("station",)
        assert list(ds["network"].values) == [f"net-{i[3:8]}" for i in ds["station_id"].values]
    varying = table.append_column("module", pa.array(["indoor" if i % 2 else "outdoor" for i in range(table.num_rows)]))
    path = tmp_path / "labels.nc"
    write(varying, path)
    with opened(path) as ds:
        assert ds["module"].dims == ("obs",)
        assert set(ds["module"].values) == {"indoor", "outdoor"}


def test_stats_report_what_was_written(table: pa.Table, written: tuple[Path, NetcdfStats]) -> None:
    path, stats = written
    assert stats.rows == table.num_rows
    assert stats.stations == 12
    assert stats.feature_type == "timeSeries"
    assert stats.bytes_written == os.path.getsize(path) > 0
    assert stats.variables_exported == [c for c in table.column_names if "__" in c]
    assert list(stats.variables_skipped) == ["quality_flag"]
    assert "not a canonical variable name" in stats.variables_skipped["quality_flag"]
    with opened(path) as ds:
        assert "quality_flag" not in ds.variables
        assert set(stats.variable_names.values()) <= set(ds.data_vars)


def test_variables_sharing_a_standard_name_and_method_are_told_apart_by_level(tmp_path: Path, table: pa.Table) -> None:
    t05 = "air_temperature__degC__0.5__point__PT0S"
    extra = table.append_column(t05, table[T2M])
    stats = write(extra, tmp_path / "levels.nc")
    assert stats.variable_names[T2M] == "air_temperature_2m"
    assert stats.variable_names[t05] == "air_temperature_0p5m"
    assert stats.variable_names[T2M_MAX] == "air_temperature_2m_maximum_pt1h"
    with opened(tmp_path / "levels.nc", decode_cf=False) as raw:
        assert raw["air_temperature_0p5m"].attrs["coordinates"].endswith("height_0p5m")
        assert float(raw["height_0p5m"]) == 0.5


@pytest.mark.parametrize(
    ("method", "period", "cell_methods"),
    [
        ("mean", "PT1H", "time: mean (interval: 1 hour)"),
        ("minimum", "PT30M", "time: minimum (interval: 30 minutes)"),
        ("sum", "P1D", "time: sum (interval: 1 day)"),
        ("max", "PT1M", "time: maximum (interval: 1 minute)"),  # a common alias, spelled the CF way
        ("mean", "PT0S", "time: mean"),
        ("point", "PT0S", "time: point"),
    ],
)
def test_cell_methods_follow_method_and_period(tmp_path: Path, method: str, period: str, cell_methods: str) -> None:
    column = f"air_temperature__K__2.0__{method}__{period}"
    table = pa.table(
        {
            "timestamp": pa.array([START], type=pa.timestamp("ns", tz="UTC")),
            "latitude": [50.0],
            "longitude": [7.0],
            "station_id": ["a"],
            column: [280.0],
        }
    )
    stats = write(table, tmp_path / "m.nc")
    with opened(tmp_path / "m.nc", decode_cf=False) as raw:
        assert raw[stats.variable_names[column]].attrs["cell_methods"] == cell_methods


def test_an_unknown_method_gets_no_cell_methods_but_keeps_its_canonical_name(tmp_path: Path) -> None:
    column = "air_temperature__K__2.0__smoothed__PT1H"
    table = pa.table(
        {
            "timestamp": pa.array([START], type=pa.timestamp("ns", tz="UTC")),
            "latitude": [50.0],
            "longitude": [7.0],
            column: [280.0],
        }
    )
    write(table, tmp_path / "u.nc")
    with opened(tmp_path / "u.nc", decode_cf=False) as raw:
        assert "cell_methods" not in raw["air_temperature"].attrs
        assert raw["air_temperature"].attrs["ionbeam_canonical_name"] == column


# --------------------------------------------------------------------------- point


def test_a_moving_platform_makes_the_file_point(tmp_path: Path, table: pa.Table) -> None:
    moving_id = table["station_id"][0].as_py()
    is_moving = pc.equal(table["station_id"], moving_id)
    lat = pc.if_else(
        is_moving,
        pc.add(table["latitude"], pc.multiply(pc.cast(pc.minute(table["timestamp"]), pa.float64()), 0.001)),
        table["latitude"],
    )
    moved = table.set_column(table.column_names.index("latitude"), "latitude", lat)
    path = tmp_path / "point.nc"
    stats = write(moved, path)
    assert stats.feature_type == "point"
    assert moving_id in stats.feature_type_reason
    with opened(path) as ds:
        assert ds.attrs["featureType"] == "point"
        assert "station" not in ds.dims and "row_size" not in ds.variables
        assert ds["lat"].dims == ds["lon"].dims == ds["station_id"].dims == ds["time"].dims == ("obs",)
        assert "cf_role" not in ds["station_id"].attrs
        frame = {
            (s, int(t)): (float(a), float(o), float(v))
            for s, t, a, o, v in zip(
                ds["station_id"].values,
                ds["time"].values.astype("datetime64[ns]").astype(np.int64),
                ds["lat"].values,
                ds["lon"].values,
                ds["air_temperature_maximum_pt1h"].values,
            )
        }
        assert np.all(np.diff(ds["time"].values.astype("datetime64[ns]").astype(np.int64)) >= 0)  # time-ordered
    expected = {
        (s, int(t)): (a, o, v)
        for s, t, a, o, v in zip(
            moved["station_id"].to_pylist(),
            moved["timestamp"].cast(pa.int64()).to_pylist(),
            moved["latitude"].to_pylist(),
            moved["longitude"].to_pylist(),
            moved[T2M_MAX].to_pylist(),
        )
    }
    assert frame.keys() == expected.keys()
    for key, (a, o, v) in expected.items():
        got = frame[key]
        assert got[:2] == (a, o)
        assert (np.isnan(got[2]) and np.isnan(v)) or got[2] == v
    with opened(path, decode_cf=False) as raw:
        assert raw["air_temperature"].attrs["coordinates"].split() == ["time", "lat", "lon", "station_id", "height_2m"]


@pytest.mark.parametrize("how", ["no column", "station_column=None", "null ids"])
def test_rows_without_a_station_are_points(tmp_path: Path, table: pa.Table, how: str) -> None:
    if how == "no column":
        data, kwargs = table.drop_columns(["station_id"]), {}
    elif how == "station_column=None":
        data, kwargs = table, {"station_column": None}
    else:
        ids = pc.if_else(
            pc.equal(table["station_id"], table["station_id"][0]), pa.scalar(None, pa.string()), table["station_id"]
        )
        data, kwargs = table.set_column(table.column_names.index("station_id"), "station_id", ids), {}
    path = tmp_path / "p.nc"
    stats = write(data, path, **kwargs)
    assert stats.feature_type == "point"
    with opened(path) as ds:
        assert ds.attrs["featureType"] == "point"
        assert ds.sizes["obs"] == table.num_rows
        times = ds["time"].values.astype("datetime64[ns]").astype(np.int64)
        order = np.argsort(times, kind="stable")
        np.testing.assert_array_equal(np.sort(ds[stats.variable_names[WIND]].values), np.sort(table[WIND].to_numpy()))
        assert times[order].tolist() == sorted(table["timestamp"].cast(pa.int64()).to_pylist())
        if how == "null ids":
            assert (ds["station_id"].values == "").sum() == pc.sum(pc.is_null(ids).cast(pa.int64())).as_py()
        elif how == "station_column=None":
            # The ids are still kept, as an ordinary text label.
            assert "station_id" in ds.variables and "cf_role" not in ds["station_id"].attrs
        else:
            assert "station_id" not in ds.variables


# --------------------------------------------------------------------------- empty and errors


@pytest.mark.parametrize("with_station", [True, False])
def test_empty_table_writes_a_valid_file_with_zero_length_dimensions(
    tmp_path: Path, table: pa.Table, with_station: bool
) -> None:
    empty = table.slice(0, 0) if with_station else table.slice(0, 0).drop_columns(["station_id"])
    path = tmp_path / "empty.nc"
    stats = write(empty, path)
    assert stats.rows == stats.stations == 0
    assert stats.feature_type == ("timeSeries" if with_station else "point")
    assert stats.bytes_written == os.path.getsize(path)
    with opened(path) as ds:
        assert ds.sizes["obs"] == 0
        if with_station:
            assert ds.sizes["station"] == 0
            assert ds["station_id"].attrs["cf_role"] == "timeseries_id"
        assert ds.attrs["time_coverage_start"] == "2024-01-01T00:00:00Z"
        assert ds.attrs["time_coverage_end"] == "2024-01-01T01:00:00Z"
        assert "geospatial_lat_min" not in ds.attrs  # no observation, so no extent to state
        for column, name in stats.variable_names.items():
            assert ds[name].sizes == {"obs": 0}
            assert ds[name].attrs["standard_name"] == column.split("__")[0]
        assert float(ds["height_2m"]) == 2.0
    assert set(stats.variable_names) == set(write(table, tmp_path / "full.nc").variable_names)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["latitude"]), r"missing column\(s\) \['latitude'\]"),
        (lambda t: pa.concat_tables([t, t.slice(0, 1)]), "duplicate observation"),
        (lambda t: t.set_column(1, "latitude", pa.array([91.0] * t.num_rows)), r"outside \[-90, 90\]"),
        (
            lambda t: t.set_column(0, "timestamp", pc.add(t["timestamp"], pa.scalar(timedelta(hours=1)))),
            "outside the window",
        ),
    ],
)
def test_tables_breaking_the_dataset_contract_are_refused_and_leave_no_file(
    tmp_path: Path, table: pa.Table, mutate, message: str
) -> None:
    table = table.select(["timestamp", "latitude", "longitude", "station_id", T2M])  # column positions for set_column
    path = tmp_path / "bad.nc"
    with pytest.raises(ValueError, match=message):
        write(mutate(table), path)
    assert not path.exists()


def test_naive_window_bounds_are_refused(tmp_path: Path, table: pa.Table) -> None:
    with pytest.raises(ValueError, match="window_start: .* naive"):
        write(table, tmp_path / "x.nc", window_start=datetime(2024, 1, 1))


# --------------------------------------------------------------------------- CF checker


def _cf_checker():  # type: ignore[no-untyped-def]
    """The CF checker's class. It needs cfchecker (test extra) and libudunits2
    (scripts/system-deps.sh); a machine without them fails here rather than skipping."""
    from cfchecker.cfchecks import CFChecker

    return CFChecker


# Canonical units from the CF standard name table: the checker downloads the table, and
# tests have no network, so it gets the entries these files use.
_STANDARD_NAMES = {
    "time": "s",
    "latitude": "degree_north",
    "longitude": "degree_east",
    "height": "m",
    "air_temperature": "K",
    "relative_humidity": "1",
    "air_pressure": "Pa",
    "wind_speed": "m s-1",
    "wind_from_direction": "degree",
    "precipitation_amount": "kg m-2",
}


@pytest.mark.parametrize("case", ["timeSeries", "point", "empty"])
def test_cf_checker_finds_no_errors_or_warnings(tmp_path: Path, table: pa.Table, case: str) -> None:
    checker_class = _cf_checker()
    entries = "".join(
        f'<entry id="{n}"><canonical_units>{u}</canonical_units></entry>' for n, u in _STANDARD_NAMES.items()
    )
    (tmp_path / "names.xml").write_text(
        "<standard_name_table><version_number>test</version_number><last_modified>test</last_modified>"
        f"{entries}</standard_name_table>"
    )
    (tmp_path / "areas.xml").write_text(
        "<area_type_table><version_number>test</version_number><date>test</date></area_type_table>"
    )
    (tmp_path / "regions.xml").write_text(
        "<standard_region_table><version_number>test</version_number><date>test</date></standard_region_table>"
    )
    data = {"timeSeries": table, "point": table.drop_columns(["station_id"]), "empty": table.slice(0, 0)}[case]
    path = tmp_path / "check.nc"
    write(data, path)
    checker = checker_class(
        cfStandardNamesXML=str(tmp_path / "names.xml"),
        cfAreaTypesXML=str(tmp_path / "areas.xml"),
        cfRegionNamesXML=str(tmp_path / "regions.xml"),
        silent=True,
    )
    checker.checker(str(path))
    assert checker.results["global"]["FATAL"] == checker.results["global"]["ERROR"] == [], checker.results["global"]
    for name, messages in checker.results["variables"].items():
        assert messages["FATAL"] == messages["ERROR"] == messages["WARN"] == [], (name, messages)
