"""RabbitMQ topology and a small blocking client (pika) for the ionbeam wire contract.

Everything is durable and persistent, and every publish waits for the broker's confirm,
because the platform acks an input only after its outputs are safely with the broker.
Queues are declared with no arguments: external ionbeam clients declare the same names
with plain ``durable=True``, and any difference in arguments would make one side's declare
fail with PRECONDITION_FAILED.

A :class:`Broker` holds one connection and one channel; pika's BlockingConnection is not
thread-safe, so use one Broker per thread (a sensor tick or a run opens its own).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from .errors import TransientError

__all__ = ["Topology", "Delivery", "Broker", "UnroutableError", "PREFIX_RE", "NAME_RE"]

PREFIX_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# basic_get fetches one message per round trip; a bound keeps a sensor tick short.
MAX_BATCH = 10_000
# Header values are AMQP long strings; cap the error text so a huge exception message
# cannot bloat every dead letter.
_MAX_ERROR_CHARS = 4000
HEADER_ERROR_CODE = "x-ionbeam-error-code"
HEADER_ERROR = "x-ionbeam-error"
JSON = "application/json"


class UnroutableError(TransientError):
    """The broker returned a mandatory message: no queue is bound where it was sent.

    Transient because the fix is topology (declare the queues), after which a retry works;
    the caller must not ack its input in the meantime.
    """


def _check_name(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"{kind}: {value!r} must match {pattern.pattern}")
    return value


@dataclass(frozen=True)
class Topology:
    """The contract's exchange and queue names under one prefix (``ionbeam`` in production)."""

    prefix: str = "ionbeam"

    def __post_init__(self) -> None:
        _check_name("prefix", self.prefix, PREFIX_RE)

    @property
    def ingestion_exchange(self) -> str:
        return f"{self.prefix}.ingestion"

    @property
    def ingestion_routing_key(self) -> str:
        return "ingestV1"

    @property
    def ingestion_queue(self) -> str:
        return f"{self.prefix}.ingestion.ingestV1"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.ingestion.dead"

    @property
    def data_available_exchange(self) -> str:
        return f"{self.prefix}.data.available"

    @property
    def coordinator_queue(self) -> str:
        return f"{self.prefix}.data.available.coordinator"

    @property
    def dataset_available_exchange(self) -> str:
        return f"{self.prefix}.dataset.available"

    def exporter_queue(self, name: str) -> str:
        return f"{self.prefix}.dataset.available.{_check_name('exporter name', name, NAME_RE)}"

    def source_start_queue(self, name: str) -> str:
        return f"{self.prefix}.source.{_check_name('source name', name, NAME_RE)}.start"

    @property
    def exchanges(self) -> tuple[tuple[str, str], ...]:
        """(name, type) of every exchange the platform owns."""
        return (
            (self.ingestion_exchange, "direct"),
            (self.data_available_exchange, "fanout"),
            (self.dataset_available_exchange, "fanout"),
        )

    @property
    def fixed_queues(self) -> tuple[str, ...]:
        return (self.ingestion_queue, self.dead_letter_queue, self.coordinator_queue)

    def owns_queue(self, queue: str) -> bool:
        return isinstance(queue, str) and queue.startswith(self.prefix + ".")


@dataclass
class Delivery:
    """One message taken with basic_get and not yet acked."""

    delivery_tag: int
    body: bytes
    headers: dict[str, Any]
    redelivered: bool
    delivery_mode: int | None = None
    content_type: str | None = None
    # Delivery tags are only meaningful on the channel that delivered them; the broker has
    # already requeued everything unacked on a channel that closed.
    channel_epoch: int = field(default=0, repr=False)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Broker:
    """Blocking AMQP client; connects lazily on first use and reconnects after a failure."""

    def __init__(self, amqp_url: str, topology: Topology | None = None) -> None:
        self._url = amqp_url
        self._where = _redact(amqp_url)
        self.topology = topology or Topology()
        self._params = pika.URLParameters(amqp_url)
        # A broker under a memory/disk alarm blocks publishers silently; give up instead of
        # hanging a sensor tick forever.
        if self._params.blocked_connection_timeout is None:
            self._params.blocked_connection_timeout = 30
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self._epoch = 0
        self._declared_queues: set[str] = set()

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass  # closing a dead connection: nothing left to release

    def _channel(self) -> Any:
        if self._ch is not None and self._ch.is_open:
            return self._ch
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(self._params)
        self._ch = self._conn.channel()
        self._ch.confirm_delivery()
        self._epoch += 1
        return self._ch

    @contextmanager
    def _op(self, what: str) -> Iterator[Any]:
        """Run one AMQP operation; any connection or channel failure becomes TransientError.

        A channel error closes the channel (and a connection error the connection); the next
        operation opens fresh ones, so the Broker stays usable after a failure.
        """
        try:
            yield self._channel()
        except pika.exceptions.UnroutableError as exc:
            raise UnroutableError(f"{what}: the broker at {self._where} could not route the message "
                                  f"(no queue bound; run declare()): {exc}") from exc
        except pika.exceptions.NackError as exc:
            raise TransientError(f"{what}: the broker at {self._where} refused (nacked) the message") from exc
        except pika.exceptions.AMQPConnectionError as exc:
            self.close()
            raise TransientError(f"{what}: cannot reach RabbitMQ at {self._where}: {exc!r}") from exc
        except pika.exceptions.AMQPChannelError as exc:
            self._ch = None
            raise TransientError(f"{what}: RabbitMQ at {self._where} closed the channel: {exc!r}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise TransientError(f"{what}: RabbitMQ at {self._where} failed: {exc!r}") from exc

    # ----------------------------------------------------------------- topology

    def declare(self, *, exporters: Iterable[str] = (), sources: Iterable[str] = ()) -> None:
        """Declare every exchange and queue (idempotent), plus one queue per exporter (bound
        to the dataset fanout) and per data source (reached through the default exchange)."""
        t = self.topology
        exporter_queues = [t.exporter_queue(n) for n in exporters]
        source_queues = [t.source_start_queue(n) for n in sources]
        with self._op("declare") as ch:
            for name, kind in t.exchanges:
                ch.exchange_declare(exchange=name, exchange_type=kind, durable=True)
            for queue in (*t.fixed_queues, *exporter_queues, *source_queues):
                ch.queue_declare(queue=queue, durable=True)
                self._declared_queues.add(queue)
            ch.queue_bind(queue=t.ingestion_queue, exchange=t.ingestion_exchange,
                          routing_key=t.ingestion_routing_key)
            ch.queue_bind(queue=t.coordinator_queue, exchange=t.data_available_exchange, routing_key="")
            for queue in exporter_queues:
                ch.queue_bind(queue=queue, exchange=t.dataset_available_exchange, routing_key="")

    def bind_exporter_queue(self, name: str, *, temporary: bool = False) -> str:
        """Declare exporter ``name``'s queue, bound to the dataset fanout; returns its name.

        ``temporary``: exclusive to this connection and deleted by the broker when it
        closes (smoke checks), so a crashed check leaves nothing behind.
        """
        t = self.topology
        queue = t.exporter_queue(name)
        with self._op(f"bind {queue}") as ch:
            ch.exchange_declare(exchange=t.dataset_available_exchange, exchange_type="fanout", durable=True)
            if temporary:
                ch.queue_declare(queue=queue, durable=False, exclusive=True, auto_delete=True)
            else:
                ch.queue_declare(queue=queue, durable=True)
            ch.queue_bind(queue=queue, exchange=t.dataset_available_exchange, routing_key="")
        self._declared_queues.add(queue)
        return queue

    def message_count(self, queue: str) -> int:
        """Ready (not unacked) messages in ``queue``; a passive declare, so it never creates."""
        self._check_queue(queue)
        with self._op(f"count {queue}") as ch:
            return int(ch.queue_declare(queue=queue, passive=True).method.message_count)

    def purge(self, queue: str) -> int:
        self._check_queue(queue)
        with self._op(f"purge {queue}") as ch:
            return int(ch.queue_purge(queue=queue).method.message_count)

    def delete_all(self, *, extra_queues: Iterable[str] = ()) -> None:
        """Delete this prefix's exchanges and queues (for tests). Queues with a variable name
        (exporters, sources) are known only if this Broker declared them or they are given."""
        queues = {*self.topology.fixed_queues, *self._declared_queues, *extra_queues}
        for queue in sorted(queues):
            self._check_queue(queue)
            with self._op(f"delete queue {queue}") as ch:
                ch.queue_delete(queue=queue)
        for name, _ in self.topology.exchanges:
            with self._op(f"delete exchange {name}") as ch:
                ch.exchange_delete(exchange=name)
        self._declared_queues.clear()

    def _check_queue(self, queue: str) -> None:
        # A guard against touching another application's (or another test's) queues.
        if not self.topology.owns_queue(queue):
            raise ValueError(f"queue: {queue!r} is not under the prefix {self.topology.prefix!r}")

    # ----------------------------------------------------------------- publishing

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        content_type: str | None = None,
        mandatory: bool = True,
    ) -> None:
        """Persistent publish; returns only once the broker has confirmed it.

        ``mandatory``: a message no queue would receive raises UnroutableError rather than
        vanishing silently.
        """
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"body: expected bytes, got {type(body).__name__}")
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=dict(headers) if headers else None,
            content_type=content_type,
        )
        with self._op(f"publish to {exchange or '(default)'}/{routing_key}") as ch:
            ch.basic_publish(exchange=exchange, routing_key=routing_key, body=bytes(body),
                             properties=properties, mandatory=mandatory)

    def publish_command(self, body: bytes) -> None:
        t = self.topology
        self.publish(t.ingestion_exchange, t.ingestion_routing_key, body, content_type=JSON)

    def publish_data_available(self, body: bytes) -> None:
        self.publish(self.topology.data_available_exchange, "", body, content_type=JSON)

    def publish_dataset_available(self, body: bytes) -> None:
        """Not mandatory: the built-in exporters run as Dagster assets, so a fanout with no
        external exporter bound is normal, and the announcement is simply not needed."""
        self.publish(self.topology.dataset_available_exchange, "", body, content_type=JSON, mandatory=False)

    def publish_start_source(self, source_name: str, body: bytes) -> None:
        """StartSourceCommand: default exchange, routing key = the source's queue name."""
        self.publish("", self.topology.source_start_queue(source_name), body, content_type=JSON)

    def dead_letter(self, body: bytes, code: str, message: str) -> None:
        """Park ``body`` unchanged in the dead-letter queue with the reason in two headers,
        so an operator can read why and re-publish the exact original bytes."""
        if not isinstance(code, str) or not code:
            raise ValueError(f"code: {code!r} must be a non-empty string")
        if len(message) > _MAX_ERROR_CHARS:
            message = message[: _MAX_ERROR_CHARS - 1] + "…"
        headers = {HEADER_ERROR_CODE: code, HEADER_ERROR: message}
        self.publish("", self.topology.dead_letter_queue, body, headers)

    # ----------------------------------------------------------------- consuming

    def get_batch(self, queue: str, max_messages: int) -> list[Delivery]:
        """Up to ``max_messages`` unacked deliveries from ``queue`` (fewer if it runs dry).

        basic_get rather than a consumer: a sensor tick takes a bounded batch and returns,
        and nothing is prefetched that the tick would not handle.
        """
        self._check_queue(queue)
        if not 1 <= max_messages <= MAX_BATCH:
            raise ValueError(f"max_messages: {max_messages} must be between 1 and {MAX_BATCH}")
        out: list[Delivery] = []
        with self._op(f"get from {queue}") as ch:
            while len(out) < max_messages:
                method, props, body = ch.basic_get(queue=queue, auto_ack=False)
                if method is None:
                    break
                out.append(Delivery(
                    delivery_tag=method.delivery_tag,
                    body=bytes(body),
                    headers=dict(props.headers or {}),
                    redelivered=bool(method.redelivered),
                    delivery_mode=props.delivery_mode,
                    content_type=props.content_type,
                    channel_epoch=self._epoch,
                ))
        return out

    def ack(self, delivery: Delivery) -> None:
        with self._delivery_op("ack", delivery) as ch:
            ch.basic_ack(delivery_tag=delivery.delivery_tag)

    def requeue(self, delivery: Delivery) -> None:
        with self._delivery_op("requeue", delivery) as ch:
            ch.basic_nack(delivery_tag=delivery.delivery_tag, requeue=True)

    @contextmanager
    def _delivery_op(self, what: str, delivery: Delivery) -> Iterator[Any]:
        if self._ch is None or not self._ch.is_open or delivery.channel_epoch != self._epoch:
            # Acking a tag on another channel is a protocol error that would close this one.
            raise TransientError(
                f"{what}: the channel that delivered tag {delivery.delivery_tag} has closed; "
                "the broker has requeued the message and will deliver it again"
            )
        with self._op(f"{what} tag {delivery.delivery_tag}") as ch:
            yield ch
