"""Run leases: how a sensor tells a live run from a dead one.

Dagster's default run launcher cannot check a run worker's health, so a run whose process
was killed stays STARTED forever and its command or window would wait forever behind it.
Our ops therefore hold a short-lived Redis key while they work, refreshed by a heartbeat
thread; a run that is STARTED without a lease, past a grace period, is dead.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class RunLease:
    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int = 30) -> None:
        self._r = client
        self._p = prefix
        self._ttl = ttl_seconds

    def _key(self, run_id: str) -> str:
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} must match {_RUN_ID.pattern}")
        return f"{self._p}:lease:{run_id}"

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        key = self._key(run_id)
        stop = threading.Event()
        self._r.set(key, "1", ex=self._ttl)

        def beat() -> None:
            while not stop.wait(self._ttl / 3):
                try:
                    self._r.set(key, "1", ex=self._ttl)
                except redis.RedisError:
                    pass  # the next beat retries; a missed one only risks a duplicate run

        thread = threading.Thread(target=beat, name=f"lease-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1)
            # Not deleted: left to lapse one TTL from now, so the moments after the op (the
            # run recording its end, or the next step taking the lease) never look dead.
            try:
                self._r.set(key, "1", ex=self._ttl)
            except redis.RedisError:
                pass

    def alive(self, run_id: str) -> bool:
        return bool(self._r.exists(self._key(run_id)))
