"""The EUMETNET MQTT feed consumer: drain a bounded batch into the buffer, then ack.

Delivery guarantees come from three things together:

- **A persistent session.** MQTT 5 with ``clean_start=False``, a session expiry
  (``IONBEAM_NETATMO_MQTT_SESSION_EXPIRY``, default 7 days) and a fixed client id
  (``IONBEAM_NETATMO_MQTT_CLIENT_ID``): between two drains the broker queues what arrives
  for us, and keeps it across its own restarts when it persists sessions (Mosquitto:
  ``persistence true``).
- **QoS 1 with manual acks.** paho's ``manual_ack=True``: a PUBACK is sent only by our
  explicit ``ack``, which comes after the batch is stored in Redis (one atomic script). A
  consumer killed before that leaves the messages unacked, and the broker redelivers them.
- **Idempotent storage.** A redelivered message lands on its own dedupe key (see
  :mod:`netatmo_buffer`), so being stored twice changes nothing.

A message that cannot be an observation (malformed, unmapped variable, ...) is recorded
with its reason in ``{prefix}:netatmo:rejected`` and acked, so it does not come back for ever.

A drain works in rounds: collect up to ``round_size`` messages (the MQTT 5 Receive Maximum
we announce, i.e. how many unacked messages the broker may have in flight to us) or until the
feed is idle, store, ack, wait for the broker to confirm the acks (an UNSUBSCRIBE round trip:
the broker handles a connection's packets in order), and go on until ``max_messages`` or
``max_seconds``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from ionbeam_dagster.durations import parse_duration
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.sources.netatmo import Observation, RejectedMessage, parse_feature
from ionbeam_dagster.sources.netatmo_buffer import ObservationBuffer, StoreResult

__all__ = ["DrainResult", "MqttSettings", "MqttUnavailable", "drain"]

LOG = logging.getLogger(__name__)


class MqttUnavailable(TransientError):
    """The broker could not be reached or refused us; nothing was acked."""


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = 1883
    tls: bool = False
    topic: str = "#"
    client_id: str = "ionbeam-netatmo"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    session_expiry: timedelta = timedelta(days=7)
    max_messages: int = 10000
    max_seconds: float = 20.0
    idle_seconds: float = 1.0
    round_size: int = 500
    keepalive: int = 30

    @property
    def where(self) -> str:
        """For logs: no credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port} topic {self.topic!r} client {self.client_id!r}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str | None = None) -> MqttSettings | None:
        """None when ``IONBEAM_NETATMO_MQTT_URL`` is not set (the consumer is off)."""
        environ = os.environ if environ is None else environ
        url = environ.get("IONBEAM_NETATMO_MQTT_URL")
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ValueError("IONBEAM_NETATMO_MQTT_URL: expected mqtt://host[:port] or mqtts://host[:port]")
        tls = parts.scheme in ("mqtts", "ssl")
        prefix = prefix or environ.get("IONBEAM_PREFIX") or "ionbeam"

        def number(name: str, default: float, low: float) -> float:
            value = environ.get(name)
            if not value:
                return default
            try:
                result = float(value)
            except ValueError:
                raise ValueError(f"{name}: {value!r} is not a number") from None
            if result < low:
                raise ValueError(f"{name}: must be at least {low}")
            return result

        expiry = environ.get("IONBEAM_NETATMO_MQTT_SESSION_EXPIRY")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            topic=environ.get("IONBEAM_NETATMO_MQTT_TOPIC") or "#",
            client_id=environ.get("IONBEAM_NETATMO_MQTT_CLIENT_ID") or f"{prefix}-netatmo",
            username=environ.get("IONBEAM_NETATMO_MQTT_USERNAME") or (unquote(parts.username) if parts.username else None),
            password=environ.get("IONBEAM_NETATMO_MQTT_PASSWORD") or (unquote(parts.password) if parts.password else None),
            session_expiry=parse_duration(expiry) if expiry else cls.session_expiry,
            max_messages=int(number("IONBEAM_NETATMO_MQTT_BATCH", cls.max_messages, 1)),
            max_seconds=number("IONBEAM_NETATMO_MQTT_MAX_SECONDS", cls.max_seconds, 0.1),
        )


@dataclass
class DrainResult:
    received: int = 0
    acked: int = 0
    stored: StoreResult = field(default_factory=StoreResult)
    rejected: dict[str, int] = field(default_factory=dict)
    session_present: bool | None = None

    def summary(self) -> str:
        s = self.stored
        return (
            f"received {self.received}, acked {self.acked}: {s.inserted} new, {s.updated} newer versions, "
            f"{s.unchanged} duplicates; rejected {self.rejected or 'none'}; session resumed {self.session_present}"
        )


class _Collector:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.messages: list[Any] = []
        self.last_at = time.monotonic()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.error: str | None = None
        self.session_present: bool | None = None
        self.accepting = True
        self.unsubacks: set[int] = set()

    def take(self) -> list[Any]:
        with self.lock:
            out, self.messages = self.messages, []
            return out


def drain(
    settings: MqttSettings,
    buffer: ObservationBuffer,
    *,
    log: logging.Logger = LOG,
    after_store: Callable[[list[Any]], None] | None = None,
) -> DrainResult:
    """Connect, take up to ``settings.max_messages`` messages, store them, ack them, disconnect.

    ``after_store`` (tests) is called after a round is stored and before it is acked."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    state = _Collector()
    result = DrainResult()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set()

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            state.error = f"connection refused: {reason_code}"
            state.connected.set()
            return
        state.session_present = bool(getattr(flags, "session_present", False))
        # Retained messages only on a new subscription: a resumed session already had them.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        c.subscribe(settings.topic, options=options)
        state.connected.set()

    def on_subscribe(c: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            state.error = f"subscription to {settings.topic!r} refused: {failed[0]}"
        state.subscribed.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        with state.lock:
            if not state.accepting:
                return  # never acked: the broker redelivers it on the next drain
            state.messages.append(message)
            state.last_at = time.monotonic()
            state.lock.notify_all()

    def on_unsubscribe(c: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with state.lock:
            state.unsubacks.add(mid)
            state.lock.notify_all()

    client.on_connect = on_connect
    client.on_unsubscribe = on_unsubscribe
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = int(settings.session_expiry.total_seconds())
    connect_props.ReceiveMaximum = max(1, min(settings.round_size, 65535))
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive, clean_start=False, properties=connect_props)
    except (OSError, ValueError) as exc:
        raise MqttUnavailable(f"cannot connect to {settings.where}: {exc}") from None
    client.loop_start()
    try:
        if not state.connected.wait(10) or state.error:
            raise MqttUnavailable(f"{settings.where}: {state.error or 'no CONNACK within 10 s'}")
        if not state.subscribed.wait(10) or state.error:
            raise MqttUnavailable(f"{settings.where}: {state.error or 'no SUBACK within 10 s'}")
        result.session_present = state.session_present
        deadline = time.monotonic() + settings.max_seconds
        while result.received < settings.max_messages and time.monotonic() < deadline:
            with state.lock:
                state.last_at = time.monotonic()
                while True:
                    now = time.monotonic()
                    full = len(state.messages) >= min(settings.round_size, settings.max_messages - result.received)
                    idle = now - state.last_at >= settings.idle_seconds
                    if full or idle or now >= deadline:
                        break
                    state.lock.wait(min(settings.idle_seconds, deadline - now))
                batch = state.messages[: settings.max_messages - result.received]
                state.messages = state.messages[len(batch):]
                if len(state.messages) or result.received + len(batch) >= settings.max_messages:
                    state.accepting = False  # anything beyond the batch is left unacked
            if not batch:
                break
            _store_and_ack(client, batch, buffer, result, log, after_store)
            _barrier(client, state, settings)
            if not state.accepting:
                break
        state.accepting = False
    finally:
        try:
            client.disconnect()
        finally:
            client.loop_stop()
    return result


def _store_and_ack(
    client: Any,
    batch: list[Any],
    buffer: ObservationBuffer,
    result: DrainResult,
    log: logging.Logger,
    after_store: Callable[[list[Any]], None] | None,
) -> None:
    result.received += len(batch)
    observations: list[Observation] = []
    for message in batch:
        try:
            observations.append(parse_feature(message.payload))
        except RejectedMessage as exc:
            buffer.reject(bytes(message.payload), exc.reason)
            result.rejected[exc.reason] = result.rejected.get(exc.reason, 0) + 1
            log.warning(f"netatmo: refused a message on {message.topic!r}: {exc}")
    # Durable first (raises on a Redis error: nothing is acked, the broker redelivers) ...
    result.stored = result.stored + buffer.store(observations)
    if after_store is not None:
        after_store(batch)
    # ... then acked.
    for message in batch:
        if message.qos > 0:
            client.ack(message.mid, message.qos)
        result.acked += 1


def _barrier(client: Any, state: _Collector, settings: MqttSettings, timeout: float = 10.0) -> None:
    """Wait until the broker has processed our acks. It handles a connection's packets in
    order, so the UNSUBACK of an UNSUBSCRIBE sent after the PUBACKs proves they arrived.
    Without it, paho may close the socket at disconnect before the last PUBACKs are written
    (seen with paho 2.2 and Mosquitto 2.0): harmless here (redelivery is deduplicated), but
    every drain would then re-read its last round."""
    rc, mid = client.unsubscribe(f"{settings.topic.rstrip('#').rstrip('/') or 'ionbeam'}/.ionbeam-ack-barrier")
    if rc != 0 or mid is None:
        raise MqttUnavailable(f"{settings.where}: connection lost before the acks were confirmed (rc {rc})")
    deadline = time.monotonic() + timeout
    with state.lock:
        while mid not in state.unsubacks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Stored already; unconfirmed acks only mean a redelivery, deduplicated.
                raise MqttUnavailable(f"{settings.where}: acks not confirmed within {timeout:.0f} s")
            state.lock.wait(remaining)
        state.unsubacks.discard(mid)


def new_client_id(prefix: str = "ionbeam-netatmo") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
