"""Broker against the local RabbitMQ: topology, confirms, dead letters, redelivery."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ionbeam_dagster.broker import HEADER_ERROR, HEADER_ERROR_CODE, Broker, Topology, UnroutableError
from ionbeam_dagster.errors import TransientError

pytestmark = pytest.mark.services


@pytest.fixture
def broker(amqp_url: str, prefix: str) -> Iterator[Broker]:
    b = Broker(amqp_url, Topology(prefix))
    yield b
    # Exporter/source queues declared by the tests are remembered by this Broker.
    b.delete_all()
    b.close()


def _get_one(broker: Broker, queue: str, timeout: float = 5.0) -> list:
    """basic_get right after a confirmed publish normally sees the message; allow a moment."""
    deadline = time.monotonic() + timeout
    while True:
        got = broker.get_batch(queue, 10)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_topology_names_follow_the_contract() -> None:
    t = Topology()
    assert t.ingestion_exchange == "ionbeam.ingestion"
    assert t.ingestion_routing_key == "ingestV1"
    assert t.ingestion_queue == "ionbeam.ingestion.ingestV1"
    assert t.dead_letter_queue == "ionbeam.ingestion.dead"
    assert t.data_available_exchange == "ionbeam.data.available"
    assert t.coordinator_queue == "ionbeam.data.available.coordinator"
    assert t.dataset_available_exchange == "ionbeam.dataset.available"
    assert t.exporter_queue("odb") == "ionbeam.dataset.available.odb"
    assert t.source_start_queue("netatmo") == "ionbeam.source.netatmo.start"


@pytest.mark.parametrize("prefix", ["", "Ionbeam", "1beam", "a b", "x" * 64, "ionbeam/x", "ionbeam*"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topology(prefix)


@pytest.mark.parametrize("name", ["", "ODB", "geo-parquet", "geo.parquet", "a#", "x" * 64, "1odb"])
def test_bad_exporter_and_source_names_are_refused(broker: Broker, name: str) -> None:
    with pytest.raises(ValueError, match="exporter name"):
        broker.topology.exporter_queue(name)
    with pytest.raises(ValueError, match="source name"):
        broker.topology.source_start_queue(name)
    with pytest.raises(ValueError):
        broker.declare(exporters=[name])


def test_queues_outside_the_prefix_are_refused(broker: Broker) -> None:
    with pytest.raises(ValueError, match="not under the prefix"):
        broker.get_batch("ionbeam.ingestion.ingestV1", 1)
    with pytest.raises(ValueError, match="not under the prefix"):
        broker.purge("someone.elses.queue")


def test_declare_is_idempotent(broker: Broker) -> None:
    broker.declare(exporters=["geoparquet"], sources=["netatmo"])
    broker.publish_command(b"{}")
    broker.declare(exporters=["geoparquet"], sources=["netatmo"])
    # Redeclaring neither fails nor disturbs what is queued.
    assert broker.message_count(broker.topology.ingestion_queue) == 1
    for queue in (broker.topology.dead_letter_queue, broker.topology.coordinator_queue,
                  broker.topology.exporter_queue("geoparquet"), broker.topology.source_start_queue("netatmo")):
        assert broker.message_count(queue) == 0


def test_publish_and_get_round_trip_is_persistent(broker: Broker) -> None:
    broker.declare()
    bodies = [b'{"n": %d}' % i for i in range(3)]
    for body in bodies:
        broker.publish_command(body)
    got = _get_one(broker, broker.topology.ingestion_queue)
    assert [d.body for d in got] == bodies
    assert all(d.delivery_mode == 2 for d in got)
    assert all(d.content_type == "application/json" and not d.redelivered for d in got)
    for d in got:
        broker.ack(d)
    assert broker.get_batch(broker.topology.ingestion_queue, 10) == []


def test_get_batch_is_bounded(broker: Broker) -> None:
    broker.declare()
    for i in range(5):
        broker.publish_command(b"%d" % i)
    first = broker.get_batch(broker.topology.ingestion_queue, 2)
    assert [d.body for d in first] == [b"0", b"1"]
    with pytest.raises(ValueError):
        broker.get_batch(broker.topology.ingestion_queue, 0)


def test_dead_letter_keeps_the_original_body_and_adds_both_headers(broker: Broker) -> None:
    broker.declare()
    original = b'\x00\xff{"not": "even json'
    broker.dead_letter(original, "malformed_json", "body: not valid JSON at byte 1")
    [d] = _get_one(broker, broker.topology.dead_letter_queue)
    assert d.body == original
    assert d.headers[HEADER_ERROR_CODE] == "malformed_json"
    assert d.headers[HEADER_ERROR] == "body: not valid JSON at byte 1"
    assert d.delivery_mode == 2
    broker.ack(d)


def test_requeue_redelivers(broker: Broker) -> None:
    broker.declare()
    broker.publish_command(b"again")
    [first] = _get_one(broker, broker.topology.ingestion_queue)
    assert not first.redelivered
    broker.requeue(first)
    [second] = _get_one(broker, broker.topology.ingestion_queue)
    assert second.body == b"again" and second.redelivered
    broker.ack(second)
    assert broker.message_count(broker.topology.ingestion_queue) == 0


def test_unacked_messages_return_when_the_connection_closes(broker: Broker) -> None:
    broker.declare()
    broker.publish_command(b"lost consumer")
    [d] = _get_one(broker, broker.topology.ingestion_queue)
    broker.close()
    # The old delivery tag is meaningless now: acking it must not be attempted silently.
    with pytest.raises(TransientError, match="has closed"):
        broker.ack(d)
    [again] = _get_one(broker, broker.topology.ingestion_queue)
    assert again.body == b"lost consumer" and again.redelivered
    broker.ack(again)


def test_fanout_reaches_every_bound_queue(broker: Broker) -> None:
    t = broker.topology
    broker.declare(exporters=["geoparquet", "odb"])
    broker.publish_data_available(b"data-available")
    broker.publish_dataset_available(b"dataset-available")
    [coord] = _get_one(broker, t.coordinator_queue)
    assert coord.body == b"data-available"
    for name in ("geoparquet", "odb"):
        [d] = _get_one(broker, t.exporter_queue(name))
        assert d.body == b"dataset-available"
        broker.ack(d)
    broker.ack(coord)
    # Each event went only to its own exchange's queues.
    assert broker.message_count(t.coordinator_queue) == 0
    assert broker.message_count(t.ingestion_queue) == 0


def test_dataset_announcement_without_external_exporters_is_fine(broker: Broker) -> None:
    broker.declare()  # no exporter queue bound to the dataset fanout
    broker.publish_dataset_available(b"nobody listens, and that is normal")


def test_temporary_exporter_queue_vanishes_with_the_connection(broker: Broker, amqp_url: str) -> None:
    broker.declare()
    queue = broker.bind_exporter_queue("smoke_check", temporary=True)
    assert queue == broker.topology.exporter_queue("smoke_check")
    broker.publish_dataset_available(b"announced")
    [d] = _get_one(broker, queue)
    assert d.body == b"announced"
    broker.ack(d)
    broker.close()
    with Broker(amqp_url, broker.topology) as other:
        with pytest.raises(TransientError, match="NOT_FOUND"):
            other.message_count(queue)


def test_durable_exporter_queue_binding(broker: Broker) -> None:
    broker.declare()
    queue = broker.bind_exporter_queue("pygeoapi")
    broker.bind_exporter_queue("pygeoapi")  # idempotent
    broker.publish_dataset_available(b"announced")
    assert [d.body for d in _get_one(broker, queue)] == [b"announced"]


def test_start_source_command_reaches_the_source_queue(broker: Broker) -> None:
    broker.declare(sources=["netatmo"])
    broker.publish_start_source("netatmo", b"start")
    [d] = _get_one(broker, broker.topology.source_start_queue("netatmo"))
    assert d.body == b"start"
    broker.ack(d)


def test_unroutable_publish_is_an_error_not_a_silent_loss(broker: Broker) -> None:
    broker.declare()
    with pytest.raises(UnroutableError):
        broker.publish(broker.topology.ingestion_exchange, "no-such-routing-key", b"lost?")
    # The broker stays usable afterwards.
    broker.publish_command(b"still fine")
    assert [d.body for d in _get_one(broker, broker.topology.ingestion_queue)] == [b"still fine"]


def test_channel_error_is_transient_and_the_broker_recovers(broker: Broker) -> None:
    with pytest.raises(TransientError, match="closed the channel"):
        broker.get_batch(broker.topology.ingestion_queue, 1)  # not declared yet: 404
    broker.declare()
    broker.publish_command(b"after recovery")
    assert [d.body for d in _get_one(broker, broker.topology.ingestion_queue)] == [b"after recovery"]


def test_closed_port_raises_transient_error(prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed once the socket is; nothing listens there.
    b = Broker(f"amqp://guest:secret-password@127.0.0.1:{port}/%2F", Topology(prefix))
    with pytest.raises(TransientError, match="cannot reach RabbitMQ") as info:
        b.declare()
    assert "secret-password" not in str(info.value)
    with pytest.raises(TransientError):
        b.publish_command(b"x")
