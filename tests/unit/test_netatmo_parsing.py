"""Netatmo: getpublicdata parsing on the shared recorded responses, and MQTT feature parsing."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.sources.netatmo import (
    SCHEMA,
    NetatmoApiError,
    Observation,
    RejectedMessage,
    netatmo_ingestion_map,
    observations_table,
    parse_feature,
    parse_getpublicdata,
)


def _rows(fixtures: Path, name: str) -> list[dict[str, Any]]:
    table, _ = parse_getpublicdata((fixtures / "netatmo" / name).read_bytes())
    return table.to_pylist()


def _t(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_getpublicdata_maps_both_measure_shapes(fixtures_dir: Path) -> None:
    table, left_out = parse_getpublicdata((fixtures_dir / "netatmo" / "getpublicdata.json").read_bytes())
    assert table.schema == SCHEMA
    rows = {(r["station_id"], r["datetime"]): r for r in table.to_pylist()}
    # Station 1: temperature/humidity (res/type), pressure under the station's own id, rain (flat).
    first = rows[("70:ee:50:36:94:7c", _t(1560248022))]
    assert (first["air_temperature"], first["relative_humidity"]) == (21.4, 62.0)
    assert (first["lat"], first["lon"]) == (50.2136394, 8.791382999999996)
    # rain_timeutc equals the temperature time here: one row holds both.
    assert first["precipitation_amount_pt1h"] == 0.2
    assert first["precipitation_amount_p1d"] == 12.322000000000001
    assert first["air_pressure_at_mean_sea_level"] is None
    pressure = rows[("70:ee:50:36:94:7c", _t(1560248030))]
    assert pressure["air_pressure_at_mean_sea_level"] == 1010.6 and pressure["air_temperature"] is None
    # The one anemometer: wind and gust at wind_timeutc, km/h and degrees as sent.
    wind = rows[("70:ee:50:36:a9:fc", _t(1560248190))]
    assert (wind["wind_speed"], wind["wind_from_direction"]) == (15.0, 17.0)
    assert (wind["wind_speed_of_gust"], wind["wind_gust_from_direction"]) == (31.0, 217.0)
    # 8 stations; 4 rain gauges and 1 anemometer; rain_live (4x) is the only value left out.
    assert len({r["station_id"] for r in table.to_pylist()}) == 8
    assert sum(r["air_temperature"] is not None for r in table.to_pylist()) == 8
    assert sum(r["air_pressure_at_mean_sea_level"] is not None for r in table.to_pylist()) == 8
    assert sum(r["precipitation_amount_pt1h"] is not None for r in table.to_pylist()) == 4
    assert left_out == {"malformed_station": 0, "unmapped_measure": 4, "no_time": 0}
    # REST has no quality codes.
    assert all(r["air_temperature_quality_code"] is None for r in table.to_pylist())


def test_both_recorded_files_parse_to_the_same_rows(fixtures_dir: Path) -> None:
    assert _rows(fixtures_dir, "getpublicdata.json") == _rows(fixtures_dir, "public_data_simple.json")


def test_an_error_response_is_a_clear_error(fixtures_dir: Path) -> None:
    with pytest.raises(NetatmoApiError, match=r"Netatmo API error \(code 0\): failed to connect to server"):
        parse_getpublicdata((fixtures_dir / "netatmo" / "public_data_error_mongo.json").read_bytes())
    with pytest.raises(NetatmoApiError, match="not JSON"):
        parse_getpublicdata(b"<html>")
    with pytest.raises(NetatmoApiError, match="status"):
        parse_getpublicdata({"status": "failed"})


def test_the_rest_rows_ingest_under_the_dataset_map(fixtures_dir: Path) -> None:
    imap = netatmo_ingestion_map()
    assert isinstance(imap, DataIngestionMap)
    names = {v.column: v.canonical_name for v in imap.canonical_variables}
    assert names["air_temperature"] == "air_temperature__degC__2.0__point__PT0S"
    assert names["relative_humidity"] == "relative_humidity__percent__2.0__point__PT0S"
    assert names["air_pressure_at_mean_sea_level"] == "air_pressure_at_mean_sea_level__hPa__0.0__point__PT0S"
    assert names["precipitation_amount_pt1h"] == "precipitation_amount__kg m-2__0.0__sum__PT1H"
    assert names["precipitation_amount_p1d"] == "precipitation_amount__kg m-2__0.0__sum__P1D"
    assert names["wind_speed"] == "wind_speed__km h-1__10.0__mean__PT5M"
    assert names["wind_speed_of_gust"] == "wind_speed_of_gust__km h-1__10.0__maximum__PT5M"
    assert names["air_temperature_quality_code"] == "air_temperature_quality_code__1__2.0__point__PT0S"
    assert [m.column for m in imap.metadata_variables] == ["station_id"]  # quality is no tag
    table, _ = parse_getpublicdata((fixtures_dir / "netatmo" / "getpublicdata.json").read_bytes())
    assert set(names) <= set(table.column_names)


# ---------------------------------------------------------------- MQTT features


def feature(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "platform": "70:ee:50:36:94:7c",
        "datetime": "2026-03-01T10:05:00Z",
        "pubtime": "2026-03-01T10:06:12Z",
        "level": "2.0",
        "function": "point",
        "period": "PT0S",
        "quality_code": 0,
        "content": {"standard_name": "air_temperature", "value": "21.4", "unit": "degC"},
    }
    geometry: dict[str, Any] = {"type": "Point", "coordinates": {"lat": 50.2136394, "lon": 8.791383}}
    for key, value in overrides.items():
        if key == "coordinates":
            geometry["coordinates"] = value
        elif key in ("standard_name", "value", "unit"):
            props["content"][key] = value
        else:
            props[key] = value
    return {"type": "Feature", "geometry": geometry, "properties": props}


def test_a_feature_becomes_an_observation() -> None:
    o = parse_feature(json.dumps(feature()).encode())
    assert (o.platform, o.time, o.standard_name, o.value, o.unit, o.level, o.quality_code) == (
        "70:ee:50:36:94:7c", datetime(2026, 3, 1, 10, 5, tzinfo=UTC), "air_temperature", 21.4, "degC", 2.0, 0.0,
    )
    assert (o.lat, o.lon) == (50.2136394, 8.791383)
    assert o.key == "70:ee:50:36:94:7c|2026-03-01T10:05:00Z|air_temperature|2.0|point|PT0S"
    # A GeoJSON position [lon, lat] is read too, and numbers may be numbers.
    o2 = parse_feature(feature(coordinates=[8.791383, 50.2136394, 132], level=2, value=21.4))
    assert (o2.lat, o2.lon, o2.key) == (o.lat, o.lon, o.key)
    assert Observation.from_json(o.to_json()) == o


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"coordinates": {"lat": 50.2}}, "invalid_geometry"),
        ({"datetime": "yesterday"}, "invalid_time"),
        ({"value": None}, "no_value"),
        ({"standard_name": "soil_temperature"}, "unmapped_variable"),
        ({"level": "1.5"}, "unmapped_variable"),
        ({"unit": "Pa"}, "unit_not_convertible"),
        ({"platform": ""}, "invalid_message"),
    ],
)
def test_a_feature_that_cannot_be_an_observation_is_refused_with_its_reason(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedMessage) as info:
        parse_feature(feature(**overrides))
    assert info.value.reason == reason
    with pytest.raises(RejectedMessage) as info:
        parse_feature(b"{not json")
    assert info.value.reason == "malformed_json"


def test_observations_pivot_to_rows_with_converted_values_and_quality_codes() -> None:
    obs = [
        parse_feature(feature(value="294.55", unit="K", quality_code=1)),
        parse_feature(feature(standard_name="relative_humidity", value="62", unit="%")),
        parse_feature(feature(standard_name="air_pressure_at_mean_sea_level", value="101060", unit="Pa", level="0.0")),
        parse_feature(feature(standard_name="wind_speed", value="5", unit="m s-1", level="10.0", function="mean", period="PT5M")),
        parse_feature(feature(standard_name="precipitation_amount", value="0.2", unit="mm", level="0", function="sum",
                              period="PT60M")),
        parse_feature(feature(platform="other", coordinates={"lat": 1.0, "lon": 2.0})),
    ]
    table = observations_table(obs)
    assert table.schema == SCHEMA
    rows = {r["station_id"]: r for r in table.to_pylist()}
    row = rows["70:ee:50:36:94:7c"]
    assert math.isclose(row["air_temperature"], 21.4) and row["air_temperature_quality_code"] == 1.0
    assert row["relative_humidity"] == 62.0 and row["relative_humidity_quality_code"] == 0.0
    assert math.isclose(row["air_pressure_at_mean_sea_level"], 1010.6)
    assert math.isclose(row["wind_speed"], 18.0)
    assert row["precipitation_amount_pt1h"] == 0.2  # mm of water = kg m-2; PT60M = PT1H
    assert row["wind_speed_of_gust"] is None
    assert (rows["other"]["lat"], rows["other"]["lon"]) == (1.0, 2.0)
