"""Exporter assets: ``<dataset>/<exporter>``, downstream of ``<dataset>/dataset``.

They share the dataset's partitions and run in the same run as the window's build (the
build jobs select both), because declarative automation only watches the newest partition
and late data rebuilds old ones. Each reads the window version the build recorded and
replaces one current file per window atomically. What each format does lives in
``ionbeam_dagster/exporters``; this module only orchestrates.
"""

import dagster as dg

from assets.datasets import dataset_asset_key, dataset_partitions, windows_of_run
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.exporters.registry import EXPORTERS, Exporter
from ionbeam_dagster.resources import ObjectStoreResource, RedisResource


def build_exporter_asset(spec: DatasetSpec, exporter: Exporter) -> dg.AssetsDefinition:
    @dg.asset(
        name=exporter.name,
        key_prefix=[spec.name],
        deps=[dataset_asset_key(spec.name)],
        partitions_def=dataset_partitions(spec),
        group_name=spec.name,
        description=f"{exporter.description}, one file per {spec.name} window.",
        kinds={exporter.suffix},
        tags={"ionbeam/dataset": spec.name, "ionbeam/exporter": exporter.name},
    )
    def export(context: dg.AssetExecutionContext, objects: ObjectStoreResource, redis: RedisResource) -> dg.MaterializeResult:
        tw = context.partition_time_window
        client = redis.client()
        state = redis.windows(client)
        store = objects.store()
        exported = []
        # The run's lease is held here too: the sensors call a STARTED run without a lease
        # dead once its grace has passed, and this step runs after the dataset step let go.
        with redis.leases(client).hold(context.run_id):
            for window in windows_of_run(spec, tw.start, tw.end):
                built = state.built(spec.name, window)
                if built is None:
                    raise dg.Failure(
                        f"{spec.name} window {window.start.isoformat()} has not been built; materialise {spec.name}/dataset first"
                    )
                table = store.read_table(built.location)
                key = export_key(exporter.name, spec.name, window, spec.aggregation_span, exporter.suffix)
                result = exporter.export(table, store, key, spec, window, built.hash)
                exported.append((key, built.hash, result))
        client.close()
        skipped: dict[str, str] = {}
        for _, _, result in exported:
            skipped.update(result.variables_skipped)
        metadata = {
            "object_keys": [key for key, _, _ in exported],
            "rows_written": sum(r.rows for _, _, r in exported),
            "bytes": sum(r.bytes for _, _, r in exported),
            "variables_exported": sorted({v for _, _, r in exported for v in r.variables_exported}),
            "variables_skipped": skipped,
        }
        if len(exported) == 1:
            metadata["dataset_version"] = exported[0][1]
            return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(exported[0][1]))
        return dg.MaterializeResult(metadata=metadata)

    return export


def exporter_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    return [build_exporter_asset(spec, EXPORTERS[name]) for name in spec.exporters]
