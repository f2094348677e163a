"""The code location: every dataset in the catalog, its exporters, the sensors, the jobs.

Loading reads the catalog file and nothing else: no service is contacted at import time, so
the location loads (and the UI shows what is wrong) even while a service is down. An
invalid catalog fails the load with a message naming the entry and the field.
"""

from __future__ import annotations

import dagster as dg

from assets.datasets import build_dataset_asset, dataset_asset_key, dataset_partitions
from assets.exporters import exporter_assets
from assets.ingestion import ingest_job
from assets.smoke import smoke_job
from assets.sources import build_synthetic_source
from ionbeam_dagster.catalog import Catalog, load_catalog
from ionbeam_dagster.resources import catalog_path, default_resources
from sensors.coordinator import build_coordinator_sensor, build_job_name
from sensors.ingestion import build_ingestion_sensor


def build_definitions(catalog: Catalog) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    build_jobs = []
    for spec in catalog:
        exporters = exporter_assets(spec)
        assets.append(build_dataset_asset(spec))
        assets.extend(exporters)
        build_jobs.append(
            dg.define_asset_job(
                build_job_name(spec.name),
                selection=[dataset_asset_key(spec.name), *(a.key for a in exporters)],
                partitions_def=dataset_partitions(spec),
                description=f"Build and export windows of {spec.name} (partition tag, or range tags).",
                tags={"ionbeam/kind": "build"},
            )
        )
    jobs: list = [ingest_job, smoke_job, *build_jobs]
    schedules = []
    synthetic = catalog.get("synthetic")
    if synthetic is not None:
        source, source_job, schedule = build_synthetic_source(synthetic)
        assets.append(source)
        jobs.append(source_job)
        schedules.append(schedule)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=[build_ingestion_sensor(ingest_job), build_coordinator_sensor(build_jobs)],
        resources=default_resources(),
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_catalog(catalog_path()))
