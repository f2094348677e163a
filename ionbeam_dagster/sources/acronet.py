"""Acronet (CIMA Foundation) weather stations, read from the webdrops API.

The API, as this source uses it (shapes from CIMA's webdrops documentation for the LEXIS
project and ECMWF ionbeam's acronet source; see the README and
``tests/fixtures/acronet/README.md``):

- Keycloak: ``POST <token endpoint>`` form ``grant_type=password, username, password,
  client_id[, client_secret]`` -> ``{"access_token", "expires_in", "refresh_token",
  "refresh_expires_in", "token_type": "bearer", ...}``; the same endpoint with
  ``grant_type=refresh_token`` gives a new pair. Access tokens live minutes (300 s in the
  documentation), so the token is refreshed shortly before it expires, and again after any 401;
  a refresh the server refuses (expired refresh token) falls back to the password grant.
- ``GET sensors/classes`` -> a JSON list of class names (Italian: ``TERMOMETRO``, ...).
- ``GET sensors/list/<class>?stationgroup=<group>&geowin=<lon_min,lat_min,lon_max,lat_max>``
  -> ``[{"id", "name", "lat", "lng", "mu"}]``: one sensor per station and class, ``mu`` its
  unit as the network spells it (``°C``, ``%``, ``mm``, ``Knots`` ...).
- ``GET sensors/data/<class>/all?from=YYYYmmddHHMM&to=YYYYmmddHHMM&aggr=3600&date_as_string=true``
  -> ``[{"sensorId", "timeline": ["YYYYmmddHHMM", ...], "values": [...]}]``. ``aggr`` is in
  seconds (3600: hourly). Values ``-9999`` (anything below -9000) mean "no data" and become
  nulls.

Unit handling: every value is converted to the unit the ingestion map declares, according to
the ``mu`` its sensor reports, and a sensor whose ``mu`` is not understood for its class is
left out (counted in the fetch notes) rather than published in a unit we would mislabel. In
practice only the gust sensors need it: they report knots, published as m s-1
(x 1852/3600). Rows are one per station and hour: every class of a station is merged on
its timeline.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urljoin

import pyarrow as pa

from ionbeam_dagster.contracts import DataIngestionMap, as_utc
from ionbeam_dagster.http import HttpClient, RetryPolicy
from ionbeam_dagster.sources.auth import (
    AuthError,
    Credentials,
    ExpiringTokenClient,
    TokenState,
    post_for_json,
    read_credentials,
)
from ionbeam_dagster.sources.base import (
    LOG,
    Source,
    SourceError,
    payload_schema,
    rows_in_range,
    user_agent,
    with_fetch_notes,
)

__all__ = [
    "DATASET",
    "Acronet",
    "AcronetTokens",
    "CLASSES",
    "acronet_ingestion_map",
    "parse_data",
    "parse_sensor_list",
]

DATASET = "acronet"
START = datetime(2023, 1, 1, tzinfo=UTC)
DEFAULT_URL = "https://webdrops.cimafoundation.org/app/"
DEFAULT_TOKEN_URL = "https://testauth.cimafoundation.org/auth/realms/webdrops/protocol/openid-connect/token"
DEFAULT_CLIENT_ID = "webdrops"
DEFAULT_STATION_GROUP = "ComuneLive%IChange"
DEFAULT_GEOWIN = "6.0,36.0,18.6,47.5"  # lon_min,lat_min,lon_max,lat_max: Italy
URL_ENV = "IONBEAM_ACRONET_URL"
TOKEN_URL_ENV = "IONBEAM_ACRONET_TOKEN_URL"
CLIENT_ID_ENV = "IONBEAM_ACRONET_CLIENT_ID"
CLIENT_SECRET_ENV = "IONBEAM_ACRONET_CLIENT_SECRET"
USERNAME_ENV = "IONBEAM_ACRONET_USERNAME"
PASSWORD_ENV = "IONBEAM_ACRONET_PASSWORD"
STATION_GROUP_ENV = "IONBEAM_ACRONET_STATION_GROUP"
GEOWIN_ENV = "IONBEAM_ACRONET_GEOWIN"
AGGREGATION_SECONDS = 3600
PERIOD = "PT1H"
MISSING_BELOW = -9000.0
# Refresh this long before the access token's announced expiry.
EXPIRY_MARGIN_SECONDS = 30.0
# webdrops answers at most a few days per request (the reference kept to 2 days).
MAX_REQUEST = timedelta(days=2)
KNOT = 1852.0 / 3600.0  # m s-1

TIME_COLUMN, LAT_COLUMN, LON_COLUMN = "time", "lat", "lon"
METADATA_COLUMNS = ("station_id", "station_name")


def _identity(x: float) -> float:
    return x


@dataclass(frozen=True)
class SensorClass:
    """One webdrops class as published: column = the class name."""

    name: str
    standard_name: str
    cf_unit: str
    level: float
    method: str
    #: ``mu`` spellings (lower-case, stripped) -> conversion to ``cf_unit``; "" = no mu given.
    units: Mapping[str, Callable[[float], float]]


_DEGC = {"°c": _identity, "c": _identity, "degc": _identity, "gradi celsius": _identity, "": _identity}
_PERCENT = {"%": _identity, "percent": _identity, "": _identity}
_HPA = {"hpa": _identity, "mbar": _identity, "mb": _identity, "": _identity}
_MS = {"m/s": _identity, "m s-1": _identity, "ms-1": _identity, "km/h": lambda v: v / 3.6,
       "knots": lambda v: v * KNOT, "knot": lambda v: v * KNOT, "kn": lambda v: v * KNOT, "nodi": lambda v: v * KNOT}
_DEGREES = {"degrees": _identity, "degree": _identity, "deg": _identity, "°": _identity, "gradi": _identity, "": _identity}

# Levels: screen height for temperature and humidity, station level for pressure and rain,
# the standard 10 m for wind (what the exporters' wind rules expect). Hourly aggregates:
# rain is the sum over the hour, gusts the hour's maximum, the rest the hour's mean.
CLASSES: tuple[SensorClass, ...] = (
    SensorClass("TERMOMETRO", "air_temperature", "degC", 2.0, "mean", _DEGC),
    SensorClass("IGROMETRO", "relative_humidity", "percent", 2.0, "mean", _PERCENT),
    SensorClass("BAROMETRO", "air_pressure", "hPa", 0.0, "mean", _HPA),
    SensorClass("PLUVIOMETRO", "precipitation_amount", "mm", 0.0, "sum", {"mm": _identity, "": _identity}),
    SensorClass("ANEMOMETRO", "wind_speed", "m s-1", 10.0, "mean", {**_MS, "": _identity}),
    SensorClass("DIREZIONEVENTO", "wind_from_direction", "degree", 10.0, "mean", _DEGREES),
    # No default for gusts: the network reports them in knots, so a gust sensor that does not
    # say its unit is left out rather than guessed.
    SensorClass("ANEMOMETRO_RAFFICA", "wind_speed_of_gust", "m s-1", 10.0, "maximum", _MS),
    SensorClass("DIREZIONEVENTO_RAFFICA", "wind_gust_from_direction", "degree", 10.0, "mean", _DEGREES),
)
CLASS_NAMES = tuple(c.name for c in CLASSES)


def acronet_ingestion_map() -> DataIngestionMap:
    return DataIngestionMap.model_validate(
        {
            "datetime": {"from_col": TIME_COLUMN, "dtype": "datetime64[ns, UTC]"},
            "lat": {"from_col": LAT_COLUMN, "standard_name": "latitude", "cf_unit": "degrees_north"},
            "lon": {"from_col": LON_COLUMN, "standard_name": "longitude", "cf_unit": "degrees_east"},
            "canonical_variables": [
                {"column": c.name, "standard_name": c.standard_name, "cf_unit": c.cf_unit, "level": c.level,
                 "method": c.method, "period": PERIOD}
                for c in CLASSES
            ],
            "metadata_variables": [{"column": c, "dtype": "string"} for c in METADATA_COLUMNS],
        }
    )


SCHEMA = payload_schema(acronet_ingestion_map())


# ---------------------------------------------------------------- authentication


class AcronetTokens:
    """TokenProvider for webdrops' Keycloak: password grant, refresh_token grant before expiry
    (``expires_soon``, used by :class:`ExpiringTokenClient`) and after a 401."""

    def __init__(self, token_url: str, client_id: str, credentials: Credentials, *, client_secret: str | None = None,
                 policy: RetryPolicy | None = None, agent: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret or None
        self.state = TokenState(credentials)
        self.policy = policy or RetryPolicy()
        self.agent = agent or user_agent()
        self.clock = clock
        self.logins = 0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"AcronetTokens(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def _secrets(self) -> list[str]:
        return [*self.state.secrets(), *([self.client_secret] if self.client_secret else [])]

    def expires_soon(self) -> bool:
        expires_at = self.state.expires_at
        return expires_at is not None and self.clock() >= expires_at - EXPIRY_MARGIN_SECONDS

    def token(self) -> str:
        with self.state.lock:
            if self.state.access_token is None:
                self._grant(password=True)
            assert self.state.access_token is not None
            return self.state.access_token

    def refresh(self) -> str:
        with self.state.lock:
            refresh_alive = self.state.refresh_token is not None and (
                self.state.refresh_expires_at is None or self.clock() < self.state.refresh_expires_at
            )
            if not refresh_alive or not self._grant(password=False):
                self._grant(password=True)
            assert self.state.access_token is not None
            return self.state.access_token

    def _grant(self, *, password: bool) -> bool:
        creds = self.state.credentials
        form = {"client_id": self.client_id}
        if password:
            form.update(grant_type="password", username=creds.username, password=creds.password)
        else:
            assert self.state.refresh_token is not None
            form.update(grant_type="refresh_token", refresh_token=self.state.refresh_token)
        if self.client_secret:
            form["client_secret"] = self.client_secret
        what = "Acronet (webdrops) login" if password else "Acronet (webdrops) token refresh"
        asked = self.clock()
        status, body = post_for_json(self.policy, self.agent, self.token_url, secrets=self._secrets, what=what, form=form)
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            if not password:
                self.state.refresh_token = None
                return False  # expired or revoked refresh token: log in again
            if body is None:
                raise AuthError(
                    f"{what} refused (HTTP {status}) at {self.token_url}: check {USERNAME_ENV}, {PASSWORD_ENV} "
                    f"and {CLIENT_ID_ENV}"
                )
            keys = ", ".join(sorted(map(str, body))) if isinstance(body, dict) else type(body).__name__
            raise AuthError(f"{what} at {self.token_url} answered no access_token (keys: {keys})")
        self.state.access_token = access
        refresh = body.get("refresh_token")
        self.state.refresh_token = refresh if isinstance(refresh, str) and refresh else self.state.refresh_token
        self.state.expires_at = _deadline(asked, body.get("expires_in"))
        if isinstance(refresh, str) and refresh:
            self.state.refresh_expires_at = _deadline(asked, body.get("refresh_expires_in"))
        if password:
            self.logins += 1
        else:
            self.refreshes += 1
        return True


def _deadline(asked: float, seconds: Any) -> float | None:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return None
    return asked + value if value > 0 else None


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Sensor:
    id: str
    sensor_class: str
    station_name: str
    station_id: str
    lat: float
    lon: float
    mu: str


def station_id(name: str) -> str:
    """A stable tag from a station name: ASCII, lower case, words joined by ``_``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_") or "unnamed"


def parse_sensor_list(records: Any, sensor_class: str) -> tuple[list[Sensor], int]:
    """(sensors of a ``sensors/list/<class>`` answer, records left out as malformed)."""
    if not isinstance(records, list):
        raise SourceError(f"webdrops sensors/list/{sensor_class} answered a JSON {type(records).__name__}, expected a list")
    sensors, malformed = [], 0
    for item in records:
        try:
            name = str(item["name"]).strip()
            sensors.append(
                Sensor(
                    id=str(item["id"]),
                    sensor_class=sensor_class,
                    station_name=name,
                    station_id=station_id(name),
                    lat=float(item["lat"]),
                    lon=float(item["lng"]),
                    mu=str(item.get("mu") or "").strip(),
                )
            )
        except (KeyError, TypeError, ValueError):
            malformed += 1
    return sensors, malformed


def parse_data(records: Any, sensor_class: str) -> list[tuple[str, list[str], list[Any]]]:
    """(sensorId, timeline, values) of a ``sensors/data/<class>/all`` answer."""
    if not isinstance(records, list):
        raise SourceError(f"webdrops sensors/data/{sensor_class} answered a JSON {type(records).__name__}, expected a list")
    out = []
    for item in records:
        if not isinstance(item, dict) or item.get("sensorId") in (None, ""):
            continue
        timeline, values = item.get("timeline") or [], item.get("values") or []
        if not isinstance(timeline, list) or not isinstance(values, list) or len(timeline) != len(values):
            continue
        out.append((str(item["sensorId"]), [str(t) for t in timeline], values))
    return out


def _value(raw: Any) -> float | None:
    """A reading as float; missing markers (null, below -9000, not a number) are None."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if value != value or value < MISSING_BELOW:
        return None
    return value


def _timeline_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None


def _stamp(t: datetime) -> str:
    return as_utc(t).strftime("%Y%m%d%H%M")


# ---------------------------------------------------------------- the source


class Acronet(Source):
    """Daily partitions; each reads the hourly aggregates of every mapped class."""

    def __init__(self, *, base_url: str | None = None, policy: RetryPolicy | None = None,
                 environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(
            name="acronet",
            dataset=DATASET,
            fetch_span=timedelta(days=1),
            start=START,
            # Stations transmit in batches; give the last hours of the day time to arrive.
            lag=timedelta(hours=2),
            description=(
                "Acronet stations (CIMA Foundation) from the webdrops API: hourly temperature, humidity, "
                "pressure, precipitation and wind, one row per station and hour."
            ),
        )
        self._environ = os.environ if environ is None else environ
        url = base_url or self._environ.get(URL_ENV) or DEFAULT_URL
        self.base_url = url if url.endswith("/") else url + "/"
        self.token_url = self._environ.get(TOKEN_URL_ENV) or DEFAULT_TOKEN_URL
        self.client_id = self._environ.get(CLIENT_ID_ENV) or DEFAULT_CLIENT_ID
        self.station_group = self._environ.get(STATION_GROUP_ENV) or DEFAULT_STATION_GROUP
        self.geowin = self._environ.get(GEOWIN_ENV) or DEFAULT_GEOWIN
        self.policy = policy
        self.clock = clock
        self.tokens: AcronetTokens | None = None

    def ingestion_map(self) -> DataIngestionMap:
        return acronet_ingestion_map()

    def http_client(self) -> HttpClient:
        credentials = read_credentials(USERNAME_ENV, PASSWORD_ENV, environ=self._environ, network="Acronet (webdrops)")
        self.tokens = AcronetTokens(
            self.token_url, self.client_id, credentials, client_secret=self._environ.get(CLIENT_SECRET_ENV),
            policy=self.policy, clock=self.clock,
        )
        return ExpiringTokenClient(policy=self.policy, token_provider=self.tokens, user_agent=user_agent(self._environ))

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        start, end = as_utc(start), as_utc(end)
        notes: dict[str, Any] = {"classes": [], "classes_not_offered": [], "sensors": 0, "left_out": {}}
        offered = http.get_json(urljoin(self.base_url, "sensors/classes"))
        names = {str(c.get("name", "")) if isinstance(c, dict) else str(c) for c in offered} if isinstance(offered, list) else set()
        rows: dict[tuple[str, datetime], dict[str, Any]] = {}
        stations: dict[str, Sensor] = {}
        for sensor_class in CLASSES:
            if sensor_class.name not in names:
                notes["classes_not_offered"].append(sensor_class.name)
                continue
            notes["classes"].append(sensor_class.name)
            sensors = self._sensors(sensor_class, http, notes)
            for chunk_start, chunk_end in _chunks(start, end):
                params = {"from": _stamp(chunk_start), "to": _stamp(chunk_end), "aggr": AGGREGATION_SECONDS,
                          "date_as_string": "true"}
                url = urljoin(self.base_url, f"sensors/data/{quote(sensor_class.name, safe='')}/all")
                for sensor_id, timeline, values in parse_data(http.get_json(url, params=params), sensor_class.name):
                    sensor = sensors.get(sensor_id)
                    if sensor is None:
                        _count(notes["left_out"], "unknown_sensor")
                        continue
                    convert = sensor_class.units.get(sensor.mu.lower())
                    if convert is None:
                        _count(notes["left_out"], f"unknown_unit:{sensor_class.name}:{sensor.mu}")
                        continue
                    # The position of a station is its first class's (in CLASSES order).
                    station = stations.setdefault(sensor.station_id, sensor)
                    for stamp, raw in zip(timeline, values, strict=True):
                        when = _timeline_time(stamp)
                        if when is None:
                            _count(notes["left_out"], "bad_time")
                            continue
                        value = _value(raw)
                        row = rows.setdefault((station.station_id, when), {})
                        if value is None:
                            row.setdefault(sensor_class.name, None)
                        else:
                            row[sensor_class.name] = convert(value)
        table = self._table(rows, stations)
        table = rows_in_range(table, TIME_COLUMN, start, end)
        log.info(
            f"acronet [{start.isoformat()}, {end.isoformat()}): {len(stations)} stations, {table.num_rows} station-hours; "
            f"left out {notes['left_out']}"
        )
        return with_fetch_notes(table, notes)

    def _sensors(self, sensor_class: SensorClass, http: HttpClient, notes: dict[str, Any]) -> dict[str, Sensor]:
        url = urljoin(self.base_url, f"sensors/list/{quote(sensor_class.name, safe='')}")
        records = http.get_json(url, params={"stationgroup": self.station_group, "geowin": self.geowin})
        sensors, malformed = parse_sensor_list(records, sensor_class.name)
        if malformed:
            notes["left_out"]["malformed_sensor"] = notes["left_out"].get("malformed_sensor", 0) + malformed
        notes["sensors"] += len(sensors)
        return {s.id: s for s in sensors}

    def _table(self, rows: dict[tuple[str, datetime], dict[str, Any]], stations: dict[str, Sensor]) -> pa.Table:
        keys = sorted(rows)
        columns: dict[str, Any] = {
            TIME_COLUMN: pa.array([k[1] for k in keys], pa.timestamp("ns", tz="UTC")),
            LAT_COLUMN: pa.array([stations[k[0]].lat for k in keys], pa.float64()),
            LON_COLUMN: pa.array([stations[k[0]].lon for k in keys], pa.float64()),
            **{c: pa.array([rows[k].get(c) for k in keys], pa.float64()) for c in CLASS_NAMES},
            "station_id": pa.array([k[0] for k in keys], pa.string()),
            "station_name": pa.array([stations[k[0]].station_name for k in keys], pa.string()),
        }
        return pa.table(columns, schema=SCHEMA)


def _chunks(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out, current = [], start
    while current < end:
        out.append((current, min(current + MAX_REQUEST, end)))
        current = out[-1][1]
    return out


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1
