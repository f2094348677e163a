"""The pygeoapi configuration, generated from the catalog and what was exported.

One collection per dataset that exports GeoParquet and has at least one export file (the
provider needs a file to learn the schema from). Its extents come from the files' footers:
the GeoParquet ``geo`` bbox and the ``timestamp`` column statistics, so building the config
reads a few kB per window, never the rows (they are read only for a file written without
statistics).

Strings holding a ``$`` are double-quoted in the YAML: pygeoapi expands ``${VAR}`` in plain
(unquoted) scalars when it loads its config, and a dataset description is free text. Datetimes stay YAML timestamps,
because pygeoapi compares ``datetime`` query parameters against them as datetime objects.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ionbeam_dagster.catalog import Catalog, DatasetSpec
from ionbeam_dagster.ogcapi.exports import export_dir

__all__ = [
    "BBox",
    "Extents",
    "PROVIDER_CLASS",
    "WORLD",
    "build_pygeoapi_config",
    "compute_extents",
    "dump_yaml",
    "file_extents",
    "merge_extents",
    "published_datasets",
    "write_config_atomically",
]

BBox = tuple[float, float, float, float]
Interval = tuple[datetime | None, datetime | None]
Extents = tuple[BBox | None, Interval]

WORLD: BBox = (-180.0, -90.0, 180.0, 90.0)
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
PROVIDER_CLASS = "ionbeam_dagster.ogcapi.provider.GeoParquetExportProvider"
EXPORTER = "geoparquet"

# Tiles are requested by the user's browser, never by the server. Set IONBEAM_API_MAP_URL
# to a local tile server where browsers have no internet access.
DEFAULT_MAP_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_MAP_ATTRIBUTION = '&copy; <a href="https://openstreetmap.org/copyright">OpenStreetMap contributors</a>'

_NO_EXTENTS: Extents = (None, (None, None))


# --------------------------------------------------------------------------- extents


def file_extents(path: str | os.PathLike[str]) -> Extents:
    """(bbox, (first, last observation time)) of one GeoParquet export; Nones when it has no rows."""
    metadata = pq.read_metadata(path)
    if metadata.num_rows == 0:
        return _NO_EXTENTS
    bbox = _geo_bbox(metadata.metadata or {}) or _stats_bbox(metadata)
    times = _stats_range(metadata, "timestamp")
    if bbox is None or times is None:
        # Only for a file written without statistics: read the three axis columns, still not the rest.
        table = pq.read_table(path, columns=["timestamp", "longitude", "latitude"])
        lon = pc.min_max(table["longitude"]).as_py()
        lat = pc.min_max(table["latitude"]).as_py()
        bbox = bbox or (lon["min"], lat["min"], lon["max"], lat["max"])
        if times is None:
            ns = pc.min_max(table["timestamp"].cast("int64")).as_py()
            times = (ns["min"], ns["max"])
    return bbox, (_from_ns(times[0], ceil=False), _from_ns(times[1], ceil=True))


def merge_extents(extents: Iterable[Extents]) -> Extents:
    """The union of several files' extents (Nones, from empty files, are ignored)."""
    boxes: list[BBox] = []
    begins: list[datetime] = []
    ends: list[datetime] = []
    for bbox, (begin, end) in extents:
        if bbox is not None:
            boxes.append(bbox)
        if begin is not None:
            begins.append(begin)
        if end is not None:
            ends.append(end)
    merged = None
    if boxes:
        merged = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    return merged, (min(begins) if begins else None, max(ends) if ends else None)


def compute_extents(files: Iterable[str | os.PathLike[str]]) -> Extents:
    """(bbox, (tmin, tmax)) over GeoParquet export files, from their footers."""
    return merge_extents(file_extents(f) for f in files)


def _geo_bbox(kv: Mapping[bytes, bytes]) -> BBox | None:
    try:
        geo = json.loads(kv[b"geo"])
        bbox = [float(v) for v in geo["columns"][geo["primary_column"]]["bbox"]]
    except (KeyError, TypeError, ValueError):
        return None
    if len(bbox) == 6:  # 3D: xmin, ymin, zmin, xmax, ymax, zmax
        bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
        return None
    return bbox[0], bbox[1], bbox[2], bbox[3]


def _stats_bbox(metadata: pq.FileMetaData) -> BBox | None:
    lon = _stats_range(metadata, "longitude")
    lat = _stats_range(metadata, "latitude")
    if lon is None or lat is None:
        return None
    return float(lon[0]), float(lat[0]), float(lon[1]), float(lat[1])


def _stats_range(metadata: pq.FileMetaData, column: str) -> tuple[Any, Any] | None:
    """(min, max) of a top-level column over all row groups; timestamps as ns ints."""
    index = next((i for i in range(metadata.num_columns) if metadata.schema.column(i).path == column), None)
    if index is None or metadata.num_row_groups == 0:
        return None
    low: Any = None
    high: Any = None
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        if group.num_rows == 0:
            continue
        stats = group.column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        lo, hi = _ns_or_value(stats.min), _ns_or_value(stats.max)
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    return None if low is None else (low, high)


def _ns_or_value(value: Any) -> Any:
    # pyarrow hands timestamp statistics back as pandas Timestamps (which keep ns in .value)
    # or, without pandas, as datetimes; compare and convert them as ns since the epoch.
    if isinstance(value, datetime):
        nanos = getattr(value, "value", None)
        if isinstance(nanos, int):
            return nanos
        delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta // timedelta(microseconds=1)) * 1000
    return value


def _from_ns(ns: int, *, ceil: bool) -> datetime:
    # datetime holds microseconds: round outwards so the extent still contains every row.
    micros = -(-ns // 1000) if ceil else ns // 1000
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


# --------------------------------------------------------------------------- configuration


def published_datasets(catalog: Catalog) -> list[str]:
    """Datasets that export GeoParquet, in catalog order: the ones the API may serve."""
    return [spec.name for spec in catalog if EXPORTER in spec.exporters]


def build_pygeoapi_config(
    catalog: Catalog,
    store_root: str | os.PathLike[str],
    server_url: str,
    extents: Mapping[str, Extents],
    *,
    bind: tuple[str, int] | None = None,
    map_url: str = DEFAULT_MAP_URL,
    map_attribution: str = DEFAULT_MAP_ATTRIBUTION,
    log_level: str = "WARNING",
    max_items: int = 10_000,
) -> dict[str, Any]:
    """The pygeoapi configuration as a dict (dump it with :func:`dump_yaml`).

    ``extents`` maps a dataset to its extents and names the datasets that have exports: a
    GeoParquet dataset missing from it is left out, since the provider could not open it.
    ``bind`` only documents the address (gunicorn binds); it defaults to the URL's host/port.
    """
    root = Path(store_root)
    if bind is None:
        parts = urlsplit(server_url)
        bind = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
    resources: dict[str, Any] = {}
    for name in published_datasets(catalog):
        if name in extents:
            resources[name] = _collection(catalog.datasets[name], export_dir(root, name), extents[name])
    return {
        "server": {
            "bind": {"host": bind[0], "port": bind[1]},
            "url": server_url.rstrip("/"),
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "languages": ["en-US"],
            "pretty_print": False,
            "limits": {"default_items": 10, "max_items": max_items},
            "map": {"url": map_url, "attribution": map_attribution},
        },
        "logging": {"level": log_level},
        "metadata": {
            "identification": {
                "title": "ionbeam observations",
                "description": "Crowd-sourced and IoT weather observations, validated, normalised to CF "
                "conventions and exported per time window as GeoParquet.",
                "keywords": ["observations", "weather", "ionbeam"],
                "keywords_type": "theme",
                "terms_of_service": "",
                "url": "https://github.com/ecmwf/ionbeam",
            },
            # Terms are the data sources' own; each collection links to its sources.
            "license": {"name": "Per data source: see each collection's links", "url": "https://github.com/ecmwf/ionbeam"},
            "provider": {"name": "ECMWF", "url": "https://www.ecmwf.int"},
            "contact": {"name": "ionbeam operators", "url": "https://github.com/ecmwf/ionbeam"},
        },
        "resources": resources,
    }


def _collection(spec: DatasetSpec, directory: Path, extents: Extents) -> dict[str, Any]:
    bbox, (begin, end) = extents
    return {
        "type": "collection",
        "title": spec.name,
        "description": spec.description or f"Observations of the {spec.name} dataset.",
        "keywords": list(spec.keywords) or [spec.name],
        "links": [
            {"type": link.mime_type, "rel": "related", "title": link.title, "href": link.href}
            for link in spec.source_links
        ],
        "extents": {
            # An export holding no rows yet has no bbox: the whole world is the honest answer.
            "spatial": {"bbox": list(bbox or WORLD), "crs": CRS84},
            "temporal": {"begin": begin, "end": end, "trs": GREGORIAN},
        },
        "providers": [
            {
                "type": "feature",
                "name": PROVIDER_CLASS,
                "data": str(directory),
                "id_field": "id",
                "time_field": "timestamp",
                "x_field": "longitude",
                "y_field": "latitude",
            }
        ],
    }


# --------------------------------------------------------------------------- YAML and atomic writes


class _QuotingDumper(yaml.SafeDumper):
    """SafeDumper that double-quotes strings pygeoapi would otherwise expand (``${VAR}``)."""


def _quoted(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "$" in value else None)


def _timestamp(dumper: yaml.SafeDumper, value: datetime) -> yaml.ScalarNode:
    text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return dumper.represent_scalar("tag:yaml.org,2002:timestamp", text)


_QuotingDumper.add_representer(str, _quoted)
_QuotingDumper.add_representer(datetime, _timestamp)


def dump_yaml(document: Mapping[str, Any]) -> str:
    """Deterministic YAML (key order kept): the same inputs give the same bytes, so a
    regeneration that changes nothing can be recognised and does not reload the server."""
    return yaml.dump(dict(document), Dumper=_QuotingDumper, sort_keys=False, allow_unicode=True, width=1_000_000)


def write_config_atomically(path: str | os.PathLike[str], config: Mapping[str, Any] | str) -> bool:
    """Write ``config`` (a dict, or YAML text) to ``path`` by temp file + rename.

    A reader (a pygeoapi worker starting) sees the old file or the whole new one, never a
    prefix. Returns False, without touching the file, when the content is already there.
    """
    target = Path(path)
    text = config if isinstance(config, str) else dump_yaml(config)
    try:
        if target.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the server may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every file system allows opening a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
