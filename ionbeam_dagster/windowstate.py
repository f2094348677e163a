"""The coordinator's durable memory, one small set of Redis keys per window.

Why per window: the reference re-reads every record of a dataset on each event, so its cost
grows with history. Here an event touches only the windows it overlaps, and examining a
window reads only that window's keys.

Keys (``{p}`` is the validated prefix, ``{w}`` the window start as ``YYYYmmddTHHMMSSZ``):

- ``{p}:win:{ds}:{w}:events``   hash  event id -> "start_ns,end_ns" (the desired set)
- ``{p}:win:{ds}:{w}:built``    hash  hash, location, rows, built_at (the observed state)
- ``{p}:win:{ds}:{w}:request``  hash  hash, attempt, run_key, requested_at, error
- ``{p}:coord:review``          zset  "{ds}|{w}" scored by window end: examine now, oldest first
- ``{p}:coord:later``           zset  "{ds}|{w}" scored by the time to move it back into review
- ``{p}:coord:failed``          zset  "{ds}|{w}" scored by the time it was given up on
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.readiness import EventSpan, oldest_first
from ionbeam_dagster.windows import Window

_PREFIX = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_DATASET = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_WINDOW_ID = "%Y%m%dT%H%M%SZ"

# Moves every member of `later` whose time has come into `review`, scored by window end.
# One script so a crash between the two steps cannot lose a window.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  local ends = redis.call('HGET', ARGV[3] .. string.sub(member, 1, bar - 1) .. ':' .. string.sub(member, bar + 1) .. ':meta', 'end')
  redis.call('ZREM', KEYS[1], member)
  if ends then redis.call('ZADD', KEYS[2], tonumber(ends), member) end
end
return #due
"""


def window_id(window: Window) -> str:
    return window.start.astimezone(UTC).strftime(_WINDOW_ID)


@dataclass(frozen=True)
class BuildRecord:
    """What was last built for a window: its event-set hash and where the object is."""

    hash: str
    location: str
    rows: int
    built_at: datetime


@dataclass(frozen=True)
class BuildRequestRecord:
    hash: str
    attempt: int
    run_key: str
    requested_at: datetime
    error: str = ""


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: bytes | str | float) -> datetime:
    return datetime.fromtimestamp(float(value), tz=UTC)


class WindowState:
    """Redis-backed desired/observed state of every window the coordinator knows."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        if not _PREFIX.match(prefix):
            raise ValueError(f"prefix {prefix!r} must match {_PREFIX.pattern}")
        self._r = client
        self._p = prefix
        self._promote = client.register_script(_PROMOTE)

    # -- keys ---------------------------------------------------------------------------
    def _win(self, dataset: str, window: Window) -> str:
        if not _DATASET.match(dataset):
            raise ValueError(f"dataset {dataset!r} must match {_DATASET.pattern}")
        return f"{self._p}:win:{dataset}:{window_id(window)}"

    @staticmethod
    def _member(dataset: str, window: Window) -> str:
        return f"{dataset}|{window_id(window)}"

    @property
    def _review(self) -> str:
        return f"{self._p}:coord:review"

    @property
    def _later(self) -> str:
        return f"{self._p}:coord:later"

    @property
    def _failed(self) -> str:
        return f"{self._p}:coord:failed"

    # -- events -------------------------------------------------------------------------
    def record_event(self, dataset: str, windows: list[Window], event: EventSpan) -> None:
        """Add an ingestion event to the desired set of every window it overlaps.

        Atomic (MULTI/EXEC): the broker message is acked only after this returns, so either
        every window learns of the event or none does and the message is redelivered.
        Re-recording the same event changes nothing (hash fields are overwritten in place).
        """
        value = f"{event.start_ns},{event.end_ns}"
        try:
            with self._r.pipeline(transaction=True) as pipe:
                for window in windows:
                    key = self._win(dataset, window)
                    pipe.hset(f"{key}:events", event.id, value)
                    pipe.hset(f"{key}:meta", mapping={"end": _ts(window.end), "start": _ts(window.start)})
                    pipe.zadd(self._review, {self._member(dataset, window): _ts(window.end)})
                pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"Redis: cannot record event {event.id}: {exc}") from exc

    def events(self, dataset: str, window: Window) -> list[EventSpan]:
        raw: Mapping[bytes, bytes] = self._call(self._r.hgetall, f"{self._win(dataset, window)}:events")
        spans = []
        for key, value in raw.items():
            start, end = value.decode().split(",")
            spans.append(EventSpan(id=key.decode(), start_ns=int(start), end_ns=int(end)))
        return sorted(spans, key=lambda s: (s.start_ns, s.end_ns, s.id))

    # -- built (observed) ---------------------------------------------------------------
    def built(self, dataset: str, window: Window) -> BuildRecord | None:
        raw = self._call(self._r.hgetall, f"{self._win(dataset, window)}:built")
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return BuildRecord(hash=d["hash"], location=d["location"], rows=int(d["rows"]), built_at=_dt(d["built_at"]))

    def record_built(self, dataset: str, window: Window, record: BuildRecord) -> None:
        """Record the observed hash, and queue the window for review so the coordinator
        notices at once whether events arrived while it was being built."""
        key = self._win(dataset, window)
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(
                    f"{key}:built",
                    mapping={
                        "hash": record.hash,
                        "location": record.location,
                        "rows": record.rows,
                        "built_at": _ts(record.built_at),
                    },
                )
                pipe.hset(f"{key}:meta", mapping={"end": _ts(window.end), "start": _ts(window.start)})
                pipe.zadd(self._review, {self._member(dataset, window): _ts(window.end)})
                pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"Redis: cannot record build of {dataset} {window_id(window)}: {exc}") from exc

    # -- build requests -----------------------------------------------------------------
    def request(self, dataset: str, window: Window) -> BuildRequestRecord | None:
        raw = self._call(self._r.hgetall, f"{self._win(dataset, window)}:request")
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return BuildRequestRecord(
            hash=d["hash"],
            attempt=int(d["attempt"]),
            run_key=d["run_key"],
            requested_at=_dt(d["requested_at"]),
            error=d.get("error", ""),
        )

    def record_request(self, dataset: str, window: Window, request: BuildRequestRecord) -> None:
        self._call(
            self._r.hset,
            f"{self._win(dataset, window)}:request",
            mapping={
                "hash": request.hash,
                "attempt": request.attempt,
                "run_key": request.run_key,
                "requested_at": _ts(request.requested_at),
                "error": request.error,
            },
        )

    # -- scheduling ---------------------------------------------------------------------
    def to_review(self, now: datetime, limit: int) -> list[tuple[str, Window]]:
        """Windows to examine now, oldest first across datasets (``readiness.oldest_first``:
        by end, then start, then dataset name).

        The zset orders by end only and breaks ties by member name, which puts
        ``alpha|...0050`` (a 10-minute window) before ``beta|...0000`` (an hour ending at the
        same time), contrary to ``oldest_first``. So members tied with the last one taken are
        fetched too (at most one window per dataset can share an end), the page is sorted by
        ``oldest_first`` and only then cut to ``limit``.
        """
        if limit < 1:
            # zrange(0, -1) would return the whole set: an unbounded tick.
            raise ValueError(f"limit: {limit} must be at least 1")
        self._call(self._promote, keys=[self._later, self._review], args=[_ts(now), limit, f"{self._p}:win:"])
        page = self._call(self._r.zrange, self._review, 0, limit - 1, withscores=True)
        members = [member for member, _ in page]
        if len(page) == limit:
            last = page[-1][1]
            taken = set(members)
            members += [m for m in self._call(self._r.zrangebyscore, self._review, last, last) if m not in taken]
        out = []
        for member in members:
            dataset, wid = member.decode().split("|", 1)
            meta = self._call(self._r.hgetall, f"{self._p}:win:{dataset}:{wid}:meta")
            start = _dt(meta[b"start"])
            out.append((dataset, Window(start=start, end=_dt(meta[b"end"]))))
        return oldest_first(out)[:limit]

    def review_later(self, dataset: str, window: Window, at: datetime) -> None:
        member = self._member(dataset, window)
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(self._review, member)
                pipe.zadd(self._later, {member: _ts(at)})
                pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"Redis: {exc}") from exc

    def settle(self, dataset: str, window: Window) -> None:
        """Nothing to do until a new event touches the window."""
        member = self._member(dataset, window)
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(self._review, member)
                pipe.zrem(self._later, member)
                pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"Redis: {exc}") from exc

    def mark_failed(self, dataset: str, window: Window, error: str, now: datetime) -> None:
        member = self._member(dataset, window)
        try:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(self._review, member)
                pipe.zrem(self._later, member)
                pipe.zadd(self._failed, {member: _ts(now)})
                pipe.hset(f"{self._win(dataset, window)}:request", "error", error)
                pipe.execute()
        except redis.RedisError as exc:
            raise TransientError(f"Redis: {exc}") from exc

    def clear_failed(self, dataset: str, window: Window) -> None:
        self._call(self._r.zrem, self._failed, self._member(dataset, window))

    def failed(self) -> list[tuple[str, str]]:
        """(dataset, window id) of every window given up on, oldest failure first."""
        return [tuple(m.decode().split("|", 1)) for m in self._call(self._r.zrange, self._failed, 0, -1)]  # type: ignore[misc]

    def backlog(self) -> dict[str, int]:
        return {
            "review": int(self._call(self._r.zcard, self._review)),
            "later": int(self._call(self._r.zcard, self._later)),
            "failed": int(self._call(self._r.zcard, self._failed)),
        }

    @staticmethod
    def _call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise TransientError(f"Redis: {exc}") from exc
