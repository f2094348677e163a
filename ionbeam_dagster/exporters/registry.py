"""The exporters a catalog can name, behind one small interface.

Each exporter turns one built window (the contract's dataset table) into one object at its
export key. Placement is atomic: a reader of ``exports/...`` sees the previous file or the
new one, never a partial one. The Dagster asset factory loops over windows and records
metadata; nothing here knows about Dagster.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.windows import Window, window_of


@dataclass(frozen=True)
class ExportResult:
    rows: int
    bytes: int
    variables_exported: list[str]
    variables_skipped: dict[str, str] = field(default_factory=dict)


ExportFn = Callable[[pa.Table, ObjectStore, str, DatasetSpec, Window, str], ExportResult]


@dataclass(frozen=True)
class Exporter:
    name: str
    suffix: str
    export: ExportFn
    description: str


def _geoparquet(table: pa.Table, store: ObjectStore, key: str, spec: DatasetSpec, window: Window, version: str) -> ExportResult:
    from ionbeam_dagster.exporters.geoparquet import write_geoparquet

    with store.open_atomic_output(key) as sink:
        stats = write_geoparquet(
            table, sink, window_start=window.start, window_end=window.end, dataset=spec.name, dataset_version=version
        )
    return ExportResult(stats.rows, stats.bytes_written, list(stats.variables))


def _netcdf(table: pa.Table, store: ObjectStore, key: str, spec: DatasetSpec, window: Window, version: str) -> ExportResult:
    from ionbeam_dagster.exporters.netcdf import write_netcdf

    # netCDF4 writes through a file path only, so the file is made locally, then placed.
    with tempfile.TemporaryDirectory(prefix="ionbeam-nc-") as tmp:
        path = os.path.join(tmp, "window.nc")
        stats = write_netcdf(
            table,
            path,
            window_start=window.start,
            window_end=window.end,
            dataset=spec.name,
            dataset_version=version,
            station_column=spec.station_column,
            sources=[link.href for link in spec.source_links],
            title=spec.description or spec.name,
        )
        with open(path, "rb") as handle, store.open_atomic_output(key) as sink:
            while chunk := handle.read(8 << 20):
                sink.write(chunk)
    return ExportResult(stats.rows, stats.bytes_written, list(stats.variables_exported), dict(stats.variables_skipped))


def analysis_time(window: Window) -> datetime:
    """The 6-hourly cycle whose assimilation window [t - 3 h, t + 3 h) holds the window's start,
    so the value is fixed per window and does not move when late data arrives."""
    shifted = window.start + timedelta(hours=3)
    return window_of(shifted, timedelta(hours=6)).start


def _odb(table: pa.Table, store: ObjectStore, key: str, spec: DatasetSpec, window: Window, version: str) -> ExportResult:
    from ionbeam_dagster.exporters.odb import write_odb
    from ionbeam_dagster.exporters.varno import VarnoMapping

    mapping = VarnoMapping.from_overrides(list(spec.odb_varno))
    with store.open_atomic_output(key) as sink:
        stats = write_odb(
            table, sink, mapping=mapping, station_column=spec.station_column, analysis_time=analysis_time(window)
        )
    return ExportResult(stats.rows, stats.bytes_written, list(stats.variables_exported), dict(stats.variables_skipped))


EXPORTERS: dict[str, Exporter] = {
    "geoparquet": Exporter("geoparquet", "parquet", _geoparquet, "GeoParquet 1.1 points (EPSG:4326) with a bbox covering"),
    "odb": Exporter("odb", "odb", _odb, "ODB-2 for ECMWF assimilation: one row per (observation, mapped varno)"),
    "netcdf": Exporter("netcdf", "nc", _netcdf, "CF-1.8 discrete sampling geometry (timeSeries or point)"),
}
