"""CF-1.8 NetCDF (NetCDF4/HDF5) export of a dataset window as a discrete sampling geometry.

The input is the contract's dataset table (`timestamp`, `latitude`, `longitude`, canonical
variable columns, string metadata columns such as `station_id`). The output is one of two CF
discrete sampling geometries (CF 1.8, chapter 9), chosen per file:

- `timeSeries`, when every station keeps one position for the whole window. Stored as a
  *contiguous ragged array* (CF 9.3.3): rows sorted by (station, time), and a per-station
  `row_size` saying how many consecutive `obs` elements belong to it. Chosen over:
  * the orthogonal / incomplete multidimensional arrays, which pad every station to the
    longest series: crowd-sourced stations report at irregular rates, so a 1 Hz station next
    to hourly ones would make the file mostly fill values;
  * the indexed ragged array, which is as compact but meant for appending as data arrives:
    a reader must scan the whole per-obs index to find one station, whereas here a station is
    the slice `[sum(row_size[:i]), sum(row_size[:i+1]))`. The window is written in one go, so
    sorting first (one numpy argsort) costs nothing a reader would notice.
- `point` (CF 9.1), when a station changes position within the window (a moving platform),
  when rows have no station id, or when there is no station column. Every row is an
  independent observation with its own time, latitude and longitude; the station id, if
  any, is kept per observation as a label.

Each canonical variable (`{standard_name}__{cf_unit}__{level}__{method}__{period}`) becomes
one float64 data variable along `obs`, named by its standard_name (with level / method /
period suffixes only where two would share a name), with `standard_name`, `units` (the
canonical unit, passed through), `cell_methods` from method and period, `_FillValue`, and a
`coordinates` attribute naming the time/position variables and the scalar height coordinate
of its level. Variables at one level share one scalar `height_<level>m` coordinate (units m,
positive up), so e.g. temperature and humidity at 2 m both point at `height_2m`.

Written with netCDF4-python directly rather than through an xarray Dataset: that gives exact
control over which attributes exist (xarray adds a `_FillValue` to float coordinates and a
global `coordinates` attribute for unattached scalars, neither of which CF wants), writes
straight from numpy buffers without building a pandas index, and keeps xarray a reader-side
(and test) dependency only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import metadata as importlib_metadata
from typing import Any, Literal

import netCDF4
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ionbeam_dagster.canonical import CanonicalName
from ionbeam_dagster.durations import format_duration, parse_duration
from ionbeam_dagster.exporters.geoparquet import (
    AXIS_COLUMNS,
    LAT_COLUMN,
    LON_COLUMN,
    TIME_COLUMN,
    _axes,
    _is_text,
    _iso_utc,
)

__all__ = [
    "DEFAULT_COMPLEVEL",
    "FILL_VALUE",
    "FeatureType",
    "NetcdfStats",
    "write_netcdf",
]

FeatureType = Literal["timeSeries", "point"]

CONVENTIONS = "CF-1.8"
# The netCDF default fill for doubles rather than NaN: CF tools (and the CF checker) expect
# a _FillValue that is a real number outside the data range, and NaN never compares equal,
# which breaks readers that mask by equality.
FILL_VALUE = float(netCDF4.default_fillvals["f8"])

# zlib level 1 with byte shuffle: about half the size of the raw doubles for roughly 1 s per
# million rows of five variables; higher levels cost ~60% more time for ~4% less size.
DEFAULT_COMPLEVEL = 1
# 64k elements (512 KiB of doubles) per chunk: a reader pulling one station's slice
# decompresses little beyond it, and a 1M-row window is still only ~16 chunks per variable.
_CHUNK = 65_536

OBS_DIM, STATION_DIM = "obs", "station"
TIME_VAR, LAT_VAR, LON_VAR, STATION_VAR, ROW_SIZE_VAR = "time", "lat", "lon", "station_id", "row_size"

# CF cell_methods methods (CF 1.8, appendix E) and the spellings sources use for them.
_CF_METHODS = frozenset(
    {"point", "sum", "maximum", "median", "mid_range", "minimum", "mean", "mode", "range",
     "standard_deviation", "variance"}
)  # fmt: skip
_METHOD_ALIASES = {
    "max": "maximum",
    "min": "minimum",
    "avg": "mean",
    "average": "mean",
    "total": "sum",
    "accumulation": "sum",
    "accumulated": "sum",
    "std": "standard_deviation",
    "stddev": "standard_deviation",
}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class NetcdfStats:
    rows: int
    stations: int  # distinct non-null station ids (0 without a station column)
    variables_exported: list[str]  # canonical names, in file order
    variables_skipped: dict[str, str]  # column -> why it was not exported
    bytes_written: int
    feature_type: FeatureType
    feature_type_reason: str  # why this feature type: e.g. which station moved
    variable_names: dict[str, str]  # canonical name -> netCDF variable name


@dataclass(frozen=True)
class _Variable:
    column: str
    name: CanonicalName


def write_netcdf(
    table: pa.Table,
    path: str | os.PathLike[str],
    *,
    window_start: datetime,
    window_end: datetime,
    dataset: str,
    dataset_version: str,
    station_column: str | None = "station_id",
    sources: Sequence[str] = (),
    title: str | None = None,
    institution: str | None = None,
    complevel: int = DEFAULT_COMPLEVEL,
) -> NetcdfStats:
    """Write `table` (the contract's dataset schema) to `path` as a CF-1.8 DSG NetCDF4 file.

    `station_column` names the identifier column; None, or a name the table lacks, means the
    rows are independent points. Text columns other than the station are kept as label
    variables; non-text columns that are not canonical variable names (or not numeric) are
    left out and reported in `variables_skipped`. `complevel` is the zlib level (0: none).

    Raises ValueError when the table breaks the dataset contract (missing axis, nulls or
    out-of-range coordinates, rows outside the window, two rows for one station and time).
    A file left half-written by an error is removed.
    """
    start_text = _iso_utc(window_start, "window_start")
    end_text = _iso_utc(window_end, "window_end")
    if window_start >= window_end:
        raise ValueError(f"window: start {start_text} must be before end {end_text}")
    if not 0 <= complevel <= 9:
        raise ValueError(f"complevel: {complevel} must be between 0 and 9")

    names = table.column_names
    if len(set(names)) != len(names):
        raise ValueError(f"dataset table: duplicate column names in {names}")
    ts, lat, lon = _axes(_conform_axes(table), window_start, window_end)
    has_station = station_column is not None and station_column in names
    variables, labels, skipped = _classify(table, station_column if has_station else None)

    layout = _layout(table, station_column if has_station else None, ts, lat, lon)
    taken = {OBS_DIM, STATION_DIM, TIME_VAR, LAT_VAR, LON_VAR, ROW_SIZE_VAR}
    if layout.station_ids is not None:
        taken.add(STATION_VAR)
    heights = {
        level: _unique(f"height_{_number_label(level)}m", taken) for level in sorted({v.name.level for v in variables})
    }
    data_names = _data_names([v.name for v in variables], taken)
    label_names = {column: _unique(_safe_name(column), taken) for column in labels}

    target = os.fspath(path)
    nc = netCDF4.Dataset(target, "w", format="NETCDF4")
    try:
        try:
            nc.setncatts(
                _global_attributes(
                    layout,
                    lat,
                    lon,
                    start_text=start_text,
                    end_text=end_text,
                    duration=window_end - window_start,
                    dataset=dataset,
                    dataset_version=dataset_version,
                    sources=sources,
                    title=title,
                    institution=institution,
                )
            )
            writer = _Writer(nc, layout.order.size, complevel)
            coordinates = writer.axes(layout, ts, lat, lon, station_column)
            for level, name in heights.items():
                writer.height(name, level)
            for variable in variables:
                name = data_names[variable.name]
                writer.data(
                    name,
                    variable,
                    table[variable.column],
                    layout.order,
                    f"{coordinates} {heights[variable.name.level]}",
                )
            for column, name in label_names.items():
                writer.label(name, column, table[column], layout)
        finally:
            nc.close()  # flushes: a full disk shows up here, and is handled like any failure
    except BaseException:
        # A truncated HDF5 file can still open far enough to look valid to a listing or a
        # consumer polling the directory; only a file this call created is removed.
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise

    return NetcdfStats(
        rows=int(layout.order.size),
        stations=layout.distinct_stations,
        variables_exported=[str(v.name) for v in variables],
        variables_skipped=skipped,
        bytes_written=os.path.getsize(target),
        feature_type=layout.feature_type,
        feature_type_reason=layout.reason,
        variable_names={str(v.name): data_names[v.name] for v in variables},
    )


# --------------------------------------------------------------------------- input


def _conform_axes(table: pa.Table) -> pa.Table:
    """The axis columns in the contract types, for the shared checks in geoparquet._axes.

    The time is cast to ns before _axes turns it into integers: a timestamp[us] column cast
    straight to int64 would give microseconds.
    """
    missing = [c for c in AXIS_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"dataset table: missing column(s) {missing}; columns present: {table.column_names}")
    time_type = table.schema.field(TIME_COLUMN).type
    if not pa.types.is_timestamp(time_type):
        raise ValueError(f"{TIME_COLUMN}: type {time_type} must be a timestamp")
    if time_type.tz not in (None, "UTC", "+00:00", "Etc/UTC"):
        raise ValueError(f"{TIME_COLUMN}: timezone {time_type.tz!r} must be UTC")
    columns = [table[TIME_COLUMN].cast(pa.timestamp("ns", tz="UTC"))]
    for name in (LAT_COLUMN, LON_COLUMN):
        column_type = table.schema.field(name).type
        if not (pa.types.is_floating(column_type) or pa.types.is_integer(column_type)):
            raise ValueError(f"{name}: type {column_type} must be numeric")
        columns.append(table[name].cast(pa.float64()))
    return pa.Table.from_arrays([c.combine_chunks() for c in columns], names=list(AXIS_COLUMNS))


def _classify(table: pa.Table, station_column: str | None) -> tuple[list[_Variable], list[str], dict[str, str]]:
    """Split the non-axis columns into canonical variables, text labels and skipped columns."""
    variables: list[_Variable] = []
    labels: list[str] = []
    skipped: dict[str, str] = {}
    for column in table.column_names:
        if column in AXIS_COLUMNS or column == station_column:
            continue
        column_type = table.schema.field(column).type
        if _is_text(column_type):
            labels.append(column)
            continue
        try:
            name = CanonicalName.parse(column)
        except ValueError as exc:
            skipped[column] = f"not a canonical variable name: {exc}"
            continue
        if not (pa.types.is_floating(column_type) or pa.types.is_integer(column_type)):
            skipped[column] = f"type {column_type} is not numeric"
            continue
        variables.append(_Variable(column, name))
    return variables, labels, skipped


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    feature_type: FeatureType
    reason: str
    order: np.ndarray  # input row for each obs element, in file order
    distinct_stations: int
    # timeSeries: one entry per station (sorted ids), and rows per station. point: ids per
    # obs element (None without a station column); row_size None.
    station_ids: np.ndarray | None  # fixed-width bytes (S<n>)
    station_first: np.ndarray | None  # timeSeries: the input row of each station's first obs
    row_size: np.ndarray | None
    station_of_obs: np.ndarray | None  # timeSeries: station index of each obs element


def _layout(table: pa.Table, station_column: str | None, ts: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> _Layout:
    n = ts.size
    if station_column is None:
        return _Layout("point", "no station column", np.argsort(ts, kind="stable"), 0, None, None, None, None)

    codes, id_bytes, nulls = _codes(table[station_column])
    n_stations = int(id_bytes.size)
    if nulls:
        # Rows without an id cannot be put in any station's series; as points they keep
        # everything they have (the ids of the other rows become per-observation labels).
        order = np.lexsort((codes, ts))
        reason = f"{nulls} row(s) have no {station_column}"
        return _Layout("point", reason, order, n_stations, _with_null(id_bytes)[codes[order]], None, None, None)

    # Group by station (ids sort as bytes, so the station order is the same in every file),
    # time order within a station.
    order = np.lexsort((ts, codes))
    s_sorted, t_sorted = codes[order], ts[order]
    repeated = (s_sorted[1:] == s_sorted[:-1]) & (t_sorted[1:] == t_sorted[:-1])
    if repeated.any():
        row = int(order[1:][repeated][0])
        raise ValueError(
            f"dataset table: {int(repeated.sum())} duplicate observation(s) (same {TIME_COLUMN} and "
            f"{station_column}), e.g. {station_column}={table[station_column][row].as_py()!r} "
            f"{TIME_COLUMN}={int(ts[row])}"
        )
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) if n else np.empty(0, np.int64)
    first_rows = order[starts]  # codes are dense and sorted, so starts[k] is station k
    moved = (lat[order] != lat[first_rows][s_sorted]) | (lon[order] != lon[first_rows][s_sorted])
    if moved.any():
        moving = np.unique(s_sorted[moved])
        example = id_bytes[moving[0]].decode("utf-8")
        reason = f"{moving.size} station(s) change position within the window, e.g. {example!r}"
        point_order = np.lexsort((codes, ts))
        return _Layout("point", reason, point_order, n_stations, id_bytes[codes[point_order]], None, None, None)

    row_size = np.diff(np.r_[starts, n])
    if row_size.size and int(row_size.max()) >= 2**31:
        raise ValueError(f"dataset table: a station has {int(row_size.max())} rows, more than a CF count (int32) holds")
    row_size = row_size.astype(np.int32)
    reason = "every station keeps one position within the window"
    return _Layout("timeSeries", reason, order, n_stations, id_bytes, first_rows, row_size, s_sorted)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, int]:
    """(code per row, UTF-8 id per code as sorted fixed-width bytes, count of null rows).

    Codes index the sorted ids; null rows get code len(ids). Only the distinct values go
    through Python, so this stays vectorised however many rows share an id.
    """
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if not _is_text(array.type):
        array = array.cast(pa.string())  # numeric station numbers are identifiers too
    encoded = pc.dictionary_encode(array, null_encoding="mask")
    values = [v.encode("utf-8") for v in encoded.dictionary.to_pylist()]
    width = max((len(v) for v in values), default=1) or 1
    id_bytes = np.array(values, dtype=f"S{width}")
    rank = np.argsort(id_bytes, kind="stable")
    position = np.empty(rank.size + 1, dtype=np.int64)
    position[rank] = np.arange(rank.size)
    position[rank.size] = rank.size  # nulls
    indices = pc.fill_null(encoded.indices, rank.size).to_numpy(zero_copy_only=False).astype(np.int64)
    return position[indices], id_bytes[rank], int(encoded.indices.null_count)


def _with_null(id_bytes: np.ndarray) -> np.ndarray:
    """The ids plus an empty entry at index len(ids), where null rows point."""
    return np.concatenate([id_bytes, np.zeros(1, dtype=id_bytes.dtype)])


# --------------------------------------------------------------------------- names


def _safe_name(text: str) -> str:
    """A netCDF/CF variable name: letters, digits and underscores, starting with a letter."""
    name = _NAME_UNSAFE.sub("_", text).strip("_") or "variable"
    return name if name[0].isalpha() else f"v_{name}"


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def _number_label(value: float) -> str:
    """2.0 -> "2", 0.5 -> "0p5", -0.1 -> "minus0p1": a level that is legal in a variable name."""
    text = np.format_float_positional(value, trim="-")
    return text.replace("-", "minus").replace(".", "p")


def _data_names(names: list[CanonicalName], taken: set[str]) -> dict[CanonicalName, str]:
    """standard_name, plus the parts that tell apart variables sharing it.

    Only parts that differ within the group are added, and a point/instant value keeps the
    bare name, so 2 m temperature stays `air_temperature` next to `air_temperature_maximum_pt1h`.
    """
    groups: dict[str, list[CanonicalName]] = {}
    for name in names:
        groups.setdefault(_safe_name(name.standard_name), []).append(name)
    out: dict[CanonicalName, str] = {}
    for base, members in groups.items():
        if len(members) == 1:
            out[members[0]] = _unique(base, taken)
            continue
        levels = len({m.level for m in members}) > 1
        methods = len({m.method for m in members}) > 1
        periods = len({m.period for m in members}) > 1
        for member in members:
            parts = [base]
            if levels:
                parts.append(f"{_number_label(member.level)}m")
            if methods and member.method != "point":
                parts.append(member.method)
            if periods and member.period != "PT0S":
                parts.append(member.period.lower())
            if not (levels or methods or periods):  # only the unit differs
                parts.append(member.cf_unit)
            out[member] = _unique(_safe_name("_".join(parts)), taken)
    return out


# --------------------------------------------------------------------------- CF attributes


def _cell_methods(name: CanonicalName) -> str | None:
    """CF cell_methods for the canonical method and period; None for a method CF does not know.

    The period goes in the `interval` clause, as observation datasets commonly do ("maximum
    over 1 hour"); the exact ISO period is also kept in the variable's ionbeam attributes.
    """
    method = _METHOD_ALIASES.get(name.method.lower(), name.method.lower())
    if method not in _CF_METHODS:
        return None
    if method == "point":
        return "time: point"
    try:
        period = parse_duration(name.period)
    except ValueError:
        # e.g. P1M: no fixed length, so no udunits interval; say it in words instead.
        return f"time: {method} (comment: period {name.period})"
    if period <= timedelta(0):
        return f"time: {method}"
    return f"time: {method} (interval: {_interval(period)})"


def _interval(period: timedelta) -> str:
    """A udunits time interval in the largest whole unit: "1 hour", "10 minutes", "0.5 seconds"."""
    micros = period // timedelta(microseconds=1)
    for unit, size in (("day", 86_400_000_000), ("hour", 3_600_000_000), ("minute", 60_000_000), ("second", 1_000_000)):
        if micros % size == 0:
            count = micros // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    seconds = Decimal(micros) / Decimal(1_000_000)
    return f"{seconds.normalize():f} seconds"


def _long_name(name: CanonicalName) -> str:
    text = f"{name.standard_name.replace('_', ' ')} at {np.format_float_positional(name.level, trim='-')} m"
    if name.method != "point":
        text += f", {name.method} over {name.period}"
    return text


def _time_units(ts: np.ndarray) -> tuple[str, np.ndarray]:
    """The coarsest epoch unit that holds every timestamp exactly, and the values in it.

    int64 ns since the epoch are exact but "nanoseconds" trips up older readers (cftime);
    double seconds are widely read but lose precision below ~0.2 us. Whole-second data (the
    common case) therefore gets int64 seconds, and only data that needs finer units gets them.
    """
    for unit, size in (("seconds", 1_000_000_000), ("milliseconds", 1_000_000), ("microseconds", 1_000)):
        if not np.any(ts % size):
            return f"{unit} since 1970-01-01 00:00:00", ts // size
    return "nanoseconds since 1970-01-01 00:00:00", ts


def _package_version() -> str:
    try:
        return importlib_metadata.version("ionbeam-dagster")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _global_attributes(
    layout: _Layout,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    start_text: str,
    end_text: str,
    duration: timedelta,
    dataset: str,
    dataset_version: str,
    sources: Sequence[str],
    title: str | None,
    institution: str | None,
) -> dict[str, object]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    software = f"ionbeam-dagster {_package_version()}"
    attrs: dict[str, object] = {
        "Conventions": CONVENTIONS,
        "featureType": layout.feature_type,
        "title": title or f"ionbeam dataset {dataset}, {start_text} to {end_text}",
    }
    if institution:
        attrs["institution"] = institution
    attrs |= {
        # CF `source`: how the original data were produced, i.e. the ionbeam data sources.
        "source": f"ionbeam data sources: {', '.join(sources)}" if sources else "ionbeam data sources: not recorded",
        "history": f"{now} {software}: dataset {dataset} version {dataset_version} written as CF-NetCDF "
        f"({layout.feature_type})",
        "date_created": now,
        "ionbeam_dataset": dataset,
        "ionbeam_dataset_version": dataset_version,
        # The window, not the first/last observation: consumers tile windows by these, and an
        # empty or sparse window must still say which span it covers. The end is exclusive.
        "time_coverage_start": start_text,
        "time_coverage_end": end_text,
        "time_coverage_duration": _iso_duration(duration),
    }
    if lat.size:
        attrs |= {
            "geospatial_lat_min": float(lat.min()),
            "geospatial_lat_max": float(lat.max()),
            "geospatial_lon_min": float(lon.min()),
            "geospatial_lon_max": float(lon.max()),
            "geospatial_lat_units": "degrees_north",
            "geospatial_lon_units": "degrees_east",
        }
    return attrs


def _iso_duration(duration: timedelta) -> str:
    try:
        return format_duration(duration)
    except ValueError:
        return str(duration)


# --------------------------------------------------------------------------- writing


class _Writer:
    """Creates variables on an open dataset with one compression/chunking policy."""

    def __init__(self, nc: netCDF4.Dataset, n_obs: int, complevel: int) -> None:
        self.nc = nc
        self.n_obs = n_obs
        self.complevel = complevel
        # An empty window gives length 0, which netCDF makes an unlimited dimension of current
        # length 0: the only way to write a zero-length dimension, and readers treat it so.
        nc.createDimension(OBS_DIM, n_obs)

    def _storage(self, length: int, trailing: tuple[int, ...] = ()) -> dict[str, Any]:
        # netCDF has no zero-length fixed dimension: a dimension created with length 0 is
        # unlimited (see __init__), and those take the library's default chunking.
        if length == 0:
            return {}
        if self.complevel == 0:
            return {"contiguous": True}
        return {
            "compression": "zlib",
            "complevel": self.complevel,
            "shuffle": True,
            "chunksizes": (min(length, _CHUNK), *trailing),
        }

    def _chars(self, name: str, dims: tuple[str, ...], values: np.ndarray, attrs: dict[str, object]) -> None:
        """A CF char array (dims + string length) of fixed-width UTF-8 bytes.

        Char arrays rather than NC_STRING: HDF5 keeps variable-length strings in a global heap
        that compression does not reach, so 1M station ids take ~50 MB and ~0.8 s as strings,
        ~2 MB and ~0.1 s as chars. `_Encoding` tells xarray and netCDF4 to decode them to str.
        """
        width = max(values.dtype.itemsize, 1)
        strlen = f"{name}_strlen"
        self.nc.createDimension(strlen, width)
        length = values.shape[0]
        variable = self.nc.createVariable(name, "S1", (*dims, strlen), **self._storage(length, (width,)))
        variable.setncatts(attrs | {"_Encoding": "utf-8"})
        variable.set_auto_chartostring(False)
        if length:
            variable[:] = np.ascontiguousarray(values.astype(f"S{width}")).view("S1").reshape(length, width)

    def axes(
        self, layout: _Layout, ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, station_column: str | None
    ) -> str:
        """Time, position and station variables; returns the data variables' `coordinates`."""
        order = layout.order
        units, values = _time_units(ts[order])
        time = self.nc.createVariable(TIME_VAR, "i8", (OBS_DIM,), **self._storage(self.n_obs))
        time.setncatts(
            {"standard_name": "time", "long_name": "time of observation", "units": units, "calendar": "standard"}
        )
        time[:] = values

        if layout.feature_type == "timeSeries":
            assert layout.station_ids is not None and layout.row_size is not None and layout.station_first is not None
            n_stations = layout.station_ids.size
            self.nc.createDimension(STATION_DIM, n_stations)
            self._chars(
                STATION_VAR,
                (STATION_DIM,),
                layout.station_ids,
                {"cf_role": "timeseries_id", "long_name": f"station identifier ({station_column})"},
            )
            position_dim, position_rows = STATION_DIM, layout.station_first
            # int32, as in the CF examples: the CF checker rejects any other count type, and
            # one station cannot exceed 2**31 rows (checked in _layout).
            row_size = self.nc.createVariable(ROW_SIZE_VAR, "i4", (STATION_DIM,))
            row_size.setncatts({"long_name": "number of observations for this station", "sample_dimension": OBS_DIM})
            if n_stations:
                row_size[:] = layout.row_size
        else:
            position_dim, position_rows = OBS_DIM, order
            if layout.station_ids is not None:
                # A label (CF 6.1.1): the platform of each point, kept so a moving platform's
                # track can still be followed.
                self._chars(
                    STATION_VAR,
                    (OBS_DIM,),
                    layout.station_ids,
                    {"long_name": f"station or platform identifier ({station_column})"},
                )

        for name, standard_name, units, values in (
            (LAT_VAR, "latitude", "degrees_north", lat),
            (LON_VAR, "longitude", "degrees_east", lon),
        ):
            length = position_rows.size
            variable = self.nc.createVariable(name, "f8", (position_dim,), **self._storage(length))
            subject = "station" if position_dim == STATION_DIM else "observation"
            variable.setncatts(
                {"standard_name": standard_name, "long_name": f"{subject} {standard_name}", "units": units}
            )
            if length:
                variable[:] = values[position_rows]

        names = [TIME_VAR, LAT_VAR, LON_VAR]
        if layout.station_ids is not None:
            names.append(STATION_VAR)
        return " ".join(names)

    def height(self, name: str, level: float) -> None:
        variable = self.nc.createVariable(name, "f8", ())
        variable.setncatts(
            {
                "standard_name": "height",
                "long_name": "height above the surface",
                "units": "m",
                "positive": "up",
                "axis": "Z",
            }
        )
        variable.assignValue(level)

    def data(
        self, name: str, variable: _Variable, column: pa.ChunkedArray, order: np.ndarray, coordinates: str
    ) -> None:
        canonical = variable.name
        out = self.nc.createVariable(name, "f8", (OBS_DIM,), fill_value=FILL_VALUE, **self._storage(self.n_obs))
        attrs: dict[str, object] = {
            "standard_name": canonical.standard_name,
            "long_name": _long_name(canonical),
            "units": canonical.cf_unit,
            "coordinates": coordinates,
        }
        cell_methods = _cell_methods(canonical)
        if cell_methods is not None:
            attrs["cell_methods"] = cell_methods
        # The canonical name parts, so a consumer can map a variable back to ionbeam exactly
        # (the CF attributes alone lose e.g. the ISO period spelling or an unknown method).
        attrs |= {
            "ionbeam_canonical_name": str(canonical),
            "ionbeam_level": canonical.level,
            "ionbeam_method": canonical.method,
            "ionbeam_period": canonical.period,
        }
        out.setncatts(attrs)
        if self.n_obs:
            # Nulls come out of Arrow as NaN; both become the fill value, which readers mask.
            values = column.cast(pa.float64()).to_numpy()[order]
            values[np.isnan(values)] = FILL_VALUE
            out[:] = values

    def label(self, name: str, column_name: str, column: pa.ChunkedArray, layout: _Layout) -> None:
        """Another text column (e.g. a network or provider name), nulls written as "".

        In a time series a value that is constant within every station is stored once per
        station (an instance variable); anything else is stored per observation.
        """
        codes, values, _ = _codes(column)
        values = _with_null(values)
        if layout.feature_type == "timeSeries" and layout.station_of_obs is not None:
            assert layout.station_first is not None
            per_obs = codes[layout.order]
            per_station = codes[layout.station_first]
            if np.array_equal(per_obs, per_station[layout.station_of_obs]):
                self._chars(name, (STATION_DIM,), values[per_station], {"long_name": column_name})
                return
        self._chars(name, (OBS_DIM,), values[codes[layout.order]], {"long_name": column_name})
