"""The Netatmo MQTT source on real Mosquitto brokers, real Redis, and the whole pipeline.

The basic drain runs against the system broker on 127.0.0.1:1883 (unique topic and client id
per test). Tests that restart a broker start their own Mosquitto on a free loopback port,
with persistence in the test's temporary directory, so the system broker is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pyarrow as pa
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from ionbeam_dagster.sources.netatmo import FETCH_SPAN
from ionbeam_dagster.sources.netatmo_buffer import ObservationBuffer
from ionbeam_dagster.sources.netatmo_mqtt import MqttSettings, MqttUnavailable, drain
from ionbeam_dagster.windows import Window, partition_key, windows_overlapping
from sensors.netatmo import BUFFER_TRIGGER, REVISION_TAG, SENSOR_NAME
from tests.conftest import REDIS_URL, free_port
from tests.integration.test_sources import build_all, ingest_all, published_commands, run_request, run_source
from tests.pipeline_harness import CATALOG_YAML, Pipeline, close_pipeline, make_pipeline

pytestmark = [
    pytest.mark.services,
    pytest.mark.filterwarnings("ignore::dagster.BetaWarning"),
]

SYSTEM_BROKER = ("127.0.0.1", 1883)
TEMPERATURE = "air_temperature__degC__2.0__point__PT0S"
TEMPERATURE_QC = "air_temperature_quality_code__1__2.0__point__PT0S"
HUMIDITY = "relative_humidity__percent__2.0__point__PT0S"
CATALOG = CATALOG_YAML + """\
  - name: netatmo
    description: integration-test copy of the Netatmo dataset
    aggregation_span: PT1H
    subject_to_change_window: PT0S
    start: 2026-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
    station_column: station_id
"""


# ---------------------------------------------------------------- brokers


class Mosquitto:
    """A Mosquitto of our own: loopback, a free port, persistence in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                listener {self.port} 127.0.0.1
                allow_anonymous true
                persistence true
                persistence_location {directory}/
                log_dest file {directory}/mosquitto.log
                user root
                """
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """A clean stop (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    m = Mosquitto(directory)
    m.start()
    yield m
    m.stop()


@pytest.fixture
def buffer(redis_client: redis.Redis, prefix: str) -> ObservationBuffer:
    return ObservationBuffer(redis_client, prefix, FETCH_SPAN)


def settings_for(host: str, port: int, topic: str, **kw: Any) -> MqttSettings:
    defaults: dict[str, Any] = {"idle_seconds": 0.5, "max_seconds": 10.0}
    defaults.update(kw)
    return MqttSettings(host=host, port=port, topic=topic, client_id=f"itest-{uuid.uuid4().hex[:10]}", **defaults)


def publish(host: str, port: int, topic: str, bodies: list[Any]) -> None:
    """Publish at QoS 1, each confirmed by the broker (PUBACK) before returning."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"itest-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, b if isinstance(b, bytes) else json.dumps(b), qos=1) for b in bodies]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def feature(platform: str, at: datetime, standard_name: str, value: float, unit: str, *, pubtime: datetime | None = None,
            quality: int | None = 0, lat: float = 50.21, lon: float = 8.79, level: str = "2.0") -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": {"lat": lat, "lon": lon}},
        "properties": {
            "platform": platform,
            "datetime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pubtime": (pubtime or at + timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "level": level,
            "function": "point",
            "period": "PT0S",
            "quality_code": quality,
            "content": {"standard_name": standard_name, "value": str(value), "unit": unit},
        },
    }


def values(buffer: ObservationBuffer) -> dict[tuple[str, datetime, str], tuple[float, float | None]]:
    return {(o.platform, o.time, o.standard_name): (o.value, o.quality_code) for o in buffer.all_observations()}


T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


# ---------------------------------------------------------------- the consumer


def test_a_drain_stores_every_message_once_and_acks_only_what_it_stored(buffer: ObservationBuffer) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for(*SYSTEM_BROKER, topic)
    first = drain(settings, buffer)  # creates the persistent session and its subscription
    assert first.received == 0 and first.session_present is False

    t = T0 + timedelta(minutes=3)
    publish(*SYSTEM_BROKER, topic, [
        feature("A", t, "air_temperature", 21.4, "degC"),
        feature("A", t, "air_temperature", 21.4, "degC"),  # the same message twice
        feature("A", t, "relative_humidity", 62, "%"),
        feature("B", t, "air_temperature", 294.15, "K", quality=3),
        b"{not json",
    ])
    result = drain(settings, buffer)

    assert result.session_present is True
    assert (result.received, result.acked) == (5, 5)
    assert (result.stored.inserted, result.stored.unchanged) == (3, 1)
    assert result.rejected == {"malformed_json": 1}
    assert values(buffer) == {
        ("A", t, "air_temperature"): (21.4, 0.0),
        ("A", t, "relative_humidity"): (62.0, 0.0),
        ("B", t, "air_temperature"): (294.15, 3.0),
    }
    assert buffer.rejected() == [("malformed_json", b"{not json")]
    [bucket] = buffer.buckets()
    assert (bucket.start, bucket.rev, bucket.published) == (T0, 3, None)
    # Everything was acked: nothing comes again.
    assert drain(settings, buffer).received == 0


def test_the_latest_pubtime_wins_whatever_the_order_of_arrival(buffer: ObservationBuffer) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for(*SYSTEM_BROKER, topic)
    drain(settings, buffer)
    t = T0 + timedelta(minutes=1)
    late = t + timedelta(minutes=30)
    publish(*SYSTEM_BROKER, topic, [
        feature("A", t, "air_temperature", 20.0, "degC", pubtime=t + timedelta(minutes=1)),
        feature("A", t, "air_temperature", 20.5, "degC", pubtime=late, quality=1),  # a correction
        feature("A", t, "air_temperature", 20.0, "degC", pubtime=t + timedelta(minutes=1)),  # the old one again
    ])
    result = drain(settings, buffer)
    assert (result.stored.inserted, result.stored.updated, result.stored.unchanged) == (1, 1, 1)
    assert values(buffer) == {("A", t, "air_temperature"): (20.5, 1.0)}
    assert buffer.buckets()[0].rev == 2


def test_a_bounded_drain_leaves_the_rest_queued_for_the_next(buffer: ObservationBuffer) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for(*SYSTEM_BROKER, topic, max_messages=7, round_size=3)
    drain(settings, buffer)
    publish(*SYSTEM_BROKER, topic, [feature(f"S{i}", T0, "air_temperature", float(i), "degC") for i in range(20)])
    got = [drain(settings, buffer).received for _ in range(4)]
    assert got == [7, 7, 6, 0]
    assert len(values(buffer)) == 20


def test_messages_queued_across_a_broker_restart_are_all_consumed(broker: Mosquitto, buffer: ObservationBuffer) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for("127.0.0.1", broker.port, topic)
    drain(settings, buffer)  # the session exists, the consumer is away
    sent = [feature(f"S{i}", T0 + timedelta(minutes=i % 10), "air_temperature", 10.0 + i, "degC") for i in range(50)]
    publish("127.0.0.1", broker.port, topic, sent)

    broker.restart()

    result = drain(settings, buffer)
    assert result.session_present is True
    assert (result.received, result.stored.inserted) == (50, 50)
    assert len(values(buffer)) == 50
    broker.restart()
    assert drain(settings, buffer).received == 0  # the acks survived the restart too


def test_a_broker_restart_between_store_and_ack_redelivers_and_nothing_is_doubled(
    broker: Mosquitto, buffer: ObservationBuffer
) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for("127.0.0.1", broker.port, topic)
    drain(settings, buffer)
    publish("127.0.0.1", broker.port, topic, [feature(f"S{i}", T0, "air_temperature", float(i), "degC") for i in range(10)])

    # The broker goes away after the batch is stored and before the acks reach it.
    with pytest.raises(MqttUnavailable):
        drain(settings, buffer, after_store=lambda batch: broker.stop())
    broker.start()

    again = drain(settings, buffer)
    assert again.received == 10 and again.stored.unchanged == 10 and again.stored.inserted == 0
    assert len(values(buffer)) == 10 and buffer.buckets()[0].rev == 10
    assert drain(settings, buffer).received == 0


_KILLED_CONSUMER = """
import os, sys
import redis
from ionbeam_dagster.sources.netatmo import FETCH_SPAN
from ionbeam_dagster.sources.netatmo_buffer import ObservationBuffer
from ionbeam_dagster.sources.netatmo_mqtt import MqttSettings, MqttUnavailable, drain

port, topic, client_id, prefix, redis_url = sys.argv[1:]
buffer = ObservationBuffer(redis.Redis.from_url(redis_url), prefix, FETCH_SPAN)
settings = MqttSettings(host="127.0.0.1", port=int(port), topic=topic, client_id=client_id, idle_seconds=0.5)
# Killed once the batch is stored, before a single ack is sent.
drain(settings, buffer, after_store=lambda batch: os._exit(9))
"""


def test_a_consumer_killed_after_storing_but_before_acking_gets_the_messages_again_deduplicated(
    broker: Mosquitto, buffer: ObservationBuffer, prefix: str
) -> None:
    topic = f"itest/{uuid.uuid4().hex}/netatmo"
    settings = settings_for("127.0.0.1", broker.port, topic)
    drain(settings, buffer)
    sent = [feature(f"S{i}", T0 + timedelta(minutes=2), "relative_humidity", 50.0 + i, "percent") for i in range(12)]
    publish("127.0.0.1", broker.port, topic, sent)

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_CONSUMER, str(broker.port), topic, settings.client_id, prefix, REDIS_URL],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, timeout=60, env={**os.environ},
    )
    assert killed.returncode == 9, killed.stderr.decode()
    assert len(values(buffer)) == 12  # stored before it died
    rev = buffer.buckets()[0].rev

    again = drain(settings, buffer)
    assert again.received == 12  # never acked: redelivered
    assert (again.stored.inserted, again.stored.updated, again.stored.unchanged) == (0, 0, 12)
    assert buffer.buckets()[0].rev == rev  # no change, so no re-publication
    assert values(buffer) == {(f"S{i}", T0 + timedelta(minutes=2), "relative_humidity"): (50.0 + i, 0.0) for i in range(12)}
    assert drain(settings, buffer).received == 0


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture
def pipeline(
    pipeline_services: dict[str, Any],
    broker: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    # The netatmo source and its sensor read their settings when the code location is built.
    prefix = pipeline_services["prefix"]
    monkeypatch.setenv("IONBEAM_PREFIX", prefix)
    monkeypatch.setenv("IONBEAM_REDIS_URL", pipeline_services["redis_url"])
    monkeypatch.setenv("IONBEAM_NETATMO_MQTT_URL", f"mqtt://127.0.0.1:{broker.port}")
    monkeypatch.setenv("IONBEAM_NETATMO_MQTT_TOPIC", f"itest/{prefix}/netatmo/#")
    monkeypatch.setenv("IONBEAM_NETATMO_MQTT_CLIENT_ID", f"{prefix}-netatmo")
    monkeypatch.setenv("IONBEAM_NETATMO_LATE_DEBOUNCE", "PT0S")
    monkeypatch.setenv("IONBEAM_NETATMO_MQTT_MAX_SECONDS", "5")
    p = make_pipeline(**pipeline_services, catalog_text=CATALOG)
    yield p
    close_pipeline(p)


def netatmo_window(p: Pipeline, window: Window) -> pa.Table:
    record = p.windows.built("netatmo", window)
    assert record is not None, f"{window} was not built"
    return p.store.read_table(record.location)


def feed_tick(p: Pipeline) -> list[Any]:
    return list(p.tick(SENSOR_NAME).run_requests or [])


def test_feed_observations_reach_the_dataset_window_and_late_ones_rebuild_it(pipeline: Pipeline, broker: Mosquitto) -> None:
    p = pipeline
    topic = f"itest/{p.prefix}/netatmo/obs"
    now = datetime.now(UTC)
    hour = Window(now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3),
                  now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2))
    assert feed_tick(p) == []  # the session and its subscription exist from here on

    a, b = hour.start + timedelta(minutes=5), hour.start + timedelta(minutes=37)
    sent = [
        feature("70:ee:50:00:00:01", a, "air_temperature", 21.4, "degC", lat=50.2, lon=8.7),
        feature("70:ee:50:00:00:01", a, "relative_humidity", 62, "%", lat=50.2, lon=8.7, quality=2),
        feature("70:ee:50:00:00:02", a, "air_temperature", 293.15, "K", lat=50.3, lon=8.8),
        feature("70:ee:50:00:00:01", b, "air_temperature", 22.0, "degC", lat=50.2, lon=8.7),
        feature("70:ee:50:00:00:01", b, "air_temperature", 22.0, "degC", lat=50.2, lon=8.7),  # duplicate
    ]
    publish("127.0.0.1", broker.port, topic, sent)

    # One tick drains, stores, acks, and (the schedule's turn long past) asks for both partitions with data.
    requests = feed_tick(p)
    partitions = [partition_key(w) for w in windows_overlapping(hour.start, hour.end, FETCH_SPAN)]
    assert sorted(r.partition_key for r in requests) == [partitions[0], partitions[3]]
    assert all(r.tags["ionbeam/trigger"] == BUFFER_TRIGGER for r in requests)
    for request in requests:
        assert run_request(p, request).success
    # The partitions without data are published empty, as the schedule does.
    for pk in partitions:
        if pk not in {r.partition_key for r in requests}:
            assert run_source(p, "netatmo", pk).success
    published_commands(p, 6)
    assert feed_tick(p) == []  # nothing changed since

    ingest_all(p)
    build_all(p)
    table = netatmo_window(p, hour)
    rows = {(r["station_id"], r["timestamp"]): r for r in table.to_pylist()}
    assert set(rows) == {("70:ee:50:00:00:01", a), ("70:ee:50:00:00:02", a), ("70:ee:50:00:00:01", b)}
    first = rows[("70:ee:50:00:00:01", a)]
    assert (first[TEMPERATURE], first[HUMIDITY], first[TEMPERATURE_QC]) == (21.4, 62.0, 0.0)
    assert first["relative_humidity_quality_code__1__2.0__point__PT0S"] == 2.0
    assert (first["latitude"], first["longitude"]) == (50.2, 8.7)
    assert abs(rows[("70:ee:50:00:00:02", a)][TEMPERATURE] - 20.0) < 1e-9  # K converted to degC
    assert rows[("70:ee:50:00:00:01", b)][TEMPERATURE] == 22.0
    assert "station_id" in table.column_names and TEMPERATURE_QC in table.column_names

    # Late: a correction of a published value, and an observation the feed sends late.
    publish("127.0.0.1", broker.port, topic, [
        feature("70:ee:50:00:00:01", a, "air_temperature", 21.6, "degC", lat=50.2, lon=8.7,
                pubtime=now - timedelta(minutes=1), quality=1),
        feature("70:ee:50:00:00:03", a + timedelta(minutes=1), "air_temperature", 19.0, "degC", lat=50.4, lon=8.9),
        feature("70:ee:50:00:00:01", b, "air_temperature", 22.0, "degC", lat=50.2, lon=8.7),  # redelivered: no change
    ])
    [late] = feed_tick(p)
    assert late.partition_key == partitions[0] and late.tags[REVISION_TAG] == "5"
    assert run_request(p, late).success
    assert feed_tick(p) == []
    [ingested] = ingest_all(p)
    assert ingested["rows_written"] == 3
    [rebuild] = build_all(p)
    assert rebuild.partition_key == hour.start.strftime("%Y-%m-%dT%H:%M")
    rows = {(r["station_id"], r["timestamp"]): r for r in netatmo_window(p, hour).to_pylist()}
    assert len(rows) == 4
    assert (rows[("70:ee:50:00:00:01", a)][TEMPERATURE], rows[("70:ee:50:00:00:01", a)][TEMPERATURE_QC]) == (21.6, 1.0)
    assert rows[("70:ee:50:00:00:01", a)][HUMIDITY] == 62.0
    assert rows[("70:ee:50:00:00:03", a + timedelta(minutes=1))][TEMPERATURE] == 19.0
