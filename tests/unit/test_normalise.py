from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from ionbeam_dagster.contracts import (
    CanonicalVariable,
    DataIngestionMap,
    DatasetMetadata,
    IngestDataCommand,
    IngestionMetadata,
    LatitudeAxis,
    LongitudeAxis,
    MetadataVariable,
    TimeAxis,
)
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.normalise import DROP_REASONS, normalise

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 2, tzinfo=UTC)
NOW = datetime(2024, 1, 1, 12, tzinfo=UTC)
T0 = 1_704_067_200 * 10**9  # START in ns
TEMP = "air_temperature__K__2.0__point__PT0S"
WIND = "wind_speed__m s-1__10.0__point__PT0S"


def command(*, time_dtype: str | None = "datetime64[ns, UTC]", time_col: str | None = None, **axes: Any) -> IngestDataCommand:
    imap = DataIngestionMap(
        datetime=TimeAxis(from_col=time_col, dtype=time_dtype),
        lat=LatitudeAxis(**axes.get("lat", {})),
        lon=LongitudeAxis(**axes.get("lon", {})),
        canonical_variables=[
            CanonicalVariable(column="t", standard_name="air_temperature", cf_unit="K", level=2.0),
            CanonicalVariable(column="ws", standard_name="wind_speed", cf_unit="m s-1", level=10.0),
        ],
        metadata_variables=[MetadataVariable(column="station_id"), MetadataVariable(column="network")],
    )
    return IngestDataCommand(
        id=uuid.uuid4(),
        metadata=IngestionMetadata(dataset=DatasetMetadata(name="obs"), ingestion_map=imap),
        payload_location="raw/obs/x",
        start_time=START,
        end_time=END,
    )


def payload(n: int, **columns: list[Any] | pa.Array) -> pa.Table:
    """n valid rows at START + i minutes, one station each, overridden by ``columns``."""
    base: dict[str, Any] = {
        "datetime": pa.array([T0 + i * 60 * 10**9 for i in range(n)], pa.timestamp("ns", "UTC")),
        "lat": [45.0] * n,
        "lon": [7.0] * n,
        "t": [280.0 + i for i in range(n)],
        "ws": [1.0] * n,
        "station_id": [f"s{i}" for i in range(n)],
        "network": ["net"] * n,
    }
    base.update(columns)
    return pa.table(base)


def test_valid_payload_becomes_the_stored_schema() -> None:
    result = normalise(payload(3), command(), now=NOW)
    assert result.rows_in == 3
    assert result.dropped == dict.fromkeys(DROP_REASONS, 0)
    assert result.table.schema == pa.schema(
        [
            ("time", pa.int64()),
            ("latitude", pa.float64()),
            ("longitude", pa.float64()),
            (TEMP, pa.float64()),
            (WIND, pa.float64()),
            ("station_id", pa.string()),
            ("network", pa.string()),
        ]
    )
    assert result.table["time"].to_pylist() == [T0, T0 + 60 * 10**9, T0 + 120 * 10**9]
    assert result.table[TEMP].to_pylist() == [280.0, 281.0, 282.0]


@pytest.mark.parametrize(
    ("field", "column", "overrides"),
    [
        ("ingestion_map.datetime", "datetime", {}),
        ("ingestion_map.lat", "latitude_deg", {"lat": {"from_col": "latitude_deg"}}),
        ("ingestion_map.lon", "lon", {}),
    ],
)
def test_missing_axis_column_is_rejected_naming_it(field: str, column: str, overrides: dict[str, Any]) -> None:
    table = payload(2)
    if column in table.column_names:
        table = table.drop_columns([column])
    with pytest.raises(Rejection) as caught:
        normalise(table, command(**overrides), now=NOW)
    assert caught.value.code == "missing_column"
    assert f"{field}: column {column!r} is not in the payload" in caught.value.message
    # ...and lists what is there, so the operator sees the likely typo.
    assert "'station_id'" in caught.value.message


def test_each_drop_reason_is_counted_under_the_first_that_applies() -> None:
    minute = 60 * 10**9
    table = payload(
        12,
        datetime=pa.array(
            [
                T0,  # ok
                None,  # invalid_time
                T0 - minute,  # time_outside_range (before start)
                T0 + 86_400 * 10**9 + 1,  # time_outside_range (after end)
                int((NOW + timedelta(minutes=6) - START).total_seconds()) * 10**9 + T0,  # time_in_future
                T0 + 5 * minute,  # invalid_latitude
                T0 + 6 * minute,  # invalid_longitude
                T0 + 7 * minute,  # non_finite_value
                T0 + 8 * minute,  # no_values
                T0 + 9 * minute,  # duplicate (same station and time as the next row)
                T0 + 9 * minute,  # kept: the later one
                int((NOW + timedelta(minutes=4) - START).total_seconds()) * 10**9 + T0,  # ok: clock drift
            ],
            pa.timestamp("ns", "UTC"),
        ),
        lat=[45.0, None, 45.0, 45.0, 45.0, 90.5, 45.0, 45.0, 45.0, 45.0, 45.0, 45.0],
        lon=[7.0, 7.0, 7.0, 7.0, 7.0, 7.0, -180.1, 7.0, 7.0, 7.0, 7.0, 7.0],
        t=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, float("nan"), None, 1.0, 2.0, 1.0],
        ws=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0],
        station_id=["a", "b", "c", "d", "e", "f", "g", "h", "i", "dup", "dup", "l"],
    )
    result = normalise(table, command(), now=NOW)
    assert result.rows_in == 12
    assert result.dropped == {
        "invalid_time": 1,
        "time_outside_range": 2,
        "time_in_future": 1,
        "invalid_latitude": 1,
        "invalid_longitude": 1,
        "non_finite_value": 1,
        "no_values": 1,
        "duplicate": 1,
    }
    assert result.table["station_id"].to_pylist() == ["a", "dup", "l"]
    assert result.table[TEMP].to_pylist() == [1.0, 2.0, 1.0]


def test_range_bounds_are_inclusive() -> None:
    table = payload(2, datetime=pa.array([T0, T0 + 86_400 * 10**9], pa.timestamp("ns", "UTC")))
    result = normalise(table, command(), now=END)
    assert result.dropped["time_outside_range"] == 0
    assert result.table.num_rows == 2


def test_duplicates_keep_the_last_row_per_time_and_metadata() -> None:
    table = payload(
        5,
        datetime=pa.array([T0] * 5, pa.timestamp("ns", "UTC")),
        station_id=["a", "a", "b", None, None],
        t=[1.0, 2.0, 3.0, 4.0, 5.0],
    )
    result = normalise(table, command(), now=NOW)
    assert result.dropped["duplicate"] == 2
    # Input order is kept; the last of each key survives (null is a key value too).
    assert result.table["station_id"].to_pylist() == ["a", "b", None]
    assert result.table[TEMP].to_pylist() == [2.0, 3.0, 5.0]


def test_same_station_at_different_times_is_no_duplicate() -> None:
    table = payload(3, station_id=["a", "a", "a"], network=["x", "y", "x"])
    assert normalise(table, command(), now=NOW).dropped["duplicate"] == 0


def test_a_later_invalid_row_does_not_remove_an_earlier_valid_one() -> None:
    table = payload(2, datetime=pa.array([T0, T0], pa.timestamp("ns", "UTC")), station_id=["a", "a"], lat=[45.0, 99.0])
    result = normalise(table, command(), now=NOW)
    assert result.dropped["invalid_latitude"] == 1 and result.dropped["duplicate"] == 0
    assert result.table["latitude"].to_pylist() == [45.0]


def test_string_times_with_and_without_offset() -> None:
    table = payload(
        5,
        datetime=[
            "2024-01-01T00:00:00Z",
            "2024-01-01T03:00:00+02:00",  # = 01:00 UTC
            "2024-01-01T02:00:00",  # no offset: UTC
            "2024-01-01 03:00:00.5",
            " 2024-01-01T04:00:00.000000001-00:30 ",  # = 04:30 UTC, ns kept
        ],
    )
    result = normalise(table, command(), now=NOW)
    hour = 3_600 * 10**9
    assert result.table["time"].to_pylist() == [T0, T0 + hour, T0 + 2 * hour, T0 + 3 * hour + 5 * 10**8, T0 + 4 * hour + hour // 2 + 1]


def test_unparseable_string_times_are_dropped_per_row() -> None:
    table = payload(5, datetime=["2024-01-01T00:00:00Z", "yesterday", "2024-02-30T00:00:00", "", "2024-01-01T01:00:00"])
    result = normalise(table, command(), now=NOW)
    assert result.dropped["invalid_time"] == 3
    assert result.table["time"].to_pylist() == [T0, T0 + 3_600 * 10**9]


def test_naive_timestamps_are_utc_and_aware_ones_convert() -> None:
    table = payload(
        1, datetime=pa.array([datetime(2024, 1, 1, 1)], pa.timestamp("us"))
    )  # naive
    assert normalise(table, command(), now=NOW).table["time"].to_pylist() == [T0 + 3_600 * 10**9]
    aware = pa.array([T0 // 1000], pa.timestamp("us", "Europe/Zurich"))  # instants are stored in UTC
    assert normalise(payload(1, datetime=aware), command(), now=NOW).table["time"].to_pylist() == [T0]


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (None, 1_704_067_200),
        ("int64", 1_704_067_200),
        ("epoch_ms", 1_704_067_200_000),
        ("datetime64[us]", 1_704_067_200_000_000),
        ("datetime64[ns, UTC]", T0),  # the default dtype names ns, as pandas would read it
    ],
)
def test_integer_times_are_seconds_unless_the_dtype_names_a_unit(dtype: str | None, value: int) -> None:
    table = payload(1, datetime=pa.array([value], pa.int64()))
    assert normalise(table, command(time_dtype=dtype), now=NOW).table["time"].to_pylist() == [T0]


def test_float_epoch_seconds_and_overflowing_integers() -> None:
    table = payload(2, datetime=pa.array([1_704_067_200.25, 1e300]))
    result = normalise(table, command(time_dtype="s"), now=NOW)
    assert result.table["time"].to_pylist() == [T0 + 250_000_000]
    assert result.dropped["invalid_time"] == 1
    huge = payload(1, datetime=pa.array([2**62], pa.int64()))
    assert normalise(huge, command(time_dtype="s"), now=NOW).dropped["invalid_time"] == 1


def test_numeric_strings_are_numbers_and_other_strings_are_not() -> None:
    table = payload(
        7,
        lat=["45.5", " 46 ", "4.7e1", "45", "45", "45", "45"],
        lon=["7", "7", "7", "7", "7", "7", "7"],
        t=["280.5", "-1e-3", "+2", "abc", "nan", "1e999", ""],
        ws=["1", "1", "1", "1", "1", "1", None],
    )
    result = normalise(table, command(), now=NOW)
    assert result.table["latitude"].to_pylist()[:3] == [45.5, 46.0, 47.0]
    assert result.table[TEMP].to_pylist() == [280.5, -0.001, 2.0]
    # "abc", "nan" and "1e999" are present but not finite numbers; "" is a missing value,
    # and with ws also null that row has no values at all.
    assert result.dropped["non_finite_value"] == 3
    assert result.dropped["no_values"] == 1


def test_unparseable_coordinates_are_invalid() -> None:
    table = payload(3, lat=["north", "45", "45"], lon=["7", "east", "7"])
    result = normalise(table, command(), now=NOW)
    assert result.dropped["invalid_latitude"] == 1 and result.dropped["invalid_longitude"] == 1


def test_one_missing_variable_value_keeps_the_row() -> None:
    table = payload(2, t=[None, 1.0])
    result = normalise(table, command(), now=NOW)
    assert result.table[TEMP].to_pylist() == [None, 1.0]
    assert result.dropped["no_values"] == 0


def test_null_metadata_stays_null_and_values_become_text() -> None:
    table = payload(4, station_id=pa.array([17, None, 3, 4], pa.int64()), network=["a", None, "", "d"])
    result = normalise(table, command(), now=NOW)
    assert result.table["station_id"].to_pylist() == ["17", None, "3", "4"]
    # InfluxDB has no empty tag value, so "" is stored (and read back) as null.
    assert result.table["network"].to_pylist() == ["a", None, None, "d"]


def test_declared_columns_absent_from_the_payload_are_all_null() -> None:
    table = payload(2).drop_columns(["ws", "network"])
    result = normalise(table, command(), now=NOW)
    assert result.table[WIND].to_pylist() == [None, None]
    assert result.table["network"].to_pylist() == [None, None]
    assert result.table.num_rows == 2


def test_axis_columns_under_their_own_names() -> None:
    table = payload(1).rename_columns(["obs_time", "y", "x", "t", "ws", "station_id", "network"])
    cmd = command(time_col="obs_time", lat={"from_col": "y"}, lon={"from_col": "x"})
    assert normalise(table, cmd, now=NOW).table.num_rows == 1


def test_empty_payload() -> None:
    result = normalise(payload(0), command(), now=NOW)
    assert result.rows_in == 0 and result.table.num_rows == 0
    assert result.dropped == dict.fromkeys(DROP_REASONS, 0)


def test_chunked_columns_with_different_layouts() -> None:
    base = payload(6)
    table = pa.table(
        {
            name: pa.chunked_array([base[name].combine_chunks().slice(0, cut), base[name].combine_chunks().slice(cut)])
            for cut, name in zip([1, 2, 3, 4, 5, 1, 2], base.column_names, strict=True)
        }
    )
    result = normalise(table, command(), now=NOW)
    assert result.table.num_rows == 6
    assert result.table[TEMP].to_pylist() == base["t"].to_pylist()
