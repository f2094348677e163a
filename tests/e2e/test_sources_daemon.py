"""End to end: a StartSourceCommand, taken by a real ``dagster-daemon``, becomes a source run
over a partition range, its payloads are ingested, and the dataset's windows are built: the
Sensor.Community archive served from the shared fixtures by a local HTTP server."""

from __future__ import annotations

import csv
import gzip
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ionbeam_dagster.broker import Broker, Topology
from ionbeam_dagster.contracts import StartSourceCommand, to_json_bytes
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.windows import Window
from sensors.sources import LEDGER_NAMESPACE
from tests.conftest import AMQP_URL
from tests.e2e.test_daemon import Stack, logs_on_failure, wait_until
from tests.local_http import LocalServer, Reply, index_page, local_server

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(300)]

FILES = ("2017-08-30_sds011_sensor_5331.csv", "2017-08-30_dht22_sensor_5332.csv")
SOURCES = ("sensor_community", "sensor_community_live")
CATALOG_YAML = """\
datasets:
  - name: sensor_community
    description: end-to-end copy of the Sensor.Community dataset
    aggregation_span: PT1H
    subject_to_change_window: P1D
    start: 2015-10-01T00:00:00Z
    exporters: [geoparquet]
    station_column: sensor_id
"""


@dataclass
class SourceStack(Stack):
    archive_url: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "IONBEAM_SENSOR_COMMUNITY_ARCHIVE_URL": self.archive_url}

    def close(self) -> None:
        try:
            with Broker(AMQP_URL, Topology(self.prefix)) as broker:
                # The source sensor declared these; Stack.close knows only its own queues.
                broker.delete_all(extra_queues=[broker.topology.source_start_queue(n) for n in SOURCES])
        finally:
            super().close()


@pytest.fixture
def archive(fixtures_dir: Path) -> Iterator[LocalServer]:
    with local_server() as server:
        for day, names in ((date(2017, 8, 30), FILES), (date(2017, 8, 31), ())):
            directory = f"/{day.year}/{day.isoformat()}/"
            listed = []
            for name in names:
                body = gzip.compress((fixtures_dir / "sensor_community" / name).read_bytes(), mtime=0)
                server.route(directory + name + ".gz", Reply(200, body, {"Content-Type": "application/gzip"}))
                listed.append((name + ".gz", len(body)))
            server.route(directory, Reply(200, index_page(directory, listed), {"Content-Type": "text/html"}))
        yield server


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, archive: LocalServer) -> Iterator[SourceStack]:
    prefix = f"ionbeam_e2e{secrets.token_hex(4)}"
    root = tmp_path_factory.mktemp(prefix)
    catalog = root / "catalog.yaml"
    catalog.write_text(CATALOG_YAML)
    s = SourceStack(root=root, prefix=prefix, catalog_path=catalog, archive_url=archive.url)
    yield s
    s.close()


def rows_between(fixtures_dir: Path, start: datetime, end: datetime) -> int:
    count = 0
    for name in FILES:
        with (fixtures_dir / "sensor_community" / name).open(newline="") as f:
            for row in csv.DictReader(f, delimiter=";"):
                t = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
                if start <= t < end and any(row.get(c) for c in ("P1", "P2", "temperature", "humidity")):
                    count += 1
    return count


def test_a_start_source_command_through_the_daemon(stack: SourceStack, archive: LocalServer, fixtures_dir: Path) -> None:
    stack.daemon().start()
    start, end = datetime(2017, 8, 30, 12, tzinfo=UTC), datetime(2017, 8, 31, 12, tzinfo=UTC)
    command = StartSourceCommand(id=uuid.uuid4(), source_name="sensor_community", start_time=start, end_time=end)
    starts = IngestionLedger(stack.redis, stack.prefix, namespace=LEDGER_NAMESPACE)
    ledger_id = f"sensor_community:{command.id}"
    with logs_on_failure(stack):
        stack.broker.declare(sources=["sensor_community"])
        stack.broker.publish_start_source("sensor_community", to_json_bytes(command))

        # One run over two day partitions (range tags), two payloads, both ingested.
        wait_until(lambda: starts.status(ledger_id) == "done", 180, "the source run to succeed", stack)
        wait_until(lambda: stack.ledger.counts()["done"] == 2, 120, "both payloads to be ingested", stack)
        # The windows of [12:00, 24:00) on the 30th are covered and past their STC: built.
        noon = Window(start, start + timedelta(hours=1))
        record = wait_until(lambda: stack.windows.built("sensor_community", noon), 120, "the 12:00 window to be built", stack)

    table = stack.store.read_table(record.location)
    assert table.num_rows == rows_between(fixtures_dir, noon.start, noon.end) > 0
    assert set(table.column("sensor_id").to_pylist()) == {"5331", "5332"}
    assert archive.requests_to("/2017/2017-08-31/")  # the second partition was fetched too
    assert stack.ledger.counts()["rejected"] == 0
