"""End to end: a real ``dagster-daemon`` with the sensors, against the real services.

Each test stack has a prefix, an InfluxDB database, an object store directory, a catalog and
a DAGSTER_HOME of its own, so nothing here touches the local `make run` state or another test.
The daemon (with the code server and run workers it spawns) runs in a process group of its
own, which is SIGKILLed whole at teardown, and in the crash test in the middle of ingestion.

What is checked is what an outside user sees: DataSetAvailableEvents on an exporter queue,
objects in the store, points in InfluxDB, the ledger's and the coordinator's state in Redis.

The tail of the daemon's log is printed when a test fails; set IONBEAM_E2E_KEEP_LOGS to a
directory to keep every daemon log (named after the stack's prefix) after the run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis

from ionbeam_dagster.broker import Broker, Topology
from ionbeam_dagster.build import dataset_key
from ionbeam_dagster.catalog import DatasetSpec, load_catalog
from ionbeam_dagster.contracts import (
    DataIngestionMap,
    DataSetAvailableEvent,
    IngestDataCommand,
    IngestionMetadata,
    to_json_bytes,
)
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.instance_config import write_instance_config
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.readiness import event_set_hash
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window, partition_key, windows_overlapping
from ionbeam_dagster.windowstate import WindowState
from tests.conftest import AMQP_URL, INFLUX_URL, REDIS_URL

# Each run starts a fresh interpreter (3-8 s on two busy cores): bounds are generous, and
# a test that passes takes far less (about 3 minutes for the three on a quiet machine).
pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
DATASET = "e2e"
SPAN = timedelta(minutes=10)
DAY = datetime(2026, 1, 1, tzinfo=UTC)
STATIONS = 50  # one row per station and minute: 500 rows per PT10M window
PROBE = "e2e_probe"
# Low enough that a killed run is noticed in seconds, high enough that a live run has always
# taken its lease before the sensors may call it dead (the lease is refreshed every TTL/3).
LEASE_TTL_SECONDS = 6
RUN_GRACE_SECONDS = 30

CATALOG_YAML = f"""\
datasets:
  - name: {DATASET}
    description: end-to-end test dataset
    aggregation_span: PT10M
    subject_to_change_window: PT0S
    start: 2026-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
"""


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Everything one daemon works against, named after a prefix no other test uses."""

    root: Path
    prefix: str
    catalog_path: Path | None  # None: the shipped catalog

    def __post_init__(self) -> None:
        self.home = self.root / "dagster"
        self.objects = self.root / "objects"
        self.home.mkdir(parents=True)
        self.objects.mkdir()
        write_instance_config(self.home / "dagster.yaml")
        # Create the instance's SQLite storage now: processes that open a fresh home at the same
        # moment (the daemon, its code server, this test) can each stamp its schema, and then
        # every later open fails ("alembic_version has more than one head").
        with self.instance():
            pass
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.store = ObjectStore.from_url(self.objects.as_uri())
        self.influx = InfluxClient(INFLUX_URL, self.prefix)
        self.influx.ensure_database()
        self.ledger = IngestionLedger(self.redis, self.prefix)
        self.windows = WindowState(self.redis, self.prefix)
        # No heartbeats: the test may leave this connection idle for minutes.
        self.broker = Broker(AMQP_URL + ("&" if "?" in AMQP_URL else "?") + "heartbeat=0", Topology(self.prefix))
        self.broker.declare()
        self.probe = self.broker.bind_exporter_queue(PROBE)
        self.announcements: list[tuple[float, DataSetAvailableEvent]] = []
        self.daemons: list[Daemon] = []

    @property
    def database(self) -> str:
        return self.prefix

    @property
    def spec(self) -> DatasetSpec:
        assert self.catalog_path is not None
        spec = load_catalog(self.catalog_path).get(DATASET)
        assert spec is not None
        return spec

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IONBEAM_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(self.home),
            PYTHONUNBUFFERED="1",
            IONBEAM_PREFIX=self.prefix,
            IONBEAM_AMQP_URL=AMQP_URL,
            IONBEAM_REDIS_URL=REDIS_URL,
            IONBEAM_INFLUXDB_URL=INFLUX_URL,
            IONBEAM_INFLUXDB_DATABASE=self.database,
            IONBEAM_OBJECT_STORE=self.objects.as_uri(),
            IONBEAM_SENSOR_INTERVAL_SECONDS="1",
            IONBEAM_LEASE_TTL_SECONDS=str(LEASE_TTL_SECONDS),
            IONBEAM_RUN_GRACE_SECONDS=str(RUN_GRACE_SECONDS),
        )
        if self.catalog_path is not None:
            env["IONBEAM_DATASETS"] = str(self.catalog_path)
        return env

    def daemon(self) -> Daemon:
        daemon = Daemon(self, self.root / f"daemon-{len(self.daemons)}.log")
        self.daemons.append(daemon)
        return daemon

    def instance(self) -> Any:
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    # -- publishing ----------------------------------------------------------------------

    def publish(self, start: datetime, end: datetime) -> Command:
        """Write a synthetic payload for [start, end) and publish its IngestDataCommand."""
        table = generate_observations(start, end, stations=STATIONS)
        key = f"raw/{DATASET}/{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:8]}.parquet"
        with self.store.open_atomic_output(key) as sink:
            pq.write_table(table, sink)
        command = IngestDataCommand(
            id=uuid.uuid4(),
            metadata=IngestionMetadata(
                dataset=self.spec.metadata(),
                ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map()),
                version=1,
            ),
            payload_location=key,
            start_time=start,
            end_time=end,
        )
        self.broker.publish_command(to_json_bytes(command))
        return Command(str(command.id), start, end, table.num_rows, time.monotonic())

    def wait_for_ingestion_sensor(self, timeout: float = 90) -> None:
        """Publish a malformed command and wait for the ingestion sensor to dead-letter it:
        from then on the code location is loaded and the sensors tick."""
        dead = self.broker.topology.dead_letter_queue
        before = self.broker.message_count(dead)
        self.broker.publish_command(b"{}")
        wait_until(lambda: self.broker.message_count(dead) > before, timeout, "the ingestion sensor's first tick", self)

    def collect_announcements(self) -> None:
        # Should the connection drop, the Broker reconnects on the next call, and the broker
        # delivers the unacked messages again.
        for attempt in (1, 2):
            try:
                for delivery in self.broker.get_batch(self.probe, 1000):
                    self.announcements.append((time.monotonic(), DataSetAvailableEvent.model_validate_json(delivery.body)))
                    self.broker.ack(delivery)
                return
            except TransientError:
                if attempt == 2:
                    raise

    def announced(self, location: str) -> float | None:
        """When the first announcement of ``location`` arrived (monotonic), or None."""
        self.collect_announcements()
        return next((t for t, e in self.announcements if e.dataset_location == location), None)

    # -- teardown ------------------------------------------------------------------------

    def dump_logs(self, lines: int = 120) -> None:
        for daemon in self.daemons:
            print(f"\n----- last {lines} lines of {daemon.log_path} -----\n{daemon.tail(lines)}")

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        kill_strays(self.prefix)
        self.broker.close()
        try:
            with Broker(AMQP_URL, Topology(self.prefix)) as broker:
                broker.delete_all(extra_queues=[self.probe])
        finally:
            keys = list(self.redis.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                self.redis.delete(*keys)
            self.redis.close()
            self.influx.drop_database()
            keep = os.environ.get("IONBEAM_E2E_KEEP_LOGS")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                for daemon in self.daemons:
                    shutil.copy(daemon.log_path, Path(keep) / f"{self.prefix}-{daemon.log_path.name}")
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Command:
    id: str
    start: datetime
    end: datetime
    rows: int
    published_at: float


class Daemon:
    """``dagster-daemon run -w workspace.yaml`` in a process group of its own; its code server
    and run workers are its descendants in the same group, so one killpg ends them all."""

    def __init__(self, stack: Stack, log_path: Path) -> None:
        self.stack = stack
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=REPO,
                env=self.stack.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def group_members(self) -> list[int]:
        assert self.proc is not None
        members = []
        for pid in _pids():
            try:
                if os.getpgid(pid) == self.proc.pid:
                    members.append(pid)
            except ProcessLookupError:
                pass
        return members

    def kill(self) -> None:
        """SIGKILL the whole group (daemon, code server, run workers), at once."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while self.group_members() and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, lines: int) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def _pids() -> list[int]:
    """Live processes (a killed child whose parent died may linger as a zombie: not live)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def processes_of(prefix: str) -> list[int]:
    """Processes started for this stack: they alone carry its unique IONBEAM_PREFIX."""
    marker = f"IONBEAM_PREFIX={prefix}".encode()
    found = []
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(pid)
    return found


def kill_strays(prefix: str) -> None:
    """Anything of this stack's that escaped its process group (it should not happen)."""
    for pid in processes_of(prefix):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(condition: Callable[[], Any], timeout: float, what: str, stack: Stack | None = None, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


@contextmanager
def logs_on_failure(stack: Stack) -> Iterator[None]:
    try:
        yield
    except BaseException:
        stack.dump_logs()
        raise


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(*, shipped_catalog: bool = False) -> Stack:
        prefix = f"ionbeam_e2e{secrets.token_hex(4)}"
        root = tmp_path_factory.mktemp(prefix)
        catalog_path = None
        if not shipped_catalog:
            # No `synthetic` dataset, so the demo source and its schedule do not exist.
            catalog_path = root / "catalog.yaml"
            catalog_path.write_text(CATALOG_YAML)
        stack = Stack(root=root, prefix=prefix, catalog_path=catalog_path)
        stacks.append(stack)
        return stack

    yield make
    errors = []
    for stack in stacks:
        try:
            stack.close()
        except Exception as exc:  # keep cleaning up the others
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The stack shared by the first test (which ingests through the daemon) and the CLI test."""
    return make_stack()


# ----------------------------------------------------------------------------- expectations


def window_at(index: int, base: datetime = DAY) -> Window:
    start = base + index * SPAN
    return Window(start, start + SPAN)


def windows_of(command: Command, spec: DatasetSpec) -> list[Window]:
    """The windows whose desired set holds ``command``: the coordinator's rule (the range is
    closed, so a command ending on a boundary is in the next window too)."""
    return [
        w
        for w in windows_overlapping(command.start, command.end + timedelta(microseconds=1), SPAN)
        if w.start >= spec.start
    ]


def desired_sets(commands: list[Command], spec: DatasetSpec) -> dict[Window, set[str]]:
    sets: dict[Window, set[str]] = defaultdict(set)
    for command in commands:
        for window in windows_of(command, spec):
            sets[window].add(command.id)
    return sets


def final_location(spec: DatasetSpec, window: Window, ids: set[str]) -> str:
    return dataset_key(spec.name, window, "PT10M", event_set_hash(ids))


def check_window(stack: Stack, window: Window, ids: set[str]) -> pa.Table:
    """The window's current version is the final event set's, holds exactly its rows, and is exported."""
    spec = stack.spec
    assert {e.id for e in stack.windows.events(DATASET, window)} == ids, f"desired set of {window}"
    built = stack.windows.built(DATASET, window)
    assert built is not None and built.hash == event_set_hash(ids), f"{window} was not built from its final event set"
    location = final_location(spec, window, ids)
    assert built.location == location
    assert stack.store.exists(location), f"no dataset object {location}"
    table = stack.store.read_table(location)
    expected = generate_observations(window.start, window.end, stations=STATIONS)
    assert table.num_rows == expected.num_rows, f"{location}: {table.num_rows} rows, expected {expected.num_rows}"
    assert built.rows == expected.num_rows
    times = table.column("timestamp")
    assert pc.min(times).as_py() >= window.start and pc.max(times).as_py() < window.end
    pairs = {(t, s) for t, s in zip(times.to_pylist(), table.column("station_id").to_pylist())}
    assert len(pairs) == table.num_rows, f"{location} holds duplicate (time, station) rows"
    temperature = "air_temperature__degC__2.0__point__PT0S"
    assert sorted(table.column(temperature).to_pylist()) == sorted(expected.column("air_temperature").to_pylist())

    export = export_key("geoparquet", DATASET, window, SPAN, "parquet")
    assert export.startswith(f"exports/geoparquet/{DATASET}/")
    assert stack.store.exists(export), f"no GeoParquet export {export}"
    exported = pq.read_table(pa.BufferReader(stack.store.read_bytes(export)))
    assert exported.num_rows == expected.num_rows, f"{export}: {exported.num_rows} rows"
    assert export_version(stack, window) == built.hash
    return table


def export_version(stack: Stack, window: Window) -> str | None:
    """The dataset version (event-set hash) the window's current GeoParquet file was made from."""
    key = export_key("geoparquet", DATASET, window, SPAN, "parquet")
    try:
        metadata = pq.read_schema(pa.BufferReader(stack.store.read_bytes(key))).metadata or {}
    except FileNotFoundError:
        return None
    version = metadata.get(b"ionbeam:dataset_version")
    return version.decode() if version is not None else None


def up_to_date(stack: Stack, sets: dict[Window, set[str]]) -> bool:
    """Every window announced and exported in the version of its final event set (the export
    step runs after the announcement, in the same run)."""
    for window, ids in sets.items():
        if stack.announced(final_location(stack.spec, window, ids)) is None:
            return False
        if export_version(stack, window) != event_set_hash(ids):
            return False
    return True


def check_announcements(stack: Stack, window: Window, ids: set[str]) -> None:
    """Exactly one announced version of the window matches its final event-set hash; every
    version id always names the same object (redeliveries are recognisable)."""
    stack.collect_announcements()
    versions: dict[str, set[str]] = defaultdict(set)
    for _, event in stack.announcements:
        if event.start_time == window.start and event.end_time == window.end:
            assert event.metadata.name == DATASET
            versions[str(event.id)].add(event.dataset_location)
    assert all(len(locations) == 1 for locations in versions.values()), f"a version id of {window} names two objects: {versions}"
    location = final_location(stack.spec, window, ids)
    final = [vid for vid, locations in versions.items() if location in locations]
    assert len(final) == 1, f"{window}: {len(final)} announced versions match the final hash (versions: {dict(versions)})"


def influx_rows(stack: Stack) -> int:
    return stack.influx.count(DATASET, 0, int(datetime(2027, 1, 1, tzinfo=UTC).timestamp()) * 10**9)


def distinct_rows(commands: list[Command]) -> int:
    keys: set[tuple[int, str]] = set()
    for command in commands:
        table = generate_observations(command.start, command.end, stations=STATIONS)
        keys.update(zip(table.column("datetime").cast(pa.int64()).to_pylist(), table.column("station_id").to_pylist()))
    return len(keys)


# ----------------------------------------------------------------------------- tests


def test_commands_in_events_and_files_out(stack: Stack) -> None:
    daemon = stack.daemon().start()
    with logs_on_failure(stack):
        started = time.monotonic()
        stack.wait_for_ingestion_sensor()
        print(f"\ndaemon up and ticking after {time.monotonic() - started:.1f} s")

        commands = [stack.publish(w.start, w.end) for w in (window_at(0), window_at(1), window_at(2))]
        spec = stack.spec
        sets = {w: ids for w, ids in desired_sets(commands, spec).items() if w.end <= window_at(2).end}
        assert len(sets) == 3  # the window after the last one lacks data and is never built
        published = min(c.published_at for c in commands)

        def done() -> bool:
            # (a run announces its data a moment before it records its command as done)
            return up_to_date(stack, sets) and stack.ledger.counts()["done"] == len(commands)

        wait_until(done, 180, "a DataSetAvailableEvent and an export for every window", stack)
        for window, ids in sorted(sets.items(), key=lambda item: item[0].start):
            at = stack.announced(final_location(spec, window, ids))
            assert at is not None
            print(f"latency publish -> DataSetAvailableEvent, window {partition_key(window)}: {at - published:.1f} s")

        assert stack.ledger.counts() == {"pending": 0, "done": 3, "rejected": 0}
        for command in commands:
            assert stack.ledger.status(command.id) == "done"
            assert stack.ledger.details(command.id) == {"rows_written": command.rows}
        for window, ids in sets.items():
            check_window(stack, window, ids)
            check_announcements(stack, window, ids)
        assert influx_rows(stack) == sum(c.rows for c in commands) == 3 * 500
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited"
        daemon.kill()


def test_killing_the_daemon_mid_ingestion_loses_nothing_and_applies_nothing_twice(make_stack: Callable[..., Stack]) -> None:
    import dagster as dg

    stack = make_stack()
    spec = stack.spec
    first = stack.daemon().start()
    instance = stack.instance()
    with logs_on_failure(stack), instance:
        stack.wait_for_ingestion_sensor()
        # Four windows, each covered by three overlapping commands ([0, 5), [3, 8) and [6, 10]
        # minutes: rows repeat, and InfluxDB keeps one point per series and time). The last
        # one ends on the next window's start, so it belongs to that window's event set too.
        minute = timedelta(minutes=1)
        parts = ((0, 5), (3, 8), (6, 10))
        commands = [
            stack.publish(window_at(i).start + a * minute, window_at(i).start + b * minute)
            for i in range(4)
            for a, b in parts
        ]
        total = len(commands)

        def ingest_op_at_work() -> bool:
            """Some commands are done, not all, and an ingest run is STARTED holding its lease."""
            if not 2 <= stack.ledger.counts()["done"] < total:
                return False
            for key in stack.redis.scan_iter(match=f"{stack.prefix}:lease:*", count=100):
                run = instance.get_run_by_id(key.decode().rpartition(":")[2])
                if run is not None and run.job_name == "ingest" and run.status == dg.DagsterRunStatus.STARTED:
                    return True
            return False

        wait_until(ingest_op_at_work, 120, "an ingest run at work", stack, poll=0.05)
        members = first.group_members()
        first.kill()
        at_kill = stack.ledger.counts()
        in_flight = {
            r.run_id: r.job_name
            for r in instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
            )
        }
        print(f"\nSIGKILLed {len(members)} processes (daemon, code server, run workers); ledger {at_kill}; "
              f"runs left STARTED/STARTING: {sorted(in_flight.values())}")
        assert len(members) >= 3, f"expected the daemon, its code server and a run worker in the group, got {members}"
        assert not processes_of(stack.prefix), "a process of the killed daemon survived"
        assert at_kill["done"] < total
        assert "ingest" in in_flight.values()

        restarted_at = time.monotonic()
        stack.daemon().start()
        complete = {w: ids for w, ids in desired_sets(commands, spec).items() if w.end <= window_at(3).end}
        assert len(complete) == 4
        assert all(len(ids) == (3 if w == window_at(0) else 4) for w, ids in complete.items())

        def recovered() -> bool:
            if not up_to_date(stack, complete) or stack.ledger.counts()["done"] < total:
                return False
            # The runs the kill left behind are failed by the sensors once their leases lapse,
            # whether or not their work was finished by another run.
            statuses = [instance.get_run_by_id(run_id).status for run_id in in_flight]
            return all(status == dg.DagsterRunStatus.FAILURE for status in statuses)

        wait_until(recovered, 240, "every command done, every window announced and exported, dead runs failed", stack)
        print(f"recovered {time.monotonic() - restarted_at:.1f} s after the restart")

        # Nothing lost.
        assert stack.ledger.counts() == {"pending": 0, "done": total, "rejected": 0}
        for command in commands:
            assert stack.ledger.status(command.id) == "done"
            assert stack.ledger.details(command.id) == {"rows_written": command.rows}
        assert influx_rows(stack) == distinct_rows(commands) == 4 * 500
        for window, ids in complete.items():
            check_window(stack, window, ids)
            check_announcements(stack, window, ids)

        # Nothing applied twice: no command was ingested by two runs ...
        ingested: dict[str, int] = defaultdict(int)
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="ingest"))
        for run in runs:
            if run.status != dg.DagsterRunStatus.SUCCESS:
                continue
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
                metadata = record.dagster_event.step_output_data.metadata
                if metadata["outcome"].value == "ingested":
                    ingested[metadata["command_id"].value] += 1
        assert all(n <= 1 for n in ingested.values()), f"a command was ingested by two runs: {dict(ingested)}"
        # (every command still pending at the kill was ingested after it, by exactly one run)
        assert len(ingested) >= total - at_kill["done"]
        retried = {c.id[:8]: stack.ledger.attempts(c.id) for c in commands if stack.ledger.attempts(c.id)}
        print(f"ingest runs {len(runs)}, of them failed {sum(r.status == dg.DagsterRunStatus.FAILURE for r in runs)}; "
              f"commands retried (attempts): {retried}")
        for run in runs:  # informational: under heavy load a slow start can outlast the grace
            if run.status == dg.DagsterRunStatus.FAILURE and run.run_id not in in_flight:
                reasons = [e.message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
                print(f"  run {run.run_id[:8]} failed without being killed: {reasons}")
        # ... and a second completion is refused and changes nothing.
        for command in commands:
            assert stack.ledger.complete(command.id, "done", {"rows_written": -1}) is False
            assert stack.ledger.details(command.id) == {"rows_written": command.rows}
        assert stack.ledger.counts() == {"pending": 0, "done": total, "rejected": 0}
        assert not instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
        ), "a run is left STARTED: it holds a slot of the run queue for ever"


def dagster_cli(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "dagster"), *args],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        print(f"$ dagster {' '.join(args)}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


def test_cli_jobs(stack: Stack, make_stack: Callable[..., Stack]) -> None:
    import dagster as dg

    # Uses the windows the first test ingested and built through the daemon.
    w0 = window_at(0)
    before = stack.windows.built(DATASET, w0)
    assert before is not None, "test_commands_in_events_and_files_out must run first"
    export = export_key("geoparquet", DATASET, w0, SPAN, "parquet")
    stack.store.delete(export)

    one = dagster_cli(
        stack, "job", "execute", "-m", "ionbeam_dagster.definitions", "-j", f"build_{DATASET}",
        "--tags", json.dumps({"dagster/partition": partition_key(w0)}),
    )
    assert one.returncode == 0
    assert stack.store.exists(export)
    assert pq.read_metadata(pa.BufferReader(stack.store.read_bytes(export))).num_rows == 500
    after = stack.windows.built(DATASET, w0)
    assert after is not None and after.hash == before.hash and after.location == before.location

    exports = [export_key("geoparquet", DATASET, window_at(i), SPAN, "parquet") for i in range(3)]
    for key in exports:
        stack.store.delete(key)
    ranged = dagster_cli(
        stack, "job", "execute", "-m", "ionbeam_dagster.definitions", "-j", f"build_{DATASET}",
        "--tags", json.dumps({
            "dagster/asset_partition_range_start": partition_key(window_at(0)),
            "dagster/asset_partition_range_end": partition_key(window_at(2)),
        }),
    )
    assert ranged.returncode == 0
    for key in exports:
        assert pq.read_metadata(pa.BufferReader(stack.store.read_bytes(key))).num_rows == 500, key
    instance = stack.instance()
    try:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"build_{DATASET}", statuses=[dg.DagsterRunStatus.SUCCESS]))
        assert any(r.tags.get("dagster/asset_partition_range_end") == partition_key(window_at(2)) for r in runs)
    finally:
        instance.dispose()

    smoke_stack = make_stack(shipped_catalog=True)
    smoke = dagster_cli(smoke_stack, "job", "execute", "-m", "ionbeam_dagster.definitions", "-j", "smoke")
    assert smoke.returncode == 0
    assert smoke_stack.influx.count("synthetic", 0, 2**62) > 0
    assert smoke_stack.store.list("exports/geoparquet/synthetic/")
