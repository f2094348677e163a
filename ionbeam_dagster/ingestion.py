"""Ingestion: from an IngestDataCommand to points in InfluxDB and a DataAvailableEvent.

Two stages, because they run in different places:

- :func:`admit` runs in the ingestion sensor for every message taken off the queue. It does
  only the checks that need no payload (JSON, schema, version, time range, catalog, location)
  so a bad message is dead-lettered at once and never waits behind, or blocks, good ones.
- :func:`ingest` runs inside a Dagster run. It reads and validates the whole payload before
  writing anything, writes, and only then announces the data. Every effect is idempotent
  (InfluxDB overwrites the same series and time; the coordinator keys events by id), so a
  run that is killed and retried applies nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from ionbeam_dagster.broker import Broker
from ionbeam_dagster.catalog import Catalog
from ionbeam_dagster.contracts import DataAvailableEvent, IngestDataCommand, parse_ingest_command, to_json_bytes
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.errors import Rejection, TransientError
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.lineprotocol import iter_encoded_bodies
from ionbeam_dagster.normalise import normalise
from ionbeam_dagster.objectstore import _TABLE_SUFFIXES, ObjectStore

# Requests in flight to InfluxDB's /write. Two keep a 2-core server busy while the next
# bodies are encoded here; the raw write limit measured with 2 writers is ~1.3x one
# writer's (benchmarks/, shared/reference/platform-facts.md).
WRITERS = 2


def admit(body: bytes, catalog: Catalog, store: ObjectStore) -> IngestDataCommand:
    """Parse and check a command without touching its payload; raises Rejection."""
    command = parse_ingest_command(body)
    dataset = command.metadata.dataset
    spec = catalog.get(dataset.name)
    if spec is None:
        known = ", ".join(sorted(catalog.datasets)) or "none"
        raise Rejection(
            "unknown_dataset",
            f"metadata.dataset.name: dataset {dataset.name!r} is not in the catalog (known: {known})",
        )
    if dataset.aggregation_span != spec.aggregation_span:
        raise Rejection(
            "dataset_mismatch",
            f"metadata.dataset.aggregation_span: {format_duration(dataset.aggregation_span)} differs from the catalog's "
            f"{format_duration(spec.aggregation_span)} for dataset {dataset.name!r}",
        )
    store.key_for(command.payload_location)
    return command


@dataclass(frozen=True)
class RetrySchedule:
    """How long to keep trying a service, and how long to wait between tries."""

    timeout: timedelta = timedelta(seconds=60)
    first_delay: float = 0.5
    max_delay: float = 8.0

    def run(self, what: str, attempt: Callable[[], object], retry_on: tuple[type[BaseException], ...]) -> object:
        deadline = time.monotonic() + self.timeout.total_seconds()
        delay = self.first_delay
        while True:
            try:
                return attempt()
            except retry_on as exc:
                if time.monotonic() + delay > deadline:
                    raise TimeoutError(f"{what}: still failing after {self.timeout}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, self.max_delay)


@dataclass
class IngestionResult:
    command_id: str
    dataset: str
    payload_key: str
    rows_in: int
    rows_written: int
    dropped: dict[str, int] = field(default_factory=dict)
    stations: int = 0
    variables: list[str] = field(default_factory=list)
    seconds: float = 0.0


def ingest(
    command: IngestDataCommand,
    *,
    store: ObjectStore,
    influx: InfluxClient,
    broker: Broker,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    payload_wait: RetrySchedule = RetrySchedule(),
    service_retry: RetrySchedule = RetrySchedule(timeout=timedelta(seconds=120)),
    declare_columns: Callable[[str, list[str], list[str]], object] | None = None,
) -> IngestionResult:
    """Ingest one admitted command. Raises Rejection (dead-letter it) or TransientError.

    ``declare_columns(dataset, fields, tags)`` is called with the map's declared columns once
    the payload is valid and before anything is announced: InfluxDB only knows fields that
    have values, so without it a window of a dataset with no stored rows yet (a zero-row
    payload) would be built without its canonical and metadata columns.
    """
    started = time.monotonic()
    key = store.key_for(command.payload_location)
    table = _read_payload(store, key, payload_wait)
    normalised = normalise(table, command, now=now())

    dataset = command.metadata.dataset.name
    imap = command.metadata.ingestion_map
    tags = [m.column for m in imap.metadata_variables if m.column in normalised.table.column_names]
    fields = ["latitude", "longitude", *(v.canonical_name for v in imap.canonical_variables)]
    if declare_columns is not None:
        declare_columns(
            dataset, [v.canonical_name for v in imap.canonical_variables], [m.column for m in imap.metadata_variables]
        )
    written = 0
    if normalised.table.num_rows:
        table = normalised.table

        def write() -> int:
            # Encoded slice by slice while earlier bodies are being written: the encoding
            # overlaps the server's work instead of preceding it. The whole table has been
            # validated already, here and by the encoder's checks before its first body.
            bodies = iter_encoded_bodies(
                table,
                measurement=dataset,
                time_column="time",
                tag_columns=tags,
                field_columns=[f for f in fields if f in table.column_names],
            )
            influx.write_bodies(bodies, writers=WRITERS)
            return table.num_rows  # one point per row: every row has a time and fields

        service_retry.run("InfluxDB database", influx.ensure_database, (TransientError,))
        written = int(service_retry.run("InfluxDB write", write, (TransientError,)))  # type: ignore[arg-type]

    # Announced only after the points are stored, so a window built on this event sees them.
    event = DataAvailableEvent(
        id=command.id,
        metadata=command.metadata,
        start_time=command.start_time,
        end_time=command.end_time,
    )
    service_retry.run(
        "RabbitMQ publish", lambda: broker.publish_data_available(to_json_bytes(event)), (TransientError,)
    )
    return IngestionResult(
        command_id=str(command.id),
        dataset=dataset,
        payload_key=key,
        rows_in=normalised.rows_in,
        rows_written=written,
        dropped={k: v for k, v in normalised.dropped.items() if v},
        stations=_distinct(normalised.table, tags[0]) if tags else 0,
        variables=[v.canonical_name for v in imap.canonical_variables],
        seconds=time.monotonic() - started,
    )


def _read_payload(store: ObjectStore, key: str, wait: RetrySchedule) -> pa.Table:
    """Sources may announce a payload a moment before it is visible (eventual consistency,
    slow uploads), so a missing object is retried for a while before it is rejected."""
    try:
        return wait.run(f"payload {key}", lambda: store.read_table(key), (FileNotFoundError, TransientError))  # type: ignore[return-value]
    except TimeoutError as exc:
        cause = exc.__cause__
        if isinstance(cause, TransientError):
            raise cause
        # read_table tries <key>.parquet first only for a key without a table suffix.
        also = "" if key.lower().endswith(_TABLE_SUFFIXES) else f" (or {key + '.parquet'!r})"
        raise Rejection(
            "payload_not_found",
            f"payload_location: no object at {key!r}{also} after waiting {format_duration(wait.timeout)}",
        ) from exc


def _distinct(table: pa.Table, column: str) -> int:
    import pyarrow.compute as pc

    return int(pc.count_distinct(table.column(column)).as_py())
