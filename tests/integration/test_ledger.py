"""IngestionLedger against the local Redis."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.ledger import IngestionLedger

pytestmark = pytest.mark.services


@pytest.fixture
def ledger(redis_client: redis.Redis, prefix: str) -> IngestionLedger:
    return IngestionLedger(redis_client, prefix)


def _id() -> str:
    return str(uuid.uuid4())


def test_staging_twice_is_refused_and_changes_nothing(ledger: IngestionLedger) -> None:
    cid = _id()
    assert ledger.stage(cid, b"first") is True
    assert ledger.stage(cid, b"second") is False
    assert ledger.body(cid) == b"first"
    assert ledger.status(cid) == "pending"
    assert ledger.pending(10) == [cid]


def test_bodies_are_stored_byte_for_byte(ledger: IngestionLedger) -> None:
    cid = _id()
    body = bytes(range(256))
    ledger.stage(cid, body)
    assert ledger.body(cid) == body


def test_pending_is_oldest_first_and_limited(ledger: IngestionLedger) -> None:
    # uuid4s sort randomly, so order can only come from staging time.
    ids = [_id() for _ in range(20)]
    for cid in ids:
        ledger.stage(cid, b"x")
    assert ledger.pending(100) == ids
    assert ledger.pending(3) == ids[:3]
    with pytest.raises(ValueError):
        ledger.pending(0)


def test_complete_removes_from_pending_and_records_the_outcome(ledger: IngestionLedger) -> None:
    ok, bad, waiting = _id(), _id(), _id()
    for cid in (ok, bad, waiting):
        ledger.stage(cid, b"body")
    assert ledger.complete(ok, "done", {"rows": 10, "dropped": {"duplicate": 1}}) is True
    assert ledger.complete(bad, "rejected", {"code": "missing_column"}) is True
    assert ledger.pending(10) == [waiting]
    assert ledger.status(ok) == "done" and ledger.status(bad) == "rejected"
    assert ledger.status(waiting) == "pending"
    assert ledger.details(ok) == {"rows": 10, "dropped": {"duplicate": 1}}
    assert ledger.body(ok) is None  # released once complete
    assert ledger.counts() == {"pending": 1, "done": 1, "rejected": 1}


def test_first_completion_wins(ledger: IngestionLedger) -> None:
    cid = _id()
    ledger.stage(cid, b"x")
    assert ledger.complete(cid, "done", {"rows": 1}) is True
    assert ledger.complete(cid, "rejected", {"code": "late"}) is False
    assert ledger.status(cid) == "done" and ledger.details(cid) == {"rows": 1}


def test_staging_a_completed_id_is_still_refused(ledger: IngestionLedger) -> None:
    done, rejected = _id(), _id()
    ledger.stage(done, b"x")
    ledger.stage(rejected, b"y")
    ledger.complete(done, "done", {})
    ledger.complete(rejected, "rejected", {})
    assert ledger.stage(done, b"again") is False
    assert ledger.stage(rejected, b"again") is False
    assert ledger.pending(10) == []
    assert ledger.status(done) == "done" and ledger.body(done) is None


def test_unknown_ids(ledger: IngestionLedger) -> None:
    cid = _id()
    assert ledger.status(cid) is None and ledger.body(cid) is None and ledger.attempts(cid) == 0
    with pytest.raises(KeyError):
        ledger.complete(cid, "done", {})
    with pytest.raises(KeyError):
        ledger.note_attempt(cid)
    # Neither call created anything that would block a later stage.
    assert ledger.stage(cid, b"x") is True


def test_attempt_counter(ledger: IngestionLedger) -> None:
    cid = _id()
    ledger.stage(cid, b"x")
    assert ledger.attempts(cid) == 0
    assert [ledger.note_attempt(cid) for _ in range(3)] == [1, 2, 3]
    assert ledger.attempts(cid) == 3


def test_concurrent_staging_admits_exactly_one(redis_client: redis.Redis, prefix: str) -> None:
    cid = _id()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        own = IngestionLedger(redis.Redis(connection_pool=redis_client.connection_pool), prefix)
        barrier.wait()
        results.append(own.stage(cid, b"x"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_every_key_is_under_the_prefix(ledger: IngestionLedger, redis_client: redis.Redis, prefix: str) -> None:
    a, b = _id(), _id()
    ledger.stage(a, b"x")
    ledger.stage(b, b"y")
    ledger.note_attempt(a)
    ledger.complete(a, "done", {})
    ledger.complete(b, "rejected", {})
    keys = {k.decode() for k in redis_client.scan_iter(match=f"*{prefix}*")}
    assert keys and all(k.startswith(f"{prefix}:ingest:") for k in keys)


@pytest.mark.parametrize("prefix_", ["", "Bad", "a b", "x" * 64, "a:b", "a*"])
def test_bad_prefix_is_refused(redis_client: redis.Redis, prefix_: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        IngestionLedger(redis_client, prefix_)


@pytest.mark.parametrize("cid", ["", "a b", "x:*\n", "a" * 129, "-leading"])
def test_bad_ids_and_outcomes_are_refused(ledger: IngestionLedger, cid: str) -> None:
    with pytest.raises(ValueError, match="command_id"):
        ledger.stage(cid, b"x")
    good = _id()
    ledger.stage(good, b"x")
    with pytest.raises(ValueError, match="outcome"):
        ledger.complete(good, "maybe", {})


def test_decoding_client_is_refused(redis_url: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        IngestionLedger(redis.Redis.from_url(redis_url, decode_responses=True), prefix)


def test_unreachable_redis_is_transient(prefix: str) -> None:
    from tests.conftest import free_port

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py 8 retries connection errors with backoff by default (~3.5 s per call here);
    # the outcome is the same, the test is just quicker without.
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    ledger = IngestionLedger(client, prefix)
    with pytest.raises(TransientError, match="Redis unavailable"):
        ledger.stage(_id(), b"x")
    with pytest.raises(TransientError):
        ledger.pending(1)
