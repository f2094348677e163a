"""MeteoTracker and Acronet through the whole pipeline, from their recorded responses.

Each source's asset runs against a local server answering with the recorded responses, then
the ingestion sensor and ingest run, the coordinator and the build: the dataset window must
hold the recorded observations (after the documented unit handling: gusts knots -> m s-1,
-9999 -> null, MeteoTracker as sent).
"""

from __future__ import annotations

from typing import Any

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest

from assets.sources import source_job_name
from ionbeam_dagster.sources.acronet import CLASS_NAMES, KNOT, acronet_ingestion_map, station_id
from ionbeam_dagster.sources.meteotracker import VALUE_COLUMNS, meteotracker_ingestion_map
from ionbeam_dagster.windows import Window
from tests.local_http import LocalServer, local_server
from tests.pipeline_harness import CATALOG_YAML, Pipeline, close_pipeline, make_pipeline, output_metadata
from tests.recorded_apis import (
    ACRONET,
    ACRONET_DAY,
    KEYCLOAK_PATH,
    MT_PAGE_SIZE,
    MT_SESSIONS,
    load,
    mt_points,
    serve_acronet,
    serve_meteotracker,
)

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

DAY = datetime(2023, 6, 1, tzinfo=UTC)
WINDOW = Window(DAY, DAY + timedelta(days=1))
CATALOG = CATALOG_YAML + """\
  - name: meteotracker
    description: integration-test copy of the MeteoTracker dataset
    aggregation_span: P1D
    subject_to_change_window: PT0S
    start: 2022-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
    station_column: session_id
  - name: acronet
    description: integration-test copy of the Acronet dataset
    aggregation_span: P1D
    subject_to_change_window: PT0S
    start: 2023-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
    station_column: station_id
"""


@pytest.fixture
def api() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture
def pipeline(
    pipeline_services: dict[str, Any],
    api: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    import ionbeam_dagster.sources.meteotracker as mt

    # Settings and credentials only through the environment, as in production.
    monkeypatch.setenv("IONBEAM_METEOTRACKER_URL", api.url)
    monkeypatch.setenv("IONBEAM_METEOTRACKER_USERNAME", "forecaster@example.org")
    monkeypatch.setenv("IONBEAM_METEOTRACKER_PASSWORD", "s3cret-Passw0rd!")
    monkeypatch.setenv("IONBEAM_ACRONET_URL", api.url + "app/")
    monkeypatch.setenv("IONBEAM_ACRONET_TOKEN_URL", api.url.rstrip("/") + KEYCLOAK_PATH)
    monkeypatch.setenv("IONBEAM_ACRONET_USERNAME", "acronet-user")
    monkeypatch.setenv("IONBEAM_ACRONET_PASSWORD", "w3bdr0ps-Passw0rd!")
    monkeypatch.setattr(mt, "PAGE_SIZE", MT_PAGE_SIZE)  # the recorded search is paged by 2
    p = make_pipeline(**pipeline_services, catalog_text=CATALOG)
    p.broker.declare(sources=["synthetic", "meteotracker", "acronet"])
    yield p
    close_pipeline(p)


def run_source(p: Pipeline, name: str, partition: str) -> dg.ExecuteInProcessResult:
    job = p.defs.resolve_job_def(source_job_name(name))
    return job.execute_in_process(partition_key=partition, instance=p.instance, raise_on_error=False)


def ingest_and_build(p: Pipeline, dataset: str) -> pa.Table:
    results = []
    for request in p.ingestion_tick():
        result = p.run_ingest(request)
        assert result.success
        results.append(output_metadata(result))
    assert len(results) == 1
    for request in p.coordinator_tick():
        assert p.run_build(request).success, request.partition_key
    record = p.windows.built(dataset, WINDOW)
    assert record is not None, f"{dataset} {WINDOW} was not built"
    return p.store.read_table(record.location)


def failure(run: dg.ExecuteInProcessResult) -> list[str]:
    return [str(e.event_specific_data) for e in run.all_events if e.is_step_failure]


def test_meteotracker_day_ends_in_its_window_point_by_point(pipeline: Pipeline, api: LocalServer) -> None:
    p = pipeline
    serve_meteotracker(api)
    run = run_source(p, "meteotracker", "2023-06-01")
    assert run.success, failure(run)

    built = ingest_and_build(p, "meteotracker")
    imap = meteotracker_ingestion_map()
    canonical = {v.column: v.canonical_name for v in imap.canonical_variables}
    expected = []
    for page in MT_SESSIONS:
        for session in page:
            for point in mt_points(session["_id"]):
                t = datetime.fromisoformat(point["time"].replace("Z", "+00:00"))
                if WINDOW.start <= t < WINDOW.end:
                    expected.append((t, session, point))
    assert built.num_rows == len(expected) == 10
    stored = {(r["timestamp"], r["session_id"]): r for r in built.to_pylist()}
    for t, session, point in expected:
        row = stored[(t, session["_id"])]
        assert row["author"] == session["by"]
        assert (row["longitude"], row["latitude"]) == tuple(point["lo"])  # a position per observation
        for key in VALUE_COLUMNS:
            value = point.get(key)
            if value is None:
                assert row[canonical[key]] is None or math.isnan(row[canonical[key]])
            else:
                assert row[canonical[key]] == value, (key, point)
    assert "air_temperature__degC__2.0__point__PT0S" in built.column_names
    assert "relative_humidity__percent__2.0__point__PT0S" in built.column_names


def test_acronet_day_ends_in_its_window_with_missing_values_null_and_gusts_in_m_s(pipeline: Pipeline, api: LocalServer) -> None:
    p = pipeline
    serve_acronet(api)
    run = run_source(p, "acronet", "2023-06-01")
    assert run.success, failure(run)

    built = ingest_and_build(p, "acronet")
    canonical = {v.column: v.canonical_name for v in acronet_ingestion_map().canonical_variables}
    assert canonical["ANEMOMETRO_RAFFICA"] == "wind_speed_of_gust__m s-1__10.0__maximum__PT1H"
    assert canonical["PLUVIOMETRO"] == "precipitation_amount__mm__0.0__sum__PT1H"
    stored = {(r["station_id"], r["timestamp"]): r for r in built.to_pylist()}
    assert len(stored) == 48 == built.num_rows
    checked = 0
    for cls in CLASS_NAMES:
        names = {s["id"]: s["name"] for s in load(ACRONET / f"list_{cls}.json")}
        for series in load(ACRONET / f"data_{cls}_{ACRONET_DAY}.json"):
            name = names.get(series["sensorId"])
            if name is None or name == "Stazione Fahrenheit":
                continue
            for stamp, raw in zip(series["timeline"], series["values"], strict=True):
                t = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
                if t >= WINDOW.end:
                    continue
                value = stored[(station_id(name), t)][canonical[cls]]
                if raw < -9000:
                    assert value is None or math.isnan(value)
                elif cls == "ANEMOMETRO_RAFFICA":
                    assert value == pytest.approx(raw * KNOT, rel=1e-12)
                else:
                    assert value == raw, (cls, name, t)
                checked += 1
    assert checked == 8 * 2 * 24


def test_a_day_with_nothing_publishes_zero_rows_and_its_window_is_built_empty(pipeline: Pipeline, api: LocalServer) -> None:
    p = pipeline
    serve_meteotracker(api, empty=True)
    run = run_source(p, "meteotracker", "2023-06-01")
    assert run.success, failure(run)
    built = ingest_and_build(p, "meteotracker")
    assert built.num_rows == 0
    assert "air_temperature__degC__2.0__point__PT0S" in built.column_names
