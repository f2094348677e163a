"""Round trips through the real InfluxDB (1.6.7 locally) with hostile names and values."""

from __future__ import annotations

import csv
import http.server
import io
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from ionbeam_dagster.errors import IonbeamError, TransientError
from ionbeam_dagster.influx import InfluxClient, quote_ident, quote_string, window_schema
from ionbeam_dagster.lineprotocol import decode_tag_value, encode_lines, encode_tag_value

pytestmark = pytest.mark.services

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
SECOND = 10**9

# Tag keys and field keys: everything line protocol and InfluxQL make awkward. A lone
# backslash inside a name is allowed; other backslash forms are refused (unit tests).
STATION = "station id, \"quoted\" 'single' =eq Zürich ☃ back\\slash"
NETWORK = "network"
TEMP = "air_temperature__degC__2.0__point__PT0S"
WIND = "wind_speed__m s-1__10.0__point__PT0S"
PRECIP = "precipitation_amount__kg/m2__0.0__sum__PT1H"
ODD = "odd, \"field\" 'key' =x ☃"
FIELDS = ["latitude", "longitude", TEMP, WIND, PRECIP, ODD]
TAGS = [STATION, NETWORK]

HOSTILE_VALUES = [
    "plain",
    "with space",
    "comma,here",
    "equals=here",
    'double"quote',
    "single'quote",
    "back\\slash",
    "trailing\\",
    "\\\\double",
    "new\nline",
    "carriage\rreturn",
    "crlf\r\n",
    "tab\there",
    "percent%25literal%0A",
    "Zürich ☃",
    " leading and trailing ",
    "NA",
    "null",
    "NaN",
    "#hash",
    "\x01control",
]


@pytest.fixture
def client(influx_url: str, influx_database: str) -> Iterator[InfluxClient]:
    with InfluxClient(influx_url, influx_database, timeout=30) as c:
        yield c


def write(client: InfluxClient, table: pa.Table, measurement: str = "obs", max_bytes: int = 10_000_000) -> int:
    lines = encode_lines(
        table,
        measurement=measurement,
        time_column="time",
        tag_columns=[c for c in TAGS if c in table.column_names],
        field_columns=[c for c in FIELDS if c in table.column_names],
    )
    return client.write_lines(lines, max_bytes=max_bytes)


def read(client: InfluxClient, start: int, end: int, measurement: str = "obs", **kwargs: int) -> pa.Table:
    batches = list(
        client.read_window(
            measurement, start, end, field_columns=[TEMP, WIND, PRECIP, ODD], tag_columns=TAGS, **kwargs
        )
    )
    return pa.Table.from_batches(batches)


def hostile_table() -> pa.Table:
    n = len(HOSTILE_VALUES)
    return pa.table(
        {
            "time": pa.array([T0 + i * SECOND for i in range(n)], pa.int64()),
            "latitude": [float(i) for i in range(n)],
            "longitude": [-float(i) for i in range(n)],
            TEMP: [None if i % 4 == 1 else 20.0 + i / 10 for i in range(n)],
            WIND: [None if i % 3 == 0 else float(i) for i in range(n)],
            PRECIP: [0.1] * n,
            ODD: [None if i % 2 else 1e-5 * i for i in range(n)],
            STATION: HOSTILE_VALUES,
            NETWORK: [None if i % 5 == 0 else f"net {i % 2}" for i in range(n)],
        }
    )


def test_ping_and_ensure_database(client: InfluxClient, influx_url: str, prefix: str) -> None:
    assert client.ping().startswith("1.")
    fresh = InfluxClient(influx_url, f"{prefix}_fresh")
    try:
        assert fresh.database not in fresh.databases()
        fresh.ensure_database()
        fresh.ensure_database()  # idempotent
        assert fresh.database in fresh.databases()
    finally:
        fresh.drop_database()
    assert fresh.database not in fresh.databases()


def test_hostile_names_and_values_round_trip(client: InfluxClient) -> None:
    table = hostile_table()
    assert write(client, table) == table.num_rows

    assert client.tag_keys("obs") == sorted(TAGS)
    assert client.field_keys("obs") == sorted(FIELDS)
    back = read(client, T0, T0 + 3_600 * SECOND)
    assert back.schema == window_schema([TEMP, WIND, PRECIP, ODD], TAGS)
    assert back.column_names == ["timestamp", "latitude", "longitude", *sorted([TEMP, WIND, PRECIP, ODD]), STATION, NETWORK]
    assert back.num_rows == table.num_rows
    assert back["timestamp"].cast(pa.int64()).to_pylist() == table["time"].to_pylist()
    for name in [*FIELDS, *TAGS]:
        assert back[name].to_pylist() == table[name].to_pylist(), name


def test_floats_round_trip_exactly(client: InfluxClient) -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**64, size=5_000, dtype=np.uint64).view(np.float64)
    special = np.array(
        [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
         1e-5, 1e20, 1e21, 1e22, 0.1, 1 / 3, 80.0, 123456789012345678.0, 2.5e-7]
    )
    values = np.concatenate([special, bits[np.isfinite(bits)]])
    n = len(values)
    table = pa.table(
        {
            "time": pa.array(T0 + np.arange(n, dtype=np.int64)),
            "latitude": np.zeros(n),
            "longitude": np.zeros(n),
            TEMP: values,
        }
    )
    write(client, table)
    back = read(client, T0, T0 + n)
    got = back[TEMP].to_numpy()
    # Bit-for-bit: -0.0 stays -0.0, subnormals and the extremes survive CSV's 'f' format.
    assert np.array_equal(got.view(np.int64), values.view(np.int64))


def test_nulls_are_preserved(client: InfluxClient) -> None:
    table = pa.table(
        {
            "time": pa.array([T0, T0 + 1, T0 + 2], pa.int64()),
            "latitude": [1.0, 2.0, 3.0],
            "longitude": [1.0, 2.0, 3.0],
            TEMP: [1.0, None, 3.0],
            WIND: [None, 2.0, None],
            STATION: ["a", None, "c"],
        }
    )
    write(client, table)
    back = read(client, T0, T0 + 10)
    assert back[TEMP].to_pylist() == [1.0, None, 3.0]
    assert back[WIND].to_pylist() == [None, 2.0, None]
    assert back[PRECIP].to_pylist() == [None] * 3  # never written at all: null-filled
    assert back[STATION].to_pylist() == ["a", None, "c"]
    assert back[NETWORK].to_pylist() == [None] * 3


def test_same_series_and_time_last_write_wins(client: InfluxClient) -> None:
    first = pa.table(
        {
            "time": pa.array([T0, T0], pa.int64()),
            "latitude": [1.0, 1.0],
            "longitude": [2.0, 2.0],
            TEMP: [10.0, 11.0],  # duplicate within one body: the later line wins
            WIND: [5.0, None],
            STATION: ["s", "s"],
        }
    )
    write(client, first)
    second = pa.table(
        {
            "time": pa.array([T0, T0], pa.int64()),
            "latitude": [1.0, 1.0],
            "longitude": [2.0, 2.0],
            TEMP: [12.0, 13.0],
            STATION: ["s", "other"],  # "other" is another series: its own point
        }
    )
    write(client, second)
    back = read(client, T0, T0 + 1)
    rows = {row[STATION]: row for row in back.to_pylist()}
    assert back.num_rows == 2
    assert rows["s"][TEMP] == 12.0
    # Fields merge per point: a later write without WIND does not erase the earlier value.
    assert rows["s"][WIND] == 5.0
    assert rows["other"][TEMP] == 13.0 and rows["other"][WIND] is None


def test_time_range_is_half_open(client: InfluxClient) -> None:
    times = [T0 - 1, T0, T0 + 1, T0 + 10 * SECOND - 1, T0 + 10 * SECOND]
    table = pa.table(
        {
            "time": pa.array(times, pa.int64()),
            "latitude": [0.0] * 5,
            "longitude": [0.0] * 5,
            TEMP: [float(i) for i in range(5)],
        }
    )
    write(client, table)
    back = read(client, T0, T0 + 10 * SECOND)
    assert back["timestamp"].cast(pa.int64()).to_pylist() == times[1:4]
    assert client.count("obs", T0, T0 + 10 * SECOND) == 3
    assert client.count("obs", T0 + 10 * SECOND, T0 + 20 * SECOND) == 1
    assert client.count("obs", 0, 1) == 0


def test_chunked_reading_in_slices(client: InfluxClient) -> None:
    n = 2_500
    stations = [f"st {i % 7}, \"x\"" for i in range(n)]
    table = pa.table(
        {
            "time": pa.array([T0 + (i // 7) * SECOND for i in range(n)], pa.int64()),
            "latitude": np.linspace(-90, 90, n),
            "longitude": np.linspace(-180, 180, n),
            TEMP: np.arange(n) / 7.0,
            STATION: stations,
        }
    )
    # Small bodies too: write_lines splits them on line boundaries.
    assert write(client, table, max_bytes=20_000) == n
    batches = list(
        client.read_window("obs", T0, T0 + 3_600 * SECOND, field_columns=[TEMP], tag_columns=[STATION], slice_rows=300, chunk_size=97)
    )
    assert len(batches) > 1
    assert all(0 < b.num_rows <= 300 for b in batches)
    back = pa.Table.from_batches(batches)
    assert back.num_rows == n
    got = sorted(zip(back["timestamp"].cast(pa.int64()).to_pylist(), back[STATION].to_pylist(), back[TEMP].to_pylist(), strict=True))
    want = sorted(zip(table["time"].to_pylist(), stations, table[TEMP].to_pylist(), strict=True))
    assert got == want


def test_stopping_early_releases_the_reader(client: InfluxClient) -> None:
    n = 3_000
    table = pa.table(
        {"time": pa.array(T0 + np.arange(n, dtype=np.int64)), "latitude": np.zeros(n), "longitude": np.zeros(n), TEMP: np.ones(n)}
    )
    write(client, table)
    batches = client.read_window("obs", T0, T0 + n, field_columns=[TEMP], tag_columns=[], slice_rows=100, chunk_size=10)
    assert next(batches).num_rows == 100
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "influx-csv-prefetch"]
    # The session is still usable afterwards.
    assert client.count("obs", T0, T0 + n) == n


def test_csv_chunks_carry_a_single_header(client: InfluxClient) -> None:
    """What 1.6.7 sends for chunked CSV: one header, then rows, flushed per chunk_size."""
    n = 50
    table = pa.table(
        {"time": pa.array(T0 + np.arange(n, dtype=np.int64)), "latitude": np.zeros(n), "longitude": np.zeros(n), TEMP: np.ones(n)}
    )
    write(client, table)
    blocks = list(client.query_csv_lines(f'SELECT {quote_ident(TEMP)} FROM "obs"', chunk_size=7))
    text = b"".join(blocks).decode()
    lines = text.splitlines()
    assert lines[0] == f"name,tags,time,{TEMP}"
    assert sum(line.startswith("name,tags,time") for line in lines) == 1
    assert len(lines) == 1 + n
    assert all(block.endswith(b"\n") for block in blocks)


def test_filter_on_a_hostile_tag_value(client: InfluxClient) -> None:
    write(client, hostile_table())
    for value in ["new\nline", "trailing\\", "single'quote", 'double"quote']:
        q = (
            f"SELECT \"latitude\", {quote_ident(STATION)}::tag FROM \"obs\" "
            f"WHERE {quote_ident(STATION)} = {quote_string(encode_tag_value(value))}"
        )
        text = b"".join(client.query_csv_lines(q)).decode()
        header, row = list(csv.reader(io.StringIO(text)))
        assert decode_tag_value(row[-1]) == value


def test_measurement_name_is_quoted(client: InfluxClient) -> None:
    table = pa.table({"time": pa.array([T0], pa.int64()), "latitude": [1.0], "longitude": [2.0], TEMP: [3.0]})
    weird = "we ird,\"m'"
    write(client, table, measurement=weird)
    assert read(client, T0, T0 + 1, measurement=weird)[TEMP].to_pylist() == [3.0]


def test_empty_window_yields_one_empty_batch_with_the_schema(client: InfluxClient) -> None:
    batches = list(client.read_window("nothing_here", T0, T0 + 1, field_columns=[TEMP], tag_columns=[STATION]))
    assert len(batches) == 1 and batches[0].num_rows == 0
    assert batches[0].schema == window_schema([TEMP], [STATION])


def test_missing_database_is_an_error_not_an_empty_window(influx_url: str, prefix: str) -> None:
    # 1.6.7's CSV answer drops "database not found" (200, empty body); the client re-asks in JSON.
    missing = InfluxClient(influx_url, f"{prefix}_missing")
    with pytest.raises(IonbeamError, match="database not found"):
        list(missing.read_window("obs", T0, T0 + 1, field_columns=[], tag_columns=[]))


def test_refused_and_partial_writes_raise_with_the_server_text(client: InfluxClient) -> None:
    with pytest.raises(IonbeamError, match="unable to parse") as caught:
        client.write(b"obs latitude=1,longitude=2 1\nobs latitude=oops 2\n")
    assert not isinstance(caught.value, TransientError)
    # A partial write: the good point is stored even though the request failed.
    assert client.count("obs", 0, 10) == 1


def test_bad_query_raises(client: InfluxClient) -> None:
    with pytest.raises(IonbeamError, match="error parsing query"):
        list(client.query_csv_lines("SELEC nothing"))
    with pytest.raises(IonbeamError, match="error parsing query"):
        client.query("SELEC nothing")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_transient() -> None:
    client = InfluxClient(f"http://127.0.0.1:{_closed_port()}", "db", timeout=5)
    with pytest.raises(TransientError, match="did not answer"):
        client.ping()
    with pytest.raises(TransientError):
        client.write(b"m f=1 1\n")
    with pytest.raises(TransientError):
        list(client.read_window("m", 0, 1, field_columns=[], tag_columns=[]))


def test_a_server_that_never_answers_is_transient() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts the connection; nobody ever reads it
        client = InfluxClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "db", timeout=0.5)
        with pytest.raises(TransientError):
            client.ping()


def test_server_errors_are_transient() -> None:
    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(503)
            body = b'{"error":"engine: cache maximum memory size exceeded"}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = InfluxClient(f"http://127.0.0.1:{server.server_address[1]}", "db", timeout=5)
        with pytest.raises(TransientError, match="cache maximum memory size exceeded"):
            client.write(b"m f=1 1\n")
    finally:
        server.shutdown()
        server.server_close()


def test_token_is_sent_and_not_shown(influx_url: str) -> None:
    client = InfluxClient(influx_url, "db", token="s3cret")
    assert client._session.headers["Authorization"] == "Token s3cret"
    assert "s3cret" not in repr(client)
