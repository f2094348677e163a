"""The durable buffer between the Netatmo MQTT feed and the ``netatmo`` source, in Redis.

Keys (``P`` = ``{prefix}:netatmo``; a bucket is a fetch partition, named by its start in
epoch seconds):

- ``P:obs:<bucket>``   hash: dedupe key -> ``<pubtime µs>|<observation JSON>``. The dedupe key
  is (platform, datetime, standard_name, level, function, period), so a redelivered message
  lands on its own entry. A newer ``pubtime`` replaces the entry; an equal or older one
  (a redelivery, or an out-of-order older version) changes nothing.
- ``P:rev``            hash: bucket -> revision, incremented on every change of the bucket.
- ``P:published``      hash: bucket -> the revision its last published payload held.
- ``P:changed``        sorted set: bucket -> when it last changed (epoch seconds).

One Lua script stores a whole batch atomically, so a batch is either stored or not, and the
consumer acks its messages only after the script returned. A fetch reads a bucket and its
revision in one transaction; once its payload is published, the revision is recorded, and a
bucket whose revision moved on since (late messages) is due for a re-publication.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from ionbeam_dagster.sources.netatmo import Observation
from ionbeam_dagster.windows import window_of

__all__ = ["BucketState", "ObservationBuffer", "StoreResult"]

_STORE = """
local p = ARGV[1]
local now = tonumber(ARGV[2])
local inserted, updated, unchanged = 0, 0, 0
local i = 3
while i <= #ARGV do
  local bucket, field, pub, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local hkey = p .. ':obs:' .. bucket
  local old = redis.call('HGET', hkey, field)
  local write = false
  if not old then
    write = true
    inserted = inserted + 1
  else
    local oldpub = tonumber(string.match(old, '^(-?%d+)|'))
    if oldpub == nil or tonumber(pub) > oldpub then
      write = true
      updated = updated + 1
    else
      unchanged = unchanged + 1
    end
  end
  if write then
    redis.call('HSET', hkey, field, pub .. '|' .. body)
    redis.call('HINCRBY', p .. ':rev', bucket, 1)
    redis.call('ZADD', p .. ':changed', now, bucket)
  end
  i = i + 4
end
return {inserted, updated, unchanged}
"""

_MARK = """
local p = ARGV[1]
local i = 2
while i <= #ARGV do
  local bucket, rev = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', p .. ':published', bucket) or '-1')
  if rev > old then
    redis.call('HSET', p .. ':published', bucket, rev)
  end
  i = i + 2
end
return 1
"""


@dataclass(frozen=True)
class StoreResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: StoreResult) -> StoreResult:
        return StoreResult(self.inserted + other.inserted, self.updated + other.updated, self.unchanged + other.unchanged)


@dataclass(frozen=True)
class BucketState:
    start: datetime
    rev: int
    published: int | None  # None: never published
    changed_at: float


class ObservationBuffer:
    def __init__(self, client: redis.Redis, prefix: str, span: timedelta, *, owns_client: bool = False) -> None:
        self.client = client
        self.key = f"{prefix}:netatmo"
        self.span = span
        self._owns = owns_client
        self._store = client.register_script(_STORE)
        self._mark = client.register_script(_MARK)

    @classmethod
    def connect(cls, url: str, prefix: str, span: timedelta) -> ObservationBuffer:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        return cls(client, prefix, span, owns_client=True)

    def close(self) -> None:
        if self._owns:
            self.client.close()

    def bucket_of(self, t: datetime) -> int:
        return int(window_of(t, self.span).start.timestamp())

    # -- writing -----------------------------------------------------------------------
    def store(self, observations: Sequence[Observation], now: float | None = None) -> StoreResult:
        """Store a batch atomically (one script); returns what it changed. Raises on a Redis
        error, in which case nothing of the batch was stored and nothing may be acked."""
        if not observations:
            return StoreResult()
        args: list[str | int | float] = [self.key, now if now is not None else time.time()]
        for o in observations:
            args += [self.bucket_of(o.time), o.key, o.pubtime_us, o.to_json()]
        inserted, updated, unchanged = self._store(keys=[], args=args)
        return StoreResult(int(inserted), int(updated), int(unchanged))

    def reject(self, body: bytes, reason: str, keep: int = 1000) -> None:
        """Keep the newest ``keep`` refused messages for an operator to look at."""
        entry = reason.encode() + b"\t" + body[:65536]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(f"{self.key}:rejected", entry)
            pipe.ltrim(f"{self.key}:rejected", 0, keep - 1)
            pipe.execute()

    def rejected(self) -> list[tuple[str, bytes]]:
        out = []
        for entry in self.client.lrange(f"{self.key}:rejected", 0, -1):
            reason, _, body = entry.partition(b"\t")
            out.append((reason.decode(), body))
        return out

    # -- reading -----------------------------------------------------------------------
    def read_bucket(self, start: datetime) -> tuple[list[Observation], int]:
        """The bucket's observations and its revision, read in one transaction."""
        bucket = self.bucket_of(start)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(f"{self.key}:obs:{bucket}")
            pipe.hget(f"{self.key}:rev", bucket)
            entries, rev = pipe.execute()
        observations = [Observation.from_json(value.split(b"|", 1)[1]) for value in entries.values()]
        return observations, int(rev or 0)

    def mark_published(self, revisions: dict[int, int]) -> None:
        args: list[str | int] = [self.key]
        for bucket, rev in revisions.items():
            args += [bucket, rev]
        if len(args) > 1:
            self._mark(keys=[], args=args)

    def buckets(self, since: datetime | None = None) -> list[BucketState]:
        """Every bucket changed at or after ``since`` (default: all), oldest first."""
        low = since.timestamp() if since else "-inf"
        changed = self.client.zrangebyscore(f"{self.key}:changed", low, "+inf", withscores=True)
        if not changed:
            return []
        names = [b for b, _ in changed]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(f"{self.key}:rev", names)
            pipe.hmget(f"{self.key}:published", names)
            revs, published = pipe.execute()
        out = [
            BucketState(
                start=datetime.fromtimestamp(int(name), UTC),
                rev=int(rev or 0),
                published=int(pub) if pub is not None else None,
                changed_at=score,
            )
            for (name, score), rev, pub in zip(changed, revs, published, strict=True)
        ]
        return sorted(out, key=lambda b: b.start)

    def prune(self, older_than: datetime) -> int:
        """Forget buckets that start before ``older_than`` (retention); returns how many."""
        cutoff = int(older_than.timestamp())
        names = [b for b in self.client.zrange(f"{self.key}:changed", 0, -1) if int(b) < cutoff]
        if not names:
            return 0
        with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.delete(f"{self.key}:obs:{name.decode()}")
            pipe.hdel(f"{self.key}:rev", *names)
            pipe.hdel(f"{self.key}:published", *names)
            pipe.zrem(f"{self.key}:changed", *names)
            pipe.execute()
        return len(names)

    def all_observations(self, buckets: Iterable[datetime] | None = None) -> list[Observation]:
        names = (
            [self.bucket_of(b) for b in buckets]
            if buckets is not None
            else [int(b) for b in self.client.zrange(f"{self.key}:changed", 0, -1)]
        )
        out: list[Observation] = []
        for name in names:
            out += self.read_bucket(datetime.fromtimestamp(name, UTC))[0]
        return out
