"""Ingest runs and the whole chain, in-process on a real Dagster instance and real services.

Each test drives the pipeline as the daemon would: publish an IngestDataCommand, evaluate
the ingestion sensor, execute the run it requests (same tags, same run config), evaluate the
coordinator sensor, execute the build it requests. What is checked is what each stage left
behind: points in InfluxDB, events on the broker, objects in the store, dead letters, run
metadata and the partition's data version.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from ionbeam_dagster.broker import HEADER_ERROR, HEADER_ERROR_CODE
from ionbeam_dagster.contracts import DataAvailableEvent, DataIngestionMap, DataSetAvailableEvent
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.readiness import event_set_hash
from ionbeam_dagster.resources import ObjectStoreResource
from ionbeam_dagster.synthetic import synthetic_ingestion_map
from ionbeam_dagster.windows import partition_key
from ionbeam_dagster.windowstate import window_id
from tests.pipeline_harness import (
    DATASET,
    SPAN,
    STATIONS,
    WINDOW,
    Pipeline,
    close_pipeline,
    make_pipeline,
    output_metadata,
)

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

IMAP = DataIngestionMap.model_validate(synthetic_ingestion_map())
CANONICAL = {v.column: v.canonical_name for v in IMAP.canonical_variables}  # payload column -> stored name
DATASET_COLUMNS = ["timestamp", "latitude", "longitude", *sorted(CANONICAL.values()), "station_id"]


@pytest.fixture
def pipeline(pipeline_services: dict[str, Any]) -> Iterator[Pipeline]:
    p = make_pipeline(**pipeline_services)
    yield p
    close_pipeline(p)


@pytest.fixture
def s3_pipeline(pipeline_services: dict[str, Any], s3_endpoint: str, s3_bucket: str) -> Iterator[Pipeline]:
    p = make_pipeline(**pipeline_services, objects=ObjectStoreResource(url=f"s3://{s3_bucket}/store", s3_endpoint=s3_endpoint))
    yield p
    close_pipeline(p)


def expected_run_key(*command_ids: uuid.UUID) -> str:
    return f"{DATASET}|{window_id(WINDOW)}|{event_set_hash(str(c) for c in command_ids)[:16]}|0"


def rows_of(table: pa.Table) -> list[tuple[Any, ...]]:
    """Dataset rows as comparable tuples (time in ns), in (time, station) order."""
    time_ns = pc.cast(table.column("timestamp"), pa.int64()).to_pylist()
    columns = [table.column(name).to_pylist() for name in DATASET_COLUMNS[1:]]
    return sorted(zip(time_ns, *columns), key=lambda r: (r[0], r[-1]))


def as_dataset(payload: pa.Table) -> pa.Table:
    """What the window's dataset must hold for a payload of valid rows."""
    renamed = {"datetime": "timestamp", "lat": "latitude", "lon": "longitude", **CANONICAL}
    return payload.rename_columns([renamed.get(c, c) for c in payload.column_names]).select(DATASET_COLUMNS)


def assert_contract_schema(table: pa.Table) -> None:
    assert table.column_names == DATASET_COLUMNS
    assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    for name in DATASET_COLUMNS[1:-1]:
        assert table.schema.field(name).type == pa.float64(), name
    assert table.schema.field("station_id").type == pa.string()


def with_bad_rows(p: Pipeline) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """A window's payload plus one row per drop reason; returns (payload, expected dataset
    rows, expected drops by reason)."""
    good = p.payload()
    schema = pa.schema([f.with_nullable(True) for f in good.schema])
    t = WINDOW.start + timedelta(minutes=5, seconds=30)  # between two good timesteps
    values = {"air_temperature": 10.0, "relative_humidity": 70.0, "air_pressure": 1010.0, "wind_speed": 3.0,
              "wind_from_direction": 200.0}

    def row(station: str, **change: Any) -> dict[str, Any]:
        return {"datetime": t, "lat": 50.0, "lon": 10.0, "station_id": station, **values, **change}

    # The last good row again with another temperature: the later row wins, the earlier is
    # dropped as a duplicate.
    last = good.slice(good.num_rows - 1, 1)
    later = last.set_column(
        last.schema.get_field_index("air_temperature"), "air_temperature", pa.array([-3.25])
    ).cast(schema)
    bad = pa.Table.from_pylist(
        [
            row("bad_time", datetime=None),
            row("outside", datetime=WINDOW.end + timedelta(minutes=1)),
            row("bad_lat", lat=95.0),
            row("bad_lon", lon=-200.0),
            row("nan_value", air_temperature=math.nan),
            row("no_values", **dict.fromkeys(values)),
        ],
        schema=schema,
    )
    payload = pa.concat_tables([good.cast(schema), bad, later])
    expected = pa.concat_tables([good.slice(0, good.num_rows - 1).cast(schema), later])
    drops = {
        "invalid_time": 1,
        "time_outside_range": 1,
        "invalid_latitude": 1,
        "invalid_longitude": 1,
        "non_finite_value": 1,
        "no_values": 1,
        "duplicate": 1,
    }
    return payload, as_dataset(expected), drops


# ---------------------------------------------------------------- the whole chain


def test_a_command_flows_to_an_announced_exported_window(pipeline: Pipeline) -> None:
    p = pipeline
    payload, expected, drops = with_bad_rows(p)
    command = p.command(p.write_payload(payload))
    exporter_queue = p.bind_exporter("itest")

    # ingestion sensor -> ingest run
    p.publish(command)
    [ingest_request] = p.ingestion_tick()
    assert ingest_request.tags["ionbeam/command_id"] == str(command.id)
    ingested = p.run_ingest(ingest_request)
    assert ingested.success
    meta = output_metadata(ingested)
    assert meta["outcome"] == "ingested"
    assert (meta["rows_in"], meta["rows_written"], meta["rows_dropped"]) == (payload.num_rows, expected.num_rows, 7)
    assert meta["dropped_by_reason"] == drops
    assert p.influx.count(DATASET, WINDOW.start_ns, WINDOW.end_ns) == expected.num_rows
    assert p.ledger.status(str(command.id)) == "done"
    assert p.dead_letters() == []

    # coordinator sensor -> build request for exactly this window
    [build_request] = p.coordinator_tick()
    assert build_request.job_name == f"build_{DATASET}"
    assert build_request.partition_key == partition_key(WINDOW) == "2026-03-01T00:00"
    assert build_request.run_key == expected_run_key(command.id)
    assert build_request.tags["ionbeam/event_hash"] == event_set_hash([str(command.id)])

    built = p.run_build(build_request)
    assert built.success

    # the announcement on an exporter's queue
    [announcement] = p.drain(exporter_queue, expect=1)
    event = DataSetAvailableEvent.model_validate_json(announcement.body)
    assert (event.start_time, event.end_time) == (WINDOW.start, WINDOW.end)
    assert event.metadata.name == DATASET and event.metadata.aggregation_span == SPAN
    record = p.windows.built(DATASET, WINDOW)
    assert record is not None and event.dataset_location == record.location

    # the window object: Arrow IPC file, contract schema, exactly the payload's valid rows
    raw = p.store.read_bytes(event.dataset_location)
    assert raw[:6] == b"ARROW1"
    dataset = pa.ipc.open_file(pa.BufferReader(raw)).read_all()
    assert_contract_schema(dataset)
    assert rows_of(dataset) == rows_of(expected)
    assert set(dataset.column("station_id").to_pylist()) == set(p.payload().column("station_id").to_pylist())

    # the GeoParquet export of the same rows
    geo_key = export_key("geoparquet", DATASET, WINDOW, SPAN, "parquet")
    exported = pq.read_table(pa.BufferReader(p.store.read_bytes(geo_key)))
    assert exported.num_rows == expected.num_rows
    assert b"geo" in (exported.schema.metadata or {})

    # the partition's data version is the window's event-set hash
    records = p.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([DATASET, "dataset"]), asset_partitions=[partition_key(WINDOW)]),
        limit=1,
    ).records
    materialization = records[0].asset_materialization
    assert materialization is not None
    assert materialization.tags is not None
    assert materialization.tags["dagster/data_version"] == event_set_hash([str(command.id)]) == record.hash

    # nothing more to do
    assert p.coordinator_tick() == []


def test_payload_on_s3_named_without_suffix_is_ingested_and_built_into_s3(s3_pipeline: Pipeline) -> None:
    """The reference client publishes ``<key>`` and uploads ``<key>.parquet``."""
    p = s3_pipeline
    payload = p.payload()
    stem = f"raw/{DATASET}/{uuid.uuid4().hex}"
    p.write_payload(payload, stem + ".parquet")
    command = p.command(stem)

    meta = output_metadata(p.ingest(command))
    assert (meta["outcome"], meta["payload"], meta["rows_written"]) == ("ingested", stem, STATIONS * 10)
    assert p.influx.count(DATASET, WINDOW.start_ns, WINDOW.end_ns) == payload.num_rows

    [request] = p.coordinator_tick()
    assert request.run_key == expected_run_key(command.id)
    assert p.run_build(request).success
    record = p.windows.built(DATASET, WINDOW)
    assert record is not None
    assert p.store.url(record.location).startswith("s3://")
    dataset = p.store.read_table(record.location)
    assert_contract_schema(dataset)
    assert rows_of(dataset) == rows_of(as_dataset(payload))
    assert p.store.exists(export_key("geoparquet", DATASET, WINDOW, SPAN, "parquet"))


# ---------------------------------------------------------------- dead letters from the run


def _missing(p: Pipeline) -> str:
    return f"raw/{DATASET}/never-uploaded.parquet"


def _garbage(p: Pipeline) -> str:
    key = f"raw/{DATASET}/garbage.parquet"
    p.store.write_bytes(key, b"this is not a parquet file")
    return key


def _no_latitude(p: Pipeline) -> str:
    return p.write_payload(p.payload().drop_columns(["lat"]))


@pytest.mark.parametrize(
    ("stage", "code", "names"),
    [
        (_missing, "payload_not_found", ("payload_location", "never-uploaded.parquet")),
        (_garbage, "payload_unreadable", ("payload_location", "neither Parquet nor Arrow IPC")),
        (_no_latitude, "missing_column", ("ingestion_map.lat", "'lat'")),
    ],
    ids=["payload_not_found", "payload_unreadable", "missing_column"],
)
def test_a_payload_that_cannot_be_ingested_is_dead_lettered_by_the_run(
    pipeline: Pipeline, stage: Any, code: str, names: tuple[str, ...]
) -> None:
    p = pipeline
    command = p.command(stage(p))
    body = p.publish(command)
    [request] = p.ingestion_tick()
    assert p.dead_letters() == []  # nothing wrong that the sensor could see

    started = time.monotonic()
    result = p.run_ingest(request, payload_wait_seconds=0.3)
    elapsed = time.monotonic() - started

    assert result.success  # a rejection is an outcome, not a failure to retry
    meta = output_metadata(result)
    assert (meta["outcome"], meta["error_code"]) == ("rejected", code)
    [dead] = p.dead_letters(expect=1)
    assert dead.body == body
    assert dead.headers[HEADER_ERROR_CODE] == code
    for text in names:
        assert text in dead.headers[HEADER_ERROR], dead.headers[HEADER_ERROR]
    assert p.ledger.status(str(command.id)) == "rejected"
    assert p.ledger.pending() == []
    assert p.drain(p.topology.coordinator_queue) == []  # nothing announced
    assert p.influx.count(DATASET, WINDOW.start_ns, WINDOW.end_ns) == 0
    assert elapsed < 15  # the configured wait, not the default minute
    assert p.ingestion_tick() == []  # and it is never retried


# ---------------------------------------------------------------- idempotency


def test_a_second_run_for_the_same_command_changes_nothing(pipeline: Pipeline) -> None:
    p = pipeline
    payload = p.payload()
    command = p.command(p.write_payload(payload))
    body = p.publish(command)
    [request] = p.ingestion_tick()

    first = p.run_ingest(request)
    assert first.success and output_metadata(first)["outcome"] == "ingested"
    points = p.influx.count(DATASET, WINDOW.start_ns, WINDOW.end_ns)
    assert points == payload.num_rows

    second = p.run_ingest(request)  # e.g. a retried run whose first attempt had finished
    assert second.success
    assert output_metadata(second)["outcome"] == "skipped (done)"
    assert p.influx.count(DATASET, WINDOW.start_ns, WINDOW.end_ns) == points

    [announced] = p.drain(p.topology.coordinator_queue, expect=1)
    assert DataAvailableEvent.model_validate_json(announced.body).id == command.id

    # The command redelivered after it was done: acked, not staged again, no run.
    p.publish(body)
    assert p.ingestion_tick() == []
    assert p.broker.message_count(p.topology.ingestion_queue) == 0
    assert p.ledger.status(str(command.id)) == "done"
    assert p.dead_letters() == []


# ---------------------------------------------------------------- zero rows


def test_a_payload_without_rows_is_ingested_and_builds_an_empty_full_schema_window(
    pipeline: Pipeline, influx_url: str, influx_database: str
) -> None:
    """The first payload a deployment ever sees has no rows: the database does not exist
    yet and InfluxDB knows no field of the dataset, yet the window is covered and must be
    built with the contract's columns."""
    p = pipeline
    requests.post(f"{influx_url}/query", data={"q": f'DROP DATABASE "{influx_database}"'}, timeout=10).raise_for_status()
    empty = p.payload().slice(0, 0)
    command = p.command(p.write_payload(empty))
    exporter_queue = p.bind_exporter("itest")

    meta = output_metadata(p.ingest(command))
    assert (meta["outcome"], meta["rows_in"], meta["rows_written"], meta["dropped_by_reason"]) == ("ingested", 0, 0, {})
    assert p.ledger.status(str(command.id)) == "done"

    [request] = p.coordinator_tick()
    assert request.run_key == expected_run_key(command.id)
    assert p.run_build(request).success

    [announcement] = p.drain(exporter_queue, expect=1)
    location = DataSetAvailableEvent.model_validate_json(announcement.body).dataset_location
    dataset = p.store.read_table(location)
    assert dataset.num_rows == 0
    assert_contract_schema(dataset)
    exported = pq.read_table(pa.BufferReader(p.store.read_bytes(export_key("geoparquet", DATASET, WINDOW, SPAN, "parquet"))))
    assert exported.num_rows == 0
    assert p.coordinator_tick() == []
