"""Sensor.Community (formerly luftdaten.info): the daily archive and the live API.

``sensor_community`` reads https://archive.sensor.community/: one directory per UTC day
(``YYYY-MM-DD/``; days of 2023 and earlier under ``YYYY/YYYY-MM-DD/``) whose index page
lists one ``;``-separated CSV per sensor and day, plain or gzip
(``2017-08-30_sds011_sensor_5331.csv[.gz]``). A partition is a day; a fetch reads the
day's index, then every file in it, and keeps the rows in the requested range only (the
reference ingested whole days whatever range was asked).

``sensor_community_live`` reads the live API (``static/v1/data.json``: every measurement
of the last 5 minutes, one record per sensor and time, values as strings per
``value_type``). v1 rather than v2 because v2 holds 5-minute means: v1's raw measurements
are the very points the archive publishes the next morning (same time, same sensor), so
both sources feed one dataset and the archive simply overwrites the live points with
identical values, and fills whatever the live feed missed.

Unit handling (the only ones): humidity is percent (the reference declared ``1``, which
would make 57 % read as 5700 %); pressures are Pa as sent; temperatures degC;
particulate matter ug m-3. ``unknown``, ``unavailable`` and empty cells are nulls.
Indoor sensors are skipped: they do not observe the outside air.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.csv as pacsv

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.http import HttpClient, HttpStatusError
from ionbeam_dagster.sources.base import (
    LOG,
    Source,
    SourceError,
    rows_in_range,
    to_floats,
    to_timestamps,
    with_fetch_notes,
)

__all__ = [
    "ARCHIVE_START",
    "DATASET",
    "SensorCommunityArchive",
    "SensorCommunityLive",
    "ArchiveFile",
    "archive_day_urls",
    "parse_archive_csv",
    "parse_day_index",
    "parse_live",
    "sensor_community_ingestion_map",
]

DATASET = "sensor_community"
ARCHIVE_START = datetime(2015, 10, 1, tzinfo=UTC)
# The live partitions start here: older ranges cannot be fetched from a 5-minute feed anyway,
# and a short history keeps the partition count (and the UI) small.
LIVE_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_ARCHIVE_URL = "https://archive.sensor.community/"
DEFAULT_LIVE_URL = "https://data.sensor.community/static/v1/data.json"
ARCHIVE_URL_ENV = "IONBEAM_SENSOR_COMMUNITY_ARCHIVE_URL"
LIVE_URL_ENV = "IONBEAM_SENSOR_COMMUNITY_LIVE_URL"
CONCURRENCY_ENV = "IONBEAM_SENSOR_COMMUNITY_CONCURRENCY"
SENSOR_TYPES_ENV = "IONBEAM_SENSOR_COMMUNITY_SENSOR_TYPES"
# The archive keeps 2015..2023 in per-year folders; later days sit at the top level.
LAST_YEAR_IN_FOLDERS = 2023
# The archive exports a day "around 08:00" (German time) the next morning: fetch at 10:00 UTC.
ARCHIVE_LAG = timedelta(hours=10)
# The live feed holds 5 minutes; anything ending longer ago than this is gone.
LIVE_HORIZON = timedelta(minutes=10)
MISSING = ("", "unknown", "unavailable", "Unknown", "Unavailable", "UNKNOWN", "UNAVAILABLE")

# (archive column, standard_name, cf_unit, level in m). Level 2.0 is the nominal screen height
# of these balcony and garden sensors; pressure at 0.0 is station (surface) pressure, and MSL
# pressure is at sea level by its name.
VARIABLES: tuple[tuple[str, str, str, float], ...] = (
    ("P1", "mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
    ("P2", "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
    ("P0", "mass_concentration_of_pm1_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
    ("temperature", "air_temperature", "degC", 2.0),
    ("humidity", "relative_humidity", "percent", 2.0),
    ("pressure", "air_pressure", "Pa", 0.0),
    ("pressure_sealevel", "air_pressure_at_mean_sea_level", "Pa", 0.0),
)
VALUE_COLUMNS = tuple(v[0] for v in VARIABLES)
METADATA_COLUMNS = ("sensor_id", "sensor_type", "location")
TIME_COLUMN, LAT_COLUMN, LON_COLUMN = "timestamp", "lat", "lon"
# The live API spells one value type differently from the archive's column.
LIVE_VALUE_TYPES: Mapping[str, str] = {
    **{c: c for c in VALUE_COLUMNS},
    "pressure_at_sealevel": "pressure_sealevel",
}

_FILE = re.compile(
    r"^(?P<day>\d{4}-\d{2}-\d{2})_(?P<type>.+?)_sensor_(?P<id>\d+)(?P<indoor>_indoor)?\.csv(?P<gz>\.gz)?$",
    re.IGNORECASE,
)
_HREF = re.compile(r"""href\s*=\s*["']([^"'#?]+)["']""", re.IGNORECASE)


def sensor_community_ingestion_map() -> DataIngestionMap:
    return DataIngestionMap.model_validate(
        {
            "datetime": {"from_col": TIME_COLUMN, "dtype": "datetime64[ns, UTC]"},
            "lat": {"from_col": LAT_COLUMN, "standard_name": "latitude", "cf_unit": "degrees_north"},
            "lon": {"from_col": LON_COLUMN, "standard_name": "longitude", "cf_unit": "degrees_east"},
            "canonical_variables": [
                {"column": c, "standard_name": n, "cf_unit": u, "level": lv, "method": "point", "period": "PT0S"}
                for c, n, u, lv in VARIABLES
            ],
            "metadata_variables": [{"column": c, "dtype": "string"} for c in METADATA_COLUMNS],
        }
    )


def _schema() -> pa.Schema:
    return pa.schema(
        [
            (TIME_COLUMN, pa.timestamp("ns", tz="UTC")),
            (LAT_COLUMN, pa.float64()),
            (LON_COLUMN, pa.float64()),
            *((c, pa.float64()) for c in VALUE_COLUMNS),
            *((c, pa.string()) for c in METADATA_COLUMNS),
        ]
    )


SCHEMA = _schema()


def _typed(columns: Mapping[str, pa.Array | pa.ChunkedArray | None], rows: int) -> pa.Table:
    """The payload table from text columns (absent ones are null): times, numbers, tags."""
    def text(name: str) -> pa.ChunkedArray:
        column = columns.get(name)
        if column is None:
            return pa.chunked_array([pa.nulls(rows, pa.string())])
        column = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
        return column.cast(pa.string())

    arrays: dict[str, Any] = {
        TIME_COLUMN: to_timestamps(text(TIME_COLUMN)),
        LAT_COLUMN: to_floats(text(LAT_COLUMN)),
        LON_COLUMN: to_floats(text(LON_COLUMN)),
        **{c: to_floats(text(c)) for c in VALUE_COLUMNS},
        **{c: text(c) for c in METADATA_COLUMNS},
    }
    return pa.table(arrays, schema=SCHEMA)


# ---------------------------------------------------------------- archive


@dataclass(frozen=True)
class ArchiveFile:
    href: str
    day: date
    sensor_type: str
    sensor_id: str
    indoor: bool
    gzip: bool


def archive_day_urls(base_url: str, day: date) -> tuple[str, str]:
    """(where the day's directory should be, the other layout): years up to 2023 sit in
    ``YYYY/``. The other layout is tried on a 404, in case the archive moves a year."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    folder = urljoin(base, f"{day.year:04d}/{day.isoformat()}/")
    flat = urljoin(base, f"{day.isoformat()}/")
    return (folder, flat) if day.year <= LAST_YEAR_IN_FOLDERS else (flat, folder)


def parse_day_index(html: str, day: date) -> list[ArchiveFile]:
    """Per-sensor files of ``day`` listed on an index page (Apache/nginx autoindex), in
    listing order, once per sensor (a ``.csv`` and ``.csv.gz`` of one sensor are one file)."""
    files: dict[tuple[str, str, bool], ArchiveFile] = {}
    for href in _HREF.findall(html):
        name = urlsplit(href).path.rsplit("/", 1)[-1]
        match = _FILE.match(name)
        if match is None or match.group("day") != day.isoformat():
            continue
        item = ArchiveFile(
            href=href,
            day=day,
            sensor_type=match.group("type").lower(),
            sensor_id=match.group("id"),
            indoor=match.group("indoor") is not None,
            gzip=match.group("gz") is not None,
        )
        key = (item.sensor_type, item.sensor_id, item.indoor)
        if key not in files or (item.gzip and not files[key].gzip):
            files[key] = item  # prefer the compressed copy: same rows, fewer bytes
    return list(files.values())


class ArchiveFileError(ValueError):
    """A file that cannot be read as an archive CSV (it is skipped and reported)."""


def parse_archive_csv(data: bytes, name: str = "<file>") -> tuple[pa.Table, int]:
    """(payload rows, malformed lines skipped) of one per-sensor CSV, plain or gzip.
    ArchiveFileError if it is not an archive CSV at all."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveFileError(f"{name}: not readable gzip ({exc})") from None
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lstrip("\ufeff")
    header = [h.strip() for h in first.split(";")]
    missing = [c for c in (TIME_COLUMN, LAT_COLUMN, LON_COLUMN) if c not in header]
    if missing:
        raise ArchiveFileError(f"{name}: no {', '.join(missing)} column in the header {first[:200]!r}")
    skipped = 0

    def skip(_row: object) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    try:
        raw = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(encoding="utf8"),
            parse_options=pacsv.ParseOptions(delimiter=";", invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header if h},
                null_values=list(MISSING),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ArchiveFileError(f"{name}: not a readable CSV ({exc})") from None
    columns = {name_: raw.column(name_) for name_ in raw.column_names}
    return _typed(columns, raw.num_rows), skipped


def _int_env(name: str, default: int, low: int, high: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an integer") from None
    if not low <= number <= high:
        raise ValueError(f"{name}: {number} must be between {low} and {high}")
    return number


class SensorCommunityArchive(Source):
    """The daily archive: daily partitions from 2015-10-01, each read from its day directory."""

    def __init__(
        self,
        *,
        archive_url: str | None = None,
        concurrency: int | None = None,
        sensor_types: Iterable[str] | None = None,
    ) -> None:
        super().__init__(
            name="sensor_community",
            dataset=DATASET,
            fetch_span=timedelta(days=1),
            start=ARCHIVE_START,
            lag=ARCHIVE_LAG,
            description=(
                "Sensor.Community daily archive: one CSV per sensor and day (particulate matter, "
                "temperature, humidity, pressure), read for exactly the requested range."
            ),
        )
        self.archive_url = archive_url or os.environ.get(ARCHIVE_URL_ENV) or DEFAULT_ARCHIVE_URL
        self.concurrency = concurrency or _int_env(CONCURRENCY_ENV, 8, 1, 64)
        if sensor_types is None:
            sensor_types = (os.environ.get(SENSOR_TYPES_ENV) or "").split(",")
        #: Empty: every type (files without a mapped variable are skipped after reading the header).
        self.sensor_types = frozenset(t.strip().lower() for t in sensor_types if t.strip())

    def ingestion_map(self) -> DataIngestionMap:
        return sensor_community_ingestion_map()

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        tables: list[pa.Table] = []
        notes: dict[str, Any] = {"days": [], "files_read": 0, "files_skipped": {}, "malformed_lines": 0}
        day = start.astimezone(UTC).date()
        while datetime.combine(day, datetime.min.time(), UTC) < end:
            index_url, files = self._day_files(day, http)
            notes["days"].append(day.isoformat())
            wanted = []
            for f in files:
                if f.indoor:
                    _count(notes["files_skipped"], "indoor")
                elif self.sensor_types and f.sensor_type not in self.sensor_types:
                    _count(notes["files_skipped"], "sensor_type_not_selected")
                else:
                    wanted.append(f)
            log.info(f"sensor_community {day}: {len(files)} files listed at {http.redact(index_url)}, reading {len(wanted)}")
            for table, skipped, problem, f in self._read_files(index_url, wanted, http):
                if problem is not None:
                    _count(notes["files_skipped"], problem)
                    log.warning(f"sensor_community: skipped {f.href}: {problem}")
                    continue
                assert table is not None
                notes["files_read"] += 1
                notes["malformed_lines"] += skipped
                tables.append(rows_in_range(table, TIME_COLUMN, start, end))
            day += timedelta(days=1)
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        return with_fetch_notes(table, notes)

    def _day_files(self, day: date, http: HttpClient) -> tuple[str, list[ArchiveFile]]:
        tried = []
        for url in archive_day_urls(self.archive_url, day):
            try:
                html = http.get(url).text
            except HttpStatusError as exc:
                if exc.status != 404:
                    raise
                tried.append(exc.url)
                continue
            return url, parse_day_index(html, day)
        # Not published yet (the archive exports a day the next morning), or a wrong URL:
        # fail rather than claim the day holds nothing.
        raise SourceError(
            f"the archive has no directory for {day.isoformat()} (HTTP 404 at {' and '.join(tried)}); "
            "a day appears there the morning after it ends"
        )

    def _read_files(
        self, index_url: str, files: list[ArchiveFile], http: HttpClient
    ) -> Iterable[tuple[pa.Table | None, int, str | None, ArchiveFile]]:
        def read(f: ArchiveFile) -> tuple[pa.Table | None, int, str | None, ArchiveFile]:
            data = http.get_bytes(urljoin(index_url, f.href))
            try:
                table, skipped = parse_archive_csv(data, f.href)
            except ArchiveFileError:
                return None, 0, "unreadable", f
            if not any(table.column(c).null_count < table.num_rows for c in VALUE_COLUMNS) and table.num_rows:
                return None, 0, "no_mapped_variables", f
            return table, skipped, None, f

        if self.concurrency == 1 or len(files) <= 1:
            for f in files:
                yield read(f)
            return
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="sensor-community") as pool:
            # map() yields in listing order and re-raises the first failure (an HTTP error
            # after retries): the run fails rather than publish a day with files missing.
            try:
                yield from pool.map(read, files)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


# ---------------------------------------------------------------- live API


def _truthy(value: Any) -> bool:
    return value in (1, True, "1", "true", "True")


def parse_live(records: Any) -> tuple[pa.Table, dict[str, int]]:
    """Payload rows of a live API response (a JSON list of measurement records), and counts
    of the records left out: indoor sensors, records without a mapped value, malformed ones."""
    if not isinstance(records, list):
        raise SourceError(f"the live API answered a JSON {type(records).__name__}, expected a list of records")
    columns: dict[str, list[Any]] = {c: [] for c in (TIME_COLUMN, LAT_COLUMN, LON_COLUMN, *VALUE_COLUMNS, *METADATA_COLUMNS)}
    left_out = {"indoor": 0, "no_mapped_variables": 0, "malformed": 0}
    for record in records:
        try:
            location = record["location"]
            sensor = record["sensor"]
            values = record["sensordatavalues"]
            if not isinstance(values, list):
                raise TypeError("sensordatavalues")
            if _truthy(location.get("indoor")):
                left_out["indoor"] += 1
                continue
            row: dict[str, Any] = {}
            for item in values:
                column = LIVE_VALUE_TYPES.get(item.get("value_type"))
                if column is None:
                    continue
                value = item.get("value")
                row[column] = None if value is None or (isinstance(value, str) and value.strip() in MISSING) else str(value)
            if not row:
                left_out["no_mapped_variables"] += 1
                continue
            sensor_type = sensor.get("sensor_type") or {}
            fixed = {
                TIME_COLUMN: record.get("timestamp"),
                LAT_COLUMN: location.get("latitude"),
                LON_COLUMN: location.get("longitude"),
                "sensor_id": sensor.get("id"),
                "sensor_type": sensor_type.get("name") if isinstance(sensor_type, dict) else None,
                "location": location.get("id"),
            }
        except (KeyError, TypeError, AttributeError):
            left_out["malformed"] += 1
            continue
        for column, value in fixed.items():
            columns[column].append(None if value is None or value == "" else str(value))
        for column in VALUE_COLUMNS:
            columns[column].append(row.get(column))
    rows = len(columns[TIME_COLUMN])
    text = {c: pa.array(v, type=pa.string()) for c, v in columns.items()}
    return _typed(text, rows), left_out


class SensorCommunityLive(Source):
    """The live API: 5-minute partitions, each fetched at its end from the last-5-minutes feed."""

    def __init__(self, *, live_url: str | None = None) -> None:
        super().__init__(
            name="sensor_community_live",
            dataset=DATASET,
            fetch_span=timedelta(minutes=5),
            start=LIVE_START,
            lag=timedelta(0),
            description=(
                "Sensor.Community live API (every measurement of the last 5 minutes), best effort: "
                "the archive brings the same points, and what the feed missed, the next morning."
            ),
            schedule_cron="*/5 * * * *",
            catch_up=1,
        )
        self.live_url = live_url or os.environ.get(LIVE_URL_ENV) or DEFAULT_LIVE_URL

    def ingestion_map(self) -> DataIngestionMap:
        return sensor_community_ingestion_map()

    def check_range(self, start: datetime, end: datetime, now: datetime) -> str | None:
        if end <= now - LIVE_HORIZON:
            return (
                f"the live API holds only the last 5 minutes, and this range ended at {end.isoformat()}; "
                "fetch older ranges with the sensor_community source (the daily archive)"
            )
        return None

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        table, left_out = parse_live(http.get_json(self.live_url))
        kept = rows_in_range(table, TIME_COLUMN, start, end)
        log.info(
            f"sensor_community_live: {table.num_rows} measurements in the feed, {kept.num_rows} in "
            f"[{start.isoformat()}, {end.isoformat()}); left out {left_out}"
        )
        return with_fetch_notes(kept, {"records_in_feed": table.num_rows, "left_out": left_out})
