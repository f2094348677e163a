"""The demo data source, ``sources/synthetic``: a Dagster asset on a schedule.

It publishes through exactly the path an external ionbeam source uses: raw payload to the
object store, then an IngestDataCommand on the broker. Its partitions are the windows of the
``synthetic`` dataset, so each run fetches (generates) one window and a backfill replays
history. Station positions are fixed, so reruns do not move stations around.
"""


import uuid
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
import pyarrow.parquet as pq

from assets.datasets import dataset_partitions
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.contracts import DataIngestionMap, IngestDataCommand, IngestionMetadata, to_json_bytes
from ionbeam_dagster.resources import BrokerResource, ObjectStoreResource
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import partition_key, window_of

SOURCE_KEY = dg.AssetKey(["sources", "synthetic"])
WINDOWS_PER_TICK = 2  # the last complete windows, so a fresh start shows data within minutes


def synthetic_command(spec: DatasetSpec, start: datetime, end: datetime, payload_key: str) -> IngestDataCommand:
    return IngestDataCommand(
        id=uuid.uuid4(),
        metadata=IngestionMetadata(
            dataset=spec.metadata(),
            ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map()),
            version=1,
        ),
        payload_location=payload_key,
        start_time=start,
        end_time=end,
    )


def build_synthetic_source(spec: DatasetSpec) -> tuple[dg.AssetsDefinition, UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    @dg.asset(
        key=SOURCE_KEY,
        partitions_def=dataset_partitions(spec),
        group_name="sources",
        description="Synthetic stations (fixed positions) with temperature, humidity, pressure and wind.",
        kinds={"python"},
    )
    def synthetic(context: dg.AssetExecutionContext, objects: ObjectStoreResource, broker: BrokerResource) -> dg.MaterializeResult:
        tw = context.partition_time_window
        table = generate_observations(tw.start, tw.end)
        fetched = datetime.now(UTC)
        key = f"raw/{spec.name}/{window_id_of(tw.start)}-{window_id_of(tw.end)}_{fetched:%Y%m%dT%H%M%S%fZ}.parquet"
        store = objects.store()
        with store.open_atomic_output(key) as sink:
            pq.write_table(table, sink)
        command = synthetic_command(spec, tw.start, tw.end, key)
        with broker.open() as b:
            b.publish_command(to_json_bytes(command))
        return dg.MaterializeResult(
            metadata={
                "rows": table.num_rows,
                "stations": len(set(table.column("station_id").to_pylist())),
                "payload": key,
                "command_id": str(command.id),
            }
        )

    job = dg.define_asset_job("synthetic_source", selection=[SOURCE_KEY], partitions_def=dataset_partitions(spec))

    @dg.schedule(
        name="synthetic_source_schedule",
        cron_schedule="* * * * *",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every minute, fetch the last complete synthetic windows that were not fetched yet.",
    )
    def schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or datetime.now(UTC)
        newest = window_of(now - spec.aggregation_span, spec.aggregation_span)
        requests = []
        for back in range(WINDOWS_PER_TICK):
            window = window_of(newest.start - back * spec.aggregation_span, spec.aggregation_span)
            if window.start < spec.start:
                continue
            pk = partition_key(window)
            # run_key = partition: each window is fetched once by the schedule; backfills
            # and manual materialisations fetch again on purpose.
            requests.append(dg.RunRequest(run_key=pk, partition_key=pk))
        return requests

    return synthetic, job, schedule


def window_id_of(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

