"""The services one benchmark run works against, all under a prefix of its own.

RabbitMQ names, Redis keys and the InfluxDB database carry a unique prefix and the object
store is a temporary directory, so a run never touches `make run` state or another
engineer's tests, and everything it created is removed at the end, even after a failure.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks.config import BenchConfig
from ionbeam_dagster.broker import Broker, Topology
from ionbeam_dagster.influx import InfluxClient, quote_ident
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.windowstate import WindowState


@dataclass
class BenchServices:
    config: BenchConfig
    prefix: str = field(default_factory=lambda: f"ionbeam_bench{secrets.token_hex(4)}")
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ionbeam-bench-")))

    def __post_init__(self) -> None:
        self.objects_dir = self.root / "objects"
        self.objects_dir.mkdir()
        self.store = ObjectStore.from_url(self.objects_dir.as_uri())
        self.influx = InfluxClient(self.config.influx_url, self.prefix)
        self.influx.ensure_database()
        self.redis = redis.Redis.from_url(self.config.redis_url)
        self.windows = WindowState(self.redis, self.prefix)
        self.broker = Broker(self.config.amqp_url, Topology(self.prefix))
        self.broker.declare()
        # Other prefixes (the latency stack's) register here to be cleaned up the same way.
        self.extra_prefixes: list[str] = []

    def __enter__(self) -> BenchServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fresh_broker(self) -> Broker:
        """A connected Broker for one trial, as a run opens its own (BrokerResource.open).

        Not the long-lived one: pika's blocking connection answers heartbeats only while it
        is used, so a connection left idle through minutes of other trials is dropped by
        RabbitMQ. Connecting happens here, before the caller starts its clock.
        """
        broker = Broker(self.config.amqp_url, Topology(self.prefix))
        broker.declare()
        return broker

    def drop_measurement(self, name: str) -> None:
        self.influx.query(f"DROP MEASUREMENT {quote_ident(name)}")

    def close(self) -> None:
        errors: list[BaseException] = []
        for prefix in [self.prefix, *self.extra_prefixes]:
            for step in (
                lambda p=prefix: _delete_topology(self.config.amqp_url, p),
                lambda p=prefix: _delete_redis_keys(self.redis, p),
                lambda p=prefix: InfluxClient(self.config.influx_url, p).drop_database(),
            ):
                try:
                    step()
                except Exception as exc:  # keep cleaning; report the first failure
                    errors.append(exc)
        self.broker.close()
        self.influx.close()
        self.redis.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]


def _delete_topology(amqp_url: str, prefix: str) -> None:
    with Broker(amqp_url, Topology(prefix)) as broker:
        # Exporter queues are named after the exporter; the benchmark's probes all start
        # with "bench", and deleting a queue that does not exist is harmless.
        broker.delete_all(extra_queues=[Topology(prefix).exporter_queue("bench_probe")])


def _delete_redis_keys(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
