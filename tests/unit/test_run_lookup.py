"""When the sensors call a run dead (sensors/runs.py), with the Dagster instance and the lease
store replaced by the two calls RunLookup makes of each.

Two regressions found by the end-to-end crash test (tests/e2e/test_daemon.py): the grace was
counted from the run's creation, so a run that had waited in the queue longer than the grace
was failed the moment it was launched; and a dead run nobody asked about any more (its command
was done before its worker died) stayed STARTED, holding a slot of the run queue for ever.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from ionbeam_dagster.coordinator import RunState
from sensors.runs import PREFIX_TAG, REQUEST_TAG, RunLookup

GRACE = 30.0


class Leases:
    def __init__(self, alive: set[str] = frozenset()) -> None:
        self.held = set(alive)

    def alive(self, run_id: str) -> bool:
        return run_id in self.held


class Instance:
    """get_run_records (filtered by status and tags, as the run storage does) and report_run_failed."""

    def __init__(self, records: list[dg.RunRecord]) -> None:
        self.records = records
        self.failed: list[str] = []

    def get_run_records(self, filters: dg.RunsFilter, limit: int | None = None) -> list[dg.RunRecord]:
        out = [
            r
            for r in self.records
            if (not filters.statuses or r.dagster_run.status in filters.statuses)
            and all(r.dagster_run.tags.get(k) == v for k, v in (filters.tags or {}).items())
        ]
        return out[:limit]

    def report_run_failed(self, run: dg.DagsterRun, message: str) -> None:
        self.failed.append(run.run_id)


def record(
    run_id: str,
    status: dg.DagsterRunStatus,
    *,
    created: float,
    updated: float,
    started: float | None = None,
    kind: str = "ingest",
    prefix: str = "ionbeam",
    requested: bool = True,
) -> dg.RunRecord:
    tags = {"ionbeam/kind": kind, PREFIX_TAG: prefix}
    if requested:
        tags[REQUEST_TAG] = f"key-{run_id}"
    run = dg.DagsterRun(job_name=kind, run_id=run_id, status=status, tags=tags)
    return dg.RunRecord(
        storage_id=1,
        dagster_run=run,
        create_timestamp=datetime.fromtimestamp(created, UTC),
        update_timestamp=datetime.fromtimestamp(updated, UTC),
        start_time=started,
    )


STARTING = dg.DagsterRunStatus.STARTING
STARTED = dg.DagsterRunStatus.STARTED


def test_a_run_launched_after_a_long_wait_in_the_queue_gets_the_whole_grace() -> None:
    now = time.time()
    queued_long_ago = record("r1", STARTING, created=now - 10 * GRACE, updated=now - 1)
    instance = Instance([queued_long_ago])
    runs = RunLookup(instance, Leases(), grace_seconds=GRACE)  # type: ignore[arg-type]
    assert runs.state("key-r1") is RunState.ACTIVE
    assert runs.reap("ingest", "ionbeam") == []
    assert instance.failed == []


def test_a_started_run_counts_its_grace_from_its_start() -> None:
    now = time.time()
    young = record("r1", STARTED, created=now - 10 * GRACE, updated=now - 1, started=now - 1)
    old = record("r2", STARTED, created=now - 10 * GRACE, updated=now - 2 * GRACE, started=now - 2 * GRACE)
    instance = Instance([young, old])
    runs = RunLookup(instance, Leases(), grace_seconds=GRACE)  # type: ignore[arg-type]
    assert runs.state("key-r1") is RunState.ACTIVE
    assert runs.state("key-r2") is RunState.FAILED
    assert instance.failed == ["r2"]


@pytest.mark.parametrize("status", [STARTING, STARTED])
def test_a_dead_run_is_reaped_even_when_nobody_asks_about_it(status: dg.DagsterRunStatus) -> None:
    now = time.time()
    dead = record("dead", status, created=now - 3 * GRACE, updated=now - 2 * GRACE, started=now - 2 * GRACE)
    leased = record("live", STARTED, created=now - 3 * GRACE, updated=now - 2 * GRACE, started=now - 2 * GRACE)
    instance = Instance([dead, leased])
    runs = RunLookup(instance, Leases({"live"}), grace_seconds=GRACE)  # type: ignore[arg-type]
    assert runs.reap("ingest", "ionbeam") == ["dead"]
    assert instance.failed == ["dead"]


def test_reaping_keeps_to_its_own_kind_prefix_and_requested_runs() -> None:
    now = time.time()
    old = {"created": now - 3 * GRACE, "updated": now - 2 * GRACE, "started": now - 2 * GRACE}
    instance = Instance([
        record("build", STARTED, kind="build", **old),
        record("other_prefix", STARTED, prefix="staging", **old),
        record("by_hand", STARTED, requested=False, **old),  # launched from the UI or CLI
    ])
    runs = RunLookup(instance, Leases(), grace_seconds=GRACE)  # type: ignore[arg-type]
    assert runs.reap("ingest", "ionbeam") == []
    assert runs.reap("build", "ionbeam") == ["build"]
    assert instance.failed == ["build"]


def test_the_grace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    monkeypatch.setenv("IONBEAM_RUN_GRACE_SECONDS", "7")
    young = record("r1", STARTED, created=now - 100, updated=now - 5, started=now - 5)
    old = record("r2", STARTED, created=now - 100, updated=now - 9, started=now - 9)
    instance = Instance([young, old])
    runs = RunLookup(instance, Leases())  # type: ignore[arg-type]
    assert runs.reap("ingest", "ionbeam") == ["r2"]
