"""The demo data source: a fixed network of synthetic weather stations over Europe.

Why it is built this way:
- Stations are derived from a keyed hash of their index, never from a random generator's
  state, so every process, every run and every machine sees the same ids and positions, and
  asking for more stations only appends to the network (station i does not depend on the count).
- Every value is a pure function of (station, time): re-running a window (a retried Dagster run,
  a rebuild, another process) produces identical rows, so idempotency tests downstream can
  compare bytes. (Across different CPUs, sin/cos may differ in the last bit; values are
  rounded to sensor precision, which hides that in all but vanishingly rare cases.)
- Everything is vectorised: time terms are computed once per timestep, station terms once per
  station, and only the per-observation noise touches every row (1M rows in ~0.25 s).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "MAX_ROWS",
    "MAX_STATIONS",
    "Station",
    "generate_observations",
    "station_network",
    "synthetic_ingestion_map",
]

# Europe, roughly: Gibraltar/Crete to northern Norway, Portugal to western Russia.
LAT_RANGE = (36.0, 70.0)
LON_RANGE = (-10.0, 30.0)

MAX_STATIONS = 100_000
# A guard against a mistyped interval (1 s over a month is 130M rows per 50 stations):
# the whole table is built in memory, so refuse rather than swap.
MAX_ROWS = 50_000_000

_STATION_KEY = b"ionbeam-synthetic-station-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)

# (column, standard_name, cf_unit, level): the single source for both the generated columns
# and the ingestion map, so the two cannot drift apart.
_VARIABLES: tuple[tuple[str, str, str, float], ...] = (
    ("air_temperature", "air_temperature", "degC", 2.0),
    ("relative_humidity", "relative_humidity", "percent", 2.0),
    ("air_pressure", "air_pressure", "hPa", 0.0),
    ("wind_speed", "wind_speed", "m s-1", 10.0),
    ("wind_from_direction", "wind_from_direction", "degree", 10.0),
)


@dataclass(frozen=True)
class Station:
    station_id: str
    lat: float
    lon: float


# --------------------------------------------------------------------------- hashing helpers

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 with full avalanche.

    Used as a counter-based generator (noise = mix(station_seed ^ mix(time))) so values
    depend only on (station, time), never on how many rows were generated before them.
    uint64 array arithmetic wraps modulo 2**64, which is exactly what the mixer needs.
    """
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def _tri_noise(seeds: np.ndarray, time_keys: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic noise in (-1, 1), triangular (sum of two uniforms), std ~0.41.

    seeds: uint64 (S,), time_keys: uint64 (T,) -> float64 (T, S).
    Triangular rather than uniform so extremes are rare, as in real sensor noise.
    """
    h = _mix64(_mix64(time_keys ^ np.uint64(salt))[:, None] ^ seeds[None, :])
    lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi = (h >> np.uint64(32)).astype(np.float64)
    return (lo + hi) * (1.0 / 4294967296.0) - 1.0


# --------------------------------------------------------------------------- stations


@dataclass(frozen=True)
class _StationArrays:
    ids: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    seed: np.ndarray  # uint64, per-station key for the noise generator
    u: np.ndarray  # (S, 8) uniforms in [0, 1): per-station climate quirks


def _station_digest(index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(8, "big"), key=_STATION_KEY, digest_size=40).digest()


@lru_cache(maxsize=8)
def _station_arrays(count: int) -> _StationArrays:
    if not 1 <= count <= MAX_STATIONS:
        raise ValueError(f"stations: {count} must be between 1 and {MAX_STATIONS}")
    raw = np.frombuffer(b"".join(_station_digest(i) for i in range(count)), dtype="<u8").reshape(count, 5)
    u = np.empty((count, 8), dtype=np.float64)
    # Word 0 seeds the noise; the two 32-bit halves of words 1..4 give eight uniforms per station.
    for w in range(4):
        u[:, 2 * w] = (raw[:, w + 1] & np.uint64(0xFFFFFFFF)).astype(np.float64) / 4294967296.0
        u[:, 2 * w + 1] = (raw[:, w + 1] >> np.uint64(32)).astype(np.float64) / 4294967296.0
    # Round positions to 1e-4 degree (~10 m) like a real station register; keeps them exact in text.
    lat = np.round(LAT_RANGE[0] + (LAT_RANGE[1] - LAT_RANGE[0]) * u[:, 0], 4)
    lon = np.round(LON_RANGE[0] + (LON_RANGE[1] - LON_RANGE[0]) * u[:, 1], 4)
    # The id carries the index (unique by construction) and a hash tag (so ids don't look
    # sequential and a different key would give visibly different ids).
    ids = tuple(f"syn{i:05d}-{raw[i, 0] & 0xFFFFFF:06x}" for i in range(count))
    for arr in (lat, lon, raw, u):
        arr.setflags(write=False)
    seed = raw[:, 0].copy()
    seed.setflags(write=False)
    return _StationArrays(ids=ids, lat=lat, lon=lon, seed=seed, u=u)


def station_network(count: int = 50) -> tuple[Station, ...]:
    """The first `count` stations of the network; station i is the same whatever `count` is."""
    arrays = _station_arrays(count)
    return tuple(Station(sid, float(la), float(lo)) for sid, la, lo in zip(arrays.ids, arrays.lat, arrays.lon))


# --------------------------------------------------------------------------- observations


def _to_ns(value: datetime, name: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: {value.isoformat()} is naive; pass a timezone-aware UTC datetime")
    return ((value - _EPOCH) // _US) * 1000


def _schema() -> pa.Schema:
    fields = [
        pa.field("datetime", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("station_id", pa.string(), nullable=False),
    ]
    fields += [pa.field(column, pa.float64(), nullable=False) for column, *_ in _VARIABLES]
    return pa.schema(fields)


def generate_observations(
    start: datetime,
    end: datetime,
    *,
    stations: int = 50,
    interval: timedelta = timedelta(minutes=1),
) -> pa.Table:
    """One row per station at every epoch-aligned multiple of `interval` in [start, end).

    Rows are time-major (all stations at t0, then t1, ...), like a network feed.
    Aligning to the epoch (not to `start`) is what makes overlapping requests agree: the
    rows of [10:00, 10:20) are exactly the rows of [10:00, 10:10) plus [10:10, 10:20).
    """
    start_ns = _to_ns(start, "start")
    end_ns = _to_ns(end, "end")
    step = (interval // _US) * 1000
    if step <= 0:
        raise ValueError(f"interval: {interval} must be positive")
    net = _station_arrays(stations)
    first = -(-start_ns // step) * step  # ceil to the next multiple of the step
    times = np.arange(first, end_ns, step, dtype=np.int64) if first < end_ns else np.empty(0, np.int64)
    n_t, n_s = times.size, len(net.ids)
    if n_t * n_s > MAX_ROWS:
        raise ValueError(
            f"{n_t} timesteps x {n_s} stations = {n_t * n_s} rows exceeds MAX_ROWS={MAX_ROWS}; "
            "use a shorter range or a longer interval"
        )
    columns = _weather(times, net)
    n = n_t * n_s
    station_index = np.tile(np.arange(n_s, dtype=np.int32), n_t)
    arrays: list[pa.Array] = [
        pa.array(np.repeat(times, n_s), type=pa.timestamp("ns", tz="UTC")),
        pa.array(np.tile(net.lat, n_t)),
        pa.array(np.tile(net.lon, n_t)),
        pa.array(net.ids, type=pa.string()).take(pa.array(station_index)),
    ]
    arrays += [pa.array(columns[column].reshape(n)) for column, *_ in _VARIABLES]
    return pa.Table.from_arrays(arrays, schema=_schema())


def _weather(times: np.ndarray, net: _StationArrays) -> dict[str, np.ndarray]:
    """Plausible values, shape (T, S), from climate terms plus travelling 'weather systems'."""
    seconds = times.astype(np.float64) / 1e9
    days = seconds / 86400.0
    lat, lon, u = net.lat[None, :], net.lon[None, :], net.u
    two_pi = 2.0 * np.pi

    # Periodic terms of (time + station phase) are expanded with the angle-sum identity,
    # cos(a + b) = cos a cos b - sin a sin b, so the trigonometry runs on T + S values and
    # only multiply-adds touch all T x S cells (3x faster than cos over the full grid).
    def wave(t_angle: np.ndarray, s_angle: np.ndarray) -> np.ndarray:
        """sin(t_angle[t] + s_angle[s]) as a (T, S) grid."""
        return np.outer(np.sin(t_angle), np.cos(s_angle)) + np.outer(np.cos(t_angle), np.sin(s_angle))

    # Diurnal cycle on local solar time, so it shifts with longitude: +1 at 15:00 (warmest),
    # -1 at 03:00. cos(x) = sin(x + pi/2).
    day_angle = two_pi * (np.mod(seconds, 86400.0) / 86400.0)
    diurnal = wave(day_angle - two_pi * 15.0 / 24.0 + np.pi / 2.0, two_pi * net.lon / 360.0)
    # Coldest around 15 January, warmest mid-July.
    seasonal = -np.cos(two_pi * (days - 15.0) / 365.2422)[:, None]
    # Synoptic systems: waves drifting eastwards over a few days; smooth in space and time,
    # so neighbouring stations and consecutive minutes look related.
    t_phase = two_pi * days / 4.3
    s_phase = -np.deg2rad(net.lon) * 3.0 - np.deg2rad(net.lat) * 1.5
    synoptic = 0.7 * wave(t_phase, s_phase) + 0.3 * wave(0.37 * t_phase + 1.3, 0.37 * s_phase)

    tkeys = times.astype(np.uint64)
    seeds = net.seed

    # Temperature: ~12 degC mean at 45N, -0.6 K per degree north; continental stations
    # (east) get bigger seasonal and diurnal swings; a per-station offset stands in for altitude.
    continental = (lon - LON_RANGE[0]) / (LON_RANGE[1] - LON_RANGE[0])
    t_mean = 12.0 - 0.6 * (lat - 45.0) - 3.0 * u[None, :, 2]
    temperature = (
        t_mean
        + (7.0 + 5.0 * continental) * seasonal
        + (3.0 + 2.0 * continental) * diurnal
        - 2.5 * synoptic
        + 0.4 * _tri_noise(seeds, tkeys, 0x7A)
    )

    # Humidity: highest at night, lowest in the afternoon, wetter in low pressure.
    rh = 72.0 + 10.0 * (u[None, :, 3] - 0.5) - 15.0 * diurnal - 8.0 * synoptic + 3.0 * _tri_noise(seeds, tkeys, 0x4B)
    rh = np.clip(rh, 5.0, 100.0)

    # Sea-level-ish pressure: systems of +-20 hPa around the standard atmosphere.
    pressure = 1013.25 + 20.0 * synoptic + 2.0 * (u[None, :, 4] - 0.5) + 0.3 * _tri_noise(seeds, tkeys, 0x9C)

    # Wind: stronger in deep lows and at exposed stations; never negative.
    wind_mean = 2.0 + 5.0 * u[None, :, 5]
    wind = wind_mean * (1.0 + 0.6 * np.abs(synoptic)) + 0.8 * diurnal + 1.2 * _tri_noise(seeds, tkeys, 0x3D)
    wind = np.maximum(wind, 0.0)

    # Direction: prevailing westerlies (180..300), veering with the passing systems.
    prevailing = 180.0 + 120.0 * u[None, :, 6]
    direction = np.mod(prevailing + 70.0 * synoptic + 25.0 * _tri_noise(seeds, tkeys, 0xD1), 360.0)

    return {
        "air_temperature": np.round(temperature, 2),
        "relative_humidity": np.round(rh, 1),
        "air_pressure": np.round(pressure, 2),
        "wind_speed": np.round(wind, 2),
        # mod again: 359.97 rounds to 360.0, and the direction range is [0, 360).
        "wind_from_direction": np.mod(np.round(direction, 1), 360.0),
    }


# --------------------------------------------------------------------------- ingestion map


def synthetic_ingestion_map() -> dict[str, Any]:
    """The ionbeam DataIngestionMap (JSON form) for the columns `generate_observations` writes."""
    return {
        "datetime": {"from_col": "datetime", "dtype": "datetime64[ns, UTC]"},
        "lat": {"from_col": "lat", "standard_name": "latitude", "cf_unit": "degrees_north", "dtype": "float64"},
        "lon": {"from_col": "lon", "standard_name": "longitude", "cf_unit": "degrees_east", "dtype": "float64"},
        "canonical_variables": [
            {
                "column": column,
                "standard_name": standard_name,
                "cf_unit": cf_unit,
                "level": level,
                "method": "point",
                "period": "PT0S",
                "dtype": "float64",
            }
            for column, standard_name, cf_unit, level in _VARIABLES
        ],
        "metadata_variables": [{"column": "station_id", "dtype": "string"}],
    }
