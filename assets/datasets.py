"""One partitioned asset per catalog dataset, ``<name>/dataset``, and its exporters downstream.

Partitions are the dataset's epoch-aligned windows. A run may cover one window (the
coordinator's runs, whose partition data version is the window's event-set hash) or a range
(backfills through the range tags), so assets work from ``partition_time_window`` and build
every window inside it.
"""


from datetime import datetime

import dagster as dg

from ionbeam_dagster.build import build_window
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.resources import BrokerResource, InfluxResource, ObjectStoreResource, RedisResource
from ionbeam_dagster.windows import Window, cron_for_span, partition_fmt, windows_overlapping


def dataset_partitions(spec: DatasetSpec) -> dg.TimeWindowPartitionsDefinition:
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron_for_span(spec.aggregation_span),
        start=spec.start,
        fmt=partition_fmt(spec.aggregation_span),
        timezone="UTC",
    )


def windows_of_run(spec: DatasetSpec, start: datetime, end: datetime) -> list[Window]:
    return windows_overlapping(start, end, spec.aggregation_span)


def dataset_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "dataset"])


def build_dataset_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=dataset_asset_key(spec.name),
        partitions_def=dataset_partitions(spec),
        group_name=spec.name,
        description=spec.description or f"Windows of the {spec.name} dataset as Arrow IPC objects.",
        kinds={"influxdb", "arrow"},
        tags={"ionbeam/dataset": spec.name},
    )
    def dataset(
        context: dg.AssetExecutionContext,
        influx: InfluxResource,
        objects: ObjectStoreResource,
        redis: RedisResource,
        broker: BrokerResource,
    ) -> dg.MaterializeResult:
        tw = context.partition_time_window
        windows = windows_of_run(spec, tw.start, tw.end)
        client = redis.client()
        state = redis.windows(client)
        store = objects.store()
        influx_client = influx.client()
        declared = redis.ledger(client).columns(spec.name)
        results = []
        with redis.leases(client).hold(context.run_id), broker.open() as b:
            for window in windows:
                result = build_window(
                    spec, window, influx=influx_client, store=store, state=state, broker=b, declared_columns=declared
                )
                context.log.info(f"built {spec.name} {window.start.isoformat()}: {result.rows} rows -> {result.key}")
                results.append(result)
        client.close()
        if len(results) == 1:
            r = results[0]
            return dg.MaterializeResult(
                data_version=dg.DataVersion(r.event_hash),
                metadata={
                    "rows": r.rows,
                    "stations": r.stations,
                    "variables": r.variables,
                    "metadata_columns": r.metadata_columns,
                    "bbox": list(r.bbox) if r.bbox else None,
                    "event_count": r.event_count,
                    "event_set_hash": r.event_hash,
                    "dataset_version_id": r.version_id,
                    "object_key": r.key,
                    "bytes": r.bytes,
                    "seconds": round(r.seconds, 3),
                },
            )
        return dg.MaterializeResult(
            metadata={
                "windows": len(results),
                "rows": sum(r.rows for r in results),
                "bytes": sum(r.bytes for r in results),
                "object_keys": [r.key for r in results],
            }
        )

    return dataset
