"""The benchmark's observations: the demo source's synthetic network, sized to order.

Rows come from :func:`ionbeam_dagster.synthetic.generate_observations`: 1,000 stations (the
platform facts' reference shape: 1 tag, 5 variables, plus latitude/longitude) reporting at a
regular interval chosen so one hour-long window holds the requested number of rows. Times
are in January 2026: in the past (nothing is dropped as "in the future") and after the
catalog start, so every row is valid and every stage sees all of them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.contracts import DataIngestionMap, IngestDataCommand, IngestionMetadata
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window

STATIONS = 1_000
SPAN = timedelta(hours=1)
CATALOG_START = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = Window(datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC) + SPAN)


def observations(rows: int, window: Window = WINDOW) -> pa.Table:
    """``rows`` observations inside ``window``, time-major like a network feed."""
    stations = min(STATIONS, rows)
    steps = -(-rows // stations)
    # Whole microseconds, so the epoch-aligned steps land inside the window as counted.
    interval = timedelta(microseconds=(window.span // timedelta(microseconds=1)) // steps)
    table = generate_observations(window.start, window.end, stations=stations, interval=interval)
    if table.num_rows < rows:
        raise AssertionError(f"generated {table.num_rows} rows, wanted {rows}")
    return table.slice(0, rows)


def dataset_spec(name: str, span: timedelta = SPAN) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description="benchmark dataset",
        aggregation_span=span,
        subject_to_change_window=timedelta(0),
        start=CATALOG_START,
    )


def write_payload(store: ObjectStore, table: pa.Table, name: str) -> str:
    """The payload as a source would leave it: Parquet in the object store."""
    key = f"raw/{name}/{uuid.uuid4().hex}.parquet"
    with store.open_atomic_output(key) as sink:
        pq.write_table(table, sink)
    return key


def ingest_command(spec: DatasetSpec, payload_key: str, window: Window = WINDOW) -> IngestDataCommand:
    return IngestDataCommand(
        id=uuid.uuid4(),
        metadata=IngestionMetadata(
            dataset=spec.metadata(),
            ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map()),
        ),
        payload_location=payload_key,
        start_time=window.start,
        end_time=window.end,
    )
