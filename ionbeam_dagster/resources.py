"""Dagster resources: how assets and sensors reach the services.

Every setting is optional and comes from an ``IONBEAM_*`` environment variable. Settings
that can carry a secret (URLs with passwords, the InfluxDB token) are passed as Dagster
``EnvVar`` when set, so their values never show in the UI, run config or logs. Nothing here
opens a connection at import or construction time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import redis

from ionbeam_dagster.broker import Broker, Topology
from ionbeam_dagster.catalog import DEFAULT_CATALOG_PATH, Catalog, load_catalog
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.lease import RunLease
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.windowstate import WindowState

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict[str, str] = {
    "IONBEAM_PREFIX": "ionbeam",
    "IONBEAM_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "IONBEAM_REDIS_URL": "redis://127.0.0.1:6379/0",
    "IONBEAM_INFLUXDB_URL": "http://127.0.0.1:8086",
    "IONBEAM_INFLUXDB_DATABASE": "ionbeam",
    "IONBEAM_OBJECT_STORE": (REPO_ROOT / ".ionbeam" / "objects").as_uri(),
    "IONBEAM_SENSOR_INTERVAL_SECONDS": "5",
    "IONBEAM_LEASE_TTL_SECONDS": "30",
    "IONBEAM_RUN_GRACE_SECONDS": "60",
}
SECRET_SETTINGS = ("IONBEAM_AMQP_URL", "IONBEAM_REDIS_URL", "IONBEAM_INFLUXDB_URL", "IONBEAM_INFLUXDB_TOKEN")


def setting(name: str) -> Any:
    """The value to give a resource field: an EnvVar for secrets that are set, else the plain
    value or its default."""
    if name in SECRET_SETTINGS and name in os.environ:
        return dg.EnvVar(name)
    return os.environ.get(name, DEFAULTS.get(name))


def plain_setting(name: str) -> str | None:
    return os.environ.get(name, DEFAULTS.get(name))


def catalog_path() -> Path:
    return Path(os.environ.get("IONBEAM_DATASETS", str(DEFAULT_CATALOG_PATH)))


def sensor_interval() -> int:
    return max(1, int(plain_setting("IONBEAM_SENSOR_INTERVAL_SECONDS") or 5))


def lease_ttl() -> int:
    """Lifetime of a run's Redis lease (refreshed every third of it): a killed run worker is
    noticed this long after it died at the earliest."""
    return max(3, int(plain_setting("IONBEAM_LEASE_TTL_SECONDS") or 30))


def run_grace() -> float:
    """How long a started run may go without a lease before the sensors call it dead: it must
    cover the time from the run's start to its op taking the lease."""
    return max(1.0, float(plain_setting("IONBEAM_RUN_GRACE_SECONDS") or 60))


class BrokerResource(dg.ConfigurableResource):
    """RabbitMQ: the ionbeam topology under ``prefix``."""

    amqp_url: str
    prefix: str = "ionbeam"

    @contextmanager
    def open(self) -> Iterator[Broker]:
        with Broker(self.amqp_url, Topology(self.prefix)) as broker:
            broker.declare()
            yield broker


class RedisResource(dg.ConfigurableResource):
    """Redis: ingestion ledger, coordinator window state, run leases."""

    url: str
    prefix: str = "ionbeam"
    lease_ttl_seconds: int = 30

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)

    def ledger(self, client: redis.Redis) -> IngestionLedger:
        return IngestionLedger(client, self.prefix)

    def windows(self, client: redis.Redis) -> WindowState:
        return WindowState(client, self.prefix)

    def leases(self, client: redis.Redis) -> RunLease:
        return RunLease(client, self.prefix, ttl_seconds=self.lease_ttl_seconds)


class InfluxResource(dg.ConfigurableResource):
    """InfluxDB through its 1.x HTTP API (served by 1.x, 2.x and 3.x)."""

    url: str
    database: str = "ionbeam"
    token: str | None = None

    def client(self) -> InfluxClient:
        return InfluxClient(self.url, self.database, token=self.token or None)


class ObjectStoreResource(dg.ConfigurableResource):
    """Raw payloads, dataset windows and exports: a local directory or S3."""

    url: str
    s3_endpoint: str | None = None

    def store(self) -> ObjectStore:
        return ObjectStore.from_url(self.url, s3_endpoint=self.s3_endpoint or None)


class CatalogResource(dg.ConfigurableResource):
    """The dataset catalog the code location was loaded with."""

    path: str

    def load(self) -> Catalog:
        return load_catalog(self.path)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    prefix = plain_setting("IONBEAM_PREFIX") or "ionbeam"
    return {
        "broker": BrokerResource(amqp_url=setting("IONBEAM_AMQP_URL"), prefix=prefix),
        "redis": RedisResource(url=setting("IONBEAM_REDIS_URL"), prefix=prefix, lease_ttl_seconds=lease_ttl()),
        "influx": InfluxResource(
            url=setting("IONBEAM_INFLUXDB_URL"),
            database=plain_setting("IONBEAM_INFLUXDB_DATABASE") or "ionbeam",
            token=setting("IONBEAM_INFLUXDB_TOKEN"),
        ),
        "objects": ObjectStoreResource(url=plain_setting("IONBEAM_OBJECT_STORE") or "", s3_endpoint=plain_setting("IONBEAM_S3_ENDPOINT")),
        "catalog": CatalogResource(path=str(catalog_path())),
    }
