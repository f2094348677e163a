"""What a data source is, and the helpers every source shares.

A source knows one thing: how to turn a time range into raw rows. Everything around it
(partitions, schedule, StartSourceCommands, writing the payload, publishing the
IngestDataCommand) is the same for every network and lives in the framework
(``assets/sources.py``, ``sensors/sources.py``, :mod:`ionbeam_dagster.sources.publish`).

Rules a source follows, because the pipeline depends on them:
- ``fetch(start, end)`` returns only rows whose time is in ``[start, end)`` (or whose time
  cannot be read, so ingestion counts them as ``invalid_time`` instead of losing them
  silently). The published command claims exactly that range, so it must not hold more.
- A fetch that finds nothing returns a zero-row table with the payload columns: the
  zero-row payload is still published, and tells the coordinator the range is covered.
- Values the network marks as missing are nulls; values that are present but not numbers
  become NaN, so ingestion drops those rows as ``non_finite_value`` and counts them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ionbeam_dagster.contracts import DataIngestionMap, as_utc, check_dataset_name
from ionbeam_dagster.durations import format_duration, parse_duration
from ionbeam_dagster.http import DEFAULT_USER_AGENT, HttpClient
from ionbeam_dagster.normalise import numbers, observation_times
from ionbeam_dagster.windows import Window, check_span, cron_for_span, window_of, windows_overlapping

__all__ = [
    "Source",
    "SourceError",
    "due_windows",
    "empty_payload",
    "fetch_windows",
    "fetch_notes",
    "payload_schema",
    "rows_in_range",
    "schedule_running",
    "source_lag",
    "to_floats",
    "to_timestamps",
    "user_agent",
    "with_fetch_notes",
]

LOG = logging.getLogger(__name__)
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NOTES_KEY = b"ionbeam.fetch"


class SourceError(Exception):
    """A fetch that cannot succeed as asked (the run fails, with this sentence)."""


class Source(ABC):
    """One network's fetcher. Subclasses call ``super().__init__`` with their identity and
    implement :meth:`ingestion_map` and :meth:`fetch`."""

    def __init__(
        self,
        *,
        name: str,
        dataset: str,
        fetch_span: timedelta,
        start: datetime,
        lag: timedelta = timedelta(0),
        description: str = "",
        network: bool = True,
        schedule_cron: str | None = None,
        catch_up: int = 3,
    ) -> None:
        if not SOURCE_NAME.fullmatch(name):
            raise ValueError(f"source name: {name!r} must match {SOURCE_NAME.pattern}")
        try:
            check_dataset_name(dataset)
        except ValueError as exc:
            raise ValueError(f"source {name}: dataset: {exc}") from None
        try:
            # Partitions are cron-based, exactly like dataset windows.
            check_span(fetch_span)
        except ValueError as exc:
            raise ValueError(f"source {name}: fetch_span: {exc}") from None
        start = as_utc(start)
        if window_of(start, fetch_span).start != start:
            raise ValueError(f"source {name}: start: {start.isoformat()} is not a {format_duration(fetch_span)} boundary")
        if lag < timedelta(0):
            raise ValueError(f"source {name}: lag: must not be negative")
        if catch_up < 1:
            raise ValueError(f"source {name}: catch_up: must be at least 1")
        self.name = name
        self.dataset = dataset
        self.fetch_span = fetch_span
        self.start = start
        #: The default lag; IONBEAM_SOURCE_LAG_<NAME> overrides it (see :func:`source_lag`).
        self.lag = lag
        self.description = description
        #: Reaches a third-party service: its schedule starts stopped unless asked for.
        self.network = network
        # Spans up to an hour: tick at every boundary. Longer: hourly, so a day published
        # late (or a failed fetch) is picked up within the hour once its lag has passed.
        self.schedule_cron = schedule_cron or (
            cron_for_span(fetch_span) if fetch_span <= timedelta(hours=1) else "0 * * * *"
        )
        #: How many of the newest due partitions each schedule tick looks at.
        self.catch_up = catch_up

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dataset={self.dataset!r})"

    @abstractmethod
    def ingestion_map(self) -> DataIngestionMap:
        """The map published with every payload of this source."""

    @abstractmethod
    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        """Raw rows observed in ``[start, end)``, in the columns the ingestion map names."""

    def check_range(self, start: datetime, end: datetime, now: datetime) -> str | None:
        """Why ``[start, end)`` cannot be fetched (a sentence), or None. Live feeds that only
        hold the last minutes say so here, instead of publishing an empty claim for the past."""
        return None

    def http_client(self) -> HttpClient:
        """The client a run uses; sources with credentials pass a token provider."""
        return HttpClient(user_agent=user_agent())

    def empty_table(self) -> pa.Table:
        return empty_payload(self.ingestion_map())

    def published(self, start: datetime, end: datetime, table: pa.Table) -> None:
        """Called once the payload of ``[start, end)`` is written and its IngestDataCommand
        confirmed. Sources that buffer (netatmo) record here what has gone out."""


# ---------------------------------------------------------------- configuration


def _env_name(source: Source) -> str:
    return source.name.upper()


def source_lag(source: Source, environ: Mapping[str, str] | None = None) -> timedelta:
    """``IONBEAM_SOURCE_LAG_<NAME>`` (ISO 8601 duration) or the source's default lag: how long
    after a partition ends the schedule waits before fetching it."""
    environ = os.environ if environ is None else environ
    variable = f"IONBEAM_SOURCE_LAG_{_env_name(source)}"
    value = environ.get(variable)
    if value is None or value == "":
        return source.lag
    try:
        return parse_duration(value.strip())
    except ValueError as exc:
        raise ValueError(f"{variable}: {exc}") from None


def schedule_running(source: Source, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the source's schedule starts running: ``IONBEAM_SOURCE_SCHEDULES`` (comma-separated
    names, or ``all``/``none``) when set; otherwise only sources that reach no third party."""
    environ = os.environ if environ is None else environ
    value = environ.get("IONBEAM_SOURCE_SCHEDULES")
    if value is None:
        return not source.network
    names = {n.strip() for n in value.split(",") if n.strip()}
    return "all" in names or source.name in names


def user_agent(environ: Mapping[str, str] | None = None) -> str:
    """``IONBEAM_HTTP_USER_AGENT``: some APIs (sensor.community) ask for a contact in it."""
    environ = os.environ if environ is None else environ
    return environ.get("IONBEAM_HTTP_USER_AGENT") or DEFAULT_USER_AGENT


# ---------------------------------------------------------------- partitions


def due_windows(source: Source, now: datetime, lag: timedelta) -> list[Window]:
    """The newest ``catch_up`` partitions that ended at least ``lag`` ago, oldest first."""
    horizon = as_utc(now) - lag
    if horizon < source.start + source.fetch_span:
        return []
    newest = window_of(horizon - source.fetch_span, source.fetch_span)
    out: list[Window] = []
    start = newest.start
    for _ in range(source.catch_up):
        if start < source.start:
            break
        out.append(Window(start, start + source.fetch_span))
        start -= source.fetch_span
    return out[::-1]


def fetch_windows(source: Source, start: datetime, end: datetime) -> list[Window]:
    return windows_overlapping(start, end, source.fetch_span)


# ---------------------------------------------------------------- payload tables


def payload_schema(imap: DataIngestionMap) -> pa.Schema:
    """The typed columns a payload of ``imap`` has: time, lat, lon, one float64 per variable
    column, one string per metadata column (each column once, in map order)."""
    fields: dict[str, pa.DataType] = {
        imap.datetime.column: pa.timestamp("ns", tz="UTC"),
        imap.lat.column: pa.float64(),
        imap.lon.column: pa.float64(),
    }
    for variable in imap.canonical_variables:
        fields.setdefault(variable.column, pa.float64())
    for metadata in imap.metadata_variables:
        fields.setdefault(metadata.column, pa.string())
    return pa.schema(list(fields.items()))


def empty_payload(imap: DataIngestionMap) -> pa.Table:
    return payload_schema(imap).empty_table()


def to_timestamps(column: pa.Array | pa.ChunkedArray, dtype: str | None = None) -> pa.ChunkedArray:
    """Times as timestamp[ns, UTC], read as ingestion reads them (no offset = UTC)."""
    return observation_times(column, dtype).cast(pa.timestamp("ns", tz="UTC"))


def to_floats(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """float64; missing stays null, present-but-not-a-number becomes NaN (ingestion counts it)."""
    values, bad = numbers(column)
    return pc.if_else(bad, pa.scalar(float("nan")), values)


def rows_in_range(table: pa.Table, column: str, start: datetime, end: datetime) -> pa.Table:
    """Rows whose ``column`` time is in ``[start, end)``, plus rows whose time is null."""
    times = table.column(column).cast(pa.timestamp("ns", tz="UTC"))
    lo = pa.scalar(as_utc(start), pa.timestamp("ns", tz="UTC"))
    hi = pa.scalar(as_utc(end), pa.timestamp("ns", tz="UTC"))
    inside = pc.and_(pc.greater_equal(times, lo), pc.less(times, hi))
    return table.filter(pc.fill_null(inside, True))


def with_fetch_notes(table: pa.Table, notes: Mapping[str, Any]) -> pa.Table:
    """Attach what the fetch saw (files read, files skipped and why) to the table's schema
    metadata: the asset reports it, and the Parquet payload keeps it as provenance."""
    metadata = dict(table.schema.metadata or {})
    metadata[_NOTES_KEY] = json.dumps(dict(notes), sort_keys=True, default=str).encode()
    return table.replace_schema_metadata(metadata)


def fetch_notes(table: pa.Table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(_NOTES_KEY)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
