"""pygeoapi feature provider over one dataset's GeoParquet export directory.

Why not pygeoapi's own ``Parquet`` provider: the newest release installable on this
project's Python (3.11; pygeoapi 0.22+ needs 3.12) is 0.21, whose provider numbers features
by their position in the response instead of the ``id`` column (so ``/items/{id}`` links
404), reports ``numberMatched`` as offset + limit + 1, imports ``s3fs`` unconditionally (whose
aiobotocore pin would downgrade the project's boto3), and scans every file of the directory
for any time filter.

This one is small because it leans on the export layout (:mod:`ionbeam_dagster.ogcapi.exports`):

- The directory is listed when the provider is built, and pygeoapi builds one per request,
  so a window exported a moment ago is served by the next request, with no reload.
- The window is in each file name: a ``datetime`` filter opens only the files it overlaps,
  and an item lookup opens only the file of the time carried in the id (the exporter's id
  is 16 hex digits of series digest then 16 of the timestamp in ns).
- Files are read one by one, so a variable that appears in later windows is simply a
  property of those features; nothing needs the schemas of all windows at once.
- Inside a file, filters go to pyarrow, which skips row groups by their statistics (the
  exporter orders rows so a row group covers a small area and one series' times).

Intervals are closed (OGC API - Features); bbox bounds are inclusive and may cross the
antimeridian (minx > maxx). Rows come in window order, then file order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
    ProviderQueryError,
)

from ionbeam_dagster.ogcapi.exports import ExportFile, list_exports, overlapping

try:  # pygeoapi >= 0.22 moved it
    from pygeoapi.crs import crs_transform  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installed pygeoapi
    from pygeoapi.util import crs_transform

__all__ = ["GeoParquetExportProvider"]

# Written by the exporter for GeoParquet readers; points carry the same in x/y columns.
_NOT_PROPERTIES = ("geometry", "bbox")
_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = pc.scalar(False)
_T = TypeVar("_T")


class GeoParquetExportProvider(BaseProvider):
    """``data``: the dataset's export directory, ``exports/geoparquet/<dataset>``."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        self.directory = Path(str(self.data))
        self.dataset = self.directory.name
        self.id_field = self.id_field or "id"
        self.time_field = self.time_field or "timestamp"
        self.x_field = self.x_field or "longitude"
        self.y_field = self.y_field or "latitude"
        self.files: list[ExportFile] = list_exports(self.directory, self.dataset)
        self.get_fields()

    def __repr__(self) -> str:
        return f"<GeoParquetExportProvider> {self.directory}"

    # ----------------------------------------------------------------- pygeoapi interface

    def get_fields(self) -> dict[str, dict[str, str]]:
        # The newest window's schema: it has every variable the dataset currently exports.
        if not self._fields and self.files:
            try:
                schema = _read_schema(self.files[-1].path)
            except FileNotFoundError:  # removed since the listing: no fields to offer this time
                return self._fields
            for field in schema:
                if field.name not in _NOT_PROPERTIES:
                    self._fields[field.name] = _json_type(field.type)
        return self._fields

    @crs_transform
    def query(
        self,
        offset: int = 0,
        limit: int = 10,
        resulttype: str = "results",
        bbox: list[float] | None = None,
        datetime_: str | None = None,
        properties: list[tuple[str, str]] | None = None,
        sortby: list[dict[str, str]] | None = None,
        select_properties: list[str] | None = None,
        skip_geometry: bool = False,
        q: str | None = None,
        filterq: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        # Refuse what is not implemented rather than answer as if it had been applied.
        if sortby:
            raise ProviderInvalidQueryError(user_msg="sortby is not supported: items come in time-window order")
        if q:
            raise ProviderInvalidQueryError(user_msg="q (free-text search) is not supported")
        if filterq is not None:
            raise ProviderInvalidQueryError(user_msg="filter (CQL) is not supported; use bbox, datetime and property=value")
        begin, end = _interval(datetime_)
        files = overlapping(self.files, begin, end)
        query = _Query(self, bbox or [], begin, end, properties or [])

        if resulttype == "hits":
            matched = sum(query.count(f) for f in files)
            return {"type": "FeatureCollection", "features": [], "numberMatched": matched, "numberReturned": 0}
        if resulttype != "results":
            raise ProviderInvalidQueryError(user_msg=f"resulttype {resulttype!r} must be 'results' or 'hits'")

        features: list[dict[str, Any]] = []
        skip = offset
        for file in files:
            if len(features) >= limit:
                break
            if skip:
                # Skip whole files by count (from statistics and the filter columns only).
                n = query.count(file)
                if n <= skip:
                    skip -= n
                    continue
            table = query.read(file, self._columns(select_properties, skip_geometry))
            if table is None:
                continue
            table = table.slice(skip, limit - len(features))
            skip = 0
            features.extend(self._features(table, select_properties, skip_geometry))
        return {"type": "FeatureCollection", "features": features, "numberReturned": len(features)}

    @crs_transform
    def get(self, identifier: str, **kwargs: Any) -> dict[str, Any]:
        identifier = str(identifier)
        if not _ID_PATTERN.fullmatch(identifier):
            raise ProviderItemNotFoundError(user_msg=f"no item {identifier!r}")
        instant = _EPOCH + timedelta(microseconds=int(identifier[16:], 16) // 1000)
        # The id holds ns; the instant is floored to microseconds, so look in [t, t + 1 us].
        by_id = pc.field(self.id_field) == identifier
        for file in overlapping(self.files, instant, instant + timedelta(microseconds=1)):
            dataset = _open(file.path)
            table = None if dataset is None else _guarded(file.path, lambda: dataset.to_table(filter=by_id))
            if table is not None and table.num_rows:
                return self._features(table.slice(0, 1), None, False)[0]
        raise ProviderItemNotFoundError(user_msg=f"no item {identifier!r}")

    # ----------------------------------------------------------------- rows to GeoJSON

    def _columns(self, select_properties: list[str] | None, skip_geometry: bool) -> list[str] | None:
        if not select_properties:
            return None  # all (minus geometry/bbox, dropped when building features)
        needed = [self.id_field, *select_properties]
        if not skip_geometry:
            needed += [self.x_field, self.y_field]
        return list(dict.fromkeys(needed))

    def _features(
        self, table: pa.Table, select_properties: list[str] | None, skip_geometry: bool
    ) -> list[dict[str, Any]]:
        names = [n for n in table.column_names if n not in _NOT_PROPERTIES]
        if select_properties:
            names = [n for n in names if n in select_properties or n == self.id_field]
        columns = {name: _python_values(table[name]) for name in names}
        ids = _python_values(table[self.id_field])
        xs = ys = None
        if not skip_geometry:
            xs, ys = table[self.x_field].to_pylist(), table[self.y_field].to_pylist()
        features = []
        for i in range(table.num_rows):
            geometry = None if xs is None or ys is None else {"type": "Point", "coordinates": [xs[i], ys[i]]}
            features.append(
                {
                    "type": "Feature",
                    "id": ids[i],
                    "geometry": geometry,
                    "properties": {name: values[i] for name, values in columns.items()},
                }
            )
        return features


class _Query:
    """The filters of one request, turned into a pyarrow expression per file schema."""

    def __init__(
        self,
        provider: GeoParquetExportProvider,
        bbox: list[float],
        begin: datetime | None,
        end: datetime | None,
        properties: list[tuple[str, str]],
    ) -> None:
        self.provider = provider
        self.bbox = _bbox(bbox)
        self.begin, self.end = begin, end
        self.properties = properties

    def expression(self, schema: pa.Schema) -> pc.Expression | None:
        p = self.provider
        parts: list[pc.Expression] = []
        if self.bbox is not None:
            minx, miny, maxx, maxy = self.bbox
            x, y = pc.field(p.x_field), pc.field(p.y_field)
            in_x = (x >= minx) & (x <= maxx) if minx <= maxx else (x >= minx) | (x <= maxx)
            parts.append(in_x & (y >= miny) & (y <= maxy))
        time = pc.field(p.time_field)
        if self.begin is not None:
            parts.append(time >= _ns_scalar(self.begin))
        if self.end is not None:
            parts.append(time <= _ns_scalar(self.end))
        for name, text in self.properties:
            if name not in schema.names:
                return _NEVER  # this window has no such column: nothing in it can equal the value
            parts.append(pc.field(name) == _typed(schema.field(name).type, name, text))
        if not parts:
            return None
        expression = parts[0]
        for part in parts[1:]:
            expression = expression & part
        return expression

    def count(self, file: ExportFile) -> int:
        dataset = _open(file.path)
        if dataset is None:
            return 0
        expression = self.expression(dataset.schema)
        if expression is _NEVER:
            return 0
        return _guarded(file.path, lambda: dataset.count_rows(filter=expression))

    def read(self, file: ExportFile, columns: list[str] | None) -> pa.Table | None:
        dataset = _open(file.path)
        if dataset is None:
            return None
        expression = self.expression(dataset.schema)
        if expression is _NEVER:
            return None
        if columns is not None:
            columns = [c for c in columns if c in dataset.schema.names]
        return _guarded(file.path, lambda: dataset.to_table(columns=columns, filter=expression))


# --------------------------------------------------------------------------- helpers


def _read_schema(path: Path) -> pa.Schema:
    return pq.read_schema(path)


def _open(path: Path) -> pads.Dataset | None:
    """One file as a dataset (reads its footer), or None if it was removed since the listing
    (a window is replaced by rename, so only a cleaned-up state removes files)."""
    try:
        return pads.dataset(path, format="parquet")
    except FileNotFoundError:
        return None


def _guarded(path: Path, scan: Callable[[], _T]) -> _T:
    try:
        return scan()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ProviderQueryError(user_msg=f"cannot apply the query to {path.name}: {exc}") from exc


def _interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    """pygeoapi's ``datetime`` (already range-checked): an instant, or ``a/b`` with ``..`` open."""
    if not text:
        return None, None
    if "/" not in text:
        instant = _parse_time(text)
        return instant, instant
    first, _, second = text.partition("/")
    begin = None if first in ("", "..") else _parse_time(first)
    end = None if second in ("", "..") else _parse_time(second)
    if begin is not None and end is not None and begin > end:
        raise ProviderInvalidQueryError(user_msg=f"datetime {text!r}: the interval ends before it starts")
    return begin, end


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ProviderInvalidQueryError(user_msg=f"datetime {text!r} is not an RFC 3339 time") from None
    # A time without an offset is read as UTC, the only zone the exports use.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ns_scalar(value: datetime) -> pa.Scalar:
    ns = ((value - _EPOCH) // timedelta(microseconds=1)) * 1000
    return pa.scalar(ns, type=pa.timestamp("ns", tz="UTC"))


def _bbox(values: list[float]) -> tuple[float, float, float, float] | None:
    if not values:
        return None
    if len(values) == 6:  # minx, miny, minz, maxx, maxy, maxz: the exports are 2D
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4:
        raise ProviderInvalidQueryError(user_msg="bbox must have 4 or 6 numbers")
    minx, miny, maxx, maxy = (float(v) for v in values)
    if miny > maxy:
        raise ProviderInvalidQueryError(user_msg="bbox: miny must not exceed maxy")
    return minx, miny, maxx, maxy


def _typed(data_type: pa.DataType, name: str, text: str) -> pa.Scalar:
    """A query string as a scalar of the column's type, or 400 when it cannot be one."""
    try:
        if pa.types.is_timestamp(data_type):
            return _ns_scalar(_parse_time(text)).cast(data_type)
        if pa.types.is_boolean(data_type):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return pa.scalar(text.lower() in ("true", "1"))
        if pa.types.is_integer(data_type):
            return pa.scalar(int(text), type=data_type)
        if pa.types.is_floating(data_type):
            return pa.scalar(float(text), type=data_type)
    except (ValueError, OverflowError, pa.ArrowInvalid):
        raise ProviderInvalidQueryError(user_msg=f"{name}={text!r}: not a valid {data_type}") from None
    return pa.scalar(text)


def _json_type(data_type: pa.DataType) -> dict[str, str]:
    if pa.types.is_timestamp(data_type):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_boolean(data_type):
        return {"type": "boolean"}
    if pa.types.is_integer(data_type):
        return {"type": "integer", "format": str(data_type)}
    if pa.types.is_floating(data_type):
        return {"type": "number", "format": str(data_type)}
    return {"type": "string"}


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    """JSON-ready values: RFC 3339 text for times (ns kept), None for NaN (JSON has no NaN)."""
    if pa.types.is_timestamp(column.type):
        nanos = column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64()).to_pylist()
        return [None if ns is None else _rfc3339(ns) for ns in nanos]
    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        return [None if v is not None and math.isnan(v) else v for v in values]
    return values


def _rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"
