"""Data sources through the whole pipeline, on real services and a real Dagster instance.

The networks are recorded responses in their real formats, served by a local HTTP server:
the shared Sensor.Community archive files (read by path, never copied) behind a generated
Apache index page, and a live-API JSON response written here. Every step is the one the
daemon would take: the source's run, the ingestion sensor's tick and the ingest run, the
coordinator's tick and the build runs; sensors and schedules are evaluated against the same
Dagster instance the runs are recorded in.
"""

from __future__ import annotations

import contextvars
import csv
import gzip
import json
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.sources import source_job_name, source_schedule_name
from ionbeam_dagster.broker import HEADER_ERROR, HEADER_ERROR_CODE
from ionbeam_dagster.contracts import IngestDataCommand, StartSourceCommand, to_json_bytes
from ionbeam_dagster.definitions import build_definitions
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.sources.sensor_community import DATASET, sensor_community_ingestion_map
from ionbeam_dagster.windows import Window, windows_overlapping
from sensors.sources import LEDGER_NAMESPACE, SENSOR_NAME, start_request_key
from tests.local_http import LocalServer, Reply, index_page, local_server
from tests.pipeline_harness import CATALOG_YAML, Pipeline, close_pipeline, make_pipeline, output_metadata

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

DAY = date(2017, 8, 30)
DAY_START = datetime(2017, 8, 30, tzinfo=UTC)
SDS = "2017-08-30_sds011_sensor_5331.csv"
DHT = "2017-08-30_dht22_sensor_5332.csv"
CATALOG = CATALOG_YAML + """\
  - name: sensor_community
    description: integration-test copy of the Sensor.Community dataset
    aggregation_span: PT1H
    subject_to_change_window: P1D
    start: 2015-10-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
    station_column: sensor_id
    licence: ODbL-1.0
    attribution: Contains data from Sensor.Community, made available under the ODbL 1.0.
"""
PM10 = "mass_concentration_of_pm10_ambient_aerosol_particles_in_air__ug m-3__2.0__point__PT0S"
PM25 = "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air__ug m-3__2.0__point__PT0S"
TEMPERATURE = "air_temperature__degC__2.0__point__PT0S"
HUMIDITY = "relative_humidity__percent__2.0__point__PT0S"
PRESSURE = "air_pressure__Pa__0.0__point__PT0S"
MSLP = "air_pressure_at_mean_sea_level__Pa__0.0__point__PT0S"
CSV_TO_CANONICAL = {"P1": PM10, "P2": PM25, "temperature": TEMPERATURE, "humidity": HUMIDITY}


# ---------------------------------------------------------------- the recorded archive


def archive_day(server: LocalServer, fixtures: Path, day: date = DAY, *, gz: bool, files: tuple[str, ...] = (SDS, DHT)) -> str:
    """Serve ``day`` as the archive does (years up to 2023 under /YYYY/), from the shared files;
    returns the directory's path."""
    directory = f"/{day.year}/{day.isoformat()}/"
    listed = []
    for name in files:
        data = (fixtures / "sensor_community" / name).read_bytes()
        served = name + ".gz" if gz else name
        body = gzip.compress(data, mtime=0) if gz else data
        server.route(directory + served, Reply(200, body, {"Content-Type": "application/gzip" if gz else "text/csv"}))
        listed.append((served, len(body)))
    server.route(directory, Reply(200, index_page(directory, listed), {"Content-Type": "text/html;charset=UTF-8"}))
    return directory


def recorded_rows(fixtures: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name in (SDS, DHT):
        with (fixtures / "sensor_community" / name).open(newline="") as f:
            rows.extend(csv.DictReader(f, delimiter=";"))
    return rows


def observed(row: dict[str, str]) -> bool:
    return any(row.get(c) for c in CSV_TO_CANONICAL)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def archive() -> Iterator[LocalServer]:
    with local_server() as server:
        yield server


@pytest.fixture
def pipeline(
    pipeline_services: dict[str, Any],
    archive: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    # Sources read their settings from the environment when the code location is built.
    monkeypatch.setenv("IONBEAM_SENSOR_COMMUNITY_ARCHIVE_URL", archive.url)
    monkeypatch.setenv("IONBEAM_SENSOR_COMMUNITY_LIVE_URL", archive.url + "static/v1/data.json")
    p = make_pipeline(
        **pipeline_services,
        catalog_text=CATALOG,
    )
    # The source sensor declares these on its first tick; the test publishes before that.
    # Declared through the test's broker, they are deleted with the rest by close_pipeline.
    p.broker.declare(sources=["synthetic", "sensor_community", "sensor_community_live"])
    yield p
    close_pipeline(p)


# ---------------------------------------------------------------- helpers


def run_source(p: Pipeline, name: str, partition: str, **config: Any) -> dg.ExecuteInProcessResult:
    job = p.defs.resolve_job_def(source_job_name(name))
    run_config = {"ops": {f"sources__{name}": {"config": config}}} if config else None
    return job.execute_in_process(partition_key=partition, run_config=run_config, instance=p.instance, raise_on_error=False)


def run_request(p: Pipeline, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    assert request.job_name
    job = p.defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        partition_key=request.partition_key,
        run_config=dict(request.run_config),
        tags=request.tags,
        instance=p.instance,
        raise_on_error=False,
    )


def materialization(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Metadata of the run's materialization (a range run records one per partition, the same)."""
    events = result.get_asset_materialization_events()
    assert events
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def published_commands(p: Pipeline, expect: int) -> list[IngestDataCommand]:
    """The IngestDataCommands on the ingestion queue, left there for the ingestion sensor."""
    deliveries = p.broker.get_batch(p.topology.ingestion_queue, 100)
    for d in deliveries:
        p.broker.requeue(d)
    commands = [IngestDataCommand.model_validate_json(d.body) for d in deliveries]
    assert len(commands) == expect, commands
    return commands


def ingest_all(p: Pipeline) -> list[dict[str, Any]]:
    results = []
    for request in p.ingestion_tick():
        result = p.run_ingest(request)
        assert result.success
        results.append(output_metadata(result))
    return results


def build_all(p: Pipeline) -> list[dg.RunRequest]:
    requests = p.coordinator_tick()
    for request in requests:
        assert p.run_build(request).success, request.partition_key
    return requests


def dataset_window(p: Pipeline, window: Window) -> pa.Table:
    record = p.windows.built(DATASET, window)
    assert record is not None, f"{window} was not built"
    return p.store.read_table(record.location)


def start_command(name: str, start: datetime, end: datetime, source_name: str | None = None) -> StartSourceCommand:
    return StartSourceCommand(id=uuid.uuid4(), source_name=source_name or name, start_time=start, end_time=end)


def publish_start(p: Pipeline, name: str, body: bytes | StartSourceCommand) -> bytes:
    raw = to_json_bytes(body) if isinstance(body, StartSourceCommand) else body
    p.broker.publish_start_source(name, raw)
    return raw


def source_tick(p: Pipeline) -> list[dg.RunRequest]:
    return list(p.tick(SENSOR_NAME).run_requests or [])


def isolated(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a copy of the current context. Schedule contexts need a persistent
    instance, and entering one (instance_for_test, or the context reaching it through its ref)
    sets a Dagster context variable that is never reset: later code locations in this process
    would then fail on the disposed instance."""
    contextvars.copy_context().run(fn)


# ---------------------------------------------------------------- the archive, end to end


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_an_archive_day_ingests_and_its_windows_hold_the_recorded_observations(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path, gz: bool
) -> None:
    p = pipeline
    archive_day(archive, fixtures_dir, gz=gz)

    run = run_source(p, "sensor_community", "2017-08-30")
    assert run.success
    meta = materialization(run)
    assert meta["rows"] == 306 + 304
    assert meta["stations"] == 2
    assert meta["start"] == "2017-08-30T00:00:00Z" and meta["end"] == "2017-08-31T00:00:00Z"
    assert meta["fetch"]["files_read"] == 2

    [command] = published_commands(p, 1)
    assert (command.start_time, command.end_time) == (DAY_START, DAY_START + timedelta(days=1))
    assert command.payload_location == meta["payload"]
    assert command.payload_location.startswith("raw/sensor_community/20170830T000000Z-20170831T000000Z_")
    assert command.metadata.ingestion_map == sensor_community_ingestion_map()
    payload = pq.read_table(pa.BufferReader(p.store.read_bytes(command.payload_location)))
    assert payload.schema.metadata[b"ionbeam.source"] == b"sensor_community"

    [ingested] = ingest_all(p)
    # The duplicated 11:27:23 of the SDS011: its second copy has every value empty, so it is
    # dropped as no_values (before the duplicate check), and the first copy is kept.
    assert ingested["rows_in"] == 610
    assert ingested["dropped_by_reason"] == {"no_values": 1}
    assert ingested["rows_written"] == 609

    requests = build_all(p)
    day_windows = windows_overlapping(DAY_START, DAY_START + timedelta(days=1), timedelta(hours=1))
    assert sorted(r.partition_key for r in requests) == sorted(w.start.strftime("%Y-%m-%dT%H:%M") for w in day_windows)

    built = pa.concat_tables([dataset_window(p, w) for w in day_windows], promote_options="default")
    assert [dataset_window(p, w).num_rows for w in day_windows[:11]] == [0] * 11  # the files start at 11:27
    expected = [r for r in recorded_rows(fixtures_dir) if observed(r)]
    assert built.num_rows == len(expected) == 609
    by_key = {(row["timestamp"], row["sensor_id"]): row for row in built.to_pylist()}
    for row in expected:
        stored = by_key[(datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC), row["sensor_id"])]
        assert stored["sensor_type"] == row["sensor_type"] and stored["location"] == row["location"]
        assert stored["latitude"] == float(row["lat"]) and stored["longitude"] == float(row["lon"])
        for column, canonical in CSV_TO_CANONICAL.items():
            value = row.get(column)
            if value:
                assert stored[canonical] == float(value), (row, canonical)
            else:
                assert stored[canonical] is None or math.isnan(stored[canonical])
    # The one empty copy did not overwrite the observation recorded at the same time.
    first = by_key[(datetime(2017, 8, 30, 11, 27, 23, tzinfo=UTC), "5331")]
    assert (first[PM10], first[PM25]) == (9.53, 2.83)
    # Every declared variable is a column, observed or not (no BME280 here).
    assert {PRESSURE, MSLP} <= set(built.column_names)


def test_a_429_with_retry_after_delays_the_fetch_and_it_still_succeeds(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path
) -> None:
    p = pipeline
    directory = archive_day(archive, fixtures_dir, gz=False)
    index = archive.routes[directory]
    assert isinstance(index, list)
    archive.route(directory, Reply(429, b"Too Many Requests", {"Retry-After": "1"}), *index)

    run = run_source(p, "sensor_community", "2017-08-30")

    assert run.success
    first, second = archive.requests_to(directory)[:2]
    assert second.at - first.at >= 0.95
    assert materialization(run)["rows"] == 610


def test_a_day_with_no_observations_publishes_a_zero_row_payload_that_covers_its_windows(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path
) -> None:
    p = pipeline
    archive_day(archive, fixtures_dir, date(2017, 8, 31), gz=False, files=())

    run = run_source(p, "sensor_community", "2017-08-31")
    assert run.success
    assert materialization(run)["rows"] == 0
    [command] = published_commands(p, 1)
    payload = p.store.read_table(command.payload_location)
    assert payload.num_rows == 0
    assert set(payload.column_names) >= {"timestamp", "lat", "lon", "P1", "P2", "P0", "sensor_id"}

    [ingested] = ingest_all(p)
    assert ingested["rows_in"] == 0 and ingested["rows_written"] == 0
    # The range counts as covered: all 24 windows of the day are built, empty, with every column.
    requests = build_all(p)
    assert len(requests) == 24
    window = Window(datetime(2017, 8, 31, 5, tzinfo=UTC), datetime(2017, 8, 31, 6, tzinfo=UTC))
    table = dataset_window(p, window)
    assert table.num_rows == 0 and {PM10, HUMIDITY, "sensor_id"} <= set(table.column_names)


def test_a_day_the_archive_does_not_have_fails_the_run_instead_of_claiming_it_empty(pipeline: Pipeline) -> None:
    run = run_source(pipeline, "sensor_community", "2017-09-01")
    assert not run.success
    failure = next(e for e in run.all_events if e.is_step_failure)
    assert "no directory for 2017-09-01" in str(failure.event_specific_data.error)  # type: ignore[union-attr]
    assert pipeline.broker.message_count(pipeline.topology.ingestion_queue) == 0


# ---------------------------------------------------------------- StartSourceCommand


def test_a_start_source_command_runs_the_source_for_exactly_its_range(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path
) -> None:
    p = pipeline
    archive_day(archive, fixtures_dir, gz=True)
    start, end = datetime(2017, 8, 30, 11, tzinfo=UTC), datetime(2017, 8, 30, 12, tzinfo=UTC)
    command = start_command("sensor_community", start, end)
    body = publish_start(p, "sensor_community", command)
    publish_start(p, "sensor_community", body)  # delivered twice: one run

    [request] = source_tick(p)

    ledger_id = f"sensor_community:{command.id}"
    assert request.run_key == start_request_key(ledger_id, 0)
    assert request.job_name == "sensor_community_source" and request.partition_key == "2017-08-30"
    ledger = IngestionLedger(p.redis, p.prefix, namespace=LEDGER_NAMESPACE)
    assert ledger.pending() == [ledger_id]
    assert p.broker.message_count(p.topology.source_start_queue("sensor_community")) == 0  # acked once staged
    assert source_tick(p) == [request]  # not launched yet: asked again, same run key (Dagster dedupes)

    run = run_request(p, request)
    assert run.success
    [published] = published_commands(p, 1)
    assert (published.start_time, published.end_time) == (start, end)
    payload = p.store.read_table(published.payload_location)
    times = payload.column("timestamp").to_pylist()
    assert times and all(start <= t < end for t in times)
    expected = [r for r in recorded_rows(fixtures_dir) if "2017-08-30T11:" in r["timestamp"]]
    assert payload.num_rows == len(expected)
    assert materialization(run)["start_command_id"] == str(command.id)

    assert source_tick(p) == []  # the run succeeded: the command is done
    assert ledger.status(ledger_id) == "done"


def test_a_start_source_command_over_several_days_is_one_run_over_a_partition_range(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path
) -> None:
    p = pipeline
    archive_day(archive, fixtures_dir, gz=False)
    archive_day(archive, fixtures_dir, date(2017, 8, 31), gz=False, files=())
    command = start_command("sensor_community", datetime(2017, 8, 30, 18, tzinfo=UTC), datetime(2017, 8, 31, 6, tzinfo=UTC))
    publish_start(p, "sensor_community", command)

    [request] = source_tick(p)
    assert request.partition_key is None
    assert request.tags["dagster/asset_partition_range_start"] == "2017-08-30"
    assert request.tags["dagster/asset_partition_range_end"] == "2017-08-31"

    run = run_request(p, request)
    assert run.success
    assert len(run.get_asset_materialization_events()) == 2  # one per partition of the range
    assert materialization(run)["payloads"] == 2
    first, second = sorted(published_commands(p, 2), key=lambda c: c.start_time)
    assert (first.start_time, first.end_time) == (datetime(2017, 8, 30, 18, tzinfo=UTC), datetime(2017, 8, 31, tzinfo=UTC))
    assert (second.start_time, second.end_time) == (datetime(2017, 8, 31, tzinfo=UTC), datetime(2017, 8, 31, 6, tzinfo=UTC))
    assert p.store.read_table(second.payload_location).num_rows == 0


def _mismatch(p: Pipeline) -> bytes:
    return to_json_bytes(start_command("sensor_community", DAY_START, DAY_START + timedelta(hours=1), source_name="netatmo"))


def _empty_range(p: Pipeline) -> bytes:
    return to_json_bytes(start_command("sensor_community", DAY_START, DAY_START))


def _before_history(p: Pipeline) -> bytes:
    return to_json_bytes(start_command("sensor_community", datetime(2014, 1, 1, tzinfo=UTC), datetime(2014, 1, 2, tzinfo=UTC)))


def _future(p: Pipeline) -> bytes:
    now = datetime.now(UTC)
    return to_json_bytes(start_command("sensor_community", now + timedelta(days=1), now + timedelta(days=2)))


def _too_long(p: Pipeline) -> bytes:
    return to_json_bytes(start_command("sensor_community", datetime(2016, 1, 1, tzinfo=UTC), datetime(2018, 1, 1, tzinfo=UTC)))


START_REJECTIONS = [
    ("not-json", lambda p: b"{nope", "malformed_json", ("body",)),
    ("missing-field", lambda p: json.dumps({"id": str(uuid.uuid4()), "source_name": "sensor_community"}).encode(),
     "invalid_message", ("start_time",)),
    ("other-source", _mismatch, "source_mismatch", ("source_name", "netatmo")),
    ("empty-range", _empty_range, "invalid_time_range", ("start_time", "end_time")),
    ("before-history", _before_history, "invalid_time_range", ("end_time", "2015-10-01")),
    ("future", _future, "invalid_time_range", ("future",)),
    ("too-long", _too_long, "invalid_time_range", ("partitions", "backfill")),
]


@pytest.mark.parametrize(("make", "code", "names"), [r[1:] for r in START_REJECTIONS], ids=[r[0] for r in START_REJECTIONS])
def test_a_bad_start_source_command_is_dead_lettered_with_its_reason(
    pipeline: Pipeline, make: Any, code: str, names: tuple[str, ...]
) -> None:
    p = pipeline
    bad = make(p)
    good = start_command("sensor_community", DAY_START, DAY_START + timedelta(hours=1))
    publish_start(p, "sensor_community", bad)
    publish_start(p, "sensor_community", good)

    requests = source_tick(p)

    [dead] = p.dead_letters(expect=1)
    assert dead.body == bad
    assert dead.headers[HEADER_ERROR_CODE] == code
    for text in names:
        assert text in dead.headers[HEADER_ERROR], dead.headers[HEADER_ERROR]
    assert [r.tags["ionbeam/start_command"] for r in requests] == [str(good.id)]


def test_a_live_range_in_the_past_is_refused_as_not_available(pipeline: Pipeline) -> None:
    p = pipeline
    now = datetime.now(UTC)
    publish_start(p, "sensor_community_live", start_command("sensor_community_live", now - timedelta(hours=2), now - timedelta(hours=1)))
    assert source_tick(p) == []
    [dead] = p.dead_letters(expect=1)
    assert dead.headers[HEADER_ERROR_CODE] == "range_not_available"
    assert "archive" in dead.headers[HEADER_ERROR]


def test_a_failing_start_command_is_retried_then_dead_lettered_as_fetch_failed(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sensors.sources as source_sensor

    monkeypatch.setattr(source_sensor, "RETRY_BASE_SECONDS", 0.0)
    p = pipeline
    # No archive directory is served: every run fails with a 404.
    command = start_command("sensor_community", DAY_START, DAY_START + timedelta(hours=1))
    body = publish_start(p, "sensor_community", command)
    keys = []
    for _ in range(source_sensor.MAX_ATTEMPTS):
        [request] = source_tick(p)
        keys.append(request.run_key)
        assert not run_request(p, request).success
    assert source_tick(p) == []
    assert keys == [start_request_key(f"sensor_community:{command.id}", n) for n in range(source_sensor.MAX_ATTEMPTS)]
    [dead] = p.dead_letters(expect=1)
    assert dead.body == body
    assert dead.headers[HEADER_ERROR_CODE] == "fetch_failed"


# ---------------------------------------------------------------- the live API


def live_record(measured: datetime, sensor: int, values: dict[str, Any], *, indoor: int = 0, kind: str = "SDS011") -> dict[str, Any]:
    """One record as data.sensor.community/static/v1/data.json sends it: strings for numbers,
    except the server-computed pressure_at_sealevel."""
    return {
        "id": 16169042323 + sensor,
        "sampling_rate": None,
        "timestamp": measured.strftime("%Y-%m-%d %H:%M:%S"),
        "location": {
            "id": 66539 + sensor,
            "latitude": "50.13252000000",
            "longitude": "13.99531250000",
            "altitude": "416.0",
            "country": "CZ",
            "exact_location": 1,
            "indoor": indoor,
        },
        "sensor": {"id": 77456 + sensor, "pin": "11", "sensor_type": {"id": 17, "name": kind, "manufacturer": "Bosch"}},
        "sensordatavalues": [
            {"id": 36451229742 + i, "value": v, "value_type": k} for i, (k, v) in enumerate(values.items())
        ],
    }


def test_the_live_feed_is_ingested_for_its_partition(pipeline: Pipeline, archive: LocalServer) -> None:
    p = pipeline
    now = datetime.now(UTC)
    span = timedelta(minutes=5)
    partition_start = datetime.fromtimestamp((now.timestamp() // 300) * 300, UTC) - span  # the last complete one
    inside = partition_start + timedelta(minutes=2, seconds=7)
    records = [
        live_record(inside, 1, {"temperature": "20.84", "pressure": "97294.09", "humidity": "36.35",
                                "pressure_at_sealevel": 102089.58}, kind="BME280"),
        live_record(inside, 2, {"P1": "6.90", "P2": "3.40"}),
        live_record(inside, 3, {"P1": "unknown", "P2": "1.10"}),
        live_record(inside, 4, {"temperature": "25.00"}, indoor=1, kind="DHT22"),  # indoor: left out
        live_record(partition_start - timedelta(minutes=1), 5, {"P1": "1.0"}),  # before the partition
        live_record(inside, 6, {"noise_LAeq": "48.2"}, kind="DNMS"),  # nothing we map
    ]
    archive.route("/static/v1/data.json", Reply(200, json.dumps(records).encode(), {"Content-Type": "application/json"}))

    run = run_source(p, "sensor_community_live", partition_start.strftime("%Y-%m-%dT%H:%M"))
    assert run.success, [str(e.event_specific_data) for e in run.all_events if e.is_step_failure]
    [command] = published_commands(p, 1)
    assert (command.start_time, command.end_time) == (partition_start, partition_start + span)
    [ingested] = ingest_all(p)
    assert ingested["rows_written"] == 3

    stored = _influx_rows(p, partition_start, partition_start + span)
    by_sensor = {r["sensor_id"]: r for r in stored}
    assert set(by_sensor) == {"77457", "77458", "77459"}
    bme = by_sensor["77457"]
    assert (bme[TEMPERATURE], bme[HUMIDITY], bme[PRESSURE], bme[MSLP]) == (20.84, 36.35, 97294.09, 102089.58)
    assert bme["sensor_type"] == "BME280" and bme["location"] == "66540"
    assert (by_sensor["77458"][PM10], by_sensor["77458"][PM25]) == (6.9, 3.4)
    assert by_sensor["77459"][PM10] is None and by_sensor["77459"][PM25] == 1.1


def _influx_rows(p: Pipeline, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The dataset's points in [start, end), as the build reads them."""
    window = Window(start, end)
    batches = p.influx.read_window(
        DATASET, window.start_ns, window.end_ns, field_columns=[PM10, PM25, TEMPERATURE, HUMIDITY, PRESSURE, MSLP],
        tag_columns=["sensor_id", "sensor_type", "location"],
    )
    return pa.Table.from_batches(list(batches)).to_pylist()


# ---------------------------------------------------------------- schedules


def schedule_tick(instance: dg.DagsterInstance, defs: dg.Definitions, name: str, at: datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def(name)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()) as context:
        return list(schedule.evaluate_tick(context).run_requests or [])


def test_the_schedule_fetches_the_newest_due_partitions_once_and_retries_failures(
    pipeline: Pipeline, archive: LocalServer, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline
    job = p.defs.resolve_job_def(source_job_name("sensor_community"))
    name = source_schedule_name("sensor_community")
    # 2017-09-02 09:00 UTC: with the default 10 h lag, 08-31 is the newest due day.
    at = datetime(2017, 9, 2, 9, tzinfo=UTC)

    def scenario() -> None:
        with dg.instance_for_test() as instance:
            requests = schedule_tick(instance, p.defs, name, at)
            assert [r.partition_key for r in requests] == ["2017-08-29", "2017-08-30", "2017-08-31"]
            assert [r.run_key for r in requests] == ["2017-08-29|0", "2017-08-30|0", "2017-08-31|0"]

            archive_day(archive, fixtures_dir, gz=False)  # only 08-30 exists
            for request in requests:
                job.execute_in_process(
                    partition_key=request.partition_key, tags=request.tags, instance=instance, raise_on_error=False
                )
            # 08-30 is fetched; the two days that failed come back with a new attempt number.
            assert [(r.partition_key, r.run_key) for r in schedule_tick(instance, p.defs, name, at)] == [
                ("2017-08-29", "2017-08-29|1"),
                ("2017-08-31", "2017-08-31|1"),
            ]

            # IONBEAM_SOURCE_LAG_<NAME> moves the horizon: with P2D, 08-30 is the newest due
            # day (and it is fetched already), so 08-28 joins the days to fetch.
            monkeypatch.setenv("IONBEAM_SOURCE_LAG_SENSOR_COMMUNITY", "P2D")
            lagged = build_definitions(p.catalog)
            assert [(r.partition_key, r.run_key) for r in schedule_tick(instance, lagged, name, at)] == [
                ("2017-08-28", "2017-08-28|0"),
                ("2017-08-29", "2017-08-29|1"),
            ]

    isolated(scenario)


# ---------------------------------------------------------------- the demo source on the framework


def test_the_synthetic_source_publishes_through_the_framework(pipeline: Pipeline) -> None:
    p = pipeline
    run = run_source(p, "synthetic", "2026-03-01T00:00")
    assert run.success
    meta = materialization(run)
    assert (meta["rows"], meta["stations"]) == (500, 50)  # 50 fixed stations x 10 minutes
    [command] = published_commands(p, 1)
    assert (command.start_time, command.end_time) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
    assert command.payload_location.startswith("raw/synthetic/20260301T000000Z-20260301T001000Z_")
    [ingested] = ingest_all(p)
    assert ingested["rows_written"] == 500

    # Its schedule: every minute, the two newest complete windows, each once.
    def scenario() -> None:
        with dg.instance_for_test() as instance:
            requests = schedule_tick(instance, p.defs, "synthetic_source_schedule", datetime(2026, 3, 1, 0, 21, tzinfo=UTC))
            assert [(r.partition_key, r.run_key) for r in requests] == [
                ("2026-03-01T00:00", "2026-03-01T00:00|0"),
                ("2026-03-01T00:10", "2026-03-01T00:10|0"),
            ]

    isolated(scenario)
