"""Shared fixtures: real local services, isolated per test by a unique prefix.

Services come from `make services` (scripts/services.sh): InfluxDB, Redis and RabbitMQ on
loopback. A test that needs one asks for its fixture; every name it creates lives under a
prefix of its own, so tests can run side by side on one broker and one Redis, and the
fixtures remove what they created.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ionbeam_dagster.exporters.odb import settle_proj_before_codc

# Test modules import codc directly; its bundled SQLite breaks PROJ if it loads first
# (see settle_proj_before_codc), so PROJ is settled before any test module is collected.
settle_proj_before_codc()

if TYPE_CHECKING:
    import redis

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(os.environ.get("IONBEAM_SHARED_FIXTURES", SHARED / "fixtures"))

INFLUX_URL = os.environ.get("IONBEAM_TEST_INFLUXDB_URL", "http://127.0.0.1:8086")
REDIS_URL = os.environ.get("IONBEAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("IONBEAM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        raise RuntimeError(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def prefix() -> str:
    """A prefix no other test uses: the first part of every exchange, queue and Redis key."""
    return f"ionbeam_t{secrets.token_hex(4)}"


@pytest.fixture
def redis_client(prefix: str) -> Iterator["redis.Redis"]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def influx_database(prefix: str) -> Iterator[str]:
    """Name of a fresh InfluxDB database, dropped afterwards."""
    import requests

    name = prefix
    requests.post(f"{INFLUX_URL}/query", data={"q": f'CREATE DATABASE "{name}"'}, timeout=10).raise_for_status()
    yield name
    requests.post(f"{INFLUX_URL}/query", data={"q": f'DROP DATABASE "{name}"'}, timeout=10)


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
def influx_url() -> str:
    return INFLUX_URL


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint (moto's server) on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, prefix: str) -> str:
    """A fresh bucket on the moto endpoint; returns its name."""
    import boto3

    bucket = prefix.replace("_", "-")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def pipeline_services(
    tmp_path: Path,
    prefix: str,
    redis_client: "redis.Redis",
    redis_url: str,
    amqp_url: str,
    influx_url: str,
    influx_database: str,
) -> dict[str, object]:
    """Everything ``tests.pipeline_harness.make_pipeline`` needs, isolated for one test."""
    return {
        "tmp_path": tmp_path,
        "prefix": prefix,
        "redis_client": redis_client,
        "redis_url": redis_url,
        "amqp_url": amqp_url,
        "influx_url": influx_url,
        "influx_database": influx_database,
    }
