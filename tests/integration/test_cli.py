"""``ionbeam-dagster publish``, run as a subprocess against the real broker and object store
of a test pipeline (its prefix, catalog and store), then ingested by the real sensor."""

from __future__ import annotations

from typing import Any

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from tests.pipeline_harness import CATALOG_YAML, Pipeline, close_pipeline, make_pipeline, output_metadata

pytestmark = [pytest.mark.services, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

SDS = "sensor_community/2017-08-30_sds011_sensor_5331.csv"
CATALOG = CATALOG_YAML + """\
  - name: sensor_community
    aggregation_span: PT1H
    subject_to_change_window: P1D
    start: 2015-10-01T00:00:00Z
    exporters: [geoparquet]
    station_column: sensor_id
"""
MAPPING = """\
dataset: sensor_community
csv: {delimiter: ";"}
ingestion_map:
  datetime: {from_col: timestamp}
  lat: {from_col: lat}
  lon: {from_col: lon}
  canonical_variables:
    - {column: P1, standard_name: mass_concentration_of_pm10_ambient_aerosol_particles_in_air, cf_unit: ug m-3, level: 2.0}
    - {column: P2, standard_name: mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air, cf_unit: ug m-3, level: 2.0}
  metadata_variables:
    - {column: sensor_id}
    - {column: sensor_type}
    - {column: location}
"""


@pytest.fixture
def pipeline(pipeline_services: dict[str, Any]) -> Iterator[Pipeline]:
    p = make_pipeline(**pipeline_services, catalog_text=CATALOG)
    yield p
    close_pipeline(p)


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


def cli(p: Pipeline, tmp_path: Path, amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IONBEAM_")}
    env.update(
        IONBEAM_PREFIX=p.prefix,
        IONBEAM_AMQP_URL=amqp_url,
        IONBEAM_OBJECT_STORE=p.store.root_url,
        IONBEAM_DATASETS=str(tmp_path / "datasets.yaml"),  # the harness's catalog file
    )
    entry = Path(sys.executable).with_name("ionbeam-dagster")
    return subprocess.run([str(entry), "publish", *args], env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_reports_what_would_be_ingested_and_dropped_and_publishes_nothing(
    pipeline: Pipeline, tmp_path: Path, amqp_url: str, mapping: Path, fixtures_dir: Path
) -> None:
    result = cli(pipeline, tmp_path, amqp_url, str(fixtures_dir / SDS), "--mapping", str(mapping), "--dry-run")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dry run: nothing written, nothing published" in out
    assert "would ingest: 305 rows (1 distinct sensor_id)" in out
    assert "would drop: 1 rows" in out and "no_values              1" in out
    assert "range:     2017-08-30T11:27:23Z .. 2017-08-30T23:57:37Z" in out
    assert "not mapped (ignored): durP1, ratioP1, durP2, ratioP2" in out
    assert pipeline.broker.message_count(pipeline.topology.ingestion_queue) == 0
    assert pipeline.store.list("raw/") == []


def test_publish_writes_the_payload_and_the_command_and_ingestion_takes_it(
    pipeline: Pipeline, tmp_path: Path, amqp_url: str, mapping: Path, fixtures_dir: Path
) -> None:
    p = pipeline
    result = cli(
        p, tmp_path, amqp_url, str(fixtures_dir / SDS), "--mapping", str(mapping),
        "--start", "2017-08-30T00:00:00Z", "--end", "2017-08-31T00:00:00Z",
    )

    assert result.returncode == 0, result.stderr
    assert "ingesting: 305 rows" in result.stdout
    [key] = p.store.list("raw/sensor_community/")
    assert key.startswith("raw/sensor_community/20170830T000000Z-20170831T000000Z_")
    assert key in result.stdout
    [request] = p.ingestion_tick()
    run = p.run_ingest(request)
    assert run.success
    meta = output_metadata(run)
    assert (meta["rows_in"], meta["rows_written"], meta["dropped_by_reason"]) == (306, 305, {"no_values": 1})
    assert p.ledger.status(request.tags["ionbeam/command_id"]) == "done"


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv.gz"])
def test_parquet_arrow_and_compressed_csv_read_the_same(
    pipeline: Pipeline, tmp_path: Path, amqp_url: str, mapping: Path, fixtures_dir: Path, fmt: str
) -> None:
    table = pacsv.read_csv(
        fixtures_dir / SDS,
        parse_options=pacsv.ParseOptions(delimiter=";"),
        convert_options=pacsv.ConvertOptions(column_types={"sensor_id": pa.string(), "location": pa.string()}),
    )
    path = tmp_path / f"payload.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "arrow":
        feather.write_feather(table, path)
    else:
        import gzip

        path.write_bytes(gzip.compress((fixtures_dir / SDS).read_bytes()))

    result = cli(pipeline, tmp_path, amqp_url, str(path), "--mapping", str(mapping), "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would ingest: 305 rows" in result.stdout and "no_values              1" in result.stdout


def test_errors_name_the_field(pipeline: Pipeline, tmp_path: Path, amqp_url: str, fixtures_dir: Path) -> None:
    data = str(fixtures_dir / SDS)

    def run_with(text: str, *extra: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "bad.yaml"
        path.write_text(text, encoding="utf-8")
        return cli(pipeline, tmp_path, amqp_url, data, "--mapping", str(path), "--dry-run", *extra)

    no_lat = run_with(MAPPING.replace("  lat: {from_col: lat}\n", ""))
    assert no_lat.returncode == 2 and "ingestion_map.lat" in no_lat.stderr and "required" in no_lat.stderr.lower()

    bad_unit = run_with(MAPPING.replace("cf_unit: ug m-3, level: 2.0}", "level: 2.0}", 1))
    assert bad_unit.returncode == 2 and "ingestion_map.canonical_variables[0].cf_unit" in bad_unit.stderr

    wrong_column = run_with(MAPPING.replace("from_col: timestamp", "from_col: time"))
    assert wrong_column.returncode == 2
    assert "ingestion_map.datetime: column 'time' is not in the payload" in wrong_column.stderr

    typo = run_with(MAPPING.replace("ingestion_map:", "ingestion_mapp:"))
    assert typo.returncode == 2 and "'ingestion_mapp'" in typo.stderr and "did you mean 'ingestion_map'" in typo.stderr

    unknown = run_with(MAPPING, "--dataset", "sensor_comunity")
    assert unknown.returncode == 2 and "dataset: 'sensor_comunity' is not in the catalog" in unknown.stderr
    assert "did you mean 'sensor_community'" in unknown.stderr

    backwards = run_with(MAPPING, "--start", "2017-08-31T00:00:00Z", "--end", "2017-08-30T00:00:00Z")
    assert backwards.returncode == 2 and "--start" in backwards.stderr

    assert pipeline.broker.message_count(pipeline.topology.ingestion_queue) == 0


def test_a_broker_that_is_down_exits_1_and_publishes_nothing(
    pipeline: Pipeline, tmp_path: Path, mapping: Path, fixtures_dir: Path
) -> None:
    from tests.conftest import free_port

    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    result = cli(pipeline, tmp_path, dead, str(fixtures_dir / SDS), "--mapping", str(mapping))
    assert result.returncode == 1
    assert "nothing was published" in result.stderr and "guest:guest" not in result.stderr
