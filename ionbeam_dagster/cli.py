"""``ionbeam-dagster``: command-line tools.

``ionbeam-dagster publish PATH --mapping MAPPING.yaml`` publishes a CSV, Parquet or Arrow file
the way any ionbeam source does: the payload goes to the object store, then the
IngestDataCommand to the broker (the platform's ingestion sensor takes it from there).
``--dry-run`` reads and validates the file exactly as ingestion will (same parser, same drop
rules) and prints what would be ingested and what dropped, by reason, touching nothing.

MAPPING.yaml::

    dataset: my_dataset          # a dataset of the catalog (or --dataset)
    csv: {delimiter: ";"}        # optional; CSV only (default: guessed from the header)
    ingestion_map:               # the ionbeam DataIngestionMap
      datetime: {from_col: time}
      lat: {from_col: latitude}
      lon: {from_col: longitude}
      canonical_variables:
        - {column: t2m, standard_name: air_temperature, cf_unit: degC, level: 2.0}
      metadata_variables:
        - {column: station_id}

Settings are the platform's (IONBEAM_OBJECT_STORE, IONBEAM_S3_ENDPOINT, IONBEAM_AMQP_URL,
IONBEAM_PREFIX, IONBEAM_DATASETS) with the same defaults. Exit status: 0 done, 1 a service
failed (nothing was published), 2 the input or the mapping is wrong (the message names the field).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from ionbeam_dagster.catalog import DatasetSpec, load_catalog
from ionbeam_dagster.contracts import DataIngestionMap, as_utc, describe_validation_error, format_time
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.errors import CatalogError, IonbeamError, Rejection, TransientError
from ionbeam_dagster.normalise import DROP_REASONS, normalise, observation_times

__all__ = ["main", "Mapping", "load_mapping", "read_table"]

_MAPPING_KEYS = ("dataset", "ingestion_map", "csv")
_CSV_KEYS = ("delimiter",)
_FORMATS = ("csv", "parquet", "arrow")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
}
# A single-instant file still needs a range with start < end.
_SINGLE_INSTANT = timedelta(seconds=1)


class CliError(Exception):
    """Bad input: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Mapping:
    dataset: str | None
    ingestion_map: DataIngestionMap
    delimiter: str | None = None


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_mapping(path: Path) -> Mapping:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot read the mapping: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise CliError(f"{path}: expected a mapping with an 'ingestion_map' key")
    for key in document:
        if key not in _MAPPING_KEYS:
            raise CliError(f"{path}: unknown key {key!r}{_did_you_mean(key, _MAPPING_KEYS)}; known: {', '.join(_MAPPING_KEYS)}")
    if "ingestion_map" not in document:
        raise CliError(f"{path}: ingestion_map: required (the DataIngestionMap of the file's columns)")
    try:
        imap = DataIngestionMap.model_validate(document["ingestion_map"])
    except ValidationError as exc:
        raise CliError(f"{path}: ingestion_map.{describe_validation_error(exc)}") from None
    dataset = document.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise CliError(f"{path}: dataset: expected a dataset name, got {type(dataset).__name__}")
    options = document.get("csv") or {}
    if not isinstance(options, dict):
        raise CliError(f"{path}: csv: expected a mapping such as {{delimiter: ';'}}")
    for key in options:
        if key not in _CSV_KEYS:
            raise CliError(f"{path}: csv: unknown key {key!r}; known: {', '.join(_CSV_KEYS)}")
    delimiter = options.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise CliError(f"{path}: csv.delimiter: expected one character, got {delimiter!r}")
    return Mapping(dataset=dataset, ingestion_map=imap, delimiter=delimiter)


# ---------------------------------------------------------------- reading


def _format_of(path: Path, head: bytes) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffixes[-1]]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    return "csv"


def _guess_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_table(path: Path, imap: DataIngestionMap, *, fmt: str | None = None, delimiter: str | None = None) -> tuple[pa.Table, str]:
    """The file as a table, and its format. CSV metadata columns are read as text, so ids
    such as ``00123`` keep their zeros; everything else is typed as ingestion would read it."""
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(8)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CliError(f"{path}: cannot read: {exc}") from None
    fmt = fmt or _format_of(path, head)
    try:
        if fmt == "parquet":
            return pq.read_table(str(path)), fmt
        if fmt == "arrow":
            try:
                return paipc.open_file(str(path)).read_all(), fmt
            except pa.ArrowInvalid:
                with pa.OSFile(str(path)) as source:
                    return paipc.open_stream(source).read_all(), fmt
        with pa.input_stream(str(path), compression="detect") as stream:
            text_head = stream.read(64 * 1024).decode("utf-8", "replace")
        header_line = text_head.splitlines()[0] if text_head else ""
        delimiter = delimiter or _guess_delimiter(header_line)
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        text_columns = {m.column: pa.string() for m in imap.metadata_variables if m.column in header}
        table = pacsv.read_csv(
            str(path),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types=text_columns, strings_can_be_null=True),
        )
        return table, "csv"
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CliError(f"{path}: not a readable {fmt} file: {exc}") from None


# ---------------------------------------------------------------- the range


def _check_axes(table: pa.Table, imap: DataIngestionMap) -> None:
    """Ingestion rejects a payload without its time, latitude or longitude column whole
    (``missing_column``); say so before anything else, in the same words."""
    for field, column in (("datetime", imap.datetime.column), ("lat", imap.lat.column), ("lon", imap.lon.column)):
        if column not in table.column_names:
            shown = ", ".join(repr(c) for c in table.column_names[:50]) or "none"
            raise CliError(f"ingestion_map.{field}: column {column!r} is not in the payload (columns: {shown})")


def _parse_time(option: str, value: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise CliError(f"{option}: {value!r} is not an ISO 8601 time such as 2024-01-01T00:00:00Z") from None


def data_range(table: pa.Table, imap: DataIngestionMap) -> tuple[datetime, datetime] | None:
    column = imap.datetime.column
    if column not in table.column_names or table.num_rows == 0:
        return None
    times = observation_times(table.column(column), imap.datetime.dtype)
    lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
    if lo is None:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + timedelta(microseconds=lo // 1000), epoch + timedelta(microseconds=-(-hi // 1000))


def resolve_range(table: pa.Table, imap: DataIngestionMap, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """--start/--end, or the first and last observation times of the file (inclusive: ingestion
    keeps rows at the end time)."""
    found = data_range(table, imap)
    lo = _parse_time("--start", start) if start else (found[0] if found else None)
    hi = _parse_time("--end", end) if end else (found[1] if found else None)
    if lo is None or hi is None:
        raise CliError(
            f"ingestion_map.datetime: column {imap.datetime.column!r} has no readable time; give --start and --end "
            "(a file without observations still covers the range you give)"
        )
    if lo == hi and not (start and end):
        hi = lo + _SINGLE_INSTANT
    if lo >= hi:
        raise CliError(f"--start: {format_time(lo)} must be before --end {format_time(hi)}")
    return lo, hi


# ---------------------------------------------------------------- reporting


def _report(
    out: TextIO,
    *,
    path: Path,
    fmt: str,
    table: pa.Table,
    spec: DatasetSpec,
    imap: DataIngestionMap,
    start: datetime,
    end: datetime,
    normalised: Any,
    dry_run: bool,
) -> None:
    kept = normalised.table
    dropped = normalised.dropped
    verb = "would ingest" if dry_run else "ingesting"
    station = next((m.column for m in imap.metadata_variables if m.column in kept.column_names), None)
    stations = int(pc.count_distinct(kept.column(station)).as_py()) if station and kept.num_rows else 0
    print(f"file:      {path} ({fmt}, {table.num_rows} rows, {table.num_columns} columns)", file=out)
    print(f"dataset:   {spec.name} ({format_duration(spec.aggregation_span)} windows)", file=out)
    print(f"range:     {format_time(start)} .. {format_time(end)}", file=out)
    print(f"{verb}: {kept.num_rows} rows" + (f" ({stations} distinct {station})" if station else ""), file=out)
    print(f"{'would drop' if dry_run else 'dropping'}: {sum(dropped.values())} rows", file=out)
    for reason in DROP_REASONS:
        if dropped.get(reason):
            print(f"  {reason:<22} {dropped[reason]}", file=out)
    print("variables:", file=out)
    for variable in imap.canonical_variables:
        present = variable.column in table.column_names
        count = int(pc.count(kept.column(variable.canonical_name)).as_py()) if present else 0
        note = f"{count} values" if present else "column absent: all null"
        print(f"  {variable.column} -> {variable.canonical_name} ({note})", file=out)
    metadata = [m.column for m in imap.metadata_variables]
    if metadata:
        absent = [c for c in metadata if c not in table.column_names]
        print(f"metadata:  {', '.join(metadata)}" + (f" (absent: {', '.join(absent)})" if absent else ""), file=out)
    used = {imap.datetime.column, imap.lat.column, imap.lon.column, *(v.column for v in imap.canonical_variables), *metadata}
    ignored = [c for c in table.column_names if c not in used]
    if ignored:
        print(f"not mapped (ignored): {', '.join(ignored)}", file=out)


# ---------------------------------------------------------------- publish


def _dataset(mapping: Mapping, override: str | None) -> DatasetSpec:
    from ionbeam_dagster.resources import catalog_path

    name = override or mapping.dataset
    if not name:
        raise CliError("dataset: give it in the mapping (dataset: NAME) or with --dataset")
    path = catalog_path()
    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        raise CliError(str(exc)) from None
    spec = catalog.get(name)
    if spec is None:
        known = ", ".join(catalog.names) or "none"
        raise CliError(f"dataset: {name!r} is not in the catalog {path}{_did_you_mean(name, catalog.names)} (known: {known})")
    return spec


def publish(args: argparse.Namespace, out: TextIO) -> int:
    from ionbeam_dagster.broker import Broker, Topology
    from ionbeam_dagster.objectstore import ObjectStore
    from ionbeam_dagster.resources import plain_setting
    from ionbeam_dagster.sources.publish import build_command, publish_payload

    mapping = load_mapping(Path(args.mapping))
    spec = _dataset(mapping, args.dataset)
    path = Path(args.path)
    table, fmt = read_table(path, mapping.ingestion_map, fmt=args.format, delimiter=args.delimiter or mapping.delimiter)
    _check_axes(table, mapping.ingestion_map)
    start, end = resolve_range(table, mapping.ingestion_map, args.start, args.end)
    command = build_command(
        dataset=spec, ingestion_map=mapping.ingestion_map, start=start, end=end, payload_location="raw/dry-run.parquet"
    )
    try:
        # The very checks ingestion runs: what is reported here is what ingestion will do.
        normalised = normalise(table, command, now=datetime.now(UTC))
    except Rejection as rejection:
        raise CliError(rejection.message) from None
    if args.dry_run:
        print("dry run: nothing written, nothing published", file=out)
        _report(out, path=path, fmt=fmt, table=table, spec=spec, imap=mapping.ingestion_map, start=start, end=end,
                normalised=normalised, dry_run=True)
        return 0

    store = ObjectStore.from_url(plain_setting("IONBEAM_OBJECT_STORE") or "", s3_endpoint=plain_setting("IONBEAM_S3_ENDPOINT") or None)
    prefix = plain_setting("IONBEAM_PREFIX") or "ionbeam"
    with Broker(plain_setting("IONBEAM_AMQP_URL") or "", Topology(prefix)) as broker:
        broker.declare()
        published = publish_payload(
            table, dataset=spec, ingestion_map=mapping.ingestion_map, start=start, end=end,
            store=store, broker=broker, source=f"cli:{path.name}",
        )
    _report(out, path=path, fmt=fmt, table=table, spec=spec, imap=mapping.ingestion_map, start=start, end=end,
            normalised=normalised, dry_run=False)
    print(f"payload:   {store.url(published.payload_location)}", file=out)
    print(f"command:   {published.id} published to {prefix}.ingestion (confirmed)", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ionbeam-dagster", description="ionbeam on Dagster: command-line tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "publish",
        help="publish a CSV, Parquet or Arrow file as an ionbeam payload",
        description="Write the file to the object store and publish its IngestDataCommand "
        "(or, with --dry-run, show what ingestion would keep and drop).",
    )
    p.add_argument("path", help="CSV (.csv, .tsv, .txt, optionally .gz), Parquet or Arrow IPC file")
    p.add_argument("--mapping", required=True, help="YAML with the ingestion_map (and the dataset name)")
    p.add_argument("--dataset", help="catalog dataset (overrides the mapping's)")
    p.add_argument("--start", help="start of the range the file covers, ISO 8601 (default: its first observation)")
    p.add_argument("--end", help="end of the range, ISO 8601 (default: its last observation)")
    p.add_argument("--format", choices=_FORMATS, help="file format (default: from the suffix, else the content)")
    p.add_argument("--delimiter", help="CSV delimiter (default: the mapping's csv.delimiter, else guessed)")
    p.add_argument("--dry-run", action="store_true", help="validate and report; write and publish nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "publish":
            return publish(args, sys.stdout)
    except CliError as exc:
        print(f"ionbeam-dagster {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (TransientError, TimeoutError, OSError) as exc:
        print(f"ionbeam-dagster {args.command}: a service failed, nothing was published: {exc}", file=sys.stderr)
        return 1
    except (IonbeamError, ValueError) as exc:
        print(f"ionbeam-dagster {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
