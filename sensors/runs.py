"""How a sensor learns what became of a run it requested.

Runs carry the tag ``ionbeam/request`` (our run key), so a sensor finds them with one
indexed query. A run that Dagster still calls STARTED but whose Redis lease has lapsed is
dead (its worker was killed): the default run launcher cannot notice that, so the sensor
reports the run failed itself, which lets the work be retried.

Dead runs are also swept up when nothing asks about them any more (their command or window
was completed before the worker died): Dagster counts a STARTED run against the run queue's
concurrency limit for ever, so each such run would take a slot away until none was left.
"""


import time
from dataclasses import dataclass

import dagster as dg

from ionbeam_dagster.coordinator import RunState
from ionbeam_dagster.lease import RunLease
from ionbeam_dagster.resources import run_grace

REQUEST_TAG = "ionbeam/request"
# The prefix whose Redis holds the run's lease: one Dagster instance may serve several.
PREFIX_TAG = "ionbeam/prefix"

_ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class RunView:
    state: RunState
    ended_at: float | None = None
    run_id: str | None = None


class RunLookup:
    def __init__(self, instance: dg.DagsterInstance, leases: RunLease, grace_seconds: float | None = None) -> None:
        self._instance = instance
        self._leases = leases
        # IONBEAM_RUN_GRACE_SECONDS (default 60): a run younger than this is never called dead,
        # because its op may not have taken its lease yet.
        self._grace = run_grace() if grace_seconds is None else grace_seconds

    def view(self, request_key: str) -> RunView:
        records = self._instance.get_run_records(filters=dg.RunsFilter(tags={REQUEST_TAG: request_key}), limit=1)
        if not records:
            return RunView(RunState.ABSENT)
        record = records[0]
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return RunView(RunState.SUCCEEDED, record.end_time, run.run_id)
        if run.status in _FAILED:
            return RunView(RunState.FAILED, record.end_time or time.time(), run.run_id)
        if run.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING) and self._is_dead(record):
            self._instance.report_run_failed(run, "ionbeam: the run's lease lapsed; its worker is gone")
            return RunView(RunState.FAILED, time.time(), run.run_id)
        return RunView(RunState.ACTIVE, None, run.run_id)

    def state(self, request_key: str) -> RunState:
        return self.view(request_key).state

    def reap(self, kind: str, prefix: str, limit: int = 100) -> list[str]:
        """Report failed every dead run the sensors of ``prefix`` requested (``ionbeam/kind`` =
        ``kind``) that is still STARTING or STARTED; returns their ids."""
        records = self._instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED],
                tags={"ionbeam/kind": kind, PREFIX_TAG: prefix},
            ),
            limit=limit,
        )
        reaped = []
        for record in records:
            run = record.dagster_run
            if REQUEST_TAG in run.tags and self._is_dead(record):
                self._instance.report_run_failed(run, "ionbeam: the run's lease lapsed; its worker is gone")
                reaped.append(run.run_id)
        return reaped

    def _is_dead(self, record: dg.RunRecord) -> bool:
        # The grace runs from when the run left the queue (STARTING) or began (STARTED): a
        # run that waited in the queue longer than the grace is not dead the moment it is
        # launched, while its worker is still loading the code.
        if record.dagster_run.status == dg.DagsterRunStatus.STARTED and record.start_time:
            since = record.start_time
        else:
            since = record.update_timestamp.timestamp()
        if time.time() - since < self._grace:
            return False
        return not self._leases.alive(record.dagster_run.run_id)
