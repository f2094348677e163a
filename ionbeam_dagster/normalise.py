"""A raw payload table to the validated table that is written to InfluxDB.

Sources are crowd-sourced and IoT feeds: a bad row is normal and must not sink the other
rows of its payload, so rows are dropped, each under the first reason that applies, and the
counts are reported. Only a payload that can never be read (no time, latitude or longitude
column) is rejected as a whole.

Everything is column-at-a-time pyarrow; pandas is used for one thing only, ISO 8601 strings
that Arrow's all-or-nothing cast cannot parse (mixed offsets, invalid rows), because its
``errors="coerce"`` gives a per-row null.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ionbeam_dagster.contracts import IngestDataCommand, as_utc
from ionbeam_dagster.errors import Rejection

__all__ = [
    "NormalisedPayload",
    "normalise",
    "observation_times",
    "numbers",
    "DROP_REASONS",
    "FUTURE_TOLERANCE",
    "TIME_COLUMN",
]

#: Row drop reasons, in the order they are checked: a row counts under the first only.
DROP_REASONS = (
    "invalid_time",
    "time_outside_range",
    "time_in_future",
    "invalid_latitude",
    "invalid_longitude",
    "non_finite_value",
    "no_values",
    "duplicate",
)
#: Device clocks drift; a few minutes ahead is a clock, more is a bad timestamp.
FUTURE_TOLERANCE = timedelta(minutes=5)
TIME_COLUMN = "time"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MAX = np.iinfo(np.int64).max
_NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# The unit a dtype names: "datetime64[ms, UTC]", "int64[ms]", "epoch_ms", "ms"...
_UNIT_IN_DTYPE = re.compile(r"(?:^|[\[_\s])(s|ms|us|ns)(?:$|[\],\s])")
# A decimal number, nothing else: what Arrow's string->float cast is trusted with.
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
# An explicit offset after a time of day (a date alone, "2024-01-01", ends in "-01" too).
_HAS_OFFSET = r"[T ][0-9:.]+(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


@dataclass
class NormalisedPayload:
    """``table``: ``time`` (int64 ns), ``latitude``, ``longitude`` (float64), one float64 column
    per canonical name, one string column per metadata variable, in declaration order."""

    table: pa.Table
    rows_in: int
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


def normalise(table: pa.Table, command: IngestDataCommand, *, now: datetime) -> NormalisedPayload:
    imap = command.metadata.ingestion_map
    axes = (
        ("ingestion_map.datetime", imap.datetime.column),
        ("ingestion_map.lat", imap.lat.column),
        ("ingestion_map.lon", imap.lon.column),
    )
    for path, column in axes:
        if column not in table.column_names:
            shown = ", ".join(repr(c) for c in table.column_names[:50])
            more = f" and {table.num_columns - 50} more" if table.num_columns > 50 else ""
            raise Rejection(
                "missing_column",
                f"{path}: column {column!r} is not in the payload (columns: {shown or 'none'}{more})",
            )
    rows_in = table.num_rows

    times = _times_ns(_column(table, imap.datetime.column), imap.datetime.dtype)
    latitude, _ = _to_float(_column(table, imap.lat.column))
    longitude, _ = _to_float(_column(table, imap.lon.column))

    values: dict[str, pa.ChunkedArray] = {}
    value_bad: list[pa.ChunkedArray] = []
    parsed: dict[str, tuple[pa.ChunkedArray, pa.ChunkedArray]] = {}
    for variable in imap.canonical_variables:
        if variable.column in table.column_names:
            if variable.column not in parsed:
                parsed[variable.column] = _to_float(_column(table, variable.column))
            values[variable.canonical_name], bad = parsed[variable.column]
            value_bad.append(bad)
        else:
            # A declared variable a payload does not carry is simply not observed.
            values[variable.canonical_name] = _nulls(pa.float64(), rows_in)
    metadata = {
        m.column: _to_text(_column(table, m.column)) if m.column in table.column_names else _nulls(pa.string(), rows_in)
        for m in imap.metadata_variables
    }

    start_ns, end_ns = _ns(command.start_time), _ns(command.end_time)
    latest_ns = _ns(as_utc(now) + FUTURE_TOLERANCE)  # naive = UTC, as everywhere in the contract
    checks: list[tuple[str, pa.ChunkedArray | pa.Array]] = [
        ("invalid_time", pc.is_valid(times)),
        ("time_outside_range", _between(times, start_ns, end_ns)),
        ("time_in_future", pc.fill_null(pc.less_equal(times, latest_ns), False)),
        ("invalid_latitude", _between(latitude, -90.0, 90.0)),
        ("invalid_longitude", _between(longitude, -180.0, 180.0)),
        ("non_finite_value", pc.invert(_any(value_bad, rows_in))),
        ("no_values", _any([pc.is_valid(v) for v in values.values()], rows_in)),
    ]
    dropped = dict.fromkeys(DROP_REASONS, 0)
    alive = pa.chunked_array([pa.array(np.ones(rows_in, dtype=bool))]) if rows_in else pa.chunked_array([], pa.bool_())
    for reason, ok in checks:
        failing = pc.and_(alive, pc.invert(ok))
        dropped[reason] = int(pc.sum(failing).as_py() or 0)
        alive = pc.and_(alive, ok)

    out = pa.table(
        {TIME_COLUMN: times, "latitude": latitude, "longitude": longitude, **values, **metadata}
    )
    out = out.filter(alive)
    keep = _last_of_each(out, [TIME_COLUMN, *metadata])
    dropped["duplicate"] = out.num_rows - len(keep)
    if len(keep) != out.num_rows:
        out = out.take(keep)
    return NormalisedPayload(table=out.combine_chunks(), rows_in=rows_in, dropped=dropped)


def observation_times(column: pa.ChunkedArray | pa.Array, dtype: str | None = None) -> pa.ChunkedArray:
    """Times as int64 ns since the epoch, null where missing or unreadable: exactly how
    ingestion reads a time column, so sources and the CLI can filter rows the same way."""
    return _times_ns(_chunked(column), dtype)


def numbers(column: pa.ChunkedArray | pa.Array) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(float64 values, bad): how ingestion reads a variable; ``bad`` marks values that are
    present but not a finite number (nulled in ``values``)."""
    return _to_float(_chunked(column))


# ------------------------------------------------------------------------------ helpers


def _chunked(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    return column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])



def _ns(value: datetime) -> int:
    # Integer arithmetic: datetime.timestamp() is a float and loses nanoseconds' neighbours.
    return (value - _EPOCH) // timedelta(microseconds=1) * 1_000


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    # The first of duplicate names; table[name] would raise on a repeated name.
    return table.column(table.schema.get_all_field_indices(name)[0])


def _nulls(type_: pa.DataType, n: int) -> pa.ChunkedArray:
    return pa.chunked_array([pa.nulls(n, type_)])


def _between(values: pa.ChunkedArray, low: float, high: float) -> pa.ChunkedArray:
    inside = pc.and_(pc.greater_equal(values, low), pc.less_equal(values, high))
    return pc.fill_null(inside, False)


def _any(masks: list[pa.ChunkedArray], n: int) -> pa.ChunkedArray | pa.Array:
    if not masks:
        return pa.array(np.zeros(n, dtype=bool))
    result = masks[0]
    for mask in masks[1:]:
        result = pc.or_(result, mask)
    return result


def _int_unit(dtype: str | None) -> str:
    """The unit of integer times: the one the declared dtype names, else seconds."""
    match = _UNIT_IN_DTYPE.search((dtype or "").lower())
    return match.group(1) if match else "s"


def _scale_to_ns(values: pa.ChunkedArray, unit: str) -> pa.ChunkedArray:
    """int64 in ``unit`` -> int64 ns; values that would overflow become null (invalid)."""
    factor = _NS_PER[unit]
    if factor == 1:
        return values
    limit = _INT64_MAX // factor
    safe = pc.if_else(_between(values, -limit, limit), values, pa.scalar(None, pa.int64()))
    return pc.multiply(safe, factor)


def _times_ns(column: pa.ChunkedArray, dtype: str | None) -> pa.ChunkedArray:
    """Observation times as int64 ns since the epoch, null where missing or unreadable."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_timestamp(kind):
        # Arrow stores instants as UTC whatever the zone; a naive timestamp is taken as UTC.
        return _scale_to_ns(column.cast(pa.int64()), kind.unit)
    if pa.types.is_date32(kind):
        return _scale_to_ns(pc.multiply(column.cast(pa.int64()), 86_400), "s")
    if pa.types.is_date64(kind):
        return _scale_to_ns(column.cast(pa.int64()), "ms")
    if pa.types.is_integer(kind):
        return _scale_to_ns(column.cast(pa.int64(), safe=False), _int_unit(dtype))
    if pa.types.is_floating(kind):
        return _float_to_ns(column.cast(pa.float64()), _int_unit(dtype))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_iso(column)
    # null type, or a type that holds no time at all: every row is an invalid time.
    return _nulls(pa.int64(), len(column))


def _float_to_ns(values: pa.ChunkedArray, unit: str) -> pa.ChunkedArray:
    """Fractional epoch times to int64 ns. Whole and fractional parts are scaled apart:
    1704067200.25 s * 1e9 in one float64 would land 128 ns off (float64 resolution there)."""
    factor = _NS_PER[unit]
    limit = _INT64_MAX // factor - 1
    ok = pc.and_(pc.is_finite(values), _between(values, -limit, limit))
    values = pc.if_else(ok, values, pa.scalar(None, pa.float64()))
    whole = pc.floor(values)
    fraction = pc.round(pc.multiply(pc.subtract(values, whole), float(factor)))
    return pc.add(pc.multiply(whole.cast(pa.int64()), factor), fraction.cast(pa.int64()))


def _parse_iso(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 strings, with an offset or without one (then UTC), to int64 ns."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    try:
        # Fast path: Arrow parses either kind, but only with the matching target type and
        # only if every string is valid, so the two kinds are cast separately.
        has_offset = pc.fill_null(pc.match_substring_regex(text, _HAS_OFFSET), False)
        null = pa.scalar(None, pa.string())
        aware = pc.if_else(has_offset, text, null).cast(pa.timestamp("ns", "UTC")).cast(pa.int64())
        naive = pc.if_else(has_offset, null, text).cast(pa.timestamp("ns")).cast(pa.int64())
        return pc.coalesce(aware, naive)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path, per-row: anything pandas cannot read becomes NaT, i.e. an invalid time.
    # Imported here, not at the top: pandas costs ~0.3-0.7 s to import, paid by the code
    # server and by every run worker at start (part of each window's latency), while only
    # payloads with malformed or mixed-offset times ever reach this line.
    import pandas as pd

    parsed = pd.to_datetime(text.to_pandas(), utc=True, errors="coerce", format="ISO8601")
    stamps = pa.chunked_array([pa.array(parsed)])
    return _scale_to_ns(stamps.cast(pa.int64()), stamps.type.unit)


def _to_float(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(float64 values, bad) where ``bad`` marks values present but not a finite number.

    Bad values are nulled in the first array. Numeric strings are numbers (sources often
    send CSV-derived text); an empty or blank string is a missing value, not a bad one.
    """
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.cast(pa.float64(), safe=False)
        bad = pc.fill_null(pc.invert(pc.is_finite(values)), False)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(column.cast(pa.string()))
        text = pc.if_else(pc.equal(pc.binary_length(text), 0), pa.scalar(None, pa.string()), text)
        syntax = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
        # Only well-formed numbers reach the cast, which would fail the whole column on one
        # bad string; "1e999" parses to inf and is caught as non-finite below.
        values = pc.if_else(syntax, text, pa.scalar(None, pa.string())).cast(pa.float64())
        bad = pc.and_(pc.is_valid(text), pc.invert(pc.fill_null(pc.is_finite(values), False)))
    elif pa.types.is_null(kind):
        return _nulls(pa.float64(), len(column)), pa.chunked_array([pa.array(np.zeros(len(column), dtype=bool))])
    else:
        # Booleans, timestamps, lists...: present but not a number.
        return _nulls(pa.float64(), len(column)), pc.is_valid(column)
    values = pc.if_else(bad, pa.scalar(None, pa.float64()), values)
    return values, bad


def _to_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Metadata as strings (tags in InfluxDB); null stays null and so does "", because
    InfluxDB has no empty tag value and would store the point without the tag anyway."""
    try:
        text = column if pa.types.is_string(column.type) else column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise Rejection("payload_unreadable", f"metadata column of type {column.type} cannot be read as text: {exc}") from exc
    return pc.if_else(pc.equal(pc.binary_length(text), 0), pa.scalar(None, pa.string()), text)


def _last_of_each(table: pa.Table, keys: list[str]) -> pa.Array:
    """Sorted row indices keeping, per (time, metadata) key, the last row: InfluxDB keeps
    the last write of a series+time too, so this only makes that explicit and counted.

    The keys are packed into one int64 per row when they fit (time offset and dictionary
    codes in mixed radix), and a sort of those integers tells whether any key repeats at
    all, which in a normal payload none does: ~10x cheaper than grouping by a string column,
    which was three quarters of normalise's time (make bench). A feed in time order packs
    to increasing keys, which one comparison pass confirms without sorting.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.int64())
    packed = _packed_key(table, keys)
    if packed is None:
        return _last_of_each_grouped(table, keys)
    if bool((packed[1:] > packed[:-1]).all()):
        return pa.array(np.arange(n, dtype=np.int64))
    ordered = np.sort(packed)
    if bool((ordered[1:] != ordered[:-1]).all()):
        return pa.array(np.arange(n, dtype=np.int64))
    return _last_of_each_grouped(pa.table({"key": pa.array(packed)}), ["key"])


def _last_of_each_grouped(table: pa.Table, keys: list[str]) -> pa.Array:
    row = "__ionbeam_row"
    while row in table.column_names:
        row += "_"
    indexed = table.select(keys).append_column(row, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = indexed.group_by(keys, use_threads=False).aggregate([(row, "max")]).column(f"{row}_max")
    last = last.combine_chunks()
    # Input order, so the stored table reads like the payload.
    return pc.take(last, pc.array_sort_indices(last))


def _packed_key(table: pa.Table, keys: list[str]) -> np.ndarray | None:
    """One int64 per row, equal exactly when all ``keys`` are equal (nulls equal each other,
    as in a group-by); None when the combination does not fit in 63 bits."""
    digits: list[tuple[np.ndarray, int]] = []
    for name in keys:
        column = table.column(name).combine_chunks()
        if pa.types.is_integer(column.type) and column.null_count == 0:
            values = column.cast(pa.int64()).to_numpy()
            low, high = int(values.min()), int(values.max())
            if high - low >= 2**63 - 1:
                return None
            digits.append((values - low, high - low + 1))  # fits: the span is below 2**63
        else:
            encoded = pc.dictionary_encode(column, null_encoding="encode")
            digits.append((encoded.indices.to_numpy().astype(np.int64), max(len(encoded.dictionary), 1)))
    if math.prod(base for _, base in digits) >= 2**63:
        return None
    packed = np.zeros(table.num_rows, dtype=np.int64)
    for values, base in digits:
        packed = packed * base + values
    return packed
