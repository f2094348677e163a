"""What the numbers were measured on: CPU, memory, load, and the versions that matter."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

_PACKAGES = (
    "dagster", "pyarrow", "pandas", "numpy", "requests", "pika", "redis", "geopandas",
    "pyodc", "odclib", "netCDF4", "xarray", "influxdb-client",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _influxdb_version(url: str) -> str | None:
    try:
        return requests.get(f"{url}/ping", timeout=5).headers.get("X-Influxdb-Version")
    except requests.RequestException:
        return None


def _redis_version(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url)
        try:
            return str(client.info("server").get("redis_version"))
        finally:
            client.close()
    except redis.RedisError:
        return None


def _rabbitmq_version(amqp_url: str) -> str | None:
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    except Exception:  # noqa: BLE001 - a version is nice to have, never worth failing for
        return None
    try:
        version = connection._impl.server_properties.get("version")  # noqa: SLF001 - only way pika exposes it
        return version.decode() if isinstance(version, bytes) else version
    finally:
        connection.close()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(influx_url: str, redis_url: str, amqp_url: str) -> dict[str, Any]:
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        git = ""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_mb": round(_mem_total_mb() or 0),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
        "git_head": git or None,
        "versions": {
            **{p: _version(p) for p in _PACKAGES},
            "influxdb_server": _influxdb_version(influx_url),
            "redis_server": _redis_version(redis_url),
            "rabbitmq_server": _rabbitmq_version(amqp_url),
        },
    }
