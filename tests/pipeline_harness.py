"""A real code location on real services, driven tick by tick from a test.

The sensors and jobs are the ones ``build_definitions`` produces; only their resources are
replaced, by ones pointing at the test's own prefix (RabbitMQ names, Redis keys), InfluxDB
database and object store, so no process environment is read. Sensors are evaluated with a
real (ephemeral) Dagster instance, and every run a RunRequest asks for is executed
in-process on that same instance with the request's tags and run config, so the sensors see
the runs exactly as they would see runs launched by the daemon.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from ionbeam_dagster.broker import Broker, Delivery, Topology
from ionbeam_dagster.catalog import Catalog, DatasetSpec, load_catalog
from ionbeam_dagster.contracts import DataIngestionMap, IngestDataCommand, IngestionMetadata, to_json_bytes
from ionbeam_dagster.definitions import build_definitions
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.resources import (
    BrokerResource,
    CatalogResource,
    InfluxResource,
    ObjectStoreResource,
    RedisResource,
)
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window
from ionbeam_dagster.windowstate import WindowState

DATASET = "synthetic"
SPAN = timedelta(minutes=10)
CATALOG_YAML = f"""\
datasets:
  - name: {DATASET}
    description: integration-test copy of the demo dataset
    aggregation_span: PT10M
    subject_to_change_window: PT0S
    start: 2026-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
"""
# A complete window well in the past (no row is "in the future") and after the catalog start.
WINDOW = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC) + SPAN)
STATIONS = 10  # x 10 one-minute steps = 100 rows per window


def write_catalog(directory: Path, text: str = CATALOG_YAML) -> Path:
    path = directory / "datasets.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def with_resources(defs: dg.Definitions, resources: dict[str, Any]) -> dg.Definitions:
    """The same code location with other resources (Definitions.merge refuses to override)."""
    return dg.Definitions(
        assets=defs.assets,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        resources=resources,
        executor=defs.executor,
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Plain values of the first output's metadata (the ingest op has exactly one)."""
    for event in result.all_node_events:
        if event.is_successful_output:
            return {k: v.value for k, v in event.event_specific_data.metadata.items()}  # type: ignore[union-attr]
    raise AssertionError("the run produced no output")


@dataclass
class Pipeline:
    prefix: str
    catalog: Catalog
    resources: dict[str, Any]
    defs: dg.Definitions
    instance: dg.DagsterInstance
    broker: Broker  # the test's own connection, for publishing and inspecting queues
    store: ObjectStore
    redis: redis.Redis
    influx: InfluxClient
    exporter_queues: list[str] = field(default_factory=list)

    # -- handles ---------------------------------------------------------------------------
    @property
    def spec(self) -> DatasetSpec:
        spec = self.catalog.get(DATASET)
        assert spec is not None
        return spec

    @property
    def topology(self) -> Topology:
        return self.broker.topology

    @property
    def ledger(self) -> IngestionLedger:
        return IngestionLedger(self.redis, self.prefix)

    @property
    def windows(self) -> WindowState:
        return WindowState(self.redis, self.prefix)

    # -- sources ---------------------------------------------------------------------------
    def payload(self, window: Window = WINDOW, stations: int = STATIONS) -> pa.Table:
        return generate_observations(window.start, window.end, stations=stations)

    def write_payload(self, table: pa.Table, key: str | None = None) -> str:
        key = key or f"raw/{DATASET}/{uuid.uuid4().hex}.parquet"
        with self.store.open_atomic_output(key) as sink:
            pq.write_table(table, sink)
        return key

    def command(self, payload_location: str, window: Window = WINDOW) -> IngestDataCommand:
        return IngestDataCommand(
            id=uuid.uuid4(),
            metadata=IngestionMetadata(
                dataset=self.spec.metadata(),
                ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map()),
            ),
            payload_location=payload_location,
            start_time=window.start,
            end_time=window.end,
        )

    def publish(self, body: bytes | IngestDataCommand) -> bytes:
        raw = to_json_bytes(body) if isinstance(body, IngestDataCommand) else body
        self.broker.publish_command(raw)
        return raw

    # -- sensors ---------------------------------------------------------------------------
    def tick(self, sensor_name: str) -> dg.SensorResult:
        sensor = self.defs.resolve_sensor_def(sensor_name)
        context = dg.build_sensor_context(instance=self.instance, resources=self.resources, definitions=self.defs)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result

    def ingestion_tick(self) -> list[dg.RunRequest]:
        return list(self.tick("ingestion_sensor").run_requests or [])

    def coordinator_tick(self) -> list[dg.RunRequest]:
        return list(self.tick("coordinator_sensor").run_requests or [])

    # -- runs ------------------------------------------------------------------------------
    def run_ingest(self, request: dg.RunRequest, **config: Any) -> dg.ExecuteInProcessResult:
        run_config = copy.deepcopy(dict(request.run_config))
        run_config["ops"]["ingest_command"]["config"].update(config)
        return self.defs.resolve_job_def("ingest").execute_in_process(
            run_config=run_config, instance=self.instance, tags=request.tags, raise_on_error=False
        )

    def run_build(self, request: dg.RunRequest, defs: dg.Definitions | None = None) -> dg.ExecuteInProcessResult:
        assert request.job_name and request.partition_key
        job = (defs or self.defs).resolve_job_def(request.job_name)
        return job.execute_in_process(
            partition_key=request.partition_key, instance=self.instance, tags=request.tags, raise_on_error=False
        )

    def ingest(self, command: IngestDataCommand) -> dg.ExecuteInProcessResult:
        """Publish, tick, run: the whole ingestion of one good command."""
        self.publish(command)
        [request] = self.ingestion_tick()
        result = self.run_ingest(request)
        assert result.success
        return result

    # -- queues ----------------------------------------------------------------------------
    def drain(self, queue: str, expect: int | None = None, timeout: float = 5.0) -> list[Delivery]:
        """Everything in ``queue``, acked. Publishes are confirmed before they return, so what
        was sent is there; ``expect`` still allows the broker ``timeout`` to show that many."""
        out: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while True:
            got = self.broker.get_batch(queue, 1000)
            for delivery in got:
                self.broker.ack(delivery)
            out += got
            if got:
                continue  # read until the queue is empty, so extras are seen too
            if expect is None or len(out) >= expect or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def dead_letters(self, expect: int | None = None) -> list[Delivery]:
        return self.drain(self.topology.dead_letter_queue, expect)

    def bind_exporter(self, name: str = "itest") -> str:
        queue = self.broker.bind_exporter_queue(name)
        self.exporter_queues.append(queue)
        return queue


def make_pipeline(
    *,
    tmp_path: Path,
    prefix: str,
    redis_client: redis.Redis,
    redis_url: str,
    amqp_url: str,
    influx_url: str,
    influx_database: str,
    objects: ObjectStoreResource | None = None,
    catalog_text: str = CATALOG_YAML,
) -> Pipeline:
    catalog_path = write_catalog(tmp_path, catalog_text)
    catalog = load_catalog(catalog_path)
    objects = objects or ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    resources: dict[str, Any] = {
        "broker": BrokerResource(amqp_url=amqp_url, prefix=prefix),
        "redis": RedisResource(url=redis_url, prefix=prefix),
        "influx": InfluxResource(url=influx_url, database=influx_database),
        "objects": objects,
        "catalog": CatalogResource(path=str(catalog_path)),
    }
    broker = Broker(amqp_url, Topology(prefix))
    broker.declare()
    return Pipeline(
        prefix=prefix,
        catalog=catalog,
        resources=resources,
        defs=with_resources(build_definitions(catalog), resources),
        instance=dg.DagsterInstance.ephemeral(),
        broker=broker,
        store=objects.store(),
        redis=redis_client,
        influx=InfluxClient(influx_url, influx_database),
    )


def close_pipeline(pipeline: Pipeline) -> None:
    try:
        pipeline.broker.delete_all(extra_queues=pipeline.exporter_queues)
    finally:
        pipeline.broker.close()
        pipeline.influx.close()
        pipeline.instance.dispose()

