"""MeteoTracker: mobile weather stations on cars and bikes (a moving platform).

A MeteoTracker *session* is one trip of one device; every *point* of it has its own time and
position, so the payload carries a latitude and longitude per row, and the session id is the
metadata that ties a track together (``station_column`` of the dataset).

The API, as this source uses it (``IONBEAM_METEOTRACKER_URL``, default
``https://app.meteotracker.com/``). Shapes are modelled on public clients of the real API
(ECMWF ionbeam's meteotracker source and ESSI-Lab's DAB MeteoTracker connector); they are
documented in the README and in ``tests/fixtures/meteotracker/README.md``:

- ``POST auth/login/api`` with JSON ``{"email", "password"}`` ->
  ``{"accessToken", "refreshToken"}``.
- ``POST auth/refreshtoken`` with JSON ``{"refreshToken"}`` -> ``{"accessToken",
  "refreshToken"}``. The reference read ``access_token`` from this answer (a key it never has),
  so every refresh "failed" and it logged in again, or worse, sent ``Bearer None``. Here the
  refreshed ``accessToken`` is used (and a rotated ``refreshToken`` kept); a refresh that is
  refused, or answers no access token, falls back to a fresh login.
- ``GET api/sessions?dataType=all&items=N&page=P&startTime={"$gte":t1,"$lte":t2}`` (Unix
  seconds): a JSON list of sessions, ``{"_id", "by", "startTime", "endTime", "nPoints",
  "offsetTZ", <variable>: {"avgVal", "minVal", "maxVal"}, ...}``; pages from 0 until one holds
  fewer than ``items``.
- ``GET api/points/session?id=<session>&data=<variables, space separated>&items=N&page=P``: a
  JSON list of points, ``{"time": ISO 8601, "lo": [lon, lat], "T0": .., "H": .., ...}``. Pages
  are read until the session's ``nPoints`` are in, or a page is empty or repeats the last one
  (a server that ignores paging answers everything at once).

Sessions are searched by *start* time, so a trip that started before the requested range but
runs into it would be missed; the search therefore starts ``IONBEAM_METEOTRACKER_SESSION_LOOKBACK``
(default PT12H) earlier, and only points inside ``[start, end)`` are kept.

Unit handling: none is needed. Values are published in the units MeteoTracker documents
(degC, percent, hPa = mbar, m, km h-1, ppm, ug m-3) and declared as such; exporters convert.
``s`` is the *platform's* speed over ground (the vehicle), not wind: MeteoTracker measures no
wind, and the reference's ``wind_speed`` for it was wrong.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import pyarrow as pa

from ionbeam_dagster.contracts import DataIngestionMap, as_utc
from ionbeam_dagster.durations import parse_duration
from ionbeam_dagster.http import HttpClient, RetryPolicy
from ionbeam_dagster.sources.auth import AuthError, Credentials, TokenState, post_for_json, read_credentials
from ionbeam_dagster.sources.base import (
    LOG,
    Source,
    SourceError,
    payload_schema,
    rows_in_range,
    to_floats,
    to_timestamps,
    user_agent,
    with_fetch_notes,
)

__all__ = [
    "DATASET",
    "MeteoTracker",
    "MeteoTrackerTokens",
    "meteotracker_ingestion_map",
    "parse_points",
    "parse_sessions",
]

DATASET = "meteotracker"
START = datetime(2022, 1, 1, tzinfo=UTC)
DEFAULT_URL = "https://app.meteotracker.com/"
URL_ENV = "IONBEAM_METEOTRACKER_URL"
USERNAME_ENV = "IONBEAM_METEOTRACKER_USERNAME"
PASSWORD_ENV = "IONBEAM_METEOTRACKER_PASSWORD"
LOOKBACK_ENV = "IONBEAM_METEOTRACKER_SESSION_LOOKBACK"
DEFAULT_LOOKBACK = timedelta(hours=12)
LOGIN_PATH = "auth/login/api"
REFRESH_PATH = "auth/refreshtoken"
SESSIONS_PATH = "api/sessions"
POINTS_PATH = "api/points/session"
PAGE_SIZE = 1000
MAX_PAGES = 500

TIME_COLUMN, LAT_COLUMN, LON_COLUMN = "time", "lat", "lon"
SESSION_COLUMN, AUTHOR_COLUMN = "session_id", "author"
METADATA_COLUMNS = (SESSION_COLUMN, AUTHOR_COLUMN)

# (point key, standard_name, cf_unit, level in m). The sensor sits on the vehicle at about
# screen height: MeteoTracker calls T0 and H "2 m temperature" and "2 m relative humidity".
# Pressure at 0.0 is the pressure where the platform is (as for other networks' station
# pressure); altitude and speed describe the platform itself.
VARIABLES: tuple[tuple[str, str, str, float], ...] = (
    ("T0", "air_temperature", "degC", 2.0),
    ("H", "relative_humidity", "percent", 2.0),
    ("td", "dew_point_temperature", "degC", 2.0),
    ("P", "air_pressure", "hPa", 0.0),
    ("a", "altitude", "m", 0.0),
    ("s", "platform_speed_wrt_ground", "km h-1", 0.0),
    ("CO2", "mole_fraction_of_carbon_dioxide_in_air", "1e-6", 2.0),
    ("m1", "mass_concentration_of_pm1_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
    ("m2", "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
    ("m10", "mass_concentration_of_pm10_ambient_aerosol_particles_in_air", "ug m-3", 2.0),
)
VALUE_COLUMNS = tuple(v[0] for v in VARIABLES)
# Always asked for: time, position, altitude (sessions do not always summarise "a").
_ALWAYS = ("time", "lo", "a")


def meteotracker_ingestion_map() -> DataIngestionMap:
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


SCHEMA = payload_schema(meteotracker_ingestion_map())


# ---------------------------------------------------------------- authentication


class MeteoTrackerTokens:
    """TokenProvider: login with email and password, refresh with the refresh token."""

    def __init__(self, base_url: str, credentials: Credentials, *, policy: RetryPolicy | None = None,
                 agent: str | None = None) -> None:
        self.login_url = urljoin(base_url, LOGIN_PATH)
        self.refresh_url = urljoin(base_url, REFRESH_PATH)
        self.state = TokenState(credentials)
        self.policy = policy or RetryPolicy()
        self.agent = agent or user_agent()
        self.logins = 0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"MeteoTrackerTokens(login_url={self.login_url!r})"

    def token(self) -> str:
        with self.state.lock:
            if self.state.access_token is None:
                self._login()
            assert self.state.access_token is not None
            return self.state.access_token

    def refresh(self) -> str:
        with self.state.lock:
            if self.state.refresh_token is None or not self._refresh():
                self._login()
            assert self.state.access_token is not None
            return self.state.access_token

    def _login(self) -> None:
        creds = self.state.credentials
        status, body = post_for_json(
            self.policy, self.agent, self.login_url, secrets=self.state.secrets, what="MeteoTracker login",
            json_body={"email": creds.username, "password": creds.password},
        )
        if body is None:
            raise AuthError(
                f"MeteoTracker login refused (HTTP {status}) at {self.login_url}: check {USERNAME_ENV} and {PASSWORD_ENV}"
            )
        access = _text(body, "accessToken")
        if access is None:
            raise AuthError(f"MeteoTracker login at {self.login_url} answered no accessToken (keys: {_keys(body)})")
        self.state.access_token = access
        self.state.refresh_token = _text(body, "refreshToken")
        self.logins += 1

    def _refresh(self) -> bool:
        """True when the refresh gave a new access token; False to log in again instead."""
        status, body = post_for_json(
            self.policy, self.agent, self.refresh_url, secrets=self.state.secrets, what="MeteoTracker token refresh",
            json_body={"refreshToken": self.state.refresh_token},
        )
        # The refresh answer has the login's shape: the new token is "accessToken" (the
        # reference read "access_token", which is never there).
        access = _text(body, "accessToken") if isinstance(body, dict) else None
        if access is None:
            self.state.refresh_token = None
            return False
        self.state.access_token = access
        self.state.refresh_token = _text(body, "refreshToken") or self.state.refresh_token
        self.refreshes += 1
        return True


def _text(body: Any, key: str) -> str | None:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _keys(body: Any) -> str:
    return ", ".join(sorted(map(str, body))) if isinstance(body, dict) else type(body).__name__


# ---------------------------------------------------------------- parsing


def parse_sessions(records: Any) -> list[dict[str, Any]]:
    """Sessions of a search page: each with ``id``, ``author``, ``start``, ``end``, ``points``
    (nPoints) and ``variables`` (keys the session summarises with an avgVal)."""
    if not isinstance(records, list):
        raise SourceError(f"MeteoTracker session search answered a JSON {type(records).__name__}, expected a list")
    sessions = []
    for record in records:
        if not isinstance(record, dict) or not record.get("_id"):
            continue
        sessions.append(
            {
                "id": str(record["_id"]),
                "author": str(record["by"]) if record.get("by") not in (None, "") else None,
                "start": _time(record.get("startTime")),
                "end": _time(record.get("endTime")),
                "points": _int(record.get("nPoints")),
                "variables": sorted(k for k, v in record.items() if isinstance(v, dict) and "avgVal" in v),
            }
        )
    return sessions


def parse_points(records: Any, session_id: str, author: str | None) -> pa.Table:
    """Payload rows of one session's points: time, position from ``lo`` ([lon, lat]), the
    mapped variables (absent or null = null), and the session's metadata."""
    if not isinstance(records, list):
        raise SourceError(f"MeteoTracker points of session {session_id} are a JSON {type(records).__name__}, expected a list")
    columns: dict[str, list[Any]] = {c: [] for c in (TIME_COLUMN, LAT_COLUMN, LON_COLUMN, *VALUE_COLUMNS)}
    for point in records:
        if not isinstance(point, dict):
            continue
        lon, lat = _position(point.get("lo"))
        columns[TIME_COLUMN].append(_str(point.get("time")))
        columns[LAT_COLUMN].append(lat)
        columns[LON_COLUMN].append(lon)
        for key in VALUE_COLUMNS:
            columns[key].append(_str(point.get(key)))
    rows = len(columns[TIME_COLUMN])
    arrays: dict[str, Any] = {
        TIME_COLUMN: to_timestamps(pa.array(columns[TIME_COLUMN], pa.string())),
        LAT_COLUMN: to_floats(pa.array(columns[LAT_COLUMN], pa.string())),
        LON_COLUMN: to_floats(pa.array(columns[LON_COLUMN], pa.string())),
        **{k: to_floats(pa.array(columns[k], pa.string())) for k in VALUE_COLUMNS},
        SESSION_COLUMN: pa.array([session_id] * rows, pa.string()),
        AUTHOR_COLUMN: pa.array([author] * rows, pa.string()),
    }
    return pa.table(arrays, schema=SCHEMA)


def _position(lo: Any) -> tuple[str | None, str | None]:
    if isinstance(lo, list | tuple) and len(lo) >= 2:
        return _str(lo[0]), _str(lo[1])
    return None, None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    return json.dumps(value) if isinstance(value, int | float) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


# ---------------------------------------------------------------- the source


def _lookback(environ: Mapping[str, str]) -> timedelta:
    value = (environ.get(LOOKBACK_ENV) or "").strip()
    if not value:
        return DEFAULT_LOOKBACK
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{LOOKBACK_ENV}: {exc}") from None


class MeteoTracker(Source):
    """Daily partitions; each lists the sessions that may hold points of the day, then reads
    their points and keeps those of the requested range."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        page_size: int | None = None,
        lookback: timedelta | None = None,
        policy: RetryPolicy | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            name="meteotracker",
            dataset=DATASET,
            fetch_span=timedelta(days=1),
            start=START,
            # Sessions are uploaded when a trip ends; give the day's last trips time to land.
            lag=timedelta(hours=3),
            description=(
                "MeteoTracker mobile stations (cars, bikes): every point of every session with a "
                "position of its own; temperature, humidity, dew point, pressure, altitude."
            ),
        )
        self._environ = os.environ if environ is None else environ
        url = base_url or self._environ.get(URL_ENV) or DEFAULT_URL
        self.base_url = url if url.endswith("/") else url + "/"
        self.page_size = page_size or PAGE_SIZE
        self.lookback = lookback if lookback is not None else _lookback(self._environ)
        self.policy = policy
        #: The token provider of the last client built (tests look at its counters).
        self.tokens: MeteoTrackerTokens | None = None

    def ingestion_map(self) -> DataIngestionMap:
        return meteotracker_ingestion_map()

    def http_client(self) -> HttpClient:
        credentials = read_credentials(USERNAME_ENV, PASSWORD_ENV, environ=self._environ, network="MeteoTracker")
        self.tokens = MeteoTrackerTokens(self.base_url, credentials, policy=self.policy)
        return HttpClient(policy=self.policy, token_provider=self.tokens, user_agent=user_agent(self._environ))

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        start, end = as_utc(start), as_utc(end)
        sessions = self.search_sessions(start - self.lookback, end, http)
        notes: dict[str, Any] = {"sessions_found": len(sessions), "sessions_read": 0, "sessions_skipped": {}, "points_read": 0}
        tables: list[pa.Table] = []
        for session in sessions:
            if session["end"] is not None and session["end"] < start:
                _count(notes["sessions_skipped"], "ended_before_range")
                continue
            if session["start"] is not None and session["start"] >= end:
                _count(notes["sessions_skipped"], "started_after_range")
                continue
            table = self.session_points(session, http)
            notes["sessions_read"] += 1
            notes["points_read"] += table.num_rows
            tables.append(rows_in_range(table, TIME_COLUMN, start, end))
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        log.info(
            f"meteotracker [{start.isoformat()}, {end.isoformat()}): {len(sessions)} sessions found, "
            f"{notes['sessions_read']} read, {table.num_rows} points in range"
        )
        return with_fetch_notes(table, notes)

    def search_sessions(self, start: datetime, end: datetime, http: HttpClient) -> list[dict[str, Any]]:
        url = urljoin(self.base_url, SESSIONS_PATH)
        # No spaces, double quotes: the API parses this as a MongoDB-style filter.
        window = json.dumps({"$gte": int(start.timestamp()), "$lte": int(end.timestamp())}, separators=(",", ":"))
        found: dict[str, dict[str, Any]] = {}
        for page in range(MAX_PAGES):
            params = {"dataType": "all", "items": self.page_size, "page": page, "startTime": window}
            records = http.get_json(url, params=params)
            for session in parse_sessions(records):
                found.setdefault(session["id"], session)
            if not isinstance(records, list) or len(records) < self.page_size:
                return list(found.values())
        raise SourceError(
            f"MeteoTracker session search for [{start.isoformat()}, {end.isoformat()}] did not end after "
            f"{MAX_PAGES} pages of {self.page_size}; refusing to publish a partial day"
        )

    def session_points(self, session: dict[str, Any], http: HttpClient) -> pa.Table:
        url = urljoin(self.base_url, POINTS_PATH)
        summarised = [v for v in session["variables"] if v in VALUE_COLUMNS]
        wanted = list(dict.fromkeys([*_ALWAYS, *(summarised or VALUE_COLUMNS)]))
        expected = session["points"]
        tables: list[pa.Table] = []
        total = 0
        previous_first: Any = object()
        for page in range(MAX_PAGES):
            params = {"id": session["id"], "data": " ".join(wanted), "items": self.page_size, "page": page}
            records = http.get_json(url, params=params)
            if not isinstance(records, list) or not records:
                break
            first = records[0]
            if first == previous_first:
                break  # the server ignores paging: this page repeats the last one
            previous_first = first
            tables.append(parse_points(records, session["id"], session["author"]))
            total += len(records)
            if expected is not None and total >= expected:
                break
            if expected is None and len(records) < self.page_size:
                break
        else:
            raise SourceError(f"MeteoTracker points of session {session['id']} did not end after {MAX_PAGES} pages")
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1

