"""Coordinator and WindowState against the local Redis.

The coordinator's decisions only matter through the state it leaves in Redis (a sensor tick
may die at any point and the next one must derive the same requests), so these tests drive
it through the real store. The one thing replaced is the Dagster instance: how a run is
doing is a plain dict the test sets, which is exactly the boundary the coordinator exposes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from ionbeam_dagster.catalog import Catalog, parse_catalog
from ionbeam_dagster.contracts import (
    CanonicalVariable,
    DataAvailableEvent,
    DataIngestionMap,
    DatasetMetadata,
    IngestionMetadata,
    LatitudeAxis,
    LongitudeAxis,
    TimeAxis,
)
from ionbeam_dagster.coordinator import BuildRequest, Coordinator, RetryPolicy, RunState, build_run_key
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.readiness import event_set_hash, oldest_first
from ionbeam_dagster.windows import Window
from ionbeam_dagster.windowstate import BuildRecord, WindowState, window_id

pytestmark = pytest.mark.services

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
TEN = timedelta(minutes=10)
HOUR = timedelta(hours=1)
W0 = Window(T0, T0 + TEN)
W1 = Window(T0 + TEN, T0 + 2 * TEN)
LATER = T0 + 3 * HOUR  # a "now" past every window and cutoff used below unless stated
POLICY = RetryPolicy(max_attempts=3, backoff=timedelta(seconds=10), poll=timedelta(seconds=2))

# alpha/beta have different spans (order across datasets); names chosen so that the
# lexicographic order of their Redis members disagrees with the windows' start order.
CATALOG_YAML = """
datasets:
  - name: alpha
    aggregation_span: PT10M
    start: 2024-01-01T00:00:00Z
  - name: beta
    aggregation_span: PT1H
    start: 2024-01-01T00:00:00Z
  - name: late
    aggregation_span: PT10M
    subject_to_change_window: PT30M
    start: 2024-01-01T00:00:00Z
  - name: partial
    aggregation_span: PT10M
    allow_incomplete_windows: true
    start: 2024-01-01T00:00:00Z
"""


class Runs:
    """The Dagster boundary: run state per run key, ABSENT unless the test says otherwise.

    It also records which keys were asked about, so a test can tell a decision made from
    Redis alone from one that consulted the run.
    """

    def __init__(self) -> None:
        self.states: dict[str, RunState] = {}
        self.asked: list[str] = []

    def __call__(self, run_key: str) -> RunState:
        self.asked.append(run_key)
        return self.states.get(run_key, RunState.ABSENT)


@pytest.fixture
def catalog() -> Catalog:
    return parse_catalog(CATALOG_YAML, source="test-catalog")


@pytest.fixture
def state(redis_client: redis.Redis, prefix: str) -> WindowState:
    return WindowState(redis_client, prefix)


@pytest.fixture
def coordinator(state: WindowState, catalog: Catalog) -> Coordinator:
    return Coordinator(state, catalog, POLICY)


@pytest.fixture
def runs() -> Runs:
    return Runs()


def event(
    dataset: str,
    start: datetime,
    end: datetime,
    *,
    span: timedelta | None = None,
    event_id: uuid.UUID | None = None,
) -> DataAvailableEvent:
    """A DataAvailableEvent as ingestion publishes it; span defaults to the catalog's."""
    spans = {"alpha": TEN, "beta": HOUR, "late": TEN, "partial": TEN}
    metadata = IngestionMetadata(
        dataset=DatasetMetadata(name=dataset, aggregation_span=span or spans.get(dataset, TEN)),
        ingestion_map=DataIngestionMap(
            datetime=TimeAxis(),
            lat=LatitudeAxis(),
            lon=LongitudeAxis(),
            canonical_variables=[CanonicalVariable(column="t2m", standard_name="air_temperature", cf_unit="K")],
        ),
    )
    return DataAvailableEvent(id=event_id or uuid.uuid4(), metadata=metadata, start_time=start, end_time=end)


def covering(dataset: str, window: Window, *, event_id: uuid.UUID | None = None) -> DataAvailableEvent:
    """An event covering ``window`` and no other.

    An ingestion's range is closed (rows stamped exactly at end_time are accepted), so an
    event ending on a boundary also belongs to the next window; ending 1 ms early (well within
    the 1 s gap tolerance) keeps a scenario to one window. The boundary case has its own test.
    """
    return event(dataset, window.start, window.end - MS, event_id=event_id)


def expected(dataset: str, window: Window, *events: DataAvailableEvent, attempt: int = 0) -> BuildRequest:
    return BuildRequest(dataset, window, event_set_hash(str(e.id) for e in events), attempt)


def built(state: WindowState, request: BuildRequest, at: datetime = LATER) -> None:
    """What a successful build run leaves behind: the observed hash of the window."""
    state.record_built(
        request.dataset,
        request.window,
        BuildRecord(hash=request.hash, location=f"datasets/{request.dataset}/{window_id(request.window)}", rows=10, built_at=at),
    )


def keys(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


def snapshot(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    """Every key under the prefix with its serialised value, to see exactly what a call wrote."""
    return {key: client.dump(key) for key in keys(client, prefix)}


def window_keys(prefix: str, dataset: str, window: Window) -> set[str]:
    base = f"{prefix}:win:{dataset}:{window_id(window)}"
    return {f"{base}:events", f"{base}:meta"}


# ---------------------------------------------------------------- the request lifecycle


def test_a_covered_window_past_its_cutoff_is_requested_once_and_again_only_if_its_run_is_absent(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """A tick that died before launching leaves an ABSENT run: the next tick must ask again
    with the same run key (Dagster dedupes it if the run exists after all); an ACTIVE run must
    not be requested twice."""
    ev = covering("alpha", W0)
    assert coordinator.apply_event(ev) == [W0]

    first = coordinator.review(LATER, runs)
    want = expected("alpha", W0, ev)
    assert first.requests == [want]
    assert first.requests[0].run_key == build_run_key("alpha", W0, want.hash, 0)
    assert want.run_key.startswith(f"alpha|{window_id(W0)}|") and want.run_key.endswith("|0")
    record = state.request("alpha", W0)
    assert record is not None and (record.hash, record.attempt, record.run_key) == (want.hash, 0, want.run_key)

    # The same tick evaluated again at once: the window waits for its poll, nothing is asked.
    assert coordinator.review(LATER, runs).requests == []

    runs.states[want.run_key] = RunState.ACTIVE
    active = coordinator.review(LATER + POLICY.poll, runs)
    assert active.requests == [] and active.in_flight == 1
    assert runs.asked == [want.run_key]

    del runs.states[want.run_key]  # the launch never happened
    absent = coordinator.review(LATER + 2 * POLICY.poll, runs)
    assert absent.requests == [want]
    assert absent.requests[0].run_key == want.run_key


def test_partial_coverage_waits_and_the_completing_event_triggers_the_build(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """A window is built only once its events cover it; the waiting window is not polled but
    woken by the event that completes it."""
    first = event("alpha", W0.start, W0.start + 5 * MIN)
    coordinator.apply_event(first)
    waiting = coordinator.review(LATER, runs)
    assert waiting.requests == [] and waiting.waiting_for_data == 1
    assert state.backlog() == {"review": 0, "later": 0, "failed": 0}
    assert coordinator.review(LATER + HOUR, runs).requests == []

    second = event("alpha", W0.start + 5 * MIN, W0.end - MS)
    coordinator.apply_event(second)
    assert coordinator.review(LATER + HOUR, runs).requests == [expected("alpha", W0, first, second)]


@pytest.mark.parametrize(
    ("gap", "builds"),
    [
        (timedelta(0), True),
        (SEC, True),  # the contract tolerates up to 1 s between ingestions
        (SEC + timedelta(milliseconds=1), False),
        (2 * SEC, False),
    ],
)
def test_a_gap_between_events_blocks_only_when_longer_than_one_second(
    coordinator: Coordinator, runs: Runs, gap: timedelta, builds: bool
) -> None:
    """Gaps up to 1 s are timing noise between consecutive ingestions; longer ones are missing data."""
    a = event("alpha", W0.start, W0.start + 5 * MIN)
    b = event("alpha", W0.start + 5 * MIN + gap, W0.end - MS)
    coordinator.apply_event(a)
    coordinator.apply_event(b)
    outcome = coordinator.review(LATER, runs)
    if builds:
        assert outcome.requests == [expected("alpha", W0, a, b)]
    else:
        assert outcome.requests == [] and outcome.waiting_for_data == 1


def test_the_same_event_delivered_again_after_the_build_causes_no_rebuild(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """Redelivery is normal on a broker (ack lost, consumer restarted): the desired set is
    unchanged, so the hash equals the observed one and nothing is rebuilt."""
    ev = covering("alpha", W0)
    coordinator.apply_event(ev)
    (request,) = coordinator.review(LATER, runs).requests
    built(state, request)
    runs.states[request.run_key] = RunState.SUCCEEDED
    done = coordinator.review(LATER + POLICY.poll, runs)
    assert done.requests == [] and done.up_to_date == 1
    assert state.backlog() == {"review": 0, "later": 0, "failed": 0}

    coordinator.apply_event(ev)
    again = coordinator.review(LATER + HOUR, runs)
    assert again.requests == [] and again.up_to_date == 1
    assert [e.id for e in state.events("alpha", W0)] == [str(ev.id)]
    assert state.backlog() == {"review": 0, "later": 0, "failed": 0}


def test_a_late_event_after_the_build_requests_a_rebuild_with_a_new_hash_at_attempt_zero(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """Data arriving after a window was built changes its desired set, so it must be rebuilt;
    the new hash gives a new run key that Dagster will not dedupe against the first build."""
    ev = covering("alpha", W0)
    coordinator.apply_event(ev)
    (first,) = coordinator.review(LATER, runs).requests
    built(state, first)
    runs.states[first.run_key] = RunState.SUCCEEDED
    coordinator.review(LATER + POLICY.poll, runs)

    late = event("alpha", W0.start + 2 * MIN, W0.start + 3 * MIN)
    coordinator.apply_event(late)
    (rebuild,) = coordinator.review(LATER + HOUR, runs).requests
    assert rebuild == expected("alpha", W0, ev, late)
    assert rebuild.hash != first.hash and rebuild.attempt == 0
    assert rebuild.run_key != first.run_key


def test_an_event_arriving_during_a_build_waits_for_that_build_to_finish(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """One build per window at a time: two overlapping builds could finish in the wrong
    order and leave the older event set recorded as the window's observed state."""
    first = covering("alpha", W0)
    coordinator.apply_event(first)
    [running] = coordinator.review(LATER, runs).requests
    runs.states[running.run_key] = RunState.ACTIVE
    late = event("alpha", W0.start + 2 * MIN, W0.start + 3 * MIN)
    coordinator.apply_event(late)

    outcome = coordinator.review(LATER, runs)
    assert outcome.requests == []
    assert outcome.in_flight == 1

    runs.states[running.run_key] = RunState.SUCCEEDED
    built(state, running)
    assert coordinator.review(LATER + MIN, runs).requests == [expected("alpha", W0, first, late)]


def test_a_window_held_back_by_its_stc_is_requested_later_without_any_new_event(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """The reference only re-examined a window when an event touched it, so a window waiting
    for its subject-to-change cutoff could wait forever; here time alone brings it back."""
    ev = covering("late", W0)
    coordinator.apply_event(ev)
    cutoff = W0.end + timedelta(minutes=30)

    held = coordinator.review(W0.end, runs)
    assert held.requests == [] and held.waiting_for_cutoff == 1
    assert state.backlog()["later"] == 1
    assert coordinator.review(cutoff - SEC, runs).requests == []

    assert coordinator.review(cutoff + MIN, runs).requests == [expected("late", W0, ev)]
    assert runs.asked == []  # decided from Redis alone: no run existed for this window


def test_an_event_ending_on_a_boundary_also_belongs_to_the_next_window(
    coordinator: Coordinator, runs: Runs
) -> None:
    """Ingestion accepts rows stamped exactly at end_time, and such a row lies in the next
    window; that window must know the event, or a late row at the boundary would never
    rebuild it. The instant alone does not cover the next window, so it is not built early."""
    ev = event("alpha", W0.start, W0.end)
    assert coordinator.apply_event(ev) == [W0, W1]
    first = coordinator.review(LATER, runs)
    assert first.requests == [expected("alpha", W0, ev)] and first.waiting_for_data == 1

    ev1 = covering("alpha", W1)
    coordinator.apply_event(ev1)
    assert coordinator.review(LATER, runs).requests == [expected("alpha", W1, ev, ev1)]


# ---------------------------------------------------------------- failures and retries


def test_a_failing_build_is_retried_with_backoff_then_given_up_without_blocking_other_windows(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """A window that keeps failing must be retried a bounded number of times, each retry
    under a new run key (Dagster skips a key that has any run, failed included), and must
    never hold up other windows of its dataset."""
    ev0 = covering("alpha", W0)
    coordinator.apply_event(ev0)
    t = LATER
    (attempt0,) = coordinator.review(t, runs).requests
    assert attempt0 == expected("alpha", W0, ev0, attempt=0)

    runs.states[attempt0.run_key] = RunState.FAILED
    t += POLICY.poll
    noticed = coordinator.review(t, runs)
    assert noticed.requests == [] and noticed.gave_up == []
    record = state.request("alpha", W0)
    assert record is not None and record.attempt == 1 and record.error == "build run failed"

    # Another window of the dataset is requested normally while W0 backs off.
    ev1 = covering("alpha", W1)
    coordinator.apply_event(ev1)
    other = coordinator.review(t + SEC, runs)
    assert other.requests == [expected("alpha", W1, ev1)]
    built(state, other.requests[0])
    runs.states[other.requests[0].run_key] = RunState.SUCCEEDED

    assert coordinator.review(t + POLICY.delay(1) - SEC, runs).requests == []
    t += POLICY.delay(1)
    (attempt1,) = coordinator.review(t, runs).requests
    assert attempt1 == expected("alpha", W0, ev0, attempt=1)
    assert attempt1.run_key == build_run_key("alpha", W0, attempt0.hash, 1) != attempt0.run_key

    runs.states[attempt1.run_key] = RunState.FAILED
    t += POLICY.poll
    assert coordinator.review(t, runs).requests == []
    assert coordinator.review(t + POLICY.delay(2) - SEC, runs).requests == []
    t += POLICY.delay(2)
    (attempt2,) = coordinator.review(t, runs).requests
    assert attempt2.attempt == 2 and attempt2.run_key not in (attempt0.run_key, attempt1.run_key)

    runs.states[attempt2.run_key] = RunState.FAILED
    t += POLICY.poll
    given_up = coordinator.review(t, runs)
    assert given_up.requests == []
    assert given_up.gave_up == [("alpha", W0, "build run failed")]
    assert state.failed() == [("alpha", window_id(W0))]
    assert state.backlog() == {"review": 0, "later": 0, "failed": 1}
    assert coordinator.review(t + HOUR, runs).requests == []

    # Failure of W0 does not stop a fresh window of the same dataset.
    w2 = Window(W1.end, W1.end + TEN)
    ev2 = covering("alpha", w2)
    coordinator.apply_event(ev2)
    assert coordinator.review(t + HOUR, runs).requests == [expected("alpha", w2, ev2)]

    # New data for the failed window starts over at attempt 0 and clears the failure.
    fresh = covering("alpha", W0)
    coordinator.apply_event(fresh)
    restarted = coordinator.review(t + 2 * HOUR, runs)
    assert expected("alpha", W0, ev0, fresh) in restarted.requests
    assert state.failed() == []


def test_a_run_that_succeeded_without_recording_the_window_counts_as_a_failure(
    coordinator: Coordinator, state: WindowState, runs: Runs
) -> None:
    """Otherwise the window would stay desired != observed with a SUCCEEDED run and be
    re-requested under the same key forever, which Dagster would silently skip."""
    ev = covering("alpha", W0)
    coordinator.apply_event(ev)
    (request,) = coordinator.review(LATER, runs).requests
    runs.states[request.run_key] = RunState.SUCCEEDED
    assert coordinator.review(LATER + POLICY.poll, runs).requests == []
    record = state.request("alpha", W0)
    assert record is not None and record.attempt == 1
    assert record.error == "build run ended without recording the window"
    (retry,) = coordinator.review(LATER + POLICY.poll + POLICY.delay(1), runs).requests
    assert retry == expected("alpha", W0, ev, attempt=1)


# ---------------------------------------------------------------- order, options, rejections


def test_requests_come_oldest_window_first_across_datasets(coordinator: Coordinator, runs: Runs) -> None:
    """Consumers wait longest for the window that closed first, whatever dataset it is in;
    ties on the end are broken like readiness.oldest_first (start, then name) so the order is
    the same everywhere."""
    coordinator.apply_event(event("beta", T0, T0 + 2 * HOUR - MS))
    coordinator.apply_event(event("alpha", T0, T0 + HOUR - MS))
    requests = coordinator.review(LATER, runs).requests
    assert len(requests) == 6 + 2
    ends = [r.window.end for r in requests]
    assert ends == sorted(ends)
    assert requests == oldest_first(requests)
    assert [(r.dataset, r.window.end) for r in requests][5:7] == [("beta", T0 + HOUR), ("alpha", T0 + HOUR)]


def test_review_limit_takes_the_oldest_windows_first(coordinator: Coordinator, runs: Runs) -> None:
    """A tick reviews a bounded number of windows; those must be the oldest ones, the cut
    falling by the same order as the requests (the hour of beta ends with alpha's 00:50
    window but started earlier, so it comes first)."""
    coordinator.apply_event(event("beta", T0, T0 + 2 * HOUR - MS))
    coordinator.apply_event(event("alpha", T0, T0 + HOUR - MS))
    first = coordinator.review(LATER, runs, limit=6)
    assert [(r.dataset, r.window.end) for r in first.requests] == [
        *(("alpha", T0 + i * TEN) for i in range(1, 6)),
        ("beta", T0 + HOUR),
    ]
    rest = coordinator.review(LATER, runs, limit=6)
    assert [(r.dataset, r.window.end) for r in rest.requests] == [("alpha", T0 + HOUR), ("beta", T0 + 2 * HOUR)]
    # limit 0 must not turn into Redis' "0..-1", the whole set.
    with pytest.raises(ValueError, match="limit"):
        coordinator.review(LATER, runs, limit=0)


def test_allow_incomplete_windows_builds_with_partial_coverage(coordinator: Coordinator, runs: Runs) -> None:
    """Some sources never cover a window (sparse stations); the operator opts into building
    whatever arrived once the cutoff has passed."""
    ev = event("partial", W0.start + 2 * MIN, W0.start + 3 * MIN)
    coordinator.apply_event(ev)
    assert coordinator.review(LATER, runs).requests == [expected("partial", W0, ev)]


def test_an_unknown_dataset_is_rejected_and_writes_nothing(
    coordinator: Coordinator, redis_client: redis.Redis, prefix: str
) -> None:
    """An event the catalog cannot place must be dead-lettered, not retried forever."""
    with pytest.raises(Rejection) as info:
        coordinator.apply_event(event("nosuch", W0.start, W0.end))
    assert info.value.code == "unknown_dataset"
    assert "nosuch" in info.value.message
    assert keys(redis_client, prefix) == set()


def test_an_aggregation_span_that_differs_from_the_catalog_is_rejected(
    coordinator: Coordinator, redis_client: redis.Redis, prefix: str
) -> None:
    """A producer that believes in other windows would have its data cut into the wrong
    windows; refuse it with the field named."""
    with pytest.raises(Rejection) as info:
        coordinator.apply_event(event("alpha", W0.start, W0.end, span=HOUR))
    assert info.value.code == "dataset_mismatch"
    assert "aggregation_span" in info.value.message
    assert keys(redis_client, prefix) == set()


def test_a_dataset_removed_from_the_catalog_is_dropped_from_review(
    state: WindowState, catalog: Catalog, runs: Runs
) -> None:
    """Nothing can be built for it any more; leaving it in review would poll it forever."""
    Coordinator(state, catalog, POLICY).apply_event(covering("alpha", W0))
    without_alpha = Catalog({name: spec for name, spec in catalog.datasets.items() if name != "alpha"})
    outcome = Coordinator(state, without_alpha, POLICY).review(LATER, runs)
    assert outcome.requests == []
    assert state.backlog() == {"review": 0, "later": 0, "failed": 0}


# ---------------------------------------------------------------- cost and key layout


@pytest.mark.parametrize("existing", [0, 60])
def test_an_event_writes_only_the_windows_it_touches(
    coordinator: Coordinator, redis_client: redis.Redis, prefix: str, existing: int
) -> None:
    """The reference re-read a dataset's whole history on every event; here the cost of an
    event must depend on the windows it overlaps, not on how many windows exist."""
    base = T0 + 30 * 24 * HOUR
    for i in range(existing):
        coordinator.apply_event(covering("alpha", Window(T0 + i * TEN, T0 + (i + 1) * TEN)))
    before = snapshot(redis_client, prefix)
    assert len([k for k in before if ":win:" in k]) == 2 * existing

    touched = [Window(base + i * TEN, base + (i + 1) * TEN) for i in range(3)]
    # Mid-window start and end: still exactly these three windows.
    assert coordinator.apply_event(event("alpha", base + MIN, base + 3 * TEN - MIN)) == touched

    after = snapshot(redis_client, prefix)
    changed = {k for k, v in after.items() if before.get(k) != v}
    assert set(before) <= set(after)
    expected_keys = set().union(*(window_keys(prefix, "alpha", w) for w in touched))
    assert changed == expected_keys | {f"{prefix}:coord:review"}
    assert len([k for k in after if ":win:" in k]) == 2 * existing + 2 * len(touched)


def test_windows_before_the_catalog_start_are_ignored(
    coordinator: Coordinator, state: WindowState, redis_client: redis.Redis, prefix: str, runs: Runs
) -> None:
    """The dataset's Dagster partitions begin at `start`; a window before it has no
    partition to build into, so requesting it would fail every time."""
    early = event("alpha", T0 - 30 * MIN, W1.end - MS)
    assert coordinator.apply_event(early) == [W0, W1]
    assert {k for k in keys(redis_client, prefix) if ":win:" in k} == window_keys(prefix, "alpha", W0) | window_keys(
        prefix, "alpha", W1
    )
    assert coordinator.review(LATER, runs).requests == [expected("alpha", W0, early), expected("alpha", W1, early)]

    before = snapshot(redis_client, prefix)
    assert coordinator.apply_event(event("alpha", T0 - HOUR, T0 - MS)) == []
    assert snapshot(redis_client, prefix) == before


def test_every_key_lives_under_the_prefix(
    coordinator: Coordinator, state: WindowState, redis_client: redis.Redis, prefix: str, runs: Runs
) -> None:
    """Tests and deployments share one Redis side by side; a key outside the prefix would
    leak between them and escape cleanup."""
    coordinator.apply_event(covering("alpha", W0))
    coordinator.apply_event(covering("late", W0))
    coordinator.apply_event(event("beta", T0, T0 + HOUR))
    outcome = coordinator.review(T0 + HOUR, runs)
    first = next(r for r in outcome.requests if r.dataset == "alpha")
    built(state, first)
    beta = next(r for r in outcome.requests if r.dataset == "beta")
    state.mark_failed("beta", beta.window, "test", LATER)

    mine = keys(redis_client, prefix)
    assert {f"{prefix}:coord:review", f"{prefix}:coord:later", f"{prefix}:coord:failed"} <= mine
    assert any(k.endswith(":built") for k in mine) and any(k.endswith(":request") for k in mine)
    anywhere = {k.decode() for k in redis_client.scan_iter(match=f"*{prefix}*", count=1000)}
    assert anywhere == mine
    assert all(k.startswith(f"{prefix}:") for k in anywhere)


def test_names_that_could_escape_the_key_layout_are_refused(redis_client: redis.Redis, prefix: str) -> None:
    """A prefix or dataset with ':' or '*' would write into, or match, another tenant's keys."""
    with pytest.raises(ValueError, match="prefix"):
        WindowState(redis_client, "Bad:Prefix")
    state = WindowState(redis_client, prefix)
    with pytest.raises(ValueError, match="dataset"):
        state.events("alpha:*", W0)

