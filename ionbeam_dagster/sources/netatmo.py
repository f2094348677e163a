"""Netatmo personal weather stations: the EUMETNET MQTT feed, and Netatmo's ``getpublicdata``.

The MQTT feed (E-SOH style) sends one observation per message, a GeoJSON-like feature::

    {"type": "Feature",
     "geometry": {"type": "Point", "coordinates": {"lat": 50.21, "lon": 8.79}},
     "properties": {"platform": "70:ee:50:36:94:7c", "datetime": "2026-03-01T10:05:00Z",
                    "pubtime": "2026-03-01T10:06:12Z", "level": "2.0", "function": "point",
                    "period": "PT0S", "quality_code": 0,
                    "content": {"standard_name": "air_temperature", "value": "21.4", "unit": "degC"}}}

``coordinates`` is the E-SOH ``{lat, lon}`` object; a GeoJSON position ``[lon, lat(, alt)]`` is
read too. ``level`` (metres) and ``value`` may be strings or numbers; ``period`` is an ISO 8601
duration; ``datetime`` may be ``start_datetime``/``end_datetime`` for a period (the end is the
observation time). The consumer (:mod:`~ionbeam_dagster.sources.netatmo_mqtt`) stores each
observation in the Redis buffer (:mod:`~ionbeam_dagster.sources.netatmo_buffer`) keyed by
(platform, datetime, standard_name, level, function, period): a redelivered message lands on
its own key, and of two versions the one with the later ``pubtime`` wins. :class:`NetatmoSource`
then reads the buffer one fetch partition at a time and pivots it to one row per
(platform, datetime), one column per declared variable (:data:`VARIABLES`).

A message is kept only if its (standard_name, level, function, period) is declared; its value
is converted from the unit it names to the declared unit (cf-units; precipitation in ``mm``
equals ``kg m-2`` of water). The quality code is kept as data, a float column next to each
variable (``<column>_quality_code``, declared as the canonical variable
``<standard_name>_quality_code__1__<level>__<method>__<period>``), never as an InfluxDB tag:
tags are indexed series keys, and a per-value code there would split every station into many
series.

:func:`parse_getpublicdata` reads Netatmo's REST ``getpublicdata`` response into the same
columns: ``measures`` per module either ``{res: {<epoch>: [values]}, type: [names]}``
(temperature, humidity; pressure under the station's own id) or flat keys (``rain_60min``,
``rain_24h``, ``rain_timeutc``; ``wind_strength``, ``wind_angle``, ``gust_strength``,
``gust_angle``, ``wind_timeutc``). Netatmo's ``pressure`` is the pressure reduced to mean sea
level (its ``absolute_pressure`` is station pressure); ``rain_live`` is not mapped.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import pyarrow as pa

from ionbeam_dagster.contracts import DataIngestionMap, as_utc, format_time
from ionbeam_dagster.durations import format_duration, parse_duration
from ionbeam_dagster.http import HttpClient
from ionbeam_dagster.sources.base import LOG, Source, SourceError, fetch_notes, with_fetch_notes
from ionbeam_dagster.windows import window_of

__all__ = [
    "DATASET",
    "FETCH_SPAN",
    "NETATMO_START",
    "NetatmoApiError",
    "NetatmoSettings",
    "NetatmoSource",
    "Observation",
    "RejectedMessage",
    "VARIABLES",
    "Variable",
    "netatmo_ingestion_map",
    "observations_table",
    "parse_feature",
    "parse_getpublicdata",
]

DATASET = "netatmo"
FETCH_SPAN = timedelta(minutes=10)
NETATMO_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_LAG = timedelta(minutes=5)
TIME_COLUMN, LAT_COLUMN, LON_COLUMN, STATION_COLUMN = "datetime", "lat", "lon", "station_id"
QUALITY_SUFFIX = "_quality_code"


@dataclass(frozen=True)
class Variable:
    column: str
    standard_name: str
    unit: str  # the declared (stored) unit
    level: float
    method: str
    period: str

    @property
    def quality_column(self) -> str:
        return self.column + QUALITY_SUFFIX

    @property
    def key(self) -> tuple[str, float, str, str]:
        return (self.standard_name, self.level, self.method, self.period)


#: Every variable the dataset declares, shared by the MQTT feed and getpublicdata.
VARIABLES: tuple[Variable, ...] = (
    Variable("air_temperature", "air_temperature", "degC", 2.0, "point", "PT0S"),
    Variable("relative_humidity", "relative_humidity", "percent", 2.0, "point", "PT0S"),
    Variable("air_pressure_at_mean_sea_level", "air_pressure_at_mean_sea_level", "hPa", 0.0, "point", "PT0S"),
    Variable("precipitation_amount_pt1h", "precipitation_amount", "kg m-2", 0.0, "sum", "PT1H"),
    Variable("precipitation_amount_p1d", "precipitation_amount", "kg m-2", 0.0, "sum", "P1D"),
    Variable("wind_speed", "wind_speed", "km h-1", 10.0, "mean", "PT5M"),
    Variable("wind_from_direction", "wind_from_direction", "degree", 10.0, "mean", "PT5M"),
    Variable("wind_speed_of_gust", "wind_speed_of_gust", "km h-1", 10.0, "maximum", "PT5M"),
    Variable("wind_gust_from_direction", "wind_gust_from_direction", "degree", 10.0, "maximum", "PT5M"),
)
_BY_KEY = {v.key: v for v in VARIABLES}
_BY_COLUMN = {v.column: v for v in VARIABLES}
VALUE_COLUMNS = tuple(v.column for v in VARIABLES)
QUALITY_COLUMNS = tuple(v.quality_column for v in VARIABLES)

# getpublicdata: module measure name -> variable column.
REST_RES_TYPES: Mapping[str, str] = {
    "temperature": "air_temperature",
    "humidity": "relative_humidity",
    "pressure": "air_pressure_at_mean_sea_level",
}
REST_FLAT: Mapping[str, tuple[str, str]] = {  # key -> (column, key of its time)
    "rain_60min": ("precipitation_amount_pt1h", "rain_timeutc"),
    "rain_24h": ("precipitation_amount_p1d", "rain_timeutc"),
    "wind_strength": ("wind_speed", "wind_timeutc"),
    "wind_angle": ("wind_from_direction", "wind_timeutc"),
    "gust_strength": ("wind_speed_of_gust", "wind_timeutc"),
    "gust_angle": ("wind_gust_from_direction", "wind_timeutc"),
}
# How getpublicdata spells its units, as the variables declare them (no conversion needed).
REST_UNITS = {c: _BY_COLUMN[c].unit for c in VALUE_COLUMNS}


def netatmo_ingestion_map() -> DataIngestionMap:
    canonical: list[dict[str, Any]] = []
    for v in VARIABLES:
        canonical.append(
            {"column": v.column, "standard_name": v.standard_name, "cf_unit": v.unit, "level": v.level,
             "method": v.method, "period": v.period}
        )
    for v in VARIABLES:
        canonical.append(
            {"column": v.quality_column, "standard_name": v.standard_name + QUALITY_SUFFIX, "cf_unit": "1",
             "level": v.level, "method": v.method, "period": v.period}
        )
    return DataIngestionMap.model_validate(
        {
            "datetime": {"from_col": TIME_COLUMN, "dtype": "datetime64[ns, UTC]"},
            "lat": {"from_col": LAT_COLUMN, "standard_name": "latitude", "cf_unit": "degrees_north"},
            "lon": {"from_col": LON_COLUMN, "standard_name": "longitude", "cf_unit": "degrees_east"},
            "canonical_variables": canonical,
            "metadata_variables": [{"column": STATION_COLUMN, "dtype": "string"}],
        }
    )


def _schema() -> pa.Schema:
    return pa.schema(
        [
            (TIME_COLUMN, pa.timestamp("ns", tz="UTC")),
            (LAT_COLUMN, pa.float64()),
            (LON_COLUMN, pa.float64()),
            *((c, pa.float64()) for c in VALUE_COLUMNS),
            *((c, pa.float64()) for c in QUALITY_COLUMNS),
            (STATION_COLUMN, pa.string()),
        ]
    )


SCHEMA = _schema()


# ---------------------------------------------------------------- units


_UNIT_ALIASES = {
    "%": "percent",
    "deg": "degree",
    "degrees": "degree",
    "°": "degree",
    "°C": "degC",
    "celsius": "degC",
    "mbar": "hPa",
    "km/h": "km h-1",
    "m/s": "m s-1",
    "kg/m2": "kg m-2",
    "kg m**-2": "kg m-2",
}


def _unit_text(unit: str) -> str:
    unit = unit.strip()
    return _UNIT_ALIASES.get(unit, _UNIT_ALIASES.get(unit.lower(), unit))


@lru_cache(maxsize=256)
def _converter(unit: str, target: str, standard_name: str) -> Any:
    """A function value -> value in ``target``, or None if ``unit`` cannot be converted."""
    unit = _unit_text(unit)
    if unit == target:
        return lambda x: x
    # A depth of liquid water is its mass per area: 1 mm = 1 kg m-2 (udunits cannot know that).
    if standard_name == "precipitation_amount" and target == "kg m-2" and unit in ("mm", "millimeter", "millimetre"):
        return lambda x: x
    import cf_units

    try:
        source_unit, target_unit = cf_units.Unit(unit), cf_units.Unit(target)
    except ValueError:
        return None
    if not source_unit.is_convertible(target_unit):
        return None
    return lambda x: float(source_unit.convert(x, target_unit))


# ---------------------------------------------------------------- the MQTT feature


class RejectedMessage(ValueError):
    """A feed message that cannot become an observation; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Observation:
    """One stored observation, as the feed said it (value and unit unconverted)."""

    platform: str
    time: datetime
    pubtime: datetime | None
    lat: float
    lon: float
    standard_name: str
    unit: str
    level: float
    function: str
    period: str
    value: float
    quality_code: float | None

    @property
    def key(self) -> str:
        """The dedupe key: (platform, datetime, standard_name, level, function, period)."""
        return "|".join((self.platform, format_time(self.time), self.standard_name, repr(self.level), self.function, self.period))

    @property
    def pubtime_us(self) -> int:
        """Publication time in microseconds since the epoch; -1 when the message had none."""
        if self.pubtime is None:
            return -1
        delta = self.pubtime - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds

    def variable(self) -> Variable | None:
        return _BY_KEY.get((self.standard_name, self.level, self.function, self.period))

    def to_json(self) -> str:
        return json.dumps(
            {
                "platform": self.platform, "datetime": format_time(self.time),
                "pubtime": format_time(self.pubtime) if self.pubtime else None,
                "lat": self.lat, "lon": self.lon, "standard_name": self.standard_name, "unit": self.unit,
                "level": self.level, "function": self.function, "period": self.period, "value": self.value,
                "quality_code": self.quality_code,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Observation:
        d = json.loads(text)
        return cls(
            platform=d["platform"], time=_time(d["datetime"]), pubtime=_time(d["pubtime"]) if d.get("pubtime") else None,
            lat=d["lat"], lon=d["lon"], standard_name=d["standard_name"], unit=d["unit"], level=d["level"],
            function=d["function"], period=d["period"], value=d["value"], quality_code=d.get("quality_code"),
        )


def _time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return as_utc(datetime.fromisoformat(text))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        return float(value.strip())
    return None


def _coordinates(geometry: Any) -> tuple[float, float]:
    if not isinstance(geometry, Mapping):
        raise RejectedMessage("invalid_geometry", "geometry is missing or not an object")
    coords = geometry.get("coordinates")
    try:
        if isinstance(coords, Mapping):
            lat, lon = _number(coords.get("lat")), _number(coords.get("lon"))
        elif isinstance(coords, list | tuple) and len(coords) >= 2:
            lon, lat = _number(coords[0]), _number(coords[1])
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise RejectedMessage("invalid_geometry", f"geometry.coordinates: {coords!r} is not {{lat, lon}}") from None
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        raise RejectedMessage("invalid_geometry", f"geometry.coordinates: {coords!r} has no finite lat and lon")
    return lat, lon


def parse_feature(body: bytes | str | Mapping[str, Any]) -> Observation:
    """One feed message as an Observation; RejectedMessage (with a reason code) otherwise.
    Only observations of a declared variable in a convertible unit are accepted."""
    try:
        feature = json.loads(body) if isinstance(body, bytes | str) else body
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedMessage("malformed_json", str(exc)) from None
    if not isinstance(feature, Mapping) or not isinstance(feature.get("properties"), Mapping):
        raise RejectedMessage("invalid_message", "expected a feature object with properties")
    props = feature["properties"]
    content = props.get("content")
    if not isinstance(content, Mapping):
        raise RejectedMessage("invalid_message", "properties.content is missing")
    platform = props.get("platform")
    if not isinstance(platform, str) or not platform.strip():
        raise RejectedMessage("invalid_message", "properties.platform is missing")
    try:
        when = props.get("datetime") or props.get("end_datetime")
        time = _time(when)
        pubtime = _time(props["pubtime"]) if props.get("pubtime") else None
    except (TypeError, ValueError) as exc:
        raise RejectedMessage("invalid_time", f"properties.datetime/pubtime: {exc}") from None
    lat, lon = _coordinates(feature.get("geometry"))
    standard_name, unit = content.get("standard_name"), content.get("unit")
    if not isinstance(standard_name, str) or not isinstance(unit, str):
        raise RejectedMessage("invalid_message", "properties.content.standard_name and unit must be strings")
    try:
        level = _number(props.get("level"))
        value = _number(content.get("value"))
        quality = _number(props.get("quality_code"))
        period = format_duration(parse_duration(str(props.get("period") or "PT0S")))
    except (TypeError, ValueError) as exc:
        raise RejectedMessage("invalid_value", f"level/value/quality_code/period: {exc}") from None
    if value is None:
        raise RejectedMessage("no_value", "properties.content.value is missing")
    if level is None:
        raise RejectedMessage("invalid_message", "properties.level is missing")
    function = str(props.get("function") or "point")
    observation = Observation(
        platform=platform.strip(), time=time, pubtime=pubtime, lat=lat, lon=lon, standard_name=standard_name,
        unit=unit, level=float(level), function=function, period=period, value=value, quality_code=quality,
    )
    variable = observation.variable()
    if variable is None:
        raise RejectedMessage(
            "unmapped_variable",
            f"{standard_name} level {level} {function} {period} is not a variable of the netatmo dataset",
        )
    if _converter(unit, variable.unit, standard_name) is None:
        raise RejectedMessage("unit_not_convertible", f"{standard_name}: {unit!r} cannot be converted to {variable.unit!r}")
    return observation


def observations_table(observations: Iterable[Observation]) -> pa.Table:
    """One row per (platform, datetime): every variable observed then, converted to its
    declared unit, with its quality code; position from the row's latest observation."""
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    latest: dict[tuple[str, datetime], int] = {}
    for o in observations:
        variable = o.variable()
        convert = _converter(o.unit, variable.unit, o.standard_name) if variable else None
        if variable is None or convert is None:
            continue  # refused when stored; a mapping changed since then
        key = (o.platform, o.time)
        row = rows.setdefault(key, {TIME_COLUMN: o.time, STATION_COLUMN: o.platform})
        if o.pubtime_us >= latest.get(key, -2):
            latest[key] = o.pubtime_us
            row[LAT_COLUMN], row[LON_COLUMN] = o.lat, o.lon
        row[variable.column] = convert(o.value)
        row[variable.quality_column] = o.quality_code
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]
    return pa.Table.from_pylist(ordered, schema=SCHEMA)


# ---------------------------------------------------------------- getpublicdata


class NetatmoApiError(SourceError):
    """Netatmo answered with an error object, or with something that is not a response."""


def _epoch(value: Any) -> datetime | None:
    try:
        number = _number(value)
        return datetime.fromtimestamp(number, UTC) if number is not None and math.isfinite(number) else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def parse_getpublicdata(response: Any) -> tuple[pa.Table, dict[str, int]]:
    """Rows of a ``getpublicdata`` response (one per station, module and measurement time)
    and counts of what was left out. NetatmoApiError for an error response."""
    if isinstance(response, bytes | str):
        try:
            response = json.loads(response)
        except ValueError as exc:
            raise NetatmoApiError(f"getpublicdata: the response is not JSON ({exc})") from None
    if not isinstance(response, Mapping):
        raise NetatmoApiError(f"getpublicdata: expected a JSON object, got {type(response).__name__}")
    error = response.get("error")
    if error is not None:
        if isinstance(error, Mapping):
            raise NetatmoApiError(f"getpublicdata: Netatmo API error (code {error.get('code')}): {error.get('message')}")
        raise NetatmoApiError(f"getpublicdata: Netatmo API error: {error}")
    if response.get("status") != "ok" or not isinstance(response.get("body"), list):
        raise NetatmoApiError(f"getpublicdata: status {response.get('status')!r} without a list body")
    rows: dict[tuple[str, datetime], dict[str, Any]] = {}
    left_out = {"malformed_station": 0, "unmapped_measure": 0, "no_time": 0}
    for station in response["body"]:
        try:
            station_id = station["_id"]
            lon, lat = (_number(x) for x in station["place"]["location"][:2])
            measures = station["measures"]
            if not isinstance(measures, Mapping):
                raise TypeError("measures")
        except (KeyError, TypeError, ValueError, IndexError):
            left_out["malformed_station"] += 1
            continue

        def put(when: datetime | None, column: str, value: Any) -> None:
            try:
                number = _number(value)
            except ValueError:
                number = float("nan")  # present but not a number: ingestion counts it
            if when is None:
                left_out["no_time"] += 1
                return
            row = rows.setdefault(
                (station_id, when),
                {TIME_COLUMN: when, STATION_COLUMN: station_id, LAT_COLUMN: lat, LON_COLUMN: lon},
            )
            row[column] = number

        for module in measures.values():
            if not isinstance(module, Mapping):
                left_out["unmapped_measure"] += 1
                continue
            if "res" in module and "type" in module:
                types = module.get("type") or []
                for epoch, values in (module.get("res") or {}).items():
                    when = _epoch(epoch)
                    for name, value in zip(types, values or [], strict=False):
                        column = REST_RES_TYPES.get(name)
                        if column is None:
                            left_out["unmapped_measure"] += 1
                            continue
                        put(when, column, value)
                continue
            for key, value in module.items():
                if key.endswith("_timeutc"):
                    continue
                mapped = REST_FLAT.get(key)
                if mapped is None:
                    left_out["unmapped_measure"] += 1  # rain_live, ...
                    continue
                column, time_key = mapped
                put(_epoch(module.get(time_key)), column, value)
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]
    return pa.Table.from_pylist(ordered, schema=SCHEMA), left_out


# ---------------------------------------------------------------- the source


def _duration_env(environ: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    value = environ.get(name)
    if not value:
        return default
    try:
        return parse_duration(value.strip())
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class NetatmoSettings:
    """Where the buffer lives (the platform's Redis and prefix) and how long it keeps
    observations. The MQTT connection settings are in :mod:`netatmo_mqtt`."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "ionbeam"
    retention: timedelta = timedelta(days=7)
    late_debounce: timedelta = timedelta(seconds=60)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NetatmoSettings:
        environ = os.environ if environ is None else environ
        return cls(
            redis_url=environ.get("IONBEAM_REDIS_URL") or cls.redis_url,
            prefix=environ.get("IONBEAM_PREFIX") or cls.prefix,
            retention=_duration_env(environ, "IONBEAM_NETATMO_RETENTION", cls.retention),
            late_debounce=_duration_env(environ, "IONBEAM_NETATMO_LATE_DEBOUNCE", cls.late_debounce),
        )


class NetatmoSource(Source):
    """``netatmo``: PT10M partitions read from the buffer the MQTT consumer fills."""

    def __init__(self, settings: NetatmoSettings | None = None, *, start: datetime = NETATMO_START) -> None:
        super().__init__(
            name="netatmo",
            dataset=DATASET,
            fetch_span=FETCH_SPAN,
            start=start,
            lag=DEFAULT_LAG,
            description=(
                "Netatmo stations from the EUMETNET MQTT feed: the netatmo_mqtt_sensor stores every message "
                "durably (deduplicated, latest pubtime wins) before acking it; each partition is read from "
                "that buffer after the lag, and re-published when late messages change it."
            ),
        )
        self.settings = settings or NetatmoSettings.from_env()

    def ingestion_map(self) -> DataIngestionMap:
        return netatmo_ingestion_map()

    def buffer(self) -> Any:
        from ionbeam_dagster.sources.netatmo_buffer import ObservationBuffer

        return ObservationBuffer.connect(self.settings.redis_url, self.settings.prefix, self.fetch_span)

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        buffer = self.buffer()
        try:
            observations: list[Observation] = []
            revisions: dict[str, int] = {}
            bucket = window_of(as_utc(start), self.fetch_span).start
            while bucket < end:
                found, rev = buffer.read_bucket(bucket)
                if start <= bucket and bucket + self.fetch_span <= end:
                    # Only a bucket fetched whole counts as published (not a narrowed range).
                    revisions[str(int(bucket.timestamp()))] = rev
                observations.extend(o for o in found if start <= o.time < end)
                bucket += self.fetch_span
        finally:
            buffer.close()
        table = observations_table(observations)
        log.info(
            f"netatmo [{format_time(start)}, {format_time(end)}): {len(observations)} buffered observations, "
            f"{table.num_rows} rows (buffer revisions {revisions})"
        )
        return with_fetch_notes(table, {"observations": len(observations), "buffer_revisions": revisions})

    def published(self, start: datetime, end: datetime, table: pa.Table) -> None:
        """The payload of [start, end) is written and its command confirmed: record the buffer
        revisions it held, so only changes after them cause a re-publication."""
        revisions = fetch_notes(table).get("buffer_revisions") or {}
        if not revisions:
            return
        buffer = self.buffer()
        try:
            buffer.mark_published({int(k): int(v) for k, v in revisions.items()})
        finally:
            buffer.close()
