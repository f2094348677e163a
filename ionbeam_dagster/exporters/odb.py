"""ODB-2 export of a dataset window, for ECMWF's observation processing.

The input is the contract's dataset table (``timestamp``, ``latitude``, ``longitude``,
canonical variable columns, metadata string columns). The output has one ODB-2 row per
(observation, mapped variable with a value), with the contract's columns:

=================  ========  =====================================================
column             type      value
=================  ========  =====================================================
expver@desc        string    ``expver`` (default "xxxx")
class@desc         integer   2
stream@desc        integer   1247
type@desc          integer   264
creaby@desc        string    ``created_by``
andate@desc        integer   analysis date YYYYMMDD
antime@desc        integer   analysis time HHMMSS
reportype@hdr      integer   16002
obstype@hdr        integer   1
codetype@hdr       integer   11
groupid@hdr        integer   17
wigosid@hdr        string    the station id (``station_column``)
lat@hdr, lon@hdr   double    position, degrees
date@hdr           integer   observation date YYYYMMDD (UTC)
time@hdr           integer   observation time HHMMSS (UTC; sub-second part dropped)
varno@body         integer   see :mod:`ionbeam_dagster.exporters.varno`
obsvalue@body      double    the value, converted to the varno's unit
quality@body       integer   0: the dataset table carries no quality flag
=================  ========  =====================================================

Reals are written as ODB ``DOUBLE`` (8 bytes), not ``REAL``: both encoders store REAL as
float32, which would turn 20.5 degC into 293.64999 K and move a station by up to ~1.5 m.
Decoders return both as float64, and the ODB kinds (integer / real / string) of the columns
shared with ECMWF's own files (``shared/fixtures/odb/example.odb``) are the same.

Variables that do not map to a varno, whose unit cannot be converted, or that are not
canonical names are skipped and listed in :attr:`OdbStats.variables_skipped` with the reason.

Encoders: codc (C++ odc, from the ``odclib`` wheel pyodc depends on) encodes ~8x faster
than pyodc (pure Python; ~0.86M vs ~0.09M rows per CPU-second here) and is the default
when it loads. codc silently corrupts integers outside int32 (2**31 reads back as -2**31,
2**31 - 1 as missing), so every integer column is range-checked before either encoder
sees it. Neither encoder accepts bool, nullable
integers, datetime64 or None in strings; the frame is built from plain int64 / float64 /
str arrays only, with no per-row Python on our side.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ionbeam_dagster.canonical import CanonicalName
from ionbeam_dagster.exporters.sinks import CountingWriter
from ionbeam_dagster.exporters.varno import (
    ODB_INT_MAX,
    ODB_INT_MIN,
    NoVarno,
    VarnoMapping,
    unit_converter,
)

__all__ = [
    "ANALYSIS_CYCLE",
    "DEFAULT_ROWS_PER_FRAME",
    "Encoder",
    "HEADER_CONSTANTS",
    "ODB_COLUMNS",
    "OdbKind",
    "OdbStats",
    "QUALITY_UNFLAGGED",
    "codc_available",
    "default_encoder",
    "encode_columns",
    "write_odb",
]

Encoder = Literal["pyodc", "codc"]
OdbKind = Literal["integer", "double", "string"]

TIME_COLUMN, LAT_COLUMN, LON_COLUMN = "timestamp", "latitude", "longitude"
AXIS_COLUMNS = (TIME_COLUMN, LAT_COLUMN, LON_COLUMN)

# Contract order; also the order handed to the encoders (codc keeps it, pyodc reorders
# columns by how often they change, which only affects compression).
ODB_COLUMNS: Mapping[str, OdbKind] = MappingProxyType(
    {
        "expver@desc": "string",
        "class@desc": "integer",
        "stream@desc": "integer",
        "type@desc": "integer",
        "creaby@desc": "string",
        "andate@desc": "integer",
        "antime@desc": "integer",
        "reportype@hdr": "integer",
        "obstype@hdr": "integer",
        "codetype@hdr": "integer",
        "groupid@hdr": "integer",
        "wigosid@hdr": "string",
        "lat@hdr": "double",
        "lon@hdr": "double",
        "date@hdr": "integer",
        "time@hdr": "integer",
        "varno@body": "integer",
        "obsvalue@body": "double",
        "quality@body": "integer",
    }
)

# Report identity of the reference exporter (contract, "ODB export").
HEADER_CONSTANTS: Mapping[str, int] = MappingProxyType(
    {
        "class@desc": 2,
        "stream@desc": 1247,
        "type@desc": 264,
        "reportype@hdr": 16002,
        "obstype@hdr": 1,
        "codetype@hdr": 11,
        "groupid@hdr": 17,
    }
)
QUALITY_UNFLAGGED = 0

# The library default. It also keeps pyodc safe: its string codecs hold at most 32767
# distinct values per frame, and a frame of N rows cannot have more than N station ids.
DEFAULT_ROWS_PER_FRAME = 10_000
_MAX_ROWS_PER_FRAME = 32_767

# Without an explicit analysis time, observations feed the first 6-hourly cycle strictly
# after the earliest of them (the reference exporter's rule, applied to the data).
ANALYSIS_CYCLE = timedelta(hours=6)

# What both encoders write for a missing real; a real value equal to it reads back as
# missing in codc and as itself in pyodc, so it is refused like NaN.
_MISSING_REAL = -2147483647.0

_NS_PER_S = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# codc wraps one C++ library whose encoder is not documented as thread-safe; exports in
# threads of one process take turns (a lock costs nothing next to the encode).
_CODC_LOCK = threading.Lock()


@dataclass(frozen=True)
class OdbStats:
    rows: int  # ODB rows written
    observations: int  # table rows that produced at least one ODB row
    variables_exported: list[str]  # canonical columns mapped to a varno (table order)
    variables_skipped: dict[str, str]  # column -> why it was not exported
    bytes_written: int
    varnos: dict[str, int] = field(default_factory=dict)  # exported column -> varno
    values_dropped: dict[str, int] = field(default_factory=dict)  # column -> NaN/inf values not written
    analysis_time: datetime | None = None  # andate/antime written (None when no rows)
    encoder: str = ""


# --------------------------------------------------------------------------- encoders


@lru_cache(maxsize=1)
def codc_available() -> bool:
    """True when codc imports and finds libodccore (findlibs looks in the odclib wheel first)."""
    settle_proj_before_codc()
    try:
        import codc  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or RuntimeError/OSError from findlibs/dlopen
        return False
    return True


def settle_proj_before_codc() -> None:
    """Open PROJ's database before codc loads.

    codc's eckit wheel bundles its own SQLite. Loaded first, its symbols are the ones PROJ
    (pyproj, used by the GeoParquet exporter in the same run) then binds to, and PROJ fails
    ("no database context specified") or the process aborts with a double free. Once PROJ
    has opened its database the two coexist, so every path to codc goes through here.
    """
    try:
        from pyproj import CRS
    except ImportError:  # no pyproj in this process: nothing to protect
        return
    CRS.from_epsg(4326)


def default_encoder() -> Encoder:
    return "codc" if codc_available() else "pyodc"


def _resolve_encoder(encoder: Encoder | None) -> Encoder:
    if encoder is None:
        return default_encoder()
    if encoder not in ("pyodc", "codc"):
        raise ValueError(f"encoder: {encoder!r} must be 'pyodc' or 'codc'")
    if encoder == "codc" and not codc_available():
        raise RuntimeError(
            "encoder: codc cannot load libodccore; install pyodc with its odclib dependency "
            "(pip install pyodc) or use encoder='pyodc'"
        )
    return encoder


@dataclass(frozen=True)
class _Strings:
    """A string column as codes into its distinct values.

    Only distinct values are ever touched in Python (UTF-8 encoded for codc); rows are a
    numpy gather. write_odb builds these directly: its strings are one station id per
    observation and two constants, so there is nothing to factorize.
    """

    codes: np.ndarray  # intp, one per row
    values: np.ndarray  # object array of distinct str

    @property
    def size(self) -> int:
        return int(self.codes.size)

    def rows(self, utf8: bool = False) -> np.ndarray:
        values = np.array([v.encode("utf-8") for v in self.values], dtype=object) if utf8 else self.values
        return values[self.codes]


_Column = np.ndarray | _Strings


def _conform_column(name: str, values: Any) -> tuple[OdbKind, _Column]:
    """The ODB kind of a column and its array in the one dtype both encoders take for it.

    Refuses what the encoders mishandle instead of casting it: a bool or datetime column
    here means an upstream step produced the wrong thing, not something to guess at.
    """
    if isinstance(values, _Strings):
        return "string", values
    if not isinstance(values, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {values.shape}")
    kind = values.dtype.kind
    if kind in "iu":
        if values.dtype == np.uint64 and values.size and values.max() > np.uint64(ODB_INT_MAX):
            raise ValueError(f"{name}: values up to {values.max()} exceed the ODB integer range")
        ints = values.astype(np.int64, copy=False)
        if ints.size:
            # The int32 guard. codc would write 2**31 as -2**31 and 2**31 - 1 (the missing
            # marker) as missing without a word; pyodc raises an error that names no column.
            outside = (ints < ODB_INT_MIN) | (ints > ODB_INT_MAX)
            if outside.any():
                raise ValueError(
                    f"{name}: {int(outside.sum())} value(s) outside the ODB integer range "
                    f"[{ODB_INT_MIN}, {ODB_INT_MAX}], e.g. {int(ints[outside][0])}; "
                    "they would not read back (codc silently corrupts them)"
                )
        return "integer", np.ascontiguousarray(ints)
    if kind == "f":
        reals = np.ascontiguousarray(values, dtype=np.float64)
        bad = np.isnan(reals) | (reals == _MISSING_REAL)
        if bad.any():
            raise ValueError(
                f"{name}: {int(bad.sum())} missing value(s) (NaN or {_MISSING_REAL}); "
                "leave the row out instead (pyodc and codc encode missing reals differently)"
            )
        return "double", reals
    if kind == "O":
        inferred = pd.api.types.infer_dtype(values, skipna=False)
        if values.size and inferred != "string":
            raise TypeError(f"{name}: an object column must hold only str (no None), found {inferred!r} values")
        codes, uniques = pd.factorize(values)
        return "string", _Strings(codes.astype(np.intp, copy=False), np.asarray(uniques, dtype=object))
    raise TypeError(
        f"{name}: dtype {values.dtype} is not encodable; use int64, float64 or an object array of str"
    )


def encode_columns(
    columns: Mapping[str, np.ndarray],
    sink: BinaryIO,
    *,
    encoder: Encoder | None = None,
    rows_per_frame: int = DEFAULT_ROWS_PER_FRAME,
) -> int:
    """Encode equal-length numpy columns as ODB-2 into ``sink``; returns the bytes written.

    Column kinds follow the dtype: any integer dtype -> INTEGER (range-checked to what ODB
    reads back), float -> DOUBLE (no NaN), object array of str -> STRING; anything else
    (bool, datetime64, None in strings) raises. Zero rows write nothing: an ODB-2 file is a
    sequence of frames, the empty sequence is a valid file (both decoders read it as no
    frames), and neither encoder can write a frame of 0 rows.
    """
    return _encode(columns, sink, encoder, rows_per_frame)


def _encode(
    columns: Mapping[str, _Column], sink: BinaryIO, encoder: Encoder | None, rows_per_frame: int
) -> int:
    chosen = _resolve_encoder(encoder)
    if isinstance(rows_per_frame, bool) or not isinstance(rows_per_frame, int):
        raise TypeError(f"rows_per_frame: expected an integer, got {type(rows_per_frame).__name__}")
    if not 1 <= rows_per_frame <= _MAX_ROWS_PER_FRAME:
        raise ValueError(f"rows_per_frame: {rows_per_frame} must be between 1 and {_MAX_ROWS_PER_FRAME}")
    if not columns:
        raise ValueError("columns: at least one column is needed")
    conformed = {name: _conform_column(name, values) for name, values in columns.items()}
    lengths = {name: column.size for name, (_, column) in conformed.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns: lengths differ: {lengths}")
    if not next(iter(lengths.values())):
        return 0
    if chosen == "codc":
        return _encode_codc(conformed, sink, rows_per_frame)
    return _encode_pyodc(conformed, sink, rows_per_frame)


def _frame(conformed: Mapping[str, tuple[OdbKind, _Column]], utf8: bool) -> tuple[pd.DataFrame, dict[str, OdbKind]]:
    """The DataFrame both encoders take, and each column's kind."""
    series = {}
    for name, (_, column) in conformed.items():
        if isinstance(column, _Strings):
            # Explicit object dtype keeps pandas 3 from converting to its "str" dtype (a copy
            # into Arrow and back); numeric columns are wrapped without a copy.
            series[name] = pd.Series(column.rows(utf8=utf8), dtype=object, copy=False)
        else:
            series[name] = pd.Series(column, dtype=column.dtype, copy=False)
    return pd.DataFrame(series, copy=False), {name: kind for name, (kind, _) in conformed.items()}


def _encode_pyodc(conformed: Mapping[str, tuple[OdbKind, _Column]], sink: BinaryIO, rows_per_frame: int) -> int:
    import pyodc

    frame, kinds = _frame(conformed, utf8=False)
    data_types = {"integer": pyodc.INTEGER, "double": pyodc.DOUBLE, "string": pyodc.STRING}
    # Types are always given: inferred, a float column of whole numbers becomes INTEGER,
    # which can differ from frame to frame within one file.
    types = {name: data_types[kind] for name, kind in kinds.items()}
    counter = CountingWriter(sink)
    pyodc.encode_odb(frame, counter, rows_per_frame=rows_per_frame, types=types)
    return counter.count


def _encode_codc(conformed: Mapping[str, tuple[OdbKind, _Column]], sink: BinaryIO, rows_per_frame: int) -> int:
    settle_proj_before_codc()
    import codc

    # codc encodes str as ASCII (UnicodeEncodeError on 'é'); handed UTF-8 bytes it writes
    # the same bytes pyodc writes for the str.
    frame, kinds = _frame(conformed, utf8=True)
    data_types = {"integer": codc.INTEGER, "double": codc.DOUBLE, "string": codc.STRING}
    types = {name: data_types[kind] for name, kind in kinds.items()}
    # codc writes through a file descriptor, so it gets a temporary file, which is then
    # copied to the caller's sink (which may be a BytesIO, a pipe or an upload stream).
    with _CODC_LOCK, tempfile.TemporaryFile() as scratch:
        codc.encode_odb(frame, scratch, rows_per_frame=rows_per_frame, types=types)
        scratch.seek(0)
        counter = CountingWriter(sink)
        shutil.copyfileobj(scratch, counter, 1 << 20)
    return counter.count


# --------------------------------------------------------------------------- the dataset table


@dataclass(frozen=True)
class _Variable:
    column: str
    varno: int
    values: np.ndarray  # float64 in the varno's unit, NaN where there is nothing to write


def write_odb(
    table: pa.Table,
    sink: BinaryIO,
    *,
    mapping: VarnoMapping,
    station_column: str = "station_id",
    expver: str = "xxxx",
    created_by: str = "ionbeam",
    analysis_time: datetime | None = None,
    encoder: Encoder | None = None,
    rows_per_frame: int = DEFAULT_ROWS_PER_FRAME,
) -> OdbStats:
    """Write ``table`` (the contract's dataset schema) to ``sink`` as ODB-2.

    ``encoder`` None picks codc when it loads, else pyodc. ``analysis_time`` (timezone-aware)
    gives andate/antime; when None it is the first 6-hourly cycle strictly after the earliest
    exported observation (pass it explicitly from the window to keep it stable when late
    data arrives). ``sink`` is written sequentially and neither seeked nor closed; when no
    row has a mapped value nothing is written (``bytes_written`` 0, see
    :func:`encode_columns`). Raises ValueError when the table breaks the dataset contract
    (missing axis, null or out-of-range position, null time, missing station column).
    """
    for name, text in (("expver", expver), ("created_by", created_by)):
        if not isinstance(text, str) or not text:
            raise ValueError(f"{name}: expected a non-empty string, got {text!r}")
    if analysis_time is not None and (analysis_time.tzinfo is None or analysis_time.utcoffset() is None):
        raise ValueError(f"analysis_time: {analysis_time.isoformat()} is naive; pass a timezone-aware UTC datetime")
    chosen = _resolve_encoder(encoder)

    ts, lat, lon = _axes(table)
    stations = _station_strings(table, station_column)
    variables, exported, skipped, dropped = _variables(table, station_column, mapping)

    n = ts.size
    if variables and n:
        # (observation, variable) pairs with a value, observation-major: np.nonzero walks
        # the C-ordered mask row by row, and variables are sorted by varno, so one
        # observation's rows are adjacent (the header columns compress to a row marker).
        values = np.column_stack([v.values for v in variables])
        obs_index, var_index = np.nonzero(~np.isnan(values))
    else:
        values = np.empty((n, 0))
        obs_index = var_index = np.empty(0, dtype=np.intp)
    rows = obs_index.size
    # obs_index is sorted (np.nonzero walks the mask row by row): count where it changes.
    observations = int(np.count_nonzero(np.diff(obs_index))) + 1 if rows else 0
    varno_of = {v.column: v.varno for v in variables}
    varnos = {column: varno_of[column] for column in exported}

    analysis = _analysis_time(analysis_time, int(ts[obs_index].min())) if rows else None
    stats = OdbStats(
        rows=rows,
        observations=observations,
        variables_exported=exported,
        variables_skipped=skipped,
        bytes_written=0,
        varnos=varnos,
        values_dropped=dropped,
        analysis_time=analysis,
        encoder=chosen,
    )
    if not rows:
        return stats

    assert analysis is not None
    obs_ts = ts[obs_index]
    dates, times = _date_time(obs_ts)
    an_date, an_time = _date_time(np.array([_ns(analysis)], dtype=np.int64))
    codes, dictionary = stations
    columns: dict[str, _Column] = {
        "expver@desc": _constant_string(rows, expver),
        "class@desc": np.full(rows, HEADER_CONSTANTS["class@desc"], dtype=np.int64),
        "stream@desc": np.full(rows, HEADER_CONSTANTS["stream@desc"], dtype=np.int64),
        "type@desc": np.full(rows, HEADER_CONSTANTS["type@desc"], dtype=np.int64),
        "creaby@desc": _constant_string(rows, created_by),
        "andate@desc": np.full(rows, an_date[0], dtype=np.int64),
        "antime@desc": np.full(rows, an_time[0], dtype=np.int64),
        "reportype@hdr": np.full(rows, HEADER_CONSTANTS["reportype@hdr"], dtype=np.int64),
        "obstype@hdr": np.full(rows, HEADER_CONSTANTS["obstype@hdr"], dtype=np.int64),
        "codetype@hdr": np.full(rows, HEADER_CONSTANTS["codetype@hdr"], dtype=np.int64),
        "groupid@hdr": np.full(rows, HEADER_CONSTANTS["groupid@hdr"], dtype=np.int64),
        "wigosid@hdr": _Strings(codes[obs_index], dictionary),
        "lat@hdr": lat[obs_index],
        "lon@hdr": lon[obs_index],
        "date@hdr": dates,
        "time@hdr": times,
        "varno@body": np.array([v.varno for v in variables], dtype=np.int64)[var_index],
        "obsvalue@body": values[obs_index, var_index],
        "quality@body": np.full(rows, QUALITY_UNFLAGGED, dtype=np.int64),
    }
    assert tuple(columns) == tuple(ODB_COLUMNS)
    written = _encode(columns, sink, chosen, rows_per_frame)
    return replace(stats, bytes_written=written)


def _constant_string(rows: int, value: str) -> _Strings:
    return _Strings(np.zeros(rows, dtype=np.intp), np.array([value], dtype=object))


def _axes(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps as int64 ns UTC and positions as float64, checked as the dataset contract says."""
    names = table.column_names
    missing = [c for c in AXIS_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"dataset table: missing column(s) {missing}; columns present: {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset table: duplicate column names in {names}")
    time_type = table.schema.field(TIME_COLUMN).type
    if not pa.types.is_timestamp(time_type):
        raise ValueError(f"{TIME_COLUMN}: type {time_type} must be a timestamp")
    if time_type.tz not in (None, "UTC", "+00:00", "Etc/UTC"):
        raise ValueError(f"{TIME_COLUMN}: timezone {time_type.tz!r} must be UTC")
    for name in AXIS_COLUMNS:
        nulls = table[name].null_count
        if nulls:
            raise ValueError(f"{name}: {nulls} null value(s); every observation needs a time and a position")
    ts = table[TIME_COLUMN].cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
    coords = []
    for name, limit in ((LAT_COLUMN, 90.0), (LON_COLUMN, 180.0)):
        column_type = table.schema.field(name).type
        if not (pa.types.is_floating(column_type) or pa.types.is_integer(column_type)):
            raise ValueError(f"{name}: type {column_type} must be numeric")
        values = np.ascontiguousarray(table[name].cast(pa.float64()).to_numpy(), dtype=np.float64)
        bad = ~((values >= -limit) & (values <= limit))  # also catches NaN
        if bad.any():
            raise ValueError(f"{name}: {int(bad.sum())} value(s) outside [-{limit:g}, {limit:g}], e.g. {values[bad][0]}")
        coords.append(values)
    return np.ascontiguousarray(ts, dtype=np.int64), coords[0], coords[1]


def _is_text(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type)


def _station_strings(table: pa.Table, station_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(code per table row, object array of distinct ids): rows take ids by gathering codes.

    A null id becomes "", which is what ODB decoders return for a missing string anyway.
    """
    if station_column not in table.column_names:
        raise ValueError(
            f"station_column: {station_column!r} is not a column of the dataset table; columns: {table.column_names}"
        )
    column_type = table.schema.field(station_column).type
    if not _is_text(column_type):
        raise ValueError(f"{station_column}: type {column_type} must be a string (station ids)")
    column = table[station_column].combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    column = pc.fill_null(column.cast(pa.string()), "")
    encoded = pc.dictionary_encode(column)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    dictionary = np.array(encoded.dictionary.to_pylist(), dtype=object)
    return codes, dictionary


def _variables(
    table: pa.Table, station_column: str, mapping: VarnoMapping
) -> tuple[list[_Variable], list[str], dict[str, str], dict[str, int]]:
    """Resolve every candidate variable column: mapped and converted, or skipped with a reason.

    Candidates are the columns that are neither axes, the station column nor strings
    (metadata); a numeric column that is not a canonical name is reported, not guessed at.
    """
    variables: list[_Variable] = []
    exported: list[str] = []
    skipped: dict[str, str] = {}
    dropped: dict[str, int] = {}
    varno_from: dict[int, str] = {}
    for name in table.column_names:
        if name in AXIS_COLUMNS or name == station_column:
            continue
        column_type = table.schema.field(name).type
        if _is_text(column_type):
            continue
        if not (pa.types.is_floating(column_type) or pa.types.is_integer(column_type) or pa.types.is_decimal(column_type)):
            skipped[name] = f"type {column_type} is not numeric"
            continue
        try:
            canonical = CanonicalName.parse(name)
        except ValueError as exc:
            skipped[name] = f"not a canonical variable name: {exc}"
            continue
        try:
            target = mapping.resolve(canonical)
        except NoVarno as exc:
            skipped[name] = exc.reason
            continue
        try:
            convert = unit_converter(canonical.cf_unit, target.unit)
        except ValueError as exc:
            skipped[name] = f"{exc} (the unit of varno {target.varno})"
            continue
        if target.varno in varno_from:
            # Two columns for one varno would give an observation two values of one quantity;
            # the first column (table order) wins and the other is reported.
            skipped[name] = f"varno {target.varno} is already exported from column {varno_from[target.varno]!r}"
            continue
        varno_from[target.varno] = name
        raw = table[name].cast(pa.float64()).to_numpy()  # nulls -> NaN
        present = table.num_rows - table[name].null_count
        converted = convert(raw)
        # inf (given, or from a conversion overflow) is no more an observation than NaN; a
        # new array also keeps Arrow's read-only buffer untouched.
        values = np.where(np.isfinite(converted), converted, np.nan)
        finite = int(np.count_nonzero(~np.isnan(values)))
        if present > finite:
            dropped[name] = present - finite
        variables.append(_Variable(column=name, varno=target.varno, values=values))
        exported.append(name)
    variables.sort(key=lambda v: v.varno)
    return variables, exported, skipped, dropped


def _date_time(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC YYYYMMDD and HHMMSS as int64 for int64 ns since the epoch (floor, also before 1970)."""
    seconds = np.floor_divide(ns, _NS_PER_S)
    days = np.floor_divide(seconds, 86_400)
    of_day = seconds - days * 86_400
    time = (of_day // 3600) * 10_000 + (of_day % 3600 // 60) * 100 + of_day % 60
    day = days.astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    years = month.astype("datetime64[Y]").astype(np.int64) + 1970
    months = month.astype(np.int64) % 12 + 1
    dom = (day - month).astype(np.int64) + 1
    return years * 10_000 + months * 100 + dom, time.astype(np.int64)


def _ns(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1_000


def _analysis_time(given: datetime | None, earliest_ns: int) -> datetime:
    if given is not None:
        return given.astimezone(timezone.utc)
    cycle = int(ANALYSIS_CYCLE.total_seconds()) * _NS_PER_S
    boundary = (earliest_ns // cycle + 1) * cycle
    return _EPOCH + timedelta(microseconds=boundary // 1_000)
