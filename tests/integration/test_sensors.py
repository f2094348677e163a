"""The sensors of the real code location, evaluated against a real Dagster instance and the
local RabbitMQ, Redis and InfluxDB.

What is under test is what the daemon would do on each tick: what leaves the broker, what
is dead-lettered and how, what is staged in Redis, and which RunRequests come back (their
run keys above all, because Dagster's run-key dedupe is what makes a re-evaluated tick
harmless).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ionbeam_dagster.broker import HEADER_ERROR, HEADER_ERROR_CODE
from ionbeam_dagster.catalog import DEFAULT_CATALOG_PATH, load_catalog
from ionbeam_dagster.contracts import MAX_MESSAGE_BYTES, IngestDataCommand
from ionbeam_dagster.coordinator import RetryPolicy
from ionbeam_dagster.definitions import build_definitions
from ionbeam_dagster.errors import CatalogError
from ionbeam_dagster.readiness import event_set_hash
from ionbeam_dagster.resources import InfluxResource, ObjectStoreResource
from ionbeam_dagster.windows import partition_key
from ionbeam_dagster.windowstate import window_id
from sensors.ingestion import ingest_request_key
from sensors.runs import REQUEST_TAG
from tests.conftest import free_port
from tests.pipeline_harness import DATASET, WINDOW, Pipeline, close_pipeline, make_pipeline, with_resources

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]


@pytest.fixture
def pipeline(
    pipeline_services: dict[str, Any],
) -> Iterator[Pipeline]:
    p = make_pipeline(
        **pipeline_services,
    )
    yield p
    close_pipeline(p)


def good_command(p: Pipeline) -> IngestDataCommand:
    # The payload need not exist: the sensor never looks at it.
    return p.command(f"raw/{DATASET}/{uuid.uuid4().hex}.parquet")


def mutated(p: Pipeline, change: Callable[[dict[str, Any]], None]) -> bytes:
    body = json.loads(good_command(p).model_dump_json())
    change(body)
    return json.dumps(body).encode()


# ---------------------------------------------------------------- the code location


def test_the_shipped_catalog_makes_a_loadable_code_location() -> None:
    """What `dagster dev` and the daemon load: every dataset's assets and build job, the
    ingest and smoke jobs, the sensors, and every data source's asset, job and schedule."""
    defs = build_definitions(load_catalog(DEFAULT_CATALOG_PATH))
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {"ingest", "smoke", "build_synthetic", "synthetic_source"} <= set(repo.job_names)
    assert {"build_sensor_community", "sensor_community_source", "sensor_community_live_source"} <= set(repo.job_names)
    assert {"ingestion_sensor", "coordinator_sensor", "source_start_sensor"} <= {s.name for s in repo.sensor_defs}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert {
        "synthetic_source_schedule",
        "sensor_community_source_schedule",
        "sensor_community_live_source_schedule",
    } <= set(schedules)
    # Only the demo source runs by default: the others reach third-party services.
    running = {n for n, s in schedules.items() if s.default_status == dg.DefaultScheduleStatus.RUNNING}
    assert running == {"synthetic_source_schedule"}
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"synthetic/dataset", "synthetic/geoparquet", "sources/synthetic"} <= keys
    assert {"sensor_community/dataset", "sources/sensor_community", "sources/sensor_community_live"} <= keys


def test_an_invalid_catalog_fails_the_load_naming_the_entry_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "datasets.yaml"
    path.write_text(
        "datasets:\n"
        "  - name: fine\n    aggregation_span: PT10M\n    start: 2026-01-01T00:00:00Z\n"
        "  - name: odd_span\n    aggregation_span: PT7M\n    start: 2026-01-01T00:00:00Z\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert "datasets[1] (odd_span)" in message
    assert "aggregation_span" in message and "PT7M" in message
    assert "fine" not in message  # only the broken entry is blamed


# ---------------------------------------------------------------- ingestion sensor: dead letters


def _bad_name(body: dict[str, Any]) -> None:
    body["metadata"]["dataset"]["name"] = "Bad-Name"


def _no_location(body: dict[str, Any]) -> None:
    del body["payload_location"]


def _version_2(body: dict[str, Any]) -> None:
    body["metadata"]["version"] = 2


def _empty_range(body: dict[str, Any]) -> None:
    body["end_time"] = body["start_time"]


def _unknown_dataset(body: dict[str, Any]) -> None:
    body["metadata"]["dataset"]["name"] = "nosuch"


def _hourly(body: dict[str, Any]) -> None:
    body["metadata"]["dataset"]["aggregation_span"] = "PT1H"


def _location(location: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["payload_location"] = location

    return change


def _huge(body: dict[str, Any]) -> None:
    # Valid in every other respect: only its size is wrong.
    body["metadata"]["dataset"]["description"] = "x" * MAX_MESSAGE_BYTES


# (id, how to break a good command, code, text the x-ionbeam-error sentence must contain)
SENSOR_REJECTIONS: list[tuple[str, Callable[[dict[str, Any]], None] | bytes, str, tuple[str, ...]]] = [
    ("not-json", b'{"id": "0f0b", "metadata": ', "malformed_json", ("body", "not JSON")),
    ("json-array", b"[1, 2]", "malformed_json", ("body", "array")),
    ("not-utf8", b'{"id": "\xff"}', "malformed_json", ("body", "UTF-8")),
    ("missing-field", _no_location, "invalid_message", ("payload_location",)),
    ("bad-dataset-name", _bad_name, "invalid_message", ("metadata.dataset.name", "Bad-Name", "^[a-z]")),
    ("version-2", _version_2, "unsupported_version", ("metadata.version", "2")),
    ("empty-range", _empty_range, "invalid_time_range", ("start_time", "end_time")),
    ("unknown-dataset", _unknown_dataset, "unknown_dataset", ("metadata.dataset.name", "nosuch")),
    ("span-mismatch", _hourly, "dataset_mismatch", ("metadata.dataset.aggregation_span", "PT1H", "PT10M")),
    ("dot-dot", _location("../x"), "invalid_payload_location", ("payload_location", "'..'")),
    ("dot-dot-inside", _location("raw/../../x.parquet"), "invalid_payload_location", ("payload_location",)),
    ("other-scheme", _location("s3://elsewhere/raw/x.parquet"), "invalid_payload_location", ("payload_location", "scheme")),
    ("outside-root", _location("file:///etc/passwd"), "invalid_payload_location", ("payload_location", "outside")),
    ("too-large", _huge, "message_too_large", ("body", str(MAX_MESSAGE_BYTES))),
]


@pytest.mark.parametrize(
    ("breaks", "code", "names"), [c[1:] for c in SENSOR_REJECTIONS], ids=[c[0] for c in SENSOR_REJECTIONS]
)
def test_a_bad_command_is_dead_lettered_unchanged_with_its_code_and_reason(
    pipeline: Pipeline, breaks: Callable[[dict[str, Any]], None] | bytes, code: str, names: tuple[str, ...]
) -> None:
    p = pipeline
    bad = breaks if isinstance(breaks, bytes) else mutated(p, breaks)
    good = good_command(p)
    p.publish(bad)
    p.publish(good)

    requests = p.ingestion_tick()

    [dead] = p.dead_letters(expect=1)
    assert dead.body == bad  # byte for byte, so an operator can re-publish it as it was
    assert dead.headers[HEADER_ERROR_CODE] == code
    reason = dead.headers[HEADER_ERROR]
    assert isinstance(reason, str) and reason
    for text in names:
        assert text in reason, f"{reason!r} does not mention {text!r}"
    # The good command behind it was staged and requested, and the queue is empty (all acked).
    assert [r.run_key for r in requests] == [ingest_request_key(str(good.id), 0)]
    assert p.ledger.pending() == [str(good.id)]
    assert p.broker.message_count(p.topology.ingestion_queue) == 0


def test_another_bucket_is_refused_by_an_s3_store(
    pipeline_services: dict[str, Any],
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    p = make_pipeline(
        **pipeline_services,
        objects=ObjectStoreResource(url=f"s3://{s3_bucket}/store", s3_endpoint=s3_endpoint),
    )
    try:
        elsewhere = mutated(p, _location(f"s3://{s3_bucket}-other/store/raw/x.parquet"))
        outside = mutated(p, _location(f"s3://{s3_bucket}/other-prefix/raw/x.parquet"))
        inside = good_command(p).model_copy(update={"payload_location": f"s3://{s3_bucket}/store/raw/x.parquet"})
        p.publish(elsewhere)
        p.publish(outside)
        p.publish(inside)
        requests = p.ingestion_tick()
        dead = p.dead_letters(expect=2)
        assert [d.body for d in dead] == [elsewhere, outside]
        assert {d.headers[HEADER_ERROR_CODE] for d in dead} == {"invalid_payload_location"}
        assert "bucket" in dead[0].headers[HEADER_ERROR] and "payload_location" in dead[0].headers[HEADER_ERROR]
        assert "outside the store root" in dead[1].headers[HEADER_ERROR]
        assert [r.tags["ionbeam/command_id"] for r in requests] == [str(inside.id)]
    finally:
        close_pipeline(p)


def test_bad_commands_never_block_the_good_ones_behind_them(pipeline: Pipeline) -> None:
    p = pipeline
    bad1 = b"not json at all"
    good1 = good_command(p)
    bad2 = mutated(p, _unknown_dataset)
    good2 = good_command(p)
    for body in (bad1, good1, bad2, good2):
        p.publish(body)

    requests = p.ingestion_tick()

    assert [d.body for d in p.dead_letters(expect=2)] == [bad1, bad2]
    assert p.ledger.pending() == [str(good1.id), str(good2.id)]  # staging order = arrival order
    assert [r.run_key for r in requests] == [ingest_request_key(str(good1.id), 0), ingest_request_key(str(good2.id), 0)]
    for request, command in zip(requests, (good1, good2)):
        assert request.run_config == {"ops": {"ingest_command": {"config": {"command_id": str(command.id)}}}}
        assert request.tags[REQUEST_TAG] == request.run_key
    assert p.broker.message_count(p.topology.ingestion_queue) == 0


# ---------------------------------------------------------------- ingestion sensor: redelivery


def test_a_command_delivered_twice_is_staged_once_and_requested_once(pipeline: Pipeline) -> None:
    p = pipeline
    command = good_command(p)
    body = p.publish(command)
    p.publish(body)  # a redelivery, or a source that retried its publish

    requests = p.ingestion_tick()

    assert [r.run_key for r in requests] == [ingest_request_key(str(command.id), 0)]
    assert p.ledger.pending() == [str(command.id)]
    assert p.ledger.body(str(command.id)) == body
    assert p.dead_letters() == []  # a duplicate is not an error
    assert p.broker.message_count(p.topology.ingestion_queue) == 0


def test_a_tick_that_did_not_launch_its_run_requests_the_same_run_key_again(pipeline: Pipeline) -> None:
    """Runs are derived from Redis, not from the messages: a tick whose RunRequest was lost
    (the tick timed out) asks again with the same key, which Dagster dedupes."""
    p = pipeline
    command = good_command(p)
    p.publish(command)
    first = p.ingestion_tick()
    second = p.ingestion_tick()  # nothing new on the queue
    assert [r.run_key for r in first] == [r.run_key for r in second] == [ingest_request_key(str(command.id), 0)]


# ---------------------------------------------------------------- coordinator sensor


def test_a_re_evaluated_coordinator_tick_requests_the_same_run_key_and_a_failed_build_is_retried(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    policy = RetryPolicy()  # what the sensor uses
    key = p.write_payload(p.payload())
    command = p.command(key)
    p.ingest(command)
    versioned = f"{DATASET}|{window_id(WINDOW)}|{event_set_hash([str(command.id)])[:16]}"
    run_key = f"{versioned}|0"

    [first] = p.coordinator_tick()
    assert (first.run_key, first.partition_key, first.job_name) == (run_key, partition_key(WINDOW), f"build_{DATASET}")

    # Not launched (the tick's result was lost): once the poll interval has passed, the
    # same key is requested again; Dagster launches at most one run per key.
    time.sleep(policy.poll.total_seconds() + 0.1)
    [again] = p.coordinator_tick()
    assert again.run_key == run_key
    assert again.tags == first.tags

    # The build run fails: InfluxDB does not answer on this port.
    broken = with_resources(
        p.defs, {**p.resources, "influx": InfluxResource(url=f"http://127.0.0.1:{free_port()}", database="x")}
    )
    failed = p.run_build(again, defs=broken)
    assert not failed.success
    assert failed.dagster_run.status == dg.DagsterRunStatus.FAILURE

    time.sleep(policy.poll.total_seconds() + 0.1)
    assert p.coordinator_tick() == []  # the failure is noticed, and the retry waits for its backoff
    request = p.windows.request(DATASET, WINDOW)
    assert request is not None and request.attempt == 1 and request.error == "build run failed"
    assert p.coordinator_tick() == []

    time.sleep(policy.delay(1).total_seconds() + 0.1)
    [retry] = p.coordinator_tick()
    assert retry.run_key == f"{versioned}|1"
    assert retry.tags["ionbeam/attempt"] == "1"
    assert retry.partition_key == partition_key(WINDOW)

    assert p.run_build(retry).success
    built = p.windows.built(DATASET, WINDOW)
    assert built is not None and built.hash == event_set_hash([str(command.id)])
    assert p.coordinator_tick() == []  # up to date
