"""Exporter assets: ``<dataset>/<exporter>``, downstream of ``<dataset>/dataset``.

They share the dataset's partitions and run in the same run as the window's build (the
build jobs select both), because declarative automation only watches the newest partition
and late data rebuilds old ones. Each reads the window version the build recorded and
replaces one current file per window atomically.
"""


from collections.abc import Callable

import dagster as dg

from assets.datasets import dataset_asset_key, dataset_partitions, windows_of_run
from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.exporters.geoparquet import write_geoparquet
from ionbeam_dagster.resources import ObjectStoreResource, RedisResource


def build_geoparquet_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey([spec.name, "geoparquet"]),
        deps=[dataset_asset_key(spec.name)],
        partitions_def=dataset_partitions(spec),
        group_name=spec.name,
        description=f"GeoParquet (EPSG:4326 points, bbox covering) of each {spec.name} window.",
        kinds={"parquet"},
        tags={"ionbeam/dataset": spec.name, "ionbeam/exporter": "geoparquet"},
    )
    def geoparquet(context: dg.AssetExecutionContext, objects: ObjectStoreResource, redis: RedisResource) -> dg.MaterializeResult:
        tw = context.partition_time_window
        client = redis.client()
        state = redis.windows(client)
        store = objects.store()
        exported = []
        for window in windows_of_run(spec, tw.start, tw.end):
            built = state.built(spec.name, window)
            if built is None:
                raise dg.Failure(
                    f"{spec.name} window {window.start.isoformat()} has not been built; materialise {spec.name}/dataset first"
                )
            table = store.read_table(built.location)
            key = export_key("geoparquet", spec.name, window, spec.aggregation_span, "parquet")
            with store.open_atomic_output(key) as sink:
                stats = write_geoparquet(
                    table,
                    sink,
                    window_start=window.start,
                    window_end=window.end,
                    dataset=spec.name,
                    dataset_version=built.hash,
                )
            exported.append((key, built.hash, stats))
        client.close()
        metadata = {
            "object_keys": [k for k, _, _ in exported],
            "rows_written": sum(s.rows for _, _, s in exported),
            "bytes": sum(s.bytes for _, _, s in exported),
            "variables_exported": exported[0][2].columns if exported else [],
            "variables_skipped": [],
        }
        if len(exported) == 1:
            metadata["dataset_version"] = exported[0][1]
            return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(exported[0][1]))
        return dg.MaterializeResult(metadata=metadata)

    return geoparquet


EXPORTERS: dict[str, Callable[[DatasetSpec], dg.AssetsDefinition]] = {"geoparquet": build_geoparquet_asset}


def exporter_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    return [EXPORTERS[name](spec) for name in spec.exporters]
