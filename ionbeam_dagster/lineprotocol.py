"""Arrow tables to InfluxDB line protocol, vectorised with pyarrow.compute.

Every step works on whole columns (casts, substring replacement, element-wise joins), so a
million rows encode in well under a second; a per-row Python loop would be ~10x slower and
dominate ingestion time.

Escaping follows what InfluxDB 1.6.7 (the server we run) actually parses, measured, which
differs from the line-protocol docs of later versions in one point: 1.6.7 never unescapes a
backslash (``a\\\\b`` is stored with both backslashes) and cannot parse a value that ends in
one. So:

- Identifiers (measurement, tag keys, field keys) escape ``,`` and space (keys also ``=``).
  A backslash is passed through literally, which 1.x, 2.x and 3.x all read the same way *only*
  when it is not followed by another backslash, ``,``, ``=``, space or the end of the name;
  other backslashes are refused rather than silently stored differently per server version.
  Control characters are refused: line protocol cannot carry a newline at all.
- Tag values are free text (station names...). ``%``, ``\\``, newline and carriage return are
  percent-encoded (``%25``, ``%5C``, ``%0A``, ``%0D``) before escaping, which makes every
  non-empty string representable on every server version; :func:`decode_tag_value` reverses it.
  InfluxDB has no empty tag value: an empty string is omitted like a null.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "encode_lines",
    "iter_bodies",
    "iter_encoded_bodies",
    "encode_tag_value",
    "decode_tag_value",
    "check_identifier",
]

# Order matters: "%" first, so the "%" of the other codes is not encoded again.
_TAG_VALUE_PERCENT = (("%", "%25"), ("\\", "%5C"), ("\n", "%0A"), ("\r", "%0D"))
# Decoding: every "%" in an encoded value starts one of the 3-character codes, so matches
# cannot straddle codes; "%25" goes last so a decoded "%" is never read as a code start.
_TAG_VALUE_DECODE = (("%0A", "\n"), ("%0D", "\r"), ("%5C", "\\"), ("%25", "%"))
_KEY_ESCAPES = ((",", "\\,"), ("=", "\\="), (" ", "\\ "))
_MEASUREMENT_ESCAPES = ((",", "\\,"), (" ", "\\ "))
# Bytes that make a tag value need any work at all: checked once per column so that
# typical station ids pay one cheap lookup instead of seven replace passes.
_SPECIAL_BYTES = np.zeros(256, dtype=bool)
_SPECIAL_BYTES[[ord(c) for c in "%\\\n\r,= "]] = True
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A backslash followed by these (or the end) means different things to 1.x and 2.x parsers.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?:[\\,= ]|$)")
# InfluxDB rejects a tag or field named "time" (partial write, point dropped).
_RESERVED_KEYS = frozenset({"time"})
# Below this a thread costs more than it saves.
_MIN_ROWS_PER_THREAD = 100_000
# Arrow's string offsets are int32; a bigger result needs large_string.
_MAX_STRING_BYTES = (1 << 31) - 1


def check_identifier(name: str, what: str) -> None:
    """Refuse a name InfluxDB cannot store exactly as given; ``what`` names it in the error."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: must be a non-empty string, got {name!r}")
    if _CONTROL.search(name):
        raise ValueError(f"{what}: {name!r} contains a control character, which line protocol cannot carry")
    if _AMBIGUOUS_BACKSLASH.search(name):
        raise ValueError(
            f"{what}: {name!r} has a backslash before another backslash, ',', '=', ' ' or at the end; "
            "InfluxDB 1.x stores such names differently from 2.x/3.x, so they are refused"
        )


def _replace_all(arr: pa.Array | pa.ChunkedArray, pairs: Sequence[tuple[str, str]]) -> pa.Array | pa.ChunkedArray:
    for pattern, replacement in pairs:
        arr = pc.replace_substring(arr, pattern, replacement)
    return arr


def _escape_identifier(name: str, pairs: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in pairs:
        name = name.replace(pattern, replacement)
    return name


@overload
def encode_tag_value(value: str) -> str: ...
@overload
def encode_tag_value(value: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray: ...
def encode_tag_value(value):  # type: ignore[no-untyped-def]
    """Percent-encode ``%``, backslash, newline and CR: the form a tag value is stored in.

    Use it to build an InfluxQL filter on a tag value (then quote it with quote_string).
    """
    if isinstance(value, str):
        return _escape_identifier(value, _TAG_VALUE_PERCENT)
    return _replace_all(value, _TAG_VALUE_PERCENT)


@overload
def decode_tag_value(value: str) -> str: ...
@overload
def decode_tag_value(value: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray: ...
def decode_tag_value(value):  # type: ignore[no-untyped-def]
    """Reverse :func:`encode_tag_value` on one string or a whole string array (nulls stay null)."""
    if isinstance(value, str):
        if "%" not in value:
            return value
        return _escape_identifier(value, _TAG_VALUE_DECODE)
    if len(value) == 0 or not pc.any(pc.match_substring(value, "%")).as_py():
        return value
    return _replace_all(value, _TAG_VALUE_DECODE)


def _needs_tag_work(values: pa.ChunkedArray) -> bool:
    """Whether any tag value holds a character that must be encoded or escaped.

    A byte lookup over the data buffers costs ~10x less than a regex pass; bytes outside a
    sliced array can only cause a false positive, which merely runs the replace passes.
    """
    for chunk in values.chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and _SPECIAL_BYTES[np.frombuffer(data, np.uint8)].any():
            return True
    return False


def _tag_values(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    values = column if pa.types.is_string(column.type) else column.cast(pa.string())
    if _needs_tag_work(values):
        values = _replace_all(values, _TAG_VALUE_PERCENT)
        values = _replace_all(values, _KEY_ESCAPES)
    # InfluxDB has no empty tag value ("missing tag value"): treat "" like null, i.e. omit it.
    if len(values) and pc.min(pc.binary_length(values)).as_py() == 0:
        values = pc.if_else(pc.equal(pc.binary_length(values), 0), pa.scalar(None, pa.string()), values)
    return values


def _field_values(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """float64 values, checked: InfluxDB refuses NaN and inf (normalise drops them, counted)."""
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
        raise TypeError(f"field column {name!r}: type {column.type} is not numeric; cast it to float64 first")
    # Cast to float64 before formatting: float32 0.1 would format as "0.1", which InfluxDB
    # stores as float64 0.1, a different number from float64(float32 0.1).
    values = column.cast(pa.float64())
    bad = pc.sum(pc.invert(pc.is_finite(values))).as_py() if len(values) else 0
    if bad:
        raise ValueError(f"field column {name!r}: {bad} value(s) are NaN or infinite, which InfluxDB cannot store")
    return values


def _time_values(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ns", column.type.tz)).cast(pa.int64())
    elif not pa.types.is_integer(column.type):
        raise TypeError(f"time column {name!r}: type {column.type} is neither int64 nanoseconds nor a timestamp")
    if column.null_count:
        raise ValueError(f"time column {name!r}: {column.null_count} null value(s); every point needs a time")
    return column.cast(pa.int64())


@dataclass(frozen=True)
class _Piece:
    """One part of every line: ``prefix`` followed by the row's value, or nothing at all
    where the value is null (``dense``: the column has no null).

    Formatting numbers is most of the encoder's cost (~100 ns a float), and the columns it
    formats usually hold few distinct values: positions repeat per station, readings are
    rounded to the sensor's resolution, a network reports at shared times. Such a column
    gets a ``dictionary`` of its distinct values, each formatted once *with* its prefix, and
    the lines gather from it by ``indices`` (~15 ns a row). Other columns are formatted
    row by row (``values``). Either way the bytes are the same.
    """

    prefix: str
    suffix: str
    values: pa.ChunkedArray | None
    dictionary: pa.Array | None
    indices: pa.Array | None
    dense: bool

    def parts(self, offset: int, length: int) -> list[object]:
        """The pieces for rows [offset, offset + length), as arguments of the final join."""
        if self.dictionary is not None:
            assert self.indices is not None
            return [self.dictionary.take(self.indices.slice(offset, length))]
        assert self.values is not None
        text = self.values.slice(offset, length).cast(pa.string())
        if self.dense:
            return [self.prefix, text, self.suffix] if self.suffix else [self.prefix, text]
        # A null value makes the whole piece null, which the final join turns into "".
        return [pc.binary_join_element_wise(self.prefix, text, self.suffix, "")]

    def one(self, offset: int, length: int) -> pa.Array | pa.ChunkedArray:
        """The pieces as one string array, null where the value is null."""
        if self.dictionary is not None or not self.dense:
            [part] = self.parts(offset, length)
            return part  # type: ignore[return-value]
        assert self.values is not None
        text = self.values.slice(offset, length).cast(pa.string())
        return pc.binary_join_element_wise(self.prefix, text, self.suffix, "")


# The dictionary is used when a sample of the column has at most this share of distinct
# values; above it, building and gathering from the dictionary would cost more than it saves.
_DICTIONARY_SAMPLE_ROWS = 65_536
_DICTIONARY_MAX_SHARE = 0.25


def _piece(prefix: str, values: pa.ChunkedArray, suffix: str = "") -> _Piece:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    dense = values.null_count == 0
    sample = values.slice(0, _DICTIONARY_SAMPLE_ROWS)
    if len(sample) and pc.count_distinct(sample, mode="only_valid").as_py() <= _DICTIONARY_MAX_SHARE * len(sample):
        encoded = pc.dictionary_encode(values)
        text = encoded.dictionary.cast(pa.string())
        dictionary = pc.binary_join_element_wise(prefix, text, suffix, "")
        return _Piece(prefix, suffix, None, dictionary, encoded.indices, dense)
    return _Piece(prefix, suffix, pa.chunked_array([values]), None, None, dense)


@dataclass(frozen=True)
class _Plan:
    """The line layout, decided once for the whole table and applied to each row slice:
    the measurement, then one piece per tag, per field and the time, joined in one pass."""

    measurement: str
    tags: list[_Piece]
    fields: list[_Piece]  # dense fields first; the first carries no leading comma
    fields_all_sparse: bool  # then pieces carry no comma and are joined with ","
    time: _Piece


def _encode_slice(plan: _Plan, offset: int, length: int) -> pa.ChunkedArray:
    parts: list[object] = [plan.measurement]
    for tag in plan.tags:
        parts += tag.parts(offset, length)
    parts.append(" ")
    if plan.fields_all_sparse:
        pieces = [field.one(offset, length) for field in plan.fields]
        # "skip" drops a null piece and its separator. pyarrow 26 also drops a row whose
        # pieces are *all* null (the output gets shorter), but encode_lines has refused such
        # rows already; the length check keeps a future regression from shifting lines.
        group = pc.binary_join_element_wise(*pieces, ",", null_handling="skip") if len(pieces) > 1 else pieces[0]
        if len(group) != length:
            raise AssertionError(f"field join returned {len(group)} rows for {length}")
        parts.append(group)
    else:
        for field in plan.fields:
            parts += field.parts(offset, length)
    parts += plan.time.parts(offset, length)
    lines = pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")
    # An Array when every part is one (all dictionary pieces), a ChunkedArray otherwise.
    return lines if isinstance(lines, pa.ChunkedArray) else pa.chunked_array([lines])


def encode_lines(
    table: pa.Table,
    *,
    measurement: str,
    time_column: str,
    tag_columns: Sequence[str],
    field_columns: Sequence[str],
) -> pa.Array:
    """One line-protocol line per row (each ending in ``\\n``) as a string array.

    Null tags and null fields are omitted from their line. Every row must keep at least one
    field (InfluxDB refuses a line without one, and the whole body would become a partial
    write), so a row whose fields are all null raises ValueError, as do NaN/inf values, null
    times and names InfluxDB cannot store (see :func:`check_identifier`).
    """
    plan = _plan(table, measurement, time_column, tag_columns, field_columns)
    if plan is None:
        return pa.array([], pa.string())
    return _single_array(_encode_parallel(plan, 0, table.num_rows))


def iter_encoded_bodies(
    table: pa.Table,
    *,
    measurement: str,
    time_column: str,
    tag_columns: Sequence[str],
    field_columns: Sequence[str],
    max_bytes: int = 10_000_000,
    slice_rows: int = 100_000,
) -> Iterator[bytes]:
    """What ``iter_bodies(encode_lines(...), max_bytes)`` yields, encoded ``slice_rows`` at a time.

    Why: a writer can send the first bodies while later rows are still being encoded, so the
    encoding hides behind the server's work instead of adding to it, and memory holds one
    slice of lines rather than the whole table's (~320 MB for 1M rows of 5 variables).
    Every check :func:`encode_lines` makes runs on the whole table before the first body is
    produced, so a bad row or name still fails before anything can have been written.
    """
    if slice_rows <= 0:
        raise ValueError(f"slice_rows must be positive, got {slice_rows}")
    plan = _plan(table, measurement, time_column, tag_columns, field_columns)
    if plan is None:
        return
    for offset in range(0, table.num_rows, slice_rows):
        lines = _single_array(_encode_parallel(plan, offset, min(slice_rows, table.num_rows - offset)))
        yield from iter_bodies(lines, max_bytes)


def _plan(
    table: pa.Table,
    measurement: str,
    time_column: str,
    tag_columns: Sequence[str],
    field_columns: Sequence[str],
) -> _Plan | None:
    """Check names and values (whole columns) and decide the line layout; None: no rows."""
    check_identifier(measurement, "measurement")
    if measurement.startswith("#"):
        raise ValueError(f"measurement: {measurement!r} starts with '#', which line protocol reads as a comment")
    if not field_columns:
        raise ValueError("field_columns: at least one field is needed; InfluxDB stores no point without fields")
    keys = [*tag_columns, *field_columns]
    for key in keys:
        check_identifier(key, f"column {key!r}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"column {key!r}: InfluxDB refuses a tag or field named {key!r}")
        if key not in table.column_names:
            raise KeyError(f"column {key!r} not in table (columns: {table.column_names})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"tag and field columns must be distinct, got tags={list(tag_columns)} fields={list(field_columns)}")
    if time_column not in table.column_names:
        raise KeyError(f"time column {time_column!r} not in table (columns: {table.column_names})")
    if table.num_rows == 0:
        return None

    tags = [_piece(f",{_escape_identifier(name, _KEY_ESCAPES)}=", _tag_values(table[name], name)) for name in tag_columns]
    fields = [(_escape_identifier(name, _KEY_ESCAPES), _field_values(table[name], name)) for name in field_columns]
    dense = [(key, values) for key, values in fields if values.null_count == 0]
    sparse = [(key, values) for key, values in fields if values.null_count]
    if not dense:
        all_null = pc.is_null(sparse[0][1])
        for _, values in sparse[1:]:
            all_null = pc.and_(all_null, pc.is_null(values))
        empty = pc.sum(all_null).as_py()
        if empty:
            raise ValueError(f"{empty} row(s) have no non-null field among {list(field_columns)}; drop them first")
        pieces = [_piece(f"{key}=", values) for key, values in sparse]
    else:
        # Dense fields first, the first without a comma; after a dense field every sparse one
        # carries its own comma, and a null piece drops the field and its comma together.
        pieces = [_piece(("," if i else "") + f"{key}=", values) for i, (key, values) in enumerate(dense)]
        pieces += [_piece(f",{key}=", values) for key, values in sparse]
    return _Plan(
        measurement=_escape_identifier(measurement, _MEASUREMENT_ESCAPES),
        tags=tags,
        fields=pieces,
        fields_all_sparse=not dense,
        time=_piece(" ", _time_values(table[time_column], time_column), "\n"),
    )


def _encode_parallel(plan: _Plan, offset: int, rows: int) -> list[pa.ChunkedArray]:
    """Encode rows [offset, offset + rows) in slices on threads: the kernels release the
    GIL, and the float formatting that dominates the cost is embarrassingly parallel."""
    workers = max(1, min(pa.cpu_count(), rows // _MIN_ROWS_PER_THREAD))
    if workers == 1:
        return [_encode_slice(plan, offset, rows)]
    step = -(-rows // workers)
    bounds = [(offset + start, min(step, rows - start)) for start in range(0, rows, step)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda b: _encode_slice(plan, *b), bounds))


def _single_array(parts: list[pa.ChunkedArray]) -> pa.Array:
    chunks = [chunk for part in parts for chunk in part.chunks]
    if len(chunks) == 1:
        return chunks[0]
    total = sum(chunk.buffers()[2].size for chunk in chunks if chunk.buffers()[2] is not None)
    # One string array holds at most 2 GiB (int32 offsets); beyond that use large_string.
    lines = pa.chunked_array(chunks, pa.string())
    if total > _MAX_STRING_BYTES:
        lines = lines.cast(pa.large_string())
    return lines.combine_chunks()


def iter_bodies(lines: pa.Array | pa.ChunkedArray, max_bytes: int = 10_000_000) -> Iterator[bytes]:
    """Request bodies of whole lines, each at most ``max_bytes`` (InfluxDB refuses > 25 MB).

    Cut points come from the string array's offsets (a binary search per body), and each body
    is one slice of the data buffer: no per-line work. Converting a slice to ``bytes`` is the
    only copy, once per body, because requests needs bytes to set Content-Length.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    chunks = lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            raise TypeError(f"lines must be a string array, got {chunk.type}")
        if chunk.null_count:
            # A null slot may still own bytes in the data buffer; drop nulls to be safe.
            chunk = pc.drop_null(chunk)
        if len(chunk) == 0:
            continue
        yield from _chunk_bodies(chunk, max_bytes)


def _chunk_bodies(chunk: pa.Array, max_bytes: int) -> Iterator[bytes]:
    _, offsets_buf, data = chunk.buffers()
    dtype = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=dtype)[chunk.offset : chunk.offset + len(chunk) + 1]
    i, n = 0, len(chunk)
    while i < n:
        base = int(offsets[i])
        # Largest j with offsets[j] - base <= max_bytes: lines i..j-1 fit in the body.
        j = int(np.searchsorted(offsets, base + max_bytes, side="right")) - 1
        if j <= i:
            size = int(offsets[i + 1]) - base
            raise ValueError(f"line {i} is {size} bytes, more than max_bytes={max_bytes}; it cannot be split")
        j = min(j, n)
        yield data.slice(base, int(offsets[j]) - base).to_pybytes()
        i = j
