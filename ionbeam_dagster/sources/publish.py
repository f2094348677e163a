"""Publish a raw payload exactly as an external ionbeam source does.

Two steps, in this order: the Parquet object is written atomically, then the
IngestDataCommand naming it is published and confirmed by the broker. A reader can
therefore never be pointed at a missing or half-written payload; a crash between the steps
leaves an orphan object and no command (the fetch is simply run again).

Zero-row payloads are published too: they tell the coordinator that the range was looked
at and holds nothing, so its windows are not held back forever waiting for data.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ionbeam_dagster.broker import Broker
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.contracts import (
    DataIngestionMap,
    IngestDataCommand,
    IngestionMetadata,
    as_utc,
    format_time,
    to_json_bytes,
)
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.ingestion import RetrySchedule
from ionbeam_dagster.objectstore import ObjectStore

__all__ = ["payload_key", "build_command", "check_payload_columns", "publish_payload"]

# A blip of the broker should not fail a fetch that took minutes; a longer outage should.
PUBLISH_RETRY = RetrySchedule(timeout=timedelta(seconds=60))


def _stamp(t: datetime) -> str:
    return as_utc(t).strftime("%Y%m%dT%H%M%SZ")


def payload_key(dataset: str, start: datetime, end: datetime, fetched_at: datetime) -> str:
    """``raw/<dataset>/<start>-<end>_<fetched_at>.parquet`` (the reference's layout). The fetch
    time has microseconds, so two fetches of one range never share a key."""
    fetched = as_utc(fetched_at).strftime("%Y%m%dT%H%M%S%fZ")
    return f"raw/{dataset}/{_stamp(start)}-{_stamp(end)}_{fetched}.parquet"


def check_payload_columns(table: pa.Table, imap: DataIngestionMap) -> None:
    """Refuse, before anything is written, a table that ingestion would reject whole
    (``missing_column``): the time, latitude and longitude columns must be there."""
    for field, column in (("datetime", imap.datetime.column), ("lat", imap.lat.column), ("lon", imap.lon.column)):
        if column not in table.column_names:
            shown = ", ".join(repr(c) for c in table.column_names[:30]) or "none"
            raise ValueError(f"ingestion_map.{field}: column {column!r} is not in the table (columns: {shown})")


def build_command(
    *,
    dataset: DatasetSpec,
    ingestion_map: DataIngestionMap | dict[str, Any],
    start: datetime,
    end: datetime,
    payload_location: str,
    command_id: uuid.UUID | None = None,
) -> IngestDataCommand:
    imap = ingestion_map if isinstance(ingestion_map, DataIngestionMap) else DataIngestionMap.model_validate(ingestion_map)
    if as_utc(start) >= as_utc(end):
        raise ValueError(f"start: {format_time(start)} must be before end {format_time(end)}")
    return IngestDataCommand(
        id=command_id or uuid.uuid4(),
        metadata=IngestionMetadata(dataset=dataset.metadata(), ingestion_map=imap, version=1),
        payload_location=payload_location,
        start_time=start,
        end_time=end,
    )


def publish_payload(
    table: pa.Table,
    *,
    dataset: DatasetSpec,
    ingestion_map: DataIngestionMap | dict[str, Any],
    start: datetime,
    end: datetime,
    store: ObjectStore,
    broker: Broker,
    source: str,
    command_id: uuid.UUID | None = None,
    fetched_at: datetime | None = None,
) -> IngestDataCommand:
    """Write ``table`` as Parquet under ``raw/<dataset>/...`` and publish its IngestDataCommand
    (confirmed). ``source`` is recorded in the Parquet metadata as provenance."""
    fetched_at = fetched_at or datetime.now(UTC)
    key = payload_key(dataset.name, start, end, fetched_at)
    # Validates the map, the range and the dataset before any write.
    command = build_command(
        dataset=dataset, ingestion_map=ingestion_map, start=start, end=end, payload_location=key, command_id=command_id
    )
    check_payload_columns(table, command.metadata.ingestion_map)
    provenance = {
        b"ionbeam.source": source.encode(),
        b"ionbeam.fetched_at": format_time(fetched_at).encode(),
        b"ionbeam.start_time": format_time(start).encode(),
        b"ionbeam.end_time": format_time(end).encode(),
        b"ionbeam.command_id": str(command.id).encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **provenance})
    with store.open_atomic_output(key) as sink:
        pq.write_table(table, sink)
    body = to_json_bytes(command)
    PUBLISH_RETRY.run("RabbitMQ publish", lambda: broker.publish_command(body), (TransientError,))
    return command
