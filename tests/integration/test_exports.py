"""A window's three exports, built and rebuilt through the real chain.

Late data rebuilds a window; the GeoParquet, ODB-2 and NetCDF files of that window must then
all carry the new version at the same keys (one current file per window), each holding the
new rows, and no temporary file may be left beside them.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Iterator


import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyodc
import pytest
import xarray as xr

from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.readiness import event_set_hash
from tests.pipeline_harness import CATALOG_YAML, DATASET, SPAN, WINDOW, Pipeline, close_pipeline, make_pipeline

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

ALL_THREE = CATALOG_YAML.replace("exporters: [geoparquet]", "exporters: [geoparquet, odb, netcdf]")
MAPPED_VARIABLES = 5  # temperature, humidity, pressure, wind speed and direction all have a varno


@pytest.fixture
def pipeline(
    pipeline_services: dict[str, Any],
) -> Iterator[Pipeline]:
    p = make_pipeline(
        **pipeline_services,
        catalog_text=ALL_THREE,
    )
    yield p
    close_pipeline(p)


def ingest_and_build(p: Pipeline, payload: pa.Table) -> None:
    command = p.command(p.write_payload(payload))
    p.publish(command)
    [ingest] = p.ingestion_tick()
    assert p.run_ingest(ingest).success
    [build] = p.coordinator_tick()
    assert p.run_build(build).success


def versions(p: Pipeline) -> dict[str, str]:
    """The dataset version each export carries, and its row count, read from the files."""
    geo = pq.read_table(pa.BufferReader(p.store.read_bytes(export_key("geoparquet", DATASET, WINDOW, SPAN, "parquet"))))
    nc_path = p.store.url(export_key("netcdf", DATASET, WINDOW, SPAN, "nc")).removeprefix("file://")
    with xr.open_dataset(nc_path) as nc:
        nc_version, nc_rows = nc.attrs["ionbeam_dataset_version"], nc.sizes["obs"]
    odb_path = p.store.url(export_key("odb", DATASET, WINDOW, SPAN, "odb")).removeprefix("file://")
    odb = pyodc.read_odb(odb_path, single=True)
    return {
        "geoparquet": geo.schema.metadata[b"ionbeam:dataset_version"].decode(),
        "geoparquet_rows": str(geo.num_rows),
        "netcdf": nc_version,
        "netcdf_rows": str(nc_rows),
        "odb_rows": str(len(odb)),
    }


def test_a_rebuilt_window_replaces_all_three_exports(pipeline: Pipeline) -> None:
    p = pipeline
    first = p.payload(stations=4)
    ingest_and_build(p, first)
    first_hash = p.windows.built(DATASET, WINDOW).hash  # type: ignore[union-attr]
    before = versions(p)
    assert before["geoparquet"] == before["netcdf"] == first_hash
    assert before["geoparquet_rows"] == before["netcdf_rows"] == str(first.num_rows)
    assert before["odb_rows"] == str(first.num_rows * MAPPED_VARIABLES)

    # Late data for the same window: six more stations.
    ten = p.payload(stations=10)
    late = ten.filter(pc.invert(pc.is_in(ten.column("station_id"), value_set=first.column("station_id"))))
    ingest_and_build(p, late)
    record = p.windows.built(DATASET, WINDOW)
    assert record is not None and record.hash != first_hash
    assert record.hash == event_set_hash(e.id for e in p.windows.events(DATASET, WINDOW))
    after = versions(p)
    rows = first.num_rows + late.num_rows
    assert after["geoparquet"] == after["netcdf"] == record.hash
    assert after["geoparquet_rows"] == after["netcdf_rows"] == str(rows)
    assert after["odb_rows"] == str(rows * MAPPED_VARIABLES)

    # One current file per exporter and window, and nothing half-written beside them.
    for exporter in ("geoparquet", "odb", "netcdf"):
        assert p.store.list(f"exports/{exporter}/{DATASET}/") == [
            export_key(exporter, DATASET, WINDOW, SPAN, {"geoparquet": "parquet", "odb": "odb", "netcdf": "nc"}[exporter])
        ]
