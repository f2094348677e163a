"""The synthetic data source: a stable station network and deterministic, plausible values."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ionbeam_dagster.synthetic import generate_observations, station_network, synthetic_ingestion_map

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def _ipc_digest(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _times(table: pa.Table) -> list[datetime]:
    return sorted(set(table["datetime"].to_pylist()))


def test_rows_are_every_station_at_every_timestep() -> None:
    table = generate_observations(T0, T0 + timedelta(minutes=10), stations=7)
    assert table.num_rows == 7 * 10
    counts = pc.value_counts(table["station_id"]).to_pylist()
    assert {c["counts"] for c in counts} == {10}
    assert len(counts) == 7


def test_range_is_half_open() -> None:
    table = generate_observations(T0, T0 + timedelta(minutes=10), stations=3)
    times = _times(table)
    assert times[0] == T0  # start included
    assert times[-1] == T0 + timedelta(minutes=9)  # end excluded
    assert T0 + timedelta(minutes=10) not in times


def test_timesteps_are_epoch_aligned_not_start_aligned() -> None:
    start = T0 + timedelta(seconds=30)
    table = generate_observations(start, start + timedelta(minutes=30), stations=2, interval=timedelta(minutes=7))
    times = _times(table)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert times, "a 30 min range holds at least four 7 min steps"
    assert all((t - epoch) % timedelta(minutes=7) == timedelta(0) for t in times)
    assert all(start <= t < start + timedelta(minutes=30) for t in times)
    assert times == [datetime(2024, 3, 1, 10, m, tzinfo=UTC) for m in (4, 11, 18, 25)]  # not 10:00:30 + k*7min
    assert table.num_rows == 2 * len(times)


def test_empty_range_gives_empty_table_with_full_schema() -> None:
    full = generate_observations(T0, T0 + timedelta(minutes=1), stations=2)
    empty = generate_observations(T0 + timedelta(seconds=1), T0 + timedelta(seconds=59), stations=2)
    assert empty.num_rows == 0
    assert empty.schema == full.schema


def test_schema_types() -> None:
    table = generate_observations(T0, T0 + timedelta(minutes=2), stations=2)
    assert table.schema.field("datetime").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("lat").type == pa.float64()
    assert table.schema.field("lon").type == pa.float64()
    assert table.schema.field("station_id").type == pa.string()
    for name in ("air_temperature", "relative_humidity", "air_pressure", "wind_speed", "wind_from_direction"):
        assert table.schema.field(name).type == pa.float64()
        assert table[name].null_count == 0


def test_two_generations_are_identical() -> None:
    a = generate_observations(T0, T0 + timedelta(hours=2), stations=20)
    b = generate_observations(T0, T0 + timedelta(hours=2), stations=20)
    assert a.equals(b)


def test_generation_is_identical_in_another_process() -> None:
    code = (
        "import hashlib, json\n"
        "from datetime import datetime, timedelta, timezone\n"
        "import pyarrow as pa\n"
        "from ionbeam_dagster.synthetic import generate_observations, station_network\n"
        "def _ipc_digest(table):\n"
        "    sink = pa.BufferOutputStream()\n"
        "    with pa.ipc.new_stream(sink, table.schema) as writer:\n"
        "        writer.write_table(table)\n"
        "    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()\n"
        "t0 = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)\n"
        "table = generate_observations(t0, t0 + timedelta(hours=2), stations=20)\n"
        "print(json.dumps({'stations': [[s.station_id, s.lat, s.lon] for s in station_network(20)],"
        " 'digest': _ipc_digest(table)}))\n"
    )
    # A different hash seed: nothing may depend on Python's per-process str hashing.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    ours = [[s.station_id, s.lat, s.lon] for s in station_network(20)]
    assert theirs["stations"] == ours
    assert theirs["digest"] == _ipc_digest(generate_observations(T0, T0 + timedelta(hours=2), stations=20))


def test_station_ids_unique_and_positions_over_europe() -> None:
    network = station_network(500)
    assert len({s.station_id for s in network}) == 500
    assert all(36.0 <= s.lat <= 70.0 and -10.0 <= s.lon <= 30.0 for s in network)
    # Spread out, not clumped: every quarter of the box holds stations.
    quadrants = {(s.lat > 53.0, s.lon > 10.0) for s in network}
    assert len(quadrants) == 4


def test_growing_the_network_keeps_existing_stations() -> None:
    assert station_network(60)[:50] == station_network(50)
    small = generate_observations(T0, T0 + timedelta(minutes=30), stations=5)
    large = generate_observations(T0, T0 + timedelta(minutes=30), stations=12)
    same = large.filter(pc.is_in(large["station_id"], small["station_id"].unique()))
    assert same.equals(small)


def test_overlapping_ranges_agree_on_shared_rows() -> None:
    a = generate_observations(T0, T0 + timedelta(minutes=100), stations=10)
    b = generate_observations(T0 + timedelta(minutes=50), T0 + timedelta(minutes=150), stations=10)
    assert a.slice(50 * 10).equals(b.slice(0, 50 * 10))


def test_values_are_in_plausible_ranges_over_a_year() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    table = generate_observations(start, start + timedelta(days=366), stations=100, interval=timedelta(hours=3))
    ranges = {
        "air_temperature": (-40.0, 45.0),
        "relative_humidity": (0.0, 100.0),
        "air_pressure": (950.0, 1060.0),
        "wind_speed": (0.0, 40.0),
    }
    for column, (low, high) in ranges.items():
        values = table[column].to_numpy()
        assert np.isfinite(values).all(), column
        assert low <= values.min() and values.max() <= high, (column, values.min(), values.max())
    direction = table["wind_from_direction"].to_numpy()
    assert direction.min() >= 0.0 and direction.max() < 360.0
    # Not constant: a generator that returns one value per variable would pass the ranges.
    assert np.ptp(table["air_temperature"].to_numpy()) > 20.0
    assert np.ptp(table["air_pressure"].to_numpy()) > 20.0


def test_temperature_follows_the_sun_and_latitude() -> None:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    table = generate_observations(start, start + timedelta(days=10), stations=200, interval=timedelta(hours=1))
    temperature = table["air_temperature"].to_numpy()
    lat = table["lat"].to_numpy()
    lon = table["lon"].to_numpy()
    utc_hour = pc.hour(table["datetime"]).to_numpy().astype(float)
    solar_hour = np.mod(utc_hour + lon / 15.0, 24.0)
    afternoon = temperature[(solar_hour >= 13) & (solar_hour < 17)].mean()
    night = temperature[(solar_hour >= 1) & (solar_hour < 5)].mean()
    assert afternoon > night + 3.0
    assert temperature[lat < 45].mean() > temperature[lat > 60].mean() + 5.0
    winter = generate_observations(datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC), stations=200,
                                   interval=timedelta(hours=1))
    assert temperature.mean() > winter["air_temperature"].to_numpy().mean() + 8.0


def test_ingestion_map_parses_and_matches_the_columns() -> None:
    from ionbeam_dagster.contracts import DataIngestionMap

    mapping = DataIngestionMap.model_validate(synthetic_ingestion_map())
    table = generate_observations(T0, T0 + timedelta(minutes=1), stations=1)
    assert mapping.datetime.column == "datetime"
    assert mapping.lat.column == "lat" and mapping.lat.standard_name == "latitude" and mapping.lat.cf_unit == "degrees_north"
    assert mapping.lon.column == "lon" and mapping.lon.standard_name == "longitude" and mapping.lon.cf_unit == "degrees_east"
    assert {v.canonical_name for v in mapping.canonical_variables} == {
        "air_temperature__degC__2.0__point__PT0S",
        "relative_humidity__percent__2.0__point__PT0S",
        "air_pressure__hPa__0.0__point__PT0S",
        "wind_speed__m s-1__10.0__point__PT0S",
        "wind_from_direction__degree__10.0__point__PT0S",
    }
    assert [m.column for m in mapping.metadata_variables] == ["station_id"]
    declared = {mapping.datetime.column, mapping.lat.column, mapping.lon.column}
    declared |= {v.column for v in mapping.canonical_variables} | {m.column for m in mapping.metadata_variables}
    assert declared == set(table.column_names)
    # JSON-serialisable as is: it goes into IngestDataCommand messages.
    assert json.loads(json.dumps(synthetic_ingestion_map())) == synthetic_ingestion_map()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": datetime(2024, 1, 1), "end": datetime(2024, 1, 2, tzinfo=UTC)}, "start: .* naive"),
        ({"start": datetime(2024, 1, 1, tzinfo=UTC), "end": datetime(2024, 1, 2)}, "end: .* naive"),
        ({"interval": timedelta(0)}, "interval: .* must be positive"),
        ({"stations": 0}, "stations: 0 must be between"),
        ({"interval": timedelta(seconds=1), "stations": 1000}, "exceeds MAX_ROWS"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    args = {"start": T0, "end": T0 + timedelta(days=1)} | kwargs
    with pytest.raises(ValueError, match=message):
        generate_observations(args.pop("start"), args.pop("end"), **args)
