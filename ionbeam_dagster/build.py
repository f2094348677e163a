"""Building a window: InfluxDB -> one Arrow IPC object per window version -> announcement.

The object key carries the event-set hash, so a rebuild writes a new object and never
overwrites a version an exporter may still be reading. The window is streamed slice by
slice from InfluxDB into the IPC file, so memory stays bounded by a slice, not a window.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from ionbeam_dagster.broker import Broker
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.contracts import DataSetAvailableEvent, to_json_bytes
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.ingestion import RetrySchedule
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.readiness import event_set_hash
from ionbeam_dagster.windows import Window
from ionbeam_dagster.windowstate import BuildRecord, WindowState, window_id

# Dataset versions get stable ids: the same window and event set always announce the same
# id, so an exporter that sees an announcement twice (a retried build) can tell.
_PUBLISH_RETRY = RetrySchedule(timeout=timedelta(seconds=120))
_VERSION_NAMESPACE = uuid.UUID("6f1c9a52-3a51-4d0e-9b7e-2d1c5e7f0a11")

AXES = ("timestamp", "latitude", "longitude")


def dataset_key(dataset: str, window: Window, span_text: str, event_hash: str) -> str:
    return f"datasets/{dataset}/{dataset}_{window_id(window)}_{span_text}_{event_hash[:16]}.arrow"


@dataclass
class BuildResult:
    dataset: str
    window: Window
    event_hash: str
    event_count: int
    key: str
    rows: int
    bytes: int
    stations: int
    variables: list[str]
    bbox: tuple[float, float, float, float] | None
    version_id: str
    seconds: float
    metadata_columns: list[str] = field(default_factory=list)


def dataset_schema(variables: list[str], tags: list[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("timestamp", pa.timestamp("ns", tz="UTC")),
            pa.field("latitude", pa.float64()),
            pa.field("longitude", pa.float64()),
            *(pa.field(v, pa.float64()) for v in variables),
            *(pa.field(t, pa.string()) for t in tags),
        ]
    )


class _Extent:
    """Bounding box and station count, accumulated slice by slice."""

    def __init__(self, station_column: str | None) -> None:
        self.box: list[float] | None = None
        self.stations: set[str] = set()
        self.station_column = station_column

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        lon = pc.min_max(batch.column("longitude"))
        lat = pc.min_max(batch.column("latitude"))
        box = [lon["min"].as_py(), lat["min"].as_py(), lon["max"].as_py(), lat["max"].as_py()]
        if self.box is None:
            self.box = box
        else:
            self.box = [min(self.box[0], box[0]), min(self.box[1], box[1]), max(self.box[2], box[2]), max(self.box[3], box[3])]
        if self.station_column and self.station_column in batch.schema.names:
            self.stations.update(v for v in pc.unique(batch.column(self.station_column)).to_pylist() if v is not None)


def build_window(
    spec: DatasetSpec,
    window: Window,
    *,
    influx: InfluxClient,
    store: ObjectStore,
    state: WindowState,
    broker: Broker,
    slice_rows: int = 200_000,
    declared_columns: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> BuildResult:
    """``declared_columns``: (fields, tags) the dataset's ingestions declared; the window gets
    them even when InfluxDB has no value for them (null-filled), so every window of a dataset,
    an empty one included, carries the contract's full schema."""
    started = time.monotonic()
    # The event set is read before the data: an event that lands during the build is not
    # in this hash, so the coordinator sees desired != observed afterwards and rebuilds.
    events = state.events(spec.name, window)
    event_hash = event_set_hash(e.id for e in events)
    span_text = format_duration(spec.aggregation_span)
    key = dataset_key(spec.name, window, span_text, event_hash)

    # Ingestion creates the database only when it writes a row, so a window whose only
    # payloads had no valid rows may be built before the database exists.
    influx.ensure_database()
    declared_fields, declared_tags = declared_columns
    fields = sorted({*influx.field_keys(spec.name), *declared_fields} - {"latitude", "longitude"})
    tags = sorted({*influx.tag_keys(spec.name), *declared_tags} - set(fields) - {"latitude", "longitude"})
    schema = dataset_schema(fields, tags)
    extent = _Extent(spec.station_column)
    rows = 0
    with store.open_atomic_output(key) as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in influx.read_window(
            spec.name,
            window.start_ns,
            window.end_ns,
            field_columns=fields,
            tag_columns=tags,
            slice_rows=slice_rows,
        ):
            batch = batch.select(schema.names) if batch.schema.names != schema.names else batch
            writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
            extent.add(batch)
            rows += batch.num_rows
    size = store.size(key)

    version_id = uuid.uuid5(_VERSION_NAMESPACE, f"{spec.name}|{window_id(window)}|{event_hash}")
    announcement = DataSetAvailableEvent(
        id=version_id,
        metadata=spec.metadata(),
        dataset_location=key,
        start_time=window.start,
        end_time=window.end,
    )
    # A connection idle through a long build may have been dropped by RabbitMQ; the broker
    # reconnects on the next try, and the stable version id makes a repeat harmless.
    _PUBLISH_RETRY.run(
        "RabbitMQ publish", lambda: broker.publish_dataset_available(to_json_bytes(announcement)), (TransientError,)
    )
    state.record_built(spec.name, window, BuildRecord(hash=event_hash, location=key, rows=rows, built_at=datetime.now(UTC)))
    return BuildResult(
        dataset=spec.name,
        window=window,
        event_hash=event_hash,
        event_count=len(events),
        key=key,
        rows=rows,
        bytes=size,
        stations=len(extent.stations),
        variables=fields,
        bbox=tuple(extent.box) if extent.box else None,  # type: ignore[arg-type]
        version_id=str(version_id),
        seconds=time.monotonic() - started,
        metadata_columns=tags,
    )
