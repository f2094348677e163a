"""Durable staging of accepted ingestion commands in Redis, and their idempotency record.

The ingestion sensor stages a command here *before* acking it on the broker, so a crash
between the two loses nothing (the redelivered copy is refused as already staged), and
the same command id is never ingested twice. Every state change is one Lua script, so no
reader ever sees a command half-moved between pending and done.

The same ledger, under another ``namespace``, stages StartSourceCommands for the source
sensor (``{prefix}:source-start:``), with the same guarantees.

Keys (all under ``{prefix}:ingest:``, or ``{prefix}:<namespace>:``):
- ``cmd:<id>``  hash: status, body (while pending), staged_at, completed_at, details, attempts
- ``pending``   zset of ids by staging time (oldest first)
- ``done``, ``rejected``  zsets of ids by completion time (audit)
- ``clock``     last staging score, so staging order is strict even within a microsecond
- ``columns:<dataset>``  hash: column -> "field" | "tag", every column the ingestion maps of the
  dataset's valid payloads declared (InfluxDB knows only columns with values; windows get all)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.exceptions

from .errors import TransientError

__all__ = ["IngestionLedger", "OUTCOMES"]

PREFIX_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# UUIDs in practice; the pattern keeps ids safe inside key names and log lines.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DATASET_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
OUTCOMES = ("done", "rejected")
PENDING = "pending"

T = TypeVar("T")

# Score = server time in microseconds, forced strictly above the previous score: client
# clocks may disagree, and two stagings in the same microsecond must still keep their order.
# (2**53 µs is year 2255, so the score stays an exact integer in a double.)
_STAGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if now <= last then now = last + 1 end
redis.call('SET', KEYS[3], string.format('%d', now))
redis.call('HSET', KEYS[1], 'status', 'pending', 'body', ARGV[2],
           'staged_at', string.format('%d', now), 'attempts', '0')
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""

# First completion wins: a retried complete() after a lost reply changes nothing.
_COMPLETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'pending' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'completed_at', string.format('%d', now),
           'details', ARGV[3])
redis.call('HDEL', KEYS[1], 'body')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return 1
"""

# HINCRBY alone would create a hash for an unknown id, and stage() would then refuse it.
_NOTE_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


class IngestionLedger:
    """Pending / done / rejected commands by id, durable in Redis.

    The client must return bytes (``decode_responses=False``, redis-py's default): bodies
    are stored byte for byte and need not be UTF-8.
    """

    def __init__(self, client: redis.Redis, prefix: str, namespace: str = "ingest") -> None:
        if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
            raise ValueError(f"prefix: {prefix!r} must match {PREFIX_RE.pattern}")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("redis client: decode_responses=True would corrupt binary bodies; use a bytes client")
        self._r = client
        if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
            raise ValueError(f"namespace: {namespace!r} must match {NAMESPACE_RE.pattern}")
        self._base = f"{prefix}:{namespace}:"
        self._pending = self._base + "pending"
        self._clock = self._base + "clock"
        # register_script does no I/O: it sends EVALSHA and falls back to EVAL on NOSCRIPT.
        self._stage = client.register_script(_STAGE)
        self._complete = client.register_script(_COMPLETE)
        self._note_attempt = client.register_script(_NOTE_ATTEMPT)

    @property
    def key_prefix(self) -> str:
        return self._base

    def _cmd(self, command_id: str) -> str:
        if not isinstance(command_id, str) or not ID_RE.match(command_id):
            raise ValueError(f"command_id: {command_id!r} must match {ID_RE.pattern}")
        return self._base + "cmd:" + command_id

    def _outcome_key(self, outcome: str) -> str:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: {outcome!r} must be one of {', '.join(OUTCOMES)}")
        return self._base + outcome

    @contextmanager
    def _redis(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ReadOnlyError) as exc:
            # ReadOnlyError: we reached a replica during a failover; it passes.
            raise TransientError(f"ingestion ledger: {what}: Redis unavailable: {exc}") from exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with self._redis(what):
            return fn()

    # ----------------------------------------------------------------- writes

    def stage(self, command_id: str, body: bytes) -> bool:
        """Record ``body`` as pending. False (and nothing changes) if this id was ever
        staged, whatever became of it since."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"body: expected bytes, got {type(body).__name__}")
        keys = [self._cmd(command_id), self._pending, self._clock]
        return self._call(f"stage {command_id}", lambda: self._stage(keys=keys, args=[command_id, bytes(body)])) == 1

    def complete(self, command_id: str, outcome: str, details: dict[str, Any] | None = None) -> bool:
        """Move a pending command to ``done`` or ``rejected``; True if it moved, False if it
        was already complete (the first outcome stands). KeyError if never staged."""
        keys = [self._cmd(command_id), self._pending, self._outcome_key(outcome)]
        payload = json.dumps(details or {}, sort_keys=True, default=str)
        result = self._call(f"complete {command_id}",
                            lambda: self._complete(keys=keys, args=[command_id, outcome, payload]))
        if result == -1:
            raise KeyError(f"command {command_id!r} was never staged")
        return result == 1

    def note_attempt(self, command_id: str) -> int:
        """Count one more processing attempt; returns the new count."""
        key = self._cmd(command_id)
        result = int(self._call(f"note attempt {command_id}", lambda: self._note_attempt(keys=[key])))
        if result == -1:
            raise KeyError(f"command {command_id!r} was never staged")
        return result

    def note_columns(self, dataset: str, fields: list[str], tags: list[str]) -> None:
        """Remember the canonical (field) and metadata (tag) columns ``dataset``'s ingestion
        map declares; idempotent, and a column once declared stays declared."""
        mapping = {**{f: "field" for f in fields}, **{t: "tag" for t in tags}}
        if mapping:
            key = self._columns_key(dataset)
            self._call(f"note columns of {dataset}", lambda: self._r.hset(key, mapping=mapping))

    def _columns_key(self, dataset: str) -> str:
        if not isinstance(dataset, str) or not DATASET_RE.fullmatch(dataset):
            raise ValueError(f"dataset: {dataset!r} must match {DATASET_RE.pattern}")
        return self._base + "columns:" + dataset

    # ----------------------------------------------------------------- reads

    def columns(self, dataset: str) -> tuple[list[str], list[str]]:
        """(fields, tags) declared for ``dataset`` so far, each sorted."""
        key = self._columns_key(dataset)
        raw = self._call(f"columns of {dataset}", lambda: self._r.hgetall(key))
        kinds = {k.decode(): v.decode() for k, v in raw.items()}
        return sorted(c for c, k in kinds.items() if k == "field"), sorted(c for c, k in kinds.items() if k == "tag")

    def pending(self, limit: int = 100) -> list[str]:
        """Pending ids, oldest staged first."""
        if limit < 1:
            raise ValueError(f"limit: {limit} must be at least 1")
        ids = self._call("pending", lambda: self._r.zrange(self._pending, 0, limit - 1))
        return [i.decode() for i in ids]

    def body(self, command_id: str) -> bytes | None:
        """The staged body while pending; None once complete (the broker's dead-letter queue
        keeps rejected bodies, and done ones are in InfluxDB) or if never staged."""
        key = self._cmd(command_id)
        return self._call("body", lambda: self._r.hget(key, "body"))

    def status(self, command_id: str) -> str | None:
        key = self._cmd(command_id)
        value = self._call("status", lambda: self._r.hget(key, "status"))
        return value.decode() if value is not None else None

    def details(self, command_id: str) -> dict[str, Any] | None:
        key = self._cmd(command_id)
        value = self._call("details", lambda: self._r.hget(key, "details"))
        return json.loads(value) if value is not None else None

    def attempts(self, command_id: str) -> int:
        key = self._cmd(command_id)
        value = self._call("attempts", lambda: self._r.hget(key, "attempts"))
        return int(value) if value is not None else 0

    def counts(self) -> dict[str, int]:
        """Number of pending, done and rejected commands (for metrics)."""
        def read() -> dict[str, int]:
            pipe = self._r.pipeline(transaction=False)
            for name in (PENDING, *OUTCOMES):
                pipe.zcard(self._base + name)
            return dict(zip((PENDING, *OUTCOMES), (int(n) for n in pipe.execute())))
        return self._call("counts", read)
