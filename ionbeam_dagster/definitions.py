"""The code location: every dataset in the catalog, its exporters, its data sources, the
sensors, the jobs.

Loading reads the catalog file and nothing else: no service is contacted at import time, so
the location loads (and the UI shows what is wrong) even while a service is down. An
invalid catalog fails the load with a message naming the entry and the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.datasets import build_dataset_asset, dataset_asset_key, dataset_partitions
from assets.exporters import exporter_assets
from assets.ingestion import ingest_job
from assets.smoke import smoke_job
from assets.sources import build_source
from ionbeam_dagster.catalog import Catalog, load_catalog
from ionbeam_dagster.resources import catalog_path, default_resources
from ionbeam_dagster.sources import Source, registered_sources
from sensors.coordinator import build_coordinator_sensor, build_job_name
from sensors.ingestion import build_ingestion_sensor
from sensors.netatmo import build_netatmo_sensors
from sensors.sources import build_source_start_sensor


def build_definitions(catalog: Catalog, sources: Sequence[Source] | None = None) -> dg.Definitions:
    """``sources``: default, every registered source whose dataset is in ``catalog``."""
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
    sources = registered_sources(catalog) if sources is None else list(sources)
    source_jobs = []
    for source in sources:
        source_asset, source_job, schedule = build_source(source, catalog)
        assets.append(source_asset)
        source_jobs.append(source_job)
        schedules.append(schedule)
    jobs.extend(source_jobs)
    sensors = [build_ingestion_sensor(ingest_job), build_coordinator_sensor(build_jobs)]
    if sources:
        sensors.append(build_source_start_sensor(sources, source_jobs))
        sensors.extend(build_netatmo_sensors(sources))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=default_resources(),
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_catalog(catalog_path()))
