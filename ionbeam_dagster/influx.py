"""InfluxDB client over the 1.x HTTP API (/ping, /write, /query), with requests and pyarrow.

Only the 1.x API: it is all the local server (Debian's InfluxDB 1.6.7) has, and InfluxDB 2.x
and 3.x serve it too (buckets map to databases; pass ``token`` for them). The v1 Python
library is not used because it corrupts timestamps with pandas 3.

Reads use chunked CSV parsed by pyarrow.csv, the fastest of the server's formats measured
(CSV ~2.3 s per 1M rows, JSON+orjson ~6.3 s, msgpack ~5.2 s). Facts about 1.6.7's CSV that
shape the reader (measured, and confirmed in its source, httpd/response_writer.go):

- One header line ``name,tags,time,<columns...>`` per statement, not per chunk: chunked
  responses are the same bytes as unchunked ones, only flushed every ``chunk_size`` rows.
  A repeated header line is still dropped, should another server version emit one.
- Floats print in Go's shortest ``'f'`` form: 80.0 as ``80``, 1e-5 as ``0.00001``, 1e20 as
  ``100000000000000000000``: exact, but a type-inferring parser would make ints of them, so
  every column gets an explicit type.
- Query-level errors (parse errors) come back as 4xx with ``error\\n"<message>"``, but
  *statement* errors (e.g. ``database not found``) are silently dropped: 200 with an empty
  body. An empty CSV answer is therefore re-asked as JSON, which does carry the error.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Full, Queue
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from ionbeam_dagster.errors import IonbeamError, TransientError
from ionbeam_dagster.lineprotocol import decode_tag_value, iter_bodies

__all__ = ["InfluxClient", "quote_ident", "quote_string", "window_schema", "AXIS_FIELDS"]

#: Fields every point of a dataset carries; read_window always returns them first.
AXIS_FIELDS = ("latitude", "longitude")
# Network read size for streamed responses: big enough that Python overhead per block is
# negligible, small enough to keep memory bounded.
_BLOCK_BYTES = 1 << 20
# Blocks read ahead of the parser (memory: this many MB at most).
_PREFETCH_BLOCKS = 16


def _check_no_control(text: str, what: str, allowed: str = "") -> None:
    for ch in text:
        if (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch not in allowed:
            raise ValueError(f"{what}: {text!r} contains control character {ch!r}, which InfluxQL cannot express")


def quote_ident(name: str) -> str:
    """``name`` as an InfluxQL double-quoted identifier (any name InfluxDB can store).

    InfluxQL's string scanner knows the escapes ``\\\\``, ``\\"``, ``\\'`` and ``\\n``; a raw
    newline ends the token and ``\\r`` has no escape, so those are refused or escaped.
    """
    _check_no_control(name, "identifier", allowed="\t\n")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_string(value: str) -> str:
    """``value`` as an InfluxQL single-quoted string literal.

    A tag value is stored percent-encoded (lineprotocol.encode_tag_value); to filter on one,
    quote the encoded form.
    """
    _check_no_control(value, "string literal", allowed="\t\n")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def window_schema(field_columns: Sequence[str], tag_columns: Sequence[str]) -> pa.Schema:
    """The schema read_window yields: timestamp, latitude, longitude, sorted fields, tags."""
    fields, tags = _read_columns(field_columns, tag_columns)
    return pa.schema(
        [pa.field("timestamp", pa.timestamp("ns", "UTC"))]
        + [pa.field(name, pa.float64()) for name in (*AXIS_FIELDS, *fields)]
        + [pa.field(name, pa.string()) for name in tags]
    )


def _read_columns(field_columns: Sequence[str], tag_columns: Sequence[str]) -> tuple[list[str], list[str]]:
    fields = sorted(set(field_columns) - set(AXIS_FIELDS))
    tags = list(dict.fromkeys(tag_columns))
    clash = {*AXIS_FIELDS, *fields, "timestamp"} & set(tags)
    if clash:
        raise ValueError(f"tag columns {sorted(clash)} are also field or axis names; the output would have duplicate columns")
    return fields, tags


class InfluxClient:
    """One database on one InfluxDB server.

    Errors: connection failures, timeouts and 5xx raise TransientError (retry later: the
    writes are idempotent, same series + time is last-write-wins); anything the server
    refuses (4xx, statement errors) raises IonbeamError with the server's own text.
    """

    def __init__(self, url: str, database: str, token: str | None = None, timeout: float = 60) -> None:
        if not database:
            raise ValueError("database: must be a non-empty name")
        _check_no_control(database, "database")
        self.url = url.rstrip("/")
        self.database = database
        self.timeout = timeout
        self._session = requests.Session()
        # gzip (requests' default Accept-Encoding) makes loopback queries ~2x slower.
        self._session.headers["Accept-Encoding"] = "identity"
        if token:
            # InfluxDB 2.x/3.x v1-compatibility endpoints accept the API token this way.
            self._session.headers["Authorization"] = f"Token {token}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # no token in logs
        return f"InfluxClient({self.url!r}, {self.database!r})"

    # -- transport ---------------------------------------------------------------------

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self._session.headers)
        return session

    def _request(
        self, method: str, path: str, *, stream: bool = False, session: requests.Session | None = None, **kwargs: Any
    ) -> requests.Response:
        try:
            response = (session or self._session).request(
                method, self.url + path, timeout=self.timeout, stream=stream, **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"InfluxDB at {self.url} did not answer {method} {path}: {exc}") from exc
        if response.status_code >= 500:
            text = _error_text(response)
            response.close()
            raise TransientError(f"InfluxDB at {self.url} answered {response.status_code} to {method} {path}: {text}")
        return response

    def ping(self) -> str:
        """Check the server answers; returns its version (X-Influxdb-Version), "" if unsent."""
        response = self._request("GET", "/ping")
        if response.status_code not in (200, 204):
            raise IonbeamError(f"InfluxDB at {self.url} answered {response.status_code} to /ping: {_error_text(response)}")
        return response.headers.get("X-Influxdb-Version", "")

    # -- statements (small JSON answers) -------------------------------------------------

    def query(self, q: str, *, database: str | None = "") -> list[dict[str, Any]]:
        """Run InfluxQL statements; returns the JSON ``results`` (one dict per statement).

        Statement errors raise IonbeamError. ``database=None`` sends no ``db`` (server-level
        statements); the default is this client's database.
        """
        params = {"epoch": "ns"}
        db = self.database if database == "" else database
        if db is not None:
            params["db"] = db
        response = self._request("POST", "/query", params=params, data={"q": q})
        if response.status_code != 200:
            raise IonbeamError(f"InfluxDB refused {q!r} ({response.status_code}): {_error_text(response)}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise IonbeamError(f"InfluxDB answered {q!r} with non-JSON: {response.text[:200]!r}") from exc
        if "error" in payload:
            raise IonbeamError(f"InfluxDB refused {q!r}: {payload['error']}")
        results: list[dict[str, Any]] = payload.get("results", [])
        for result in results:
            if "error" in result:
                raise IonbeamError(f"InfluxDB refused {q!r}: {result['error']}")
        return results

    def databases(self) -> list[str]:
        results = self.query("SHOW DATABASES", database=None)
        return [row[0] for series in results[0].get("series", []) for row in series.get("values", [])]

    def ensure_database(self) -> None:
        """Create the database unless it exists (asked first: 2.x/3.x refuse CREATE DATABASE)."""
        if self.database not in self.databases():
            self.query(f"CREATE DATABASE {quote_ident(self.database)}", database=None)

    def drop_database(self) -> None:
        """Drop the database with all its data; dropping a missing database is not an error."""
        self.query(f"DROP DATABASE {quote_ident(self.database)}", database=None)

    def tag_keys(self, measurement: str) -> list[str]:
        """Tag keys of ``measurement`` (sorted; [] if it does not exist)."""
        return self._single_column(f"SHOW TAG KEYS FROM {quote_ident(measurement)}")

    def field_keys(self, measurement: str) -> list[str]:
        """Field keys of ``measurement`` (sorted; [] if it does not exist)."""
        return self._single_column(f"SHOW FIELD KEYS FROM {quote_ident(measurement)}")

    def _single_column(self, q: str) -> list[str]:
        results = self.query(q)
        return sorted(row[0] for series in results[0].get("series", []) for row in series.get("values", []))

    def count(self, measurement: str, start_ns: int, end_ns: int) -> int:
        """Points of ``measurement`` in [start_ns, end_ns).

        COUNT(*) counts per field; the largest count is the number of points as long as one
        field is in every point, which latitude is for every dataset this platform writes.
        """
        q = f"SELECT COUNT(*) FROM {quote_ident(measurement)} WHERE {_time_range(start_ns, end_ns)}"
        series = self.query(q)[0].get("series", [])
        counts = [int(v) for s in series for row in s.get("values", []) for v in row[1:] if v is not None]
        return max(counts, default=0)

    # -- writes ----------------------------------------------------------------------------

    def write(self, body: bytes) -> None:
        """Write one line-protocol body (timestamps in ns).

        A 400 may be a *partial* write: InfluxDB stores the good points and names the bad
        ones; the IonbeamError carries that text. Retrying a whole body is safe because the
        same series + time is overwritten, never duplicated.
        """
        self._write(body, self._session)

    def _write(self, body: bytes, session: requests.Session) -> None:
        response = self._request(
            "POST",
            "/write",
            params={"db": self.database, "precision": "ns"},
            data=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            session=session,
        )
        if not 200 <= response.status_code < 300:
            raise IonbeamError(
                f"InfluxDB refused a write of {len(body)} bytes to {self.database!r} "
                f"({response.status_code}): {_error_text(response)}"
            )

    def write_lines(self, lines: pa.Array | pa.ChunkedArray, max_bytes: int = 10_000_000) -> int:
        """Write encoded lines (lineprotocol.encode_lines) in bodies of at most ``max_bytes``
        (the server refuses more than 25 MB); returns the number of points written."""
        points = 0
        for body in iter_bodies(lines, max_bytes):
            self.write(body)
            points += body.count(b"\n")
        return points

    def write_bodies(self, bodies: Iterable[bytes], *, writers: int = 1) -> int:
        """Write line-protocol bodies with up to ``writers`` requests in flight; returns how
        many bodies were written.

        Why concurrent: the server parses each request on a core of its own, so two requests
        in flight keep two cores busy where one leaves the second idle between requests.
        ``bodies`` is consumed only as a writer frees up, so a generator that encodes as it
        goes (lineprotocol.iter_encoded_bodies) works while the server does, and at most
        ``writers`` bodies wait in memory. The first failure is raised once the requests in
        flight have ended; bodies already written stay written, which is safe to retry
        (same series + time is overwritten, never duplicated).
        """
        if writers < 1:
            raise ValueError(f"writers must be at least 1, got {writers}")
        if writers == 1:
            count = 0
            for body in bodies:
                self.write(body)
                count += 1
            return count
        # requests.Session is not documented as thread-safe: one per writer.
        sessions: Queue[requests.Session] = Queue()
        for _ in range(writers):
            sessions.put(self._new_session())

        def send(body: bytes) -> None:
            session = sessions.get()
            try:
                self._write(body, session)
            finally:
                sessions.put(session)

        count = 0
        in_flight: deque[Future[None]] = deque()
        try:
            with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="influx-write") as pool:
                for body in bodies:
                    if len(in_flight) >= writers:
                        in_flight.popleft().result()
                    in_flight.append(pool.submit(send, body))
                    count += 1
                while in_flight:
                    in_flight.popleft().result()
        finally:
            while not sessions.empty():
                sessions.get().close()
        return count

    # -- reads -----------------------------------------------------------------------------

    def query_csv_lines(self, q: str, chunk_size: int = 50_000) -> Iterator[bytes]:
        """Stream a query's CSV answer as blocks of whole lines (each block ends with ``\\n``).

        Blocks, not single lines, because splitting a million lines in Python costs more
        than parsing them with pyarrow. The header line comes first, as the server sends it.
        ``chunk_size`` is the server's rows per flushed chunk.
        """
        response = self._request(
            "POST",
            "/query",
            params={"db": self.database, "epoch": "ns", "chunked": "true", "chunk_size": str(chunk_size)},
            data={"q": q},
            headers={"Accept": "application/csv"},
            stream=True,
        )
        with response:
            if response.status_code != 200:
                raise IonbeamError(f"InfluxDB refused {q!r} ({response.status_code}): {_error_text(response)}")
            kind = response.headers.get("Content-Type", "")
            if "csv" not in kind:
                raise IonbeamError(f"InfluxDB answered {q!r} with {kind!r}, not CSV: {response.text[:200]!r}")
            rest = b""
            try:
                for block in response.iter_content(chunk_size=_BLOCK_BYTES):
                    cut = block.rfind(b"\n")
                    if cut < 0:
                        rest += block
                        continue
                    yield rest + block[: cut + 1]
                    rest = block[cut + 1 :]
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                raise TransientError(f"InfluxDB at {self.url} broke off the answer to {q!r}: {exc}") from exc
            if rest:
                yield rest + b"\n"

    def read_window(
        self,
        measurement: str,
        start_ns: int,
        end_ns: int,
        *,
        field_columns: Sequence[str],
        tag_columns: Sequence[str],
        slice_rows: int = 200_000,
        chunk_size: int = 50_000,
    ) -> Iterator[pa.RecordBatch]:
        """Points of ``measurement`` with time in [start_ns, end_ns), streamed in batches of at
        most ``slice_rows`` rows, in :func:`window_schema` order.

        latitude and longitude are always read. Tag values are percent-decoded. Columns absent
        from the database come back as nulls. At least one batch is yielded (empty if there
        are no points), so a consumer always learns the schema.
        """
        if slice_rows <= 0:
            raise ValueError(f"slice_rows must be positive, got {slice_rows}")
        fields, tags = _read_columns(field_columns, tag_columns)
        schema = window_schema(fields, tags)
        selected = [(name, "field") for name in (*AXIS_FIELDS, *fields)] + [(name, "tag") for name in tags]
        # The ::field / ::tag casts pick the right one if a name is both a tag and a field.
        columns = ", ".join(f"{quote_ident(name)}::{kind}" for name, kind in selected)
        q = f"SELECT {columns} FROM {quote_ident(measurement)} WHERE {_time_range(start_ns, end_ns)}"

        parser = _CsvSlices(selected, schema, slice_rows)
        rows = 0
        for block in _prefetch(self.query_csv_lines(q, chunk_size=chunk_size), depth=_PREFETCH_BLOCKS):
            for batch in parser.feed(block):
                rows += batch.num_rows
                yield batch
        for batch in parser.finish():
            rows += batch.num_rows
            yield batch
        if rows == 0:
            # 1.6.7's CSV drops statement errors (a missing database reads as empty); JSON
            # carries them, and costs nothing here because the answer is empty anyway.
            self.query(q)
            yield pa.RecordBatch.from_pylist([], schema=schema)


def _prefetch(blocks: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """Read ``blocks`` on a thread, up to ``depth`` ahead, while the caller parses.

    The server produces CSV slower than pyarrow parses it; without this the two alternate
    and the parse time adds to the wait. The bounded queue keeps memory at ``depth`` blocks.
    Errors on the reading thread are re-raised here; closing this generator stops it.
    """
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def read() -> None:
        try:
            for block in blocks:
                if not put(("block", block)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()  # releases the HTTP response if the consumer stopped early

    reader = threading.Thread(target=read, name="influx-csv-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = queue.get()
            if kind == "block":
                yield item
            elif kind == "end":
                return
            else:
                raise item
    finally:
        stop.set()
        reader.join(timeout=5)


def _time_range(start_ns: int, end_ns: int) -> str:
    # Integer literals compared with time are nanoseconds in InfluxQL; the window is half-open.
    return f"time >= {int(start_ns)} AND time < {int(end_ns)}"


def _error_text(response: requests.Response) -> str:
    """The server's own explanation: JSON ``error``, CSV ``error`` row, or the header."""
    header = response.headers.get("X-Influxdb-Error", "")
    try:
        text = response.text
    except requests.RequestException:
        text = ""
    text = text.strip()
    if text.startswith("{"):
        try:
            payload = response.json()
            return str(payload.get("error") or payload)
        except ValueError:
            pass
    if text.startswith("error\n"):
        return text.split("\n", 1)[1].strip().strip('"')
    return text[:500] or header


class _CsvSlices:
    """Turns blocks of CSV lines into RecordBatches of at most ``slice_rows`` rows.

    Lines are buffered until a slice's worth has arrived, then parsed in one pyarrow.csv call
    (multi-threaded, typed), so memory stays at about one slice however large the window.
    """

    def __init__(self, selected: list[tuple[str, str]], schema: pa.Schema, slice_rows: int) -> None:
        self.selected = selected
        self.schema = schema
        self.slice_rows = slice_rows
        self.header: bytes | None = None
        self.pending: list[bytes] = []
        self.pending_rows = 0
        # Positional names: the server's header can repeat a name (a tag called "name" or
        # "tags" would sit next to the fixed name,tags columns), so columns are mapped by
        # position after the header has been checked.
        self.names = ["name", "tags", "time"] + [f"c{i}" for i in range(len(selected))]
        types: dict[str, pa.DataType] = {"time": pa.int64()}
        for i, (_, kind) in enumerate(selected):
            types[f"c{i}"] = pa.float64() if kind == "field" else pa.string()
        self.read_options = pacsv.ReadOptions(column_names=self.names, block_size=8 << 20)
        # Our tag values never hold a newline (percent-encoded), so values cannot span lines,
        # which lets pyarrow split blocks between threads.
        self.parse_options = pacsv.ParseOptions(newlines_in_values=False)
        self.convert_options = pacsv.ConvertOptions(
            column_types=types,
            include_columns=self.names[2:],
            # Only the empty cell is null: the defaults would also read a station called
            # "NA" or "null" as null.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )

    def feed(self, block: bytes) -> Iterator[pa.RecordBatch]:
        if self.header is None:
            end = block.find(b"\n")
            self.header = block[: end + 1]
            self._check_header(self.header)
            block = block[end + 1 :]
        if self.header in block:
            block = self._drop_headers(block)
        if not block:
            return
        self.pending.append(block)
        self.pending_rows += block.count(b"\n")
        if self.pending_rows >= self.slice_rows:
            yield from self._flush()

    def finish(self) -> Iterator[pa.RecordBatch]:
        yield from self._flush()

    def _check_header(self, line: bytes) -> None:
        text = line.decode("utf-8").rstrip("\r\n")
        if text == "error":
            raise IonbeamError("InfluxDB answered with an error instead of data")
        columns = next(csv.reader(io.StringIO(text)))
        expected = ["name", "tags", "time"] + [name for name, _ in self.selected]
        if columns != expected:
            raise IonbeamError(f"InfluxDB CSV header {columns} does not match the query's columns {expected}")

    def _drop_headers(self, block: bytes) -> bytes:
        # A header repeated at a chunk boundary (not what 1.6.7 does, but cheap to tolerate).
        # No data line can equal it: a data line's time column is a number.
        assert self.header is not None
        while block.startswith(self.header):
            block = block[len(self.header) :]
        return block.replace(b"\n" + self.header, b"\n")

    def _flush(self) -> Iterator[pa.RecordBatch]:
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending, self.pending_rows = [], 0
        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=self.read_options,
                parse_options=self.parse_options,
                convert_options=self.convert_options,
            )
        except pa.ArrowInvalid as exc:
            raise IonbeamError(f"InfluxDB CSV could not be read as the query's columns: {exc}") from exc
        if table.num_rows == 0:
            return
        table = table.combine_chunks()
        arrays = [table.column("time").chunk(0).cast(pa.timestamp("ns", "UTC"))]
        for i, (_, kind) in enumerate(self.selected):
            column = table.column(f"c{i}").chunk(0)
            arrays.append(decode_tag_value(column) if kind == "tag" else column)
        # The query lists axes, sorted fields, then tags: the schema's order already.
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        for offset in range(0, batch.num_rows, self.slice_rows):
            yield batch.slice(offset, self.slice_rows)
