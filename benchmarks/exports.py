"""Exporters on one built window, each against its bare codec on the same data.

- geoparquet: ``write_geoparquet`` vs ``pyarrow.parquet.write_table`` of the same table with
  the same compression (zstd): the difference is what GeoParquet adds (series/Hilbert order,
  stable ids, WKB geometry, bbox covering, per-column encodings).
- odb: ``write_odb`` vs ``codc.encode_odb`` of the equivalent long-format pandas frame
  (one row per observation and variable, the same 19 columns and types), built before the
  clock starts.
- netcdf: ``write_netcdf`` vs ``xarray.Dataset.to_netcdf`` of the equivalent Dataset (obs
  dimension; time, lat, lon, station ids as fixed-width chars, the five variables) with the
  same zlib level, shuffle and chunking.

Both sides write to a local file in the run's temporary directory, without fsync.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.data import WINDOW
from benchmarks.timing import Trials, paired_ratio, rate, timed

EXPORTERS = ("geoparquet", "odb", "netcdf")
_MODULES = {name: f"ionbeam_dagster.exporters.{name}" for name in EXPORTERS}


@dataclass
class ExportMeasurement:
    name: str
    rows: int
    ours: Trials[int] = field(default_factory=Trials)  # result: bytes written
    raw: Trials[int] = field(default_factory=Trials)
    note: str = ""
    floor: Trials[int] | None = None  # geoparquet only: see geoparquet_floor

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ours_rows_per_s": rate(self.rows, self.ours.best),
            "raw_rows_per_s": rate(self.rows, self.raw.best),
            "ratio": self.raw.best / self.ours.best,
            "paired_ratio_median": paired_ratio(self.ours.seconds, self.raw.seconds),
            "ours_s": self.ours.best,
            "raw_s": self.raw.best,
            "ours_bytes": self.ours.best_result,
            "raw_bytes": self.raw.best_result,
            "raw_codec": self.note,
        }
        if self.floor is not None:
            out["format_floor_rows_per_s"] = rate(self.rows, self.floor.best)
            out["format_floor_ratio"] = self.floor.best / self.ours.best
            out["format_floor_codec"] = "pyarrow.parquet.write_table(zstd) of the GeoParquet table (+ id, geometry, bbox)"
        return out


def available(name: str) -> bool:
    """Whether the exporter's module exists yet (other engineers are writing some of them)."""
    return importlib.util.find_spec(_MODULES[name]) is not None


# --------------------------------------------------------------------------- geoparquet


def _geoparquet(table: pa.Table, path: Path) -> tuple[Callable[[], int], Callable[[], int], str]:
    from ionbeam_dagster.exporters.geoparquet import write_geoparquet

    def ours() -> int:
        with open(path, "wb") as sink:
            return write_geoparquet(
                table, sink, window_start=WINDOW.start, window_end=WINDOW.end, dataset="bench", dataset_version="0" * 64
            ).bytes_written

    def raw() -> int:
        pq.write_table(table, path, compression="zstd")
        return os.path.getsize(path)

    return ours, raw, "pyarrow.parquet.write_table(compression='zstd')"


def geoparquet_floor(table: pa.Table, directory: Path, repeat: int) -> Trials[int]:
    """write_table of the *GeoParquet* table (with its id, geometry and bbox columns, read
    back from our output): what the format alone costs, whatever the exporter does."""
    from ionbeam_dagster.exporters.geoparquet import write_geoparquet

    path = directory / "export-geoparquet-floor"
    with open(path, "wb") as sink:
        write_geoparquet(table, sink, window_start=WINDOW.start, window_end=WINDOW.end, dataset="bench", dataset_version="0" * 64)
    full = pq.read_table(path)
    trials: Trials[int] = Trials()
    for _ in range(repeat):
        seconds, _ = timed(lambda: pq.write_table(full, path, compression="zstd"))
        trials.add(seconds, os.path.getsize(path))
    return trials


# --------------------------------------------------------------------------- odb


def _odb_frame(table: pa.Table) -> tuple[Any, dict[str, Any]]:
    """The long-format frame ECMWF's ODB tools expect, with the codc types for each column."""
    import codc
    import pandas as pd

    from ionbeam_dagster.canonical import CanonicalName
    from ionbeam_dagster.exporters.varno import DEFAULT_MAPPING, unit_converter

    variables = []
    for name in table.column_names:
        if "__" not in name:
            continue
        target = DEFAULT_MAPPING.resolve(CanonicalName.parse(name))
        convert = unit_converter(CanonicalName.parse(name).cf_unit, target.unit)
        variables.append((target.varno, convert(table[name].to_numpy())))
    variables.sort(key=lambda v: v[0])
    n, k = table.num_rows, len(variables)
    seconds = table["timestamp"].cast(pa.int64()).to_numpy() // 1_000_000_000
    stamps = seconds.astype("datetime64[s]")
    days = stamps.astype("datetime64[D]")
    date = (np.char.replace(np.datetime_as_string(days), "-", "")).astype(np.int64)
    of_day = (stamps - days).astype(np.int64)
    time = (of_day // 3600) * 10_000 + (of_day % 3600 // 60) * 100 + of_day % 60
    stations = np.array(table["station_id"].to_pylist(), dtype=object)
    ints = {
        "class@desc": 2, "stream@desc": 1247, "type@desc": 264, "andate@desc": 20260105, "antime@desc": 60000,
        "reportype@hdr": 16002, "obstype@hdr": 1, "codetype@hdr": 11, "groupid@hdr": 17,
    }  # fmt: skip
    columns: dict[str, Any] = {
        "expver@desc": np.full(n * k, "xxxx", dtype=object),
        "creaby@desc": np.full(n * k, "ionbeam", dtype=object),
        **{c: np.full(n * k, v, dtype=np.int64) for c, v in ints.items()},
        "wigosid@hdr": np.repeat(stations, k),
        "lat@hdr": np.repeat(table["latitude"].to_numpy(), k),
        "lon@hdr": np.repeat(table["longitude"].to_numpy(), k),
        "date@hdr": np.repeat(date, k),
        "time@hdr": np.repeat(time, k),
        "varno@body": np.tile(np.array([v for v, _ in variables], dtype=np.int64), n),
        "obsvalue@body": np.column_stack([values for _, values in variables]).reshape(-1),
        "quality@body": np.zeros(n * k, dtype=np.int64),
    }
    kinds = {np.dtype(object): codc.STRING, np.dtype(np.int64): codc.INTEGER, np.dtype(np.float64): codc.DOUBLE}
    types = {name: kinds[array.dtype] for name, array in columns.items()}
    frame = pd.DataFrame({name: pd.Series(array, dtype=array.dtype, copy=False) for name, array in columns.items()})
    return frame, types


def _odb(table: pa.Table, path: Path) -> tuple[Callable[[], int], Callable[[], int], str]:
    import codc

    from ionbeam_dagster.exporters.odb import write_odb
    from ionbeam_dagster.exporters.varno import DEFAULT_MAPPING

    frame, types = _odb_frame(table)

    def ours() -> int:
        with open(path, "wb") as sink:
            return write_odb(table, sink, mapping=DEFAULT_MAPPING).bytes_written

    def raw() -> int:
        with open(path, "wb") as sink:
            codc.encode_odb(frame, sink, rows_per_frame=10_000, types=types)
        return os.path.getsize(path)

    return ours, raw, f"codc.encode_odb of a {len(frame):,}-row frame (rows_per_frame=10000)"


# --------------------------------------------------------------------------- netcdf


def _netcdf(table: pa.Table, path: Path) -> tuple[Callable[[], int], Callable[[], int], str]:
    import xarray as xr

    from ionbeam_dagster.exporters.netcdf import DEFAULT_COMPLEVEL, write_netcdf

    chunk = min(65_536, table.num_rows)
    stations = np.array(table["station_id"].to_pylist(), dtype="S")
    data: dict[str, Any] = {
        "time": ("obs", table["timestamp"].cast(pa.timestamp("ns")).to_numpy()),
        "lat": ("obs", table["latitude"].to_numpy()),
        "lon": ("obs", table["longitude"].to_numpy()),
        "station_id": ("obs", stations),
    }
    variables = [name for name in table.column_names if "__" in name]
    for i, name in enumerate(variables):
        data[f"v{i}"] = ("obs", table[name].to_numpy(zero_copy_only=False), {"long_name": name})
    dataset = xr.Dataset(data)
    codec = {"zlib": True, "complevel": DEFAULT_COMPLEVEL, "shuffle": True, "chunksizes": (chunk,)}
    encoding: dict[str, dict[str, Any]] = {name: dict(codec) for name in data if name != "station_id"}
    encoding["station_id"] = {**codec, "chunksizes": (chunk, stations.dtype.itemsize)}

    def ours() -> int:
        return write_netcdf(
            table, path, window_start=WINDOW.start, window_end=WINDOW.end, dataset="bench", dataset_version="0" * 64
        ).bytes_written

    def raw() -> int:
        dataset.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
        return os.path.getsize(path)

    return ours, raw, f"xarray.Dataset.to_netcdf(engine='netcdf4', zlib complevel {DEFAULT_COMPLEVEL}, shuffle)"


_SETUPS = {"geoparquet": _geoparquet, "odb": _odb, "netcdf": _netcdf}


def measure_export(
    name: str, table: pa.Table, directory: Path, repeat: int, *, log: Callable[[str], None] = print
) -> ExportMeasurement:
    ours, raw, note = _SETUPS[name](table, directory / f"export-{name}")
    result = ExportMeasurement(name=name, rows=table.num_rows, note=note)
    for _ in range(repeat):
        for side, fn, trials in (("ours", ours, result.ours), ("raw", raw, result.raw)):
            seconds, size = timed(fn)
            trials.add(seconds, size)
            log(f"  {name:<10} {side:<4} {table.num_rows:>9} rows  {seconds:7.3f} s  {rate(table.num_rows, seconds):>10,.0f} rows/s  {size / 1e6:8.1f} MB")
    if name == "geoparquet":
        result.floor = geoparquet_floor(table, directory, repeat)
        log(f"  {name:<10} floor {table.num_rows:>8} rows  {result.floor.best:7.3f} s  (write_table of the GeoParquet columns)")
    return result


__all__ = ["EXPORTERS", "ExportMeasurement", "available", "measure_export"]
