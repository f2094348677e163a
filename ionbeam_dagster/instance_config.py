"""Writes the local Dagster instance config (``dagster.yaml``) that ``make run`` and the
end-to-end tests use.

Why these settings: the default queued run coordinator dequeues every few seconds and the
multiprocess executor forks a process per step, ~7.8 s from request to done; a one-second
dequeue with the in-process executor (set in the code location) is ~1.5 s
(shared/reference/platform-facts.md). Sensors run in threads so a slow tick of one does not
delay the other. The coordinator launches runs from two threads: the default launcher returns
only once a run's worker has started (a fresh interpreter importing Dagster and the code
location, 3-8 s on two cores), so launching one at a time made a backlog of N runs wait N
start-ups.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def instance_config(max_concurrent_runs: int = 4) -> dict:
    return {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator.queued_run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": max_concurrent_runs,
                "dequeue_interval_seconds": 1,
                "dequeue_use_threads": True,
                "dequeue_num_workers": 2,
            },
        },
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "poll_interval_seconds": 30},
        "sensors": {"use_threads": True, "num_workers": 4},
        "schedules": {"use_threads": True, "num_workers": 2},
        "telemetry": {"enabled": False},
    }


def write_instance_config(path: Path, max_concurrent_runs: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(instance_config(max_concurrent_runs), sort_keys=False))
    tmp.replace(path)


if __name__ == "__main__":
    write_instance_config(Path(sys.argv[1]))
