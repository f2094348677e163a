"""The Sensor.Community parsers, without services: the shared archive files (read by path),
index pages and live-API records built here in the formats the real services send."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from ionbeam_dagster.sources.base import SourceError, payload_schema
from ionbeam_dagster.sources.sensor_community import (
    ArchiveFileError,
    archive_day_urls,
    parse_archive_csv,
    parse_day_index,
    parse_live,
    sensor_community_ingestion_map,
)
from tests.local_http import index_page

SDS = "sensor_community/2017-08-30_sds011_sensor_5331.csv"


# ---------------------------------------------------------------- Sensor.Community archive


def test_the_ingestion_map_uses_cf_names_and_percent_for_humidity() -> None:
    names = {v.column: v.canonical_name for v in sensor_community_ingestion_map().canonical_variables}
    assert names == {
        "P1": "mass_concentration_of_pm10_ambient_aerosol_particles_in_air__ug m-3__2.0__point__PT0S",
        "P2": "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air__ug m-3__2.0__point__PT0S",
        "P0": "mass_concentration_of_pm1_ambient_aerosol_particles_in_air__ug m-3__2.0__point__PT0S",
        "temperature": "air_temperature__degC__2.0__point__PT0S",
        "humidity": "relative_humidity__percent__2.0__point__PT0S",
        "pressure": "air_pressure__Pa__0.0__point__PT0S",
        "pressure_sealevel": "air_pressure_at_mean_sea_level__Pa__0.0__point__PT0S",
    }
    assert [m.column for m in sensor_community_ingestion_map().metadata_variables] == ["sensor_id", "sensor_type", "location"]


def test_years_up_to_2023_live_in_year_folders() -> None:
    assert archive_day_urls("https://archive.sensor.community", date(2017, 8, 30)) == (
        "https://archive.sensor.community/2017/2017-08-30/",
        "https://archive.sensor.community/2017-08-30/",
    )
    assert archive_day_urls("https://archive.sensor.community/", date(2024, 2, 29))[0] == "https://archive.sensor.community/2024-02-29/"


def test_the_index_page_lists_each_sensor_once() -> None:
    html = index_page(
        "/2017/2017-08-30/",
        [
            ("2017-08-30_sds011_sensor_5331.csv", 20006),
            ("2017-08-30_dht22_sensor_5332.csv", 18918),
            ("2017-08-30_dht22_sensor_5332.csv.gz", 4000),
            ("2017-08-30_sds011_sensor_77_indoor.csv", 100),
            ("2017-08-30_radiation_si22g_sensor_9.csv", 100),
            ("2017-08-29_sds011_sensor_1.csv", 100),  # another day: not ours
            ("README.txt", 10),
        ],
    ).decode()
    files = parse_day_index(html, date(2017, 8, 30))
    assert [(f.sensor_type, f.sensor_id, f.gzip, f.indoor) for f in files] == [
        ("sds011", "5331", False, False),
        ("dht22", "5332", True, False),
        ("sds011", "77", False, True),
        ("radiation_si22g", "9", False, False),
    ]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_an_archive_csv_is_read_with_nulls_for_its_empty_cells(fixtures_dir: Path, compress: bool) -> None:
    data = (fixtures_dir / SDS).read_bytes()
    table, skipped = parse_archive_csv(gzip.compress(data) if compress else data)
    assert (table.num_rows, skipped) == (306, 0)
    first, second = table.slice(0, 2).to_pylist()
    assert first["timestamp"] == datetime(2017, 8, 30, 11, 27, 23, tzinfo=UTC)  # no offset: UTC
    assert (first["P1"], first["P2"], first["P0"]) == (9.53, 2.83, None)
    assert (first["sensor_id"], first["sensor_type"], first["location"], first["lat"], first["lon"]) == (
        "5331", "SDS011", "2688", 57.128, -2.13)
    # The duplicated timestamp's second copy has every measurement empty: all null.
    assert second["timestamp"] == first["timestamp"] and second["P1"] is None and second["P2"] is None


def test_unknown_and_unavailable_are_nulls_and_broken_lines_are_skipped() -> None:
    data = (
        b"sensor_id;sensor_type;location;lat;lon;timestamp;pressure;altitude;pressure_sealevel;temperature;humidity\n"
        b"7;BME280;8;48.1;11.5;2024-03-01T00:00:05;95000.5;;unknown;unavailable;41.2\n"
        b"7;BME280;8;48.1;11.5;2024-03-01T00:02:33;95001;;101325.25;3.5;\n"
        b"7;BME280;8\n"
    )
    table, skipped = parse_archive_csv(data)
    assert skipped == 1
    rows = table.to_pylist()
    assert [(r["pressure"], r["pressure_sealevel"], r["temperature"], r["humidity"]) for r in rows] == [
        (95000.5, None, None, 41.2),
        (95001.0, 101325.25, 3.5, None),
    ]


def test_a_file_that_is_not_an_archive_csv_is_refused() -> None:
    with pytest.raises(ArchiveFileError, match="timestamp"):
        parse_archive_csv(b"<html>error</html>\n")
    with pytest.raises(ArchiveFileError, match="gzip"):
        parse_archive_csv(b"\x1f\x8b\x08\x00garbage")


# ---------------------------------------------------------------- Sensor.Community live API


def record(sensor: int, values: list[dict[str, object]], **location: object) -> dict[str, object]:
    # The shape of data.sensor.community/static/v1/data.json: numbers as strings.
    return {
        "id": 16169042323,
        "sampling_rate": None,
        "timestamp": "2023-07-07 19:17:48",
        "location": {"id": 66539, "latitude": "50.13252000000", "longitude": "13.99531250000", "altitude": "416.0",
                     "country": "CZ", "exact_location": 1, "indoor": 0, **location},
        "sensor": {"id": sensor, "pin": "11", "sensor_type": {"id": 17, "name": "BME280", "manufacturer": "Bosch"}},
        "sensordatavalues": values,
    }


def test_live_records_become_rows() -> None:
    records = [
        record(77456, [
            {"value": "20.84", "value_type": "temperature", "id": 1},
            {"value": "97294.09", "value_type": "pressure", "id": 2},
            {"value": "36.35", "value_type": "humidity", "id": 3},
            {"value": 102089.58, "value_type": "pressure_at_sealevel"},
        ]),
        record(1, [{"value": "unavailable", "value_type": "P1"}, {"value": "3.1", "value_type": "P2"}]),
        record(2, [{"value": "22.0", "value_type": "temperature"}], indoor=1),
        record(3, [{"value": "48.0", "value_type": "noise_LAeq"}]),
        {"sensor": "broken"},
    ]
    table, left_out = parse_live(records)
    assert left_out == {"indoor": 1, "no_mapped_variables": 1, "malformed": 1}
    bme, sds = table.to_pylist()
    assert bme["timestamp"] == datetime(2023, 7, 7, 19, 17, 48, tzinfo=UTC)
    assert (bme["temperature"], bme["pressure"], bme["humidity"], bme["pressure_sealevel"]) == (20.84, 97294.09, 36.35, 102089.58)
    assert (bme["lat"], bme["lon"], bme["sensor_id"], bme["sensor_type"], bme["location"]) == (
        50.13252, 13.9953125, "77456", "BME280", "66539")
    assert (sds["P1"], sds["P2"]) == (None, 3.1)
    assert table.schema == payload_schema(sensor_community_ingestion_map())


def test_a_live_response_that_is_not_a_list_fails_clearly() -> None:
    with pytest.raises(SourceError, match="expected a list"):
        parse_live(json.loads('{"error": "maintenance"}'))
