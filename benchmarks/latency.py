"""Latency: publishing the command that completes a window -> its DataSetAvailableEvent.

A real ``dagster-daemon`` runs the sensors against a stack of its own (prefix, database,
object store, DAGSTER_HOME written by ``write_instance_config``, a one-dataset catalog with a
PT0S subject-to-change window) with IONBEAM_SENSOR_INTERVAL_SECONDS=1. Windows are
completed one at a time, so each measurement is the pipeline's own latency rather than
queueing behind the previous window: ingestion sensor tick -> ingest run -> event ->
coordinator tick -> build run -> announcement, received on a bound exporter queue.

Each publish waits a random 0-5 s first: the daemon evaluates sensors on a fixed 5 s loop,
and publishing right after the previous announcement would land at the same phase of that
loop every time, measuring one point of the pickup delay instead of its spread.

The Dagster run records are read back afterwards to split each latency into its stages.
The daemon (with the code server and run workers it spawns) runs in a process group of its
own, killed whole at the end.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.config import REPO, BenchConfig
from benchmarks.data import write_payload
from benchmarks.services import BenchServices
from ionbeam_dagster.broker import Broker, Topology
from ionbeam_dagster.catalog import load_catalog
from ionbeam_dagster.contracts import DataIngestionMap, DataSetAvailableEvent, IngestDataCommand, IngestionMetadata, to_json_bytes
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.influx import InfluxClient
from ionbeam_dagster.instance_config import write_instance_config
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window

DATASET = "bench_latency"
SPAN = timedelta(minutes=5)
FIRST = datetime(2026, 1, 2, tzinfo=UTC)
STATIONS = 50  # 250 rows per window: the latency is the orchestration's, not the data's
PROBE = "bench_probe"
WARMUP_WINDOWS = 1
# dagster/_daemon/sensor.py: MIN_INTERVAL_LOOP_TIME (sensors are evaluated at most this often).
SENSOR_LOOP_SECONDS = 5.0
CATALOG_YAML = f"""\
datasets:
  - name: {DATASET}
    description: benchmark latency dataset
    aggregation_span: PT5M
    subject_to_change_window: PT0S
    start: 2026-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
"""


@dataclass
class Sample:
    window: Window
    command_id: str
    published_wall: float
    latency_s: float


@dataclass
class LatencyMeasurement:
    samples: list[Sample] = field(default_factory=list)
    ready_s: float = 0.0  # daemon start -> first ingestion sensor tick
    stages: dict[str, float] = field(default_factory=dict)  # stage -> median seconds

    def summary(self) -> dict[str, Any]:
        latencies = sorted(s.latency_s for s in self.samples)
        return {
            "windows": len(latencies),
            "p50_s": _percentile(latencies, 50),
            "p95_s": _percentile(latencies, 95),
            "max_s": latencies[-1] if latencies else None,
            "samples_s": [round(s.latency_s, 3) for s in self.samples],
            "daemon_ready_s": self.ready_s,
            "stage_medians_s": self.stages,
        }


def _percentile(values: list[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class LatencyStack:
    def __init__(self, services: BenchServices) -> None:
        self.config: BenchConfig = services.config
        self.prefix = f"{services.prefix}_lat"
        services.extra_prefixes.append(self.prefix)  # cleaned up with the rest
        self.root = services.root / "latency"
        self.home = self.root / "dagster"
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True)
        write_instance_config(self.home / "dagster.yaml")
        self.catalog_path = self.root / "catalog.yaml"
        self.catalog_path.write_text(CATALOG_YAML)
        spec = load_catalog(self.catalog_path).get(DATASET)
        assert spec is not None
        self.spec = spec
        self.store = ObjectStore.from_url(self.objects.as_uri())
        InfluxClient(self.config.influx_url, self.prefix).ensure_database()
        self.broker = Broker(self.config.amqp_url, Topology(self.prefix))
        self.broker.declare()
        self.probe = self.broker.bind_exporter_queue(PROBE)
        self.log_path = self.root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IONBEAM_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(self.home),
            PYTHONUNBUFFERED="1",
            IONBEAM_PREFIX=self.prefix,
            IONBEAM_AMQP_URL=self.config.amqp_url,
            IONBEAM_REDIS_URL=self.config.redis_url,
            IONBEAM_INFLUXDB_URL=self.config.influx_url,
            IONBEAM_INFLUXDB_DATABASE=self.prefix,
            IONBEAM_OBJECT_STORE=self.objects.as_uri(),
            IONBEAM_DATASETS=str(self.catalog_path),
            IONBEAM_SENSOR_INTERVAL_SECONDS="1",
        )
        return env

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                cwd=REPO,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: one killpg ends everything
            )

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            self.proc = None
        # Anything of ours that left the group (it should not): it carries our unique prefix.
        for pid in _processes_with_env(f"IONBEAM_PREFIX={self.prefix}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.broker.close()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no daemon log: {exc})"

    # -- driving ---------------------------------------------------------------------------

    def wait_until_ticking(self, timeout: float = 180) -> float:
        """Publish a malformed command; once it is dead-lettered the sensors are live."""
        started = time.monotonic()
        dead = self.broker.topology.dead_letter_queue
        before = self.broker.message_count(dead)
        self.broker.publish_command(b"{}")
        while self.broker.message_count(dead) <= before:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the ingestion sensor did not tick within {timeout:.0f} s:\n{self.tail()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.2)
        return time.monotonic() - started

    def complete_window(self, window: Window, timeout: float = 180) -> Sample:
        table = generate_observations(window.start, window.end, stations=STATIONS)
        key = write_payload(self.store, table, DATASET)
        command = IngestDataCommand(
            id=uuid.uuid4(),
            metadata=IngestionMetadata(
                dataset=self.spec.metadata(),
                ingestion_map=DataIngestionMap.model_validate(synthetic_ingestion_map()),
            ),
            payload_location=key,
            start_time=window.start,
            end_time=window.end,
        )
        body = to_json_bytes(command)
        wall, started = time.time(), time.monotonic()
        self.broker.publish_command(body)
        while True:
            for event in self._announcements():
                if event.start_time == window.start:
                    return Sample(window, str(command.id), wall, time.monotonic() - started)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no DataSetAvailableEvent for {window} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.02)

    def _announcements(self) -> list[DataSetAvailableEvent]:
        try:
            deliveries = self.broker.get_batch(self.probe, 100)
        except TransientError:
            return []  # the connection idled out; the Broker reconnects on the next call
        events = []
        for delivery in deliveries:
            events.append(DataSetAvailableEvent.model_validate_json(delivery.body))
            self.broker.ack(delivery)
        return events

    def stages(self, samples: list[Sample]) -> dict[str, float]:
        """Median seconds of each stage, from the Dagster run records."""
        import dagster as dg

        from ionbeam_dagster.windows import partition_key

        instance = dg.DagsterInstance.from_config(str(self.home))
        spans: dict[str, list[float]] = {}
        try:
            for sample in samples:
                ingest = _record(instance, {"ionbeam/command_id": sample.command_id})
                build = _record(
                    instance, {"ionbeam/dataset": DATASET, "dagster/partition": partition_key(sample.window)}
                )
                if ingest is None or build is None or not ingest.start_time or not build.start_time:
                    continue
                announced = sample.published_wall + sample.latency_s
                points = {
                    "ingestion_sensor_pickup": ingest.create_timestamp.timestamp() - sample.published_wall,
                    "ingest_run_queue_and_launch": ingest.start_time - ingest.create_timestamp.timestamp(),
                    "ingest_run": (ingest.end_time or ingest.start_time) - ingest.start_time,
                    "coordinator_pickup": build.create_timestamp.timestamp() - (ingest.end_time or ingest.start_time),
                    "build_run_queue_and_launch": build.start_time - build.create_timestamp.timestamp(),
                    "build_run_to_announcement": announced - build.start_time,
                }
                for name, value in points.items():
                    spans.setdefault(name, []).append(value)
        finally:
            instance.dispose()
        return {name: round(statistics.median(values), 3) for name, values in spans.items()}


def _record(instance: Any, tags: dict[str, str]) -> Any:
    import dagster as dg

    records = instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1)
    return records[0] if records else None


def _processes_with_env(marker: str) -> list[int]:
    wanted = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry))
    return found


def measure_latency(services: BenchServices, windows: int, *, log: Callable[[str], None] = print) -> LatencyMeasurement:
    stack = LatencyStack(services)
    result = LatencyMeasurement()
    try:
        stack.start()
        result.ready_s = stack.wait_until_ticking()
        log(f"  daemon ticking after {result.ready_s:.1f} s")
        phase = random.Random(20260101)  # the same waits in every run
        for index in range(WARMUP_WINDOWS + windows):
            time.sleep(phase.uniform(0, SENSOR_LOOP_SECONDS))
            start = FIRST + index * SPAN
            sample = stack.complete_window(Window(start, start + SPAN))
            warm = index < WARMUP_WINDOWS
            if not warm:
                result.samples.append(sample)
            log(f"  latency window {start:%H:%M}{' (warm-up)' if warm else ''}: {sample.latency_s:6.2f} s")
        result.stages = stack.stages(result.samples)
    finally:
        stack.kill()
    return result
