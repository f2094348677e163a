"""The source framework without services: partitions, lag, schedules' defaults, payload
helpers, publishing rules, the registry and StartSourceCommand admission."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from ionbeam_dagster.catalog import parse_catalog
from ionbeam_dagster.contracts import DataIngestionMap, StartSourceCommand, to_json_bytes
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.http import HttpClient
from ionbeam_dagster.normalise import normalise
from ionbeam_dagster.sources import registered_sources
from ionbeam_dagster.sources.base import (
    Source,
    due_windows,
    empty_payload,
    fetch_notes,
    payload_schema,
    rows_in_range,
    schedule_running,
    source_lag,
    to_floats,
    with_fetch_notes,
)
from ionbeam_dagster.sources.commands import MAX_PARTITIONS_PER_COMMAND, StartPlan, admit_start
from ionbeam_dagster.sources.publish import build_command, check_payload_columns, payload_key
from ionbeam_dagster.sources.sensor_community import (
    SensorCommunityArchive,
    SensorCommunityLive,
    sensor_community_ingestion_map,
)
from ionbeam_dagster.windows import Window

DAY = datetime(2017, 8, 30, tzinfo=UTC)


class Hourly(Source):
    def __init__(self, **kwargs: object) -> None:
        identity: dict[str, object] = {
            "name": "hourly", "dataset": "x", "fetch_span": timedelta(hours=1), "start": datetime(2024, 1, 1, tzinfo=UTC),
        }
        super().__init__(**{**identity, **kwargs})  # type: ignore[arg-type]

    def ingestion_map(self) -> DataIngestionMap:
        return sensor_community_ingestion_map()

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = logging.getLogger()) -> pa.Table:
        return self.empty_table()


# ---------------------------------------------------------------- the framework


def test_a_source_refuses_a_span_cron_cannot_cut_and_a_start_off_a_boundary() -> None:
    with pytest.raises(ValueError, match="fetch_span: PT7M"):
        Hourly(fetch_span=timedelta(minutes=7))
    with pytest.raises(ValueError, match="start: .* is not a PT1H boundary"):
        Hourly(start=datetime(2024, 1, 1, 0, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="source name"):
        Hourly(name="Bad-Name")
    with pytest.raises(ValueError, match="dataset"):
        Hourly(dataset="Not A Dataset")


def test_due_windows_are_the_newest_complete_partitions_past_the_lag() -> None:
    source = Hourly(catch_up=3)
    now = datetime(2024, 1, 2, 10, 20, tzinfo=UTC)
    assert due_windows(source, now, timedelta(0)) == [
        Window(datetime(2024, 1, 2, h, tzinfo=UTC), datetime(2024, 1, 2, h + 1, tzinfo=UTC)) for h in (7, 8, 9)
    ]
    # 90 minutes of lag: 08:00-09:00 is due at 10:30, after now; 07:00-08:00 is the newest due.
    assert [w.start.hour for w in due_windows(source, now, timedelta(minutes=90))] == [5, 6, 7]
    # Never before the source's first partition.
    assert [w.start for w in due_windows(source, datetime(2024, 1, 1, 2, 5, tzinfo=UTC), timedelta(0))] == [
        datetime(2024, 1, 1, 0, tzinfo=UTC),
        datetime(2024, 1, 1, 1, tzinfo=UTC),
    ]
    assert due_windows(source, datetime(2024, 1, 1, 0, 59, tzinfo=UTC), timedelta(0)) == []


def test_the_lag_comes_from_the_environment_and_a_bad_value_names_the_variable() -> None:
    source = Hourly(lag=timedelta(hours=2))
    assert source_lag(source, {}) == timedelta(hours=2)
    assert source_lag(source, {"IONBEAM_SOURCE_LAG_HOURLY": "PT30M"}) == timedelta(minutes=30)
    with pytest.raises(ValueError, match="IONBEAM_SOURCE_LAG_HOURLY"):
        source_lag(source, {"IONBEAM_SOURCE_LAG_HOURLY": "30 minutes"})


def test_only_sources_without_third_parties_are_scheduled_by_default() -> None:
    network, local = Hourly(), Hourly(network=False)
    assert schedule_running(network, {}) is False and schedule_running(local, {}) is True
    assert schedule_running(network, {"IONBEAM_SOURCE_SCHEDULES": "hourly, other"}) is True
    assert schedule_running(network, {"IONBEAM_SOURCE_SCHEDULES": "all"}) is True
    assert schedule_running(local, {"IONBEAM_SOURCE_SCHEDULES": ""}) is False


def test_payload_schema_and_the_zero_row_payload() -> None:
    imap = sensor_community_ingestion_map()
    schema = payload_schema(imap)
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("P1").type == pa.float64() and schema.field("sensor_id").type == pa.string()
    empty = empty_payload(imap)
    assert empty.num_rows == 0 and empty.schema == schema
    # A zero-row payload is a valid payload: nothing dropped, nothing written, range covered.
    command = build_command(
        dataset=parse_catalog(CATALOG).datasets["sensor_community"], ingestion_map=imap,
        start=DAY, end=DAY + timedelta(days=1), payload_location="raw/x.parquet",
    )
    result = normalise(empty, command, now=datetime.now(UTC))
    assert result.table.num_rows == 0 and sum(result.dropped.values()) == 0


def test_rows_in_range_is_half_open_and_keeps_unreadable_times() -> None:
    table = pa.table({"t": pa.array([DAY, DAY + timedelta(hours=1), None, DAY - timedelta(seconds=1)], pa.timestamp("ns", tz="UTC"))})
    kept = rows_in_range(table, "t", DAY, DAY + timedelta(hours=1))
    assert kept.column("t").to_pylist() == [DAY, None]


def test_to_floats_nulls_missing_and_marks_garbage_as_nan() -> None:
    values = to_floats(pa.array(["1.5", None, "", "abc", "1e999", " 2 "])).to_pylist()
    assert values[0] == 1.5 and values[1] is None and values[2] is None and values[5] == 2.0
    assert values[3] != values[3] and values[4] != values[4]  # NaN: ingestion drops them as non_finite_value


def test_fetch_notes_round_trip() -> None:
    table = with_fetch_notes(pa.table({"a": [1]}), {"files_read": 2})
    assert fetch_notes(table) == {"files_read": 2}
    assert fetch_notes(pa.table({"a": [1]})) == {}


def test_payload_keys_follow_the_reference_layout() -> None:
    key = payload_key("sensor_community", DAY, DAY + timedelta(days=1), datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert key == "raw/sensor_community/20170830T000000Z-20170831T000000Z_20240501T120000123456Z.parquet"


def test_a_table_without_its_axes_is_refused_before_anything_is_written() -> None:
    with pytest.raises(ValueError, match=r"ingestion_map.lat: column 'lat'"):
        check_payload_columns(pa.table({"timestamp": [DAY], "lon": [1.0]}), sensor_community_ingestion_map())


CATALOG = """\
datasets:
  - name: synthetic
    aggregation_span: PT10M
    start: 2026-01-01T00:00:00Z
  - name: sensor_community
    aggregation_span: PT1H
    subject_to_change_window: P1D
    start: 2015-10-01T00:00:00Z
"""


def test_sources_are_registered_for_the_datasets_the_catalog_declares() -> None:
    names = [s.name for s in registered_sources(parse_catalog(CATALOG))]
    assert names == ["synthetic", "sensor_community", "sensor_community_live"]
    only_synthetic = parse_catalog(CATALOG.split("  - name: sensor_community")[0])
    assert [s.name for s in registered_sources(only_synthetic)] == ["synthetic"]


# ---------------------------------------------------------------- StartSourceCommand admission


def start(source: str, begin: datetime, end: datetime, **extra: object) -> bytes:
    return to_json_bytes(StartSourceCommand(id=uuid.uuid4(), source_name=source, start_time=begin, end_time=end))


NOW = datetime(2024, 6, 1, 12, 3, tzinfo=UTC)


def test_a_command_becomes_a_plan_clipped_to_what_exists() -> None:
    archive = SensorCommunityArchive(archive_url="http://x/")
    plan = admit_start(start("sensor_community", datetime(2015, 9, 1, tzinfo=UTC), datetime(2015, 10, 3, 6, tzinfo=UTC)), archive, NOW)
    assert (plan.start, plan.end) == ("2015-10-01T00:00:00Z", "2015-10-03T06:00:00Z")
    assert (plan.requested_start, plan.partition_start, plan.partition_end, plan.partitions) == (
        "2015-09-01T00:00:00Z", "2015-10-01", "2015-10-03", 3)
    assert StartPlan.from_json(plan.to_json()) == plan
    # The end is clipped to now: a payload never claims the future.
    recent = admit_start(start("sensor_community", NOW - timedelta(hours=2), NOW + timedelta(hours=3)), archive, NOW)
    assert recent.end == "2024-06-01T12:03:00Z" and recent.partition_start == recent.partition_end == "2024-06-01"


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"[]", "malformed_json", "array"),
        (b'{"id": "x"}', "invalid_message", "id"),
        (start("netatmo", DAY, DAY + timedelta(hours=1)), "source_mismatch", "netatmo"),
        (start("sensor_community", DAY, DAY), "invalid_time_range", "before end_time"),
        (start("sensor_community", datetime(2010, 1, 1, tzinfo=UTC), datetime(2011, 1, 1, tzinfo=UTC)), "invalid_time_range", "first data"),
        (start("sensor_community", NOW + timedelta(hours=1), NOW + timedelta(hours=2)), "invalid_time_range", "future"),
        (start("sensor_community", NOW - timedelta(days=MAX_PARTITIONS_PER_COMMAND + 1), NOW), "invalid_time_range", "backfill"),
    ],
    ids=["json-array", "schema", "other-source", "empty", "before-history", "future", "too-long"],
)
def test_bad_commands_are_rejections_with_codes(body: bytes, code: str, text: str) -> None:
    with pytest.raises(Rejection) as info:
        admit_start(body, SensorCommunityArchive(archive_url="http://x/"), NOW)
    assert info.value.code == code and text in info.value.message


def test_the_live_source_refuses_the_past() -> None:
    live = SensorCommunityLive(live_url="http://x/data.json")
    now = datetime(2026, 6, 1, 12, 3, tzinfo=UTC)
    with pytest.raises(Rejection) as info:
        admit_start(start("sensor_community_live", now - timedelta(hours=1), now - timedelta(minutes=30)), live, now)
    assert info.value.code == "range_not_available" and "archive" in info.value.message
    plan = admit_start(start("sensor_community_live", now - timedelta(minutes=5), now), live, now)
    # The partition in progress (12:00-12:05) is part of the run; the run stops at now.
    assert (plan.partition_start, plan.partition_end, plan.end) == ("2026-06-01T11:55", "2026-06-01T12:00", "2026-06-01T12:03:00Z")


