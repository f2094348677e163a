"""The smoke check: one sample window through every stage, against the configured services.

Operators run it from their CI (``dagster job execute -j smoke``) after a deploy. It uses
the same functions the sensors and assets use, in-process, so it needs no daemon, and it
checks each stage's effect instead of trusting return values: the points in InfluxDB, the
dataset object's rows, the DataSetAvailableEvent on the fanout, the export file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ionbeam_dagster.broker import Broker
from ionbeam_dagster.build import build_window
from ionbeam_dagster.catalog import Catalog
from ionbeam_dagster.contracts import (
    DataAvailableEvent,
    DataIngestionMap,
    DataSetAvailableEvent,
    IngestDataCommand,
    IngestionMetadata,
    to_json_bytes,
)
from ionbeam_dagster.coordinator import Coordinator
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.exporters.geoparquet import write_geoparquet
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.ingestion import admit, ingest
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window
from ionbeam_dagster.windowstate import WindowState, window_id

SMOKE_DATASET = "synthetic"
SMOKE_STATIONS = 5


class SmokeFailure(AssertionError):
    """A stage did not have the effect it should have had."""


@dataclass
class SmokeReport:
    window: Window
    command_id: str
    rows_published: int
    rows_in_dataset: int
    dataset_key: str
    export_key: str
    stages: list[str] = field(default_factory=list)


def sample_window(catalog: Catalog) -> Window:
    spec = catalog.get(SMOKE_DATASET)
    if spec is None:
        raise SmokeFailure(f"the catalog has no {SMOKE_DATASET!r} dataset for the smoke check")
    return Window(start=spec.start, end=spec.start + spec.aggregation_span)


def run_smoke(
    *,
    catalog: Catalog,
    store: ObjectStore,
    influx: InfluxClient,
    broker: Broker,
    state: WindowState,
    log: Callable[[str], None] = print,
) -> SmokeReport:
    spec = catalog.get(SMOKE_DATASET)
    window = sample_window(catalog)
    assert spec is not None
    sample = generate_observations(window.start, window.end, stations=SMOKE_STATIONS)

    payload_key = f"raw/smoke/{window_id(window)}_{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.parquet"
    with store.open_atomic_output(payload_key) as sink:
        pq.write_table(sample, sink)
    command = IngestDataCommand(
        id=uuid.uuid4(),
        metadata=IngestionMetadata(
            dataset=spec.metadata(), ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map())
        ),
        payload_location=payload_key,
        start_time=window.start,
        end_time=window.end,
    )
    report = SmokeReport(window, str(command.id), sample.num_rows, 0, "", "")
    announcements = broker.bind_exporter_queue(f"smoke_{uuid.uuid4().hex[:8]}", temporary=True)

    command = admit(to_json_bytes(command), catalog, store)
    report.stages.append("admitted")
    result = ingest(command, store=store, influx=influx, broker=broker)
    _expect(result.rows_written == sample.num_rows, f"ingest wrote {result.rows_written} of {sample.num_rows} rows")
    report.stages.append(f"ingested {result.rows_written} rows")

    Coordinator(state, catalog).apply_event(
        DataAvailableEvent(id=command.id, metadata=command.metadata, start_time=command.start_time, end_time=command.end_time)
    )
    built = build_window(spec, window, influx=influx, store=store, state=state, broker=broker)
    _expect(str(command.id) in {e.id for e in state.events(spec.name, window)}, "the window's event set lacks the command")
    table = store.read_table(built.key)
    stations = set(sample.column("station_id").to_pylist())
    ours = table.filter(pc.is_in(table.column("station_id"), value_set=sample.column("station_id").unique()))
    _expect(ours.num_rows == sample.num_rows, f"dataset holds {ours.num_rows} rows of the sample's {sample.num_rows}")
    _expect(set(ours.column("station_id").to_pylist()) == stations, "dataset stations differ from the sample's")
    report.rows_in_dataset, report.dataset_key = table.num_rows, built.key
    report.stages.append(f"built {built.rows} rows -> {built.key}")

    _expect(_announced(broker, announcements, built.key), f"no DataSetAvailableEvent for {built.key} on the fanout")
    report.stages.append("announced")

    key = export_key("geoparquet", spec.name, window, spec.aggregation_span, "parquet")
    with store.open_atomic_output(key) as sink:
        write_geoparquet(table, sink, window_start=window.start, window_end=window.end, dataset=spec.name, dataset_version=built.event_hash)
    exported = pq.read_table(pa.BufferReader(store.read_bytes(key)))
    _expect(exported.num_rows == table.num_rows, f"export holds {exported.num_rows} rows, the window {table.num_rows}")
    report.export_key = key
    report.stages.append(f"exported -> {key}")
    log("; ".join(report.stages))
    return report


def _announced(broker: Broker, queue: str, key: str, timeout: timedelta = timedelta(seconds=10)) -> bool:
    import time

    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        for delivery in broker.get_batch(queue, 100):
            broker.ack(delivery)
            if DataSetAvailableEvent.model_validate_json(delivery.body).dataset_location == key:
                return True
        time.sleep(0.1)
    return False


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise SmokeFailure(problem)
