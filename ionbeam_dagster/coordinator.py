"""The coordinator: turns DataAvailableEvents into window build requests.

It keeps no state of its own; everything lives in :class:`WindowState` (Redis), so a
sensor tick that crashes or times out loses nothing: the next tick derives the same
requests from the same state, and a run key that already has a run is deduplicated by
Dagster. How a run is doing is asked through a callable, so this module stays free of
Dagster and its decisions can be tested on their own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ionbeam_dagster.catalog import Catalog
from ionbeam_dagster.contracts import DataAvailableEvent
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.readiness import Decision, EventSpan, assess_window
from ionbeam_dagster.windows import Window, to_ns, windows_overlapping
from ionbeam_dagster.windowstate import BuildRequestRecord, WindowState, window_id


class RunState(enum.Enum):
    ABSENT = "absent"  # no run carries this key (yet): request it (again)
    ACTIVE = "active"  # queued or running
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class BuildRequest:
    dataset: str
    window: Window
    hash: str
    attempt: int

    @property
    def run_key(self) -> str:
        return build_run_key(self.dataset, self.window, self.hash, self.attempt)


def build_run_key(dataset: str, window: Window, event_hash: str, attempt: int) -> str:
    """Dataset, window, event-set hash and attempt: a new event set or a retry gets a new key,
    because Dagster skips a key that already has a run in any state, failed included."""
    return f"{dataset}|{window_id(window)}|{event_hash[:16]}|{attempt}"


@dataclass
class ReviewOutcome:
    requests: list[BuildRequest] = field(default_factory=list)
    waiting_for_data: int = 0
    waiting_for_cutoff: int = 0
    in_flight: int = 0
    up_to_date: int = 0
    gave_up: list[tuple[str, Window, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff: timedelta = timedelta(seconds=10)
    poll: timedelta = timedelta(seconds=2)

    def delay(self, attempt: int) -> timedelta:
        return self.backoff * (2 ** max(attempt - 1, 0))


class Coordinator:
    def __init__(self, state: WindowState, catalog: Catalog, policy: RetryPolicy | None = None) -> None:
        self._state = state
        self._catalog = catalog
        self._policy = policy or RetryPolicy()

    def apply_event(self, event: DataAvailableEvent) -> list[Window]:
        """Record the event in every window it overlaps; returns those windows.

        Raises Rejection for events the catalog cannot place, so they are dead-lettered
        instead of blocking the queue.
        """
        name = event.metadata.dataset.name
        spec = self._catalog.get(name)
        if spec is None:
            raise Rejection("unknown_dataset", f"metadata.dataset.name: dataset {name!r} is not in the catalog")
        if event.metadata.dataset.aggregation_span != spec.aggregation_span:
            raise Rejection(
                "dataset_mismatch",
                f"metadata.dataset.aggregation_span: {format_duration(event.metadata.dataset.aggregation_span)} "
                f"differs from the catalog's {format_duration(spec.aggregation_span)} for dataset {name!r}",
            )
        span = EventSpan(
            id=str(event.id),
            start_ns=to_ns(event.start_time),
            end_ns=to_ns(event.end_time),
        )
        # Rows stamped exactly at end_time are accepted (the range is closed, as in the
        # reference), and such a row belongs to the window starting there; so an event whose
        # end is a window boundary is recorded in that next window too, or a late row at the
        # boundary would never rebuild it. Windows before the catalog's start have no
        # Dagster partition to build into.
        closed_end = event.end_time + timedelta(microseconds=1)
        windows = [
            w for w in windows_overlapping(event.start_time, closed_end, spec.aggregation_span) if w.start >= spec.start
        ]
        if windows:
            self._state.record_event(name, windows, span)
        return windows

    def review(self, now: datetime, run_state: Callable[[str], RunState], limit: int = 200) -> ReviewOutcome:
        """Examine the windows due for review, oldest first, and decide what to build."""
        outcome = ReviewOutcome()
        for dataset, window in self._state.to_review(now, limit):
            self._review_one(dataset, window, now, run_state, outcome)
        return outcome

    def _review_one(
        self,
        dataset: str,
        window: Window,
        now: datetime,
        run_state: Callable[[str], RunState],
        outcome: ReviewOutcome,
    ) -> None:
        state = self._state
        spec = self._catalog.get(dataset)
        if spec is None:  # removed from the catalog: nothing can be built for it
            state.settle(dataset, window)
            return
        built = state.built(dataset, window)
        readiness = assess_window(
            window,
            state.events(dataset, window),
            built.hash if built else None,
            now=now,
            subject_to_change_window=spec.subject_to_change_window,
            allow_incomplete=spec.allow_incomplete_windows,
        )
        if readiness.decision is Decision.UP_TO_DATE:
            outcome.up_to_date += 1
            state.clear_failed(dataset, window)
            state.settle(dataset, window)
            return
        if readiness.decision is Decision.WAIT_FOR_CUTOFF:
            outcome.waiting_for_cutoff += 1
            assert readiness.retry_at is not None
            state.review_later(dataset, window, readiness.retry_at)
            return
        if readiness.decision is Decision.WAIT_FOR_DATA:
            # Re-examined when a new event touches the window, not on every tick.
            outcome.waiting_for_data += 1
            state.settle(dataset, window)
            return

        request = state.request(dataset, window)
        if request is None or request.hash != readiness.desired_hash:
            if request is not None and run_state(request.run_key) is RunState.ACTIVE:
                # One build per window at a time: were two to overlap, the older could
                # finish last and record a stale hash over the newer one.
                outcome.in_flight += 1
                state.review_later(dataset, window, now + self._policy.poll)
                return
            self._request(dataset, window, readiness.desired_hash, 0, now, outcome)
            state.clear_failed(dataset, window)
            return

        status = run_state(request.run_key)
        if status is RunState.ABSENT:
            # Requested before (maybe by a tick that died before launching): ask again.
            # Dagster drops the request if a run with this key exists after all.
            outcome.requests.append(BuildRequest(dataset, window, request.hash, request.attempt))
            state.review_later(dataset, window, now + self._policy.poll)
        elif status is RunState.ACTIVE:
            outcome.in_flight += 1
            state.review_later(dataset, window, now + self._policy.poll)
        else:
            # FAILED, or SUCCEEDED without recording the window (which counts as a failure,
            # or it would be requested again forever).
            error = "build run failed" if status is RunState.FAILED else "build run ended without recording the window"
            next_attempt = request.attempt + 1
            if next_attempt >= self._policy.max_attempts:
                state.mark_failed(dataset, window, f"{error} after {next_attempt} attempts", now)
                outcome.gave_up.append((dataset, window, error))
                return
            state.record_request(
                dataset,
                window,
                BuildRequestRecord(
                    hash=request.hash,
                    attempt=next_attempt,
                    run_key=build_run_key(dataset, window, request.hash, next_attempt),
                    requested_at=now,
                    error=error,
                ),
            )
            # The new key has no run yet; when the backoff has passed, review finds it
            # ABSENT and requests it.
            state.review_later(dataset, window, now + self._policy.delay(next_attempt))

    def _request(
        self, dataset: str, window: Window, event_hash: str, attempt: int, now: datetime, outcome: ReviewOutcome
    ) -> None:
        build = BuildRequest(dataset, window, event_hash, attempt)
        self._state.record_request(
            dataset,
            window,
            BuildRequestRecord(hash=event_hash, attempt=attempt, run_key=build.run_key, requested_at=now),
        )
        self._state.review_later(dataset, window, now + self._policy.poll)
        outcome.requests.append(build)
