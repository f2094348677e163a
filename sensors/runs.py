"""How a sensor learns what became of a run it requested.

Runs carry the tag ``ionbeam/request`` (our run key), so a sensor finds them with one
indexed query. A run that Dagster still calls STARTED but whose Redis lease has lapsed is
dead (its worker was killed): the default run launcher cannot notice that, so the sensor
reports the run failed itself, which lets the work be retried.
"""


import time
from dataclasses import dataclass

import dagster as dg

from ionbeam_dagster.coordinator import RunState
from ionbeam_dagster.lease import RunLease

REQUEST_TAG = "ionbeam/request"

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
    def __init__(self, instance: dg.DagsterInstance, leases: RunLease, grace_seconds: float = 60.0) -> None:
        self._instance = instance
        self._leases = leases
        self._grace = grace_seconds

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

    def _is_dead(self, record: dg.RunRecord) -> bool:
        started = record.start_time or record.create_timestamp.timestamp()
        if time.time() - started < self._grace:
            return False
        return not self._leases.alive(record.dagster_run.run_id)
