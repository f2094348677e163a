"""The OGC API (pygeoapi) over real GeoParquet exports, checked as a client would.

Exports are written the way the exporter asset writes them (write_geoparquet through the
object store's atomic output, at export_key) into a temporary store; the real server
(`python -m ionbeam_dagster.ogcapi.server`: supervisor + gunicorn + pygeoapi) runs as a
subprocess on a free loopback port. Tests run in file order and share the server: the last
ones add windows and check they show up without the server restarting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.exporters.geoparquet import write_geoparquet
from ionbeam_dagster.exporters.keys import export_key
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.ogcapi.refresh import refresh_config
from ionbeam_dagster.ogcapi.settings import ApiSettings
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map
from ionbeam_dagster.windows import Window
from tests.conftest import free_port

pytestmark = pytest.mark.services

DATASET = "obs_api"
PENDING = "obs_pending"  # exports GeoParquet, but nothing exported until the last test
SPAN = timedelta(minutes=10)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATIONS = 20
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

CATALOG = f"""
datasets:
  - name: {DATASET}
    description: Test observations served through the OGC API (cost ${{NOT_AN_ENV_VAR}}).
    aggregation_span: PT10M
    start: 2026-01-01T00:00:00Z
    exporters: [geoparquet]
    keywords: [test]
  - name: {PENDING}
    aggregation_span: PT10M
    start: 2026-01-01T00:00:00Z
    exporters: [geoparquet]
  - name: obs_no_export
    aggregation_span: PT10M
    start: 2026-01-01T00:00:00Z
    exporters: []
"""


# --------------------------------------------------------------------------- exports


def _contract_table(start: datetime, end: datetime) -> pa.Table:
    """Synthetic rows renamed to the dataset schema, as the build step stores them."""
    imap = DataIngestionMap.model_validate(synthetic_ingestion_map())
    names = {"datetime": "timestamp", "lat": "latitude", "lon": "longitude"}
    names.update({v.column: v.canonical_name for v in imap.canonical_variables})
    table = generate_observations(start, end, stations=STATIONS)
    return table.rename_columns([names.get(c, c) for c in table.column_names])


def _export(store: ObjectStore, dataset: str, index: int) -> Path:
    window = Window(T0 + index * SPAN, T0 + (index + 1) * SPAN)
    key = export_key("geoparquet", dataset, window, SPAN, "parquet")
    with store.open_atomic_output(key) as sink:
        write_geoparquet(
            _contract_table(window.start, window.end),
            sink,
            window_start=window.start,
            window_end=window.end,
            dataset=dataset,
            dataset_version=f"v{index}",
        )
    return Path(store.root_url.removeprefix("file://")) / key


def _rows(paths: list[Path]) -> list[dict[str, Any]]:
    """The exported rows, in the order the API serves them (window, then file order)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(paths):
        rows.extend(pq.read_table(path).drop_columns(["geometry", "bbox"]).to_pylist())
    return rows


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- server


@dataclass
class Api:
    url: str
    process: subprocess.Popen[bytes]
    store: ObjectStore
    files: list[Path]
    settings: ApiSettings
    log: Path

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", params=params, timeout=60)

    def items(self, **params: Any) -> dict[str, Any]:
        response = self.get(f"/collections/{DATASET}/items", f="json", **params)
        assert response.status_code == 200, response.text
        return response.json()

    def gunicorn_pid(self) -> int:
        children = _children(self.process.pid)
        assert len(children) == 1, f"supervisor children: {children}"
        return children[0]

    def worker_pids(self) -> set[int]:
        return set(_children(self.gunicorn_pid()))


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("ogcapi")
    catalog = root / "datasets.yaml"
    catalog.write_text(CATALOG)
    store = ObjectStore.from_url(f"file://{root}/objects")
    files = [_export(store, DATASET, 0), _export(store, DATASET, 1)]
    port = free_port()
    env = {
        **os.environ,
        "IONBEAM_OBJECT_STORE": store.root_url,
        "IONBEAM_DATASETS": str(catalog),
        "IONBEAM_API_PORT": str(port),
        "IONBEAM_API_DIR": str(root / "api"),
        "IONBEAM_API_POLL_SECONDS": "0.5",
        "IONBEAM_API_WORKERS": "1",
        # A tile URL that refuses at once: no request from the test ever leaves the machine.
        "IONBEAM_API_MAP_URL": "http://127.0.0.1:1/{z}/{x}/{y}.png",
    }
    settings = ApiSettings.from_env(env)
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ionbeam_dagster.ogcapi.server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so teardown can end gunicorn too if need be
        )
    api = Api(f"http://127.0.0.1:{port}", process, store, files, settings, log)
    try:
        _wait(lambda: _answers(api), 120, "the API to answer", api)
        yield api
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _answers(api: Api) -> bool:
    assert api.process.poll() is None, f"server exited:\n{api.log.read_text()}"
    try:
        return api.get("/collections", f="json").status_code == 200
    except requests.ConnectionError:
        return False


def _wait(condition: Any, timeout: float, what: str, api: Api) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n--- server log ---\n{api.log.read_text()}")
        time.sleep(0.25)


def _collection(api: Api, name: str) -> dict[str, Any] | None:
    collections = api.get("/collections", f="json").json()["collections"]
    return next((c for c in collections if c["id"] == name), None)


def _interval(collection: dict[str, Any] | None) -> tuple[datetime, datetime] | None:
    if collection is None:
        return None
    begin, end = collection["extent"]["temporal"]["interval"][0]
    return datetime.fromisoformat(begin), datetime.fromisoformat(end)


# --------------------------------------------------------------------------- tests


def test_collections_lists_the_exported_dataset_with_its_extents(api: Api) -> None:
    rows = _rows(api.files)
    ids = [c["id"] for c in api.get("/collections", f="json").json()["collections"]]
    # Only datasets with GeoParquet exports on disk: not the one still waiting for its first
    # window, nor the one that exports nothing.
    assert ids == [DATASET]

    collection = _collection(api, DATASET)
    assert collection is not None
    # Free text reaches the client as written (pygeoapi would expand an unquoted ${...}).
    assert collection["description"] == "Test observations served through the OGC API (cost ${NOT_AN_ENV_VAR})."
    bbox = collection["extent"]["spatial"]["bbox"][0]
    assert bbox == [
        min(r["longitude"] for r in rows),
        min(r["latitude"] for r in rows),
        max(r["longitude"] for r in rows),
        max(r["latitude"] for r in rows),
    ]
    interval = _interval(collection)
    assert interval == (min(r["timestamp"] for r in rows), max(r["timestamp"] for r in rows))
    assert interval == (T0, T0 + timedelta(minutes=19))


def test_generated_config_is_valid_for_pygeoapi(api: Api) -> None:
    from pygeoapi.config import validate_config
    from pygeoapi.util import yaml_load

    with api.settings.config_path.open(encoding="utf-8") as fh:
        config = yaml_load(fh)
    assert validate_config(config)
    assert config["server"]["bind"] == {"host": "127.0.0.1", "port": api.settings.port}
    # Written by temp file + rename: no temporary file is left beside it.
    assert sorted(p.name for p in api.settings.state_dir.iterdir()) == ["pygeoapi-config.yml", "pygeoapi-openapi.json"]
    openapi = api.get("/openapi", f="json").json()
    assert f"/collections/{DATASET}/items" in openapi["paths"]


def test_items_are_the_exported_rows_with_their_ids(api: Api) -> None:
    rows = _rows(api.files)
    assert len(rows) == 2 * 10 * STATIONS
    body = api.items(limit=10_000)
    features = body["features"]
    assert body["numberReturned"] == len(features) == len(rows)
    # Same rows, same order, and the feature id is the GeoParquet `id` column.
    assert [f["id"] for f in features] == [r["id"] for r in rows]
    for feature, row in zip(features, rows):
        props = feature["properties"]
        assert feature["geometry"] == {"type": "Point", "coordinates": [row["longitude"], row["latitude"]]}
        assert props["timestamp"] == _iso(row["timestamp"])
        assert props["station_id"] == row["station_id"]
        for name, value in row.items():
            if name.endswith("__PT0S"):
                assert props[name] == value, (name, feature["id"])
        assert "bbox" not in props and "geometry" not in props


def test_bbox_filter_is_inclusive(api: Api) -> None:
    rows = _rows(api.files)
    # Edges exactly on two stations' coordinates: points on the boundary are inside.
    lons = sorted({r["longitude"] for r in rows})
    lats = sorted({r["latitude"] for r in rows})
    box = (lons[3], lats[2], lons[-4], lats[-3])
    expected = [
        r["id"] for r in rows if box[0] <= r["longitude"] <= box[2] and box[1] <= r["latitude"] <= box[3]
    ]
    assert 0 < len(expected) < len(rows)
    got = api.items(bbox=",".join(map(str, box)), limit=10_000)["features"]
    assert [f["id"] for f in got] == expected
    assert {f["properties"]["longitude"] for f in got} >= {box[0], box[2]}

    empty = api.items(bbox="-170,-80,-160,-70", limit=10_000)
    assert empty["features"] == []


def test_datetime_interval_is_closed_and_crosses_windows(api: Api) -> None:
    rows = _rows(api.files)
    begin, end = T0 + timedelta(minutes=5), T0 + timedelta(minutes=12)
    expected = [r["id"] for r in rows if begin <= r["timestamp"] <= end]
    assert len(expected) == 8 * STATIONS  # minutes 5..12 inclusive, in both windows
    got = api.items(datetime=f"{_iso(begin)}/{_iso(end)}", limit=10_000)["features"]
    assert [f["id"] for f in got] == expected

    open_start = api.items(datetime=f"../{_iso(T0 + timedelta(minutes=3))}", limit=10_000)["features"]
    assert len(open_start) == 4 * STATIONS
    instant = api.items(datetime=_iso(T0 + timedelta(minutes=17)), limit=10_000)["features"]
    assert {f["properties"]["timestamp"] for f in instant} == {"2026-01-01T00:17:00Z"}
    assert len(instant) == STATIONS

    # pygeoapi checks the configured temporal extent: this is why extents must follow the data.
    outside = api.get(f"/collections/{DATASET}/items", f="json", datetime="2026-02-01T00:00:00Z/..")
    assert outside.status_code == 400


def test_limit_and_offset_page_through_windows(api: Api) -> None:
    ids = [r["id"] for r in _rows(api.files)]
    first = api.items(limit=7)
    assert [f["id"] for f in first["features"]] == ids[:7]
    assert any(link["rel"] == "next" for link in first["links"])
    # A page straddling the two files.
    page = api.items(limit=10, offset=len(ids) // 2 - 4)
    assert [f["id"] for f in page["features"]] == ids[len(ids) // 2 - 4 : len(ids) // 2 + 6]
    tail = api.items(limit=10, offset=len(ids) - 3)
    assert [f["id"] for f in tail["features"]] == ids[-3:]
    # limit and datetime together.
    limited = api.items(limit=5, datetime="2026-01-01T00:10:00Z/2026-01-01T00:19:00Z")
    assert [f["id"] for f in limited["features"]] == [
        r["id"] for r in _rows(api.files) if r["timestamp"] >= T0 + SPAN
    ][:5]


def test_item_by_id_hits_and_property_filter(api: Api) -> None:
    rows = _rows(api.files)
    row = rows[123]
    response = api.get(f"/collections/{DATASET}/items/{row['id']}", f="json")
    assert response.status_code == 200, response.text
    feature = response.json()
    assert feature["id"] == row["id"]
    assert feature["properties"]["station_id"] == row["station_id"]
    assert feature["properties"]["timestamp"] == _iso(row["timestamp"])
    missing = api.get(f"/collections/{DATASET}/items/{'0' * 32}", f="json")
    assert missing.status_code == 404

    hits = api.items(resulttype="hits", bbox="-180,-90,180,90")
    assert hits["numberMatched"] == len(rows)
    station = api.items(station_id=row["station_id"], limit=10_000)["features"]
    assert [f["id"] for f in station] == [r["id"] for r in rows if r["station_id"] == row["station_id"]]


def test_unsupported_queries_are_refused_not_ignored(api: Api) -> None:
    for params in ({"sortby": "-timestamp"}, {"filter": "station_id = 'x'"}, {"datetime": "2026-01-01T00:10:00Z/2026-01-01T00:00:00Z"}):
        response = api.get(f"/collections/{DATASET}/items", f="json", **params)
        assert response.status_code == 400, (params, response.status_code, response.text)
    assert api.get(f"/collections/{DATASET}/items", f="json", bbox="1,2,3").status_code == 400


def test_html_items_page_renders_in_headless_chromium(api: Api, tmp_path: Path) -> None:
    page = api.get(f"/collections/{DATASET}/items", f="html")
    assert page.status_code == 200
    first_id = _rows(api.files)[0]["id"]
    assert f"/collections/{DATASET}/items/{first_id}" in page.text

    # scripts/system-deps.sh (run by `make test`) installs it: a missing browser is a failed
    # set-up, not a reason to pass without looking at the page.
    assert CHROMIUM.exists(), "Debian's chromium is not installed (scripts/system-deps.sh installs it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ogcapi_items.png"
    shot.unlink(missing_ok=True)
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # The page loads Leaflet/Bootstrap from CDNs: answer every name but loopback with
        # NXDOMAIN at once, so nothing leaves the machine and the shot is not held up.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={shot}", "--window-size=1280,900",
        f"{api.url}/collections/{DATASET}/items?f=html",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, pixels = _png(shot.read_bytes())
    assert (width, height) == (1280, 900)
    # Not a blank page: a blank one inflates to a handful of byte values (filter bytes and
    # white); the item table's anti-aliased text and rules give many.
    assert len(set(pixels)) > 32


def test_new_windows_show_up_without_restarting_the_server(api: Api) -> None:
    supervisor, master = api.process.pid, api.gunicorn_pid()
    workers_before = api.worker_pids()

    third = _export(api.store, DATASET, 2)
    files = [*api.files, third]
    new_ids = [r["id"] for r in _rows([third])]
    # Served by the very next request: the provider lists the export directory each time.
    served = [f["id"] for f in api.items(limit=10_000)["features"]]
    assert served == [r["id"] for r in _rows(files)]

    # The exporter's part: regenerate the config; the supervisor reloads the workers.
    refresh_config(api.settings)
    _wait(
        lambda: _interval(_collection(api, DATASET)) == (T0, T0 + timedelta(minutes=29)), 60, "the new temporal extent", api
    )
    in_third = api.items(datetime="2026-01-01T00:20:00Z/2026-01-01T00:29:00Z", limit=10_000)["features"]
    assert [f["id"] for f in in_third] == new_ids

    # A dataset's first window makes its collection appear.
    _export(api.store, PENDING, 0)
    refresh_config(api.settings)
    _wait(lambda: _collection(api, PENDING) is not None, 60, f"collection {PENDING}", api)
    pending = api.get(f"/collections/{PENDING}/items", f="json", limit=10_000).json()["features"]
    assert len(pending) == 10 * STATIONS

    # Same processes: nothing was restarted, only gunicorn's workers were replaced.
    assert api.process.poll() is None
    assert (api.process.pid, api.gunicorn_pid()) == (supervisor, master)
    # Old workers finish their requests before they exit, so give them a moment.
    _wait(lambda: api.worker_pids().isdisjoint(workers_before), 30, "the old workers to exit", api)


# --------------------------------------------------------------------------- PNG


def _png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, inflated scanlines) of a PNG: enough to tell a blank image apart."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)
