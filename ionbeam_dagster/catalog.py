"""The dataset catalog: the YAML file an operator edits to declare datasets.

Each dataset becomes a Dagster asset whose partitions are its windows, so a mistake here
(a span cron cannot express, a start between two windows, a typo in a key) would surface
much later as missing or misaligned partitions. The loader therefore refuses anything it
does not understand, and every error names the entry and the field, all of them at once,
so one edit fixes one read.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from ionbeam_dagster.contracts import DatasetMetadata, Link, as_utc, check_dataset_name, format_time
from ionbeam_dagster.describe import kind_of as _kind
from ionbeam_dagster.durations import format_duration, parse_duration
from ionbeam_dagster.errors import CatalogError
from ionbeam_dagster.windows import check_span, window_of

__all__ = [
    "KNOWN_EXPORTERS",
    "DEFAULT_CATALOG_PATH",
    "DatasetSpec",
    "Catalog",
    "load_catalog",
    "parse_catalog",
]

KNOWN_EXPORTERS: tuple[str, ...] = ("geoparquet", "odb", "netcdf")
DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent / "catalog" / "datasets.yaml"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOP_KEYS = ("datasets",)
_REQUIRED = ("name", "aggregation_span", "start")
_ENTRY_KEYS = (
    "name",
    "description",
    "aggregation_span",
    "subject_to_change_window",
    "start",
    "allow_incomplete_windows",
    "exporters",
    "keywords",
    "source_links",
    "station_column",
    "licence",
    "attribution",
    "odb_varno",
)
_LINK_KEYS = ("mime_type", "title", "href")


# ---------------------------------------------------------------- field checks
# Each returns the normalised value or raises ValueError with the problem (no field name:
# the caller knows where it is). DatasetSpec and the YAML parser share them, so a spec built
# in code obeys the same rules as one read from the file.


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return check_dataset_name(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"{value} is negative: durations must not be negative")
        return value
    if not isinstance(value, str):
        # A bare number is ambiguous (seconds? minutes?), and YAML turns 1:30 into 90.
        raise ValueError(f"expected an ISO 8601 duration string such as PT10M, got {_kind(value)} {value!r}")
    return parse_duration(value)


def _span(value: Any) -> timedelta:
    span = _duration(value)
    try:
        check_span(span)
    except ValueError as exc:
        # check_span names the canonical spelling; show the operator's own too (PT90M = PT1H30M).
        canonical = format_duration(span)
        if isinstance(value, str) and value != canonical:
            raise ValueError(f"{value} (= {canonical}){str(exc)[len(canonical):]}") from None
        raise
    return span


def _start(value: Any) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        # YAML reads "2024-01-01" as a date: midnight UTC is the only sensible reading.
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time such as 2024-01-01T00:00:00Z") from None
    raise ValueError(f"expected an ISO 8601 time such as 2024-01-01T00:00:00Z, got {_kind(value)}")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)} {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of strings, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"[{i}]: expected a string, got {_kind(item)}")
    return tuple(value)


def _exporters(value: Any) -> tuple[str, ...]:
    exporters = _strings(value)
    for i, name in enumerate(exporters):
        if name not in KNOWN_EXPORTERS:
            raise ValueError(f"[{i}]: unknown exporter {name!r}{_did_you_mean(name, KNOWN_EXPORTERS)}; known: {', '.join(KNOWN_EXPORTERS)}")
        if name in exporters[:i]:
            raise ValueError(f"[{i}]: exporter {name!r} is listed twice")
    return exporters


def _links(value: Any) -> tuple[Link, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of links {{mime_type, title, href}}, got {_kind(value)}")
    links = []
    for i, item in enumerate(value):
        if isinstance(item, Link):
            links.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ValueError(f"[{i}]: expected a mapping {{mime_type, title, href}}, got {_kind(item)}")
        for key in item:
            if key not in _LINK_KEYS:
                raise ValueError(f"[{i}]: unknown key {key!r}{_did_you_mean(key, _LINK_KEYS)}")
        for key in _LINK_KEYS:
            if key not in item:
                raise ValueError(f"[{i}].{key}: required")
            if not isinstance(item[key], str):
                raise ValueError(f"[{i}].{key}: expected a string, got {_kind(item[key])}")
        links.append(Link(**item))
    return tuple(links)


def _column(value: Any) -> str:
    column = _text(value)
    if not column:
        raise ValueError("must not be empty")
    if _CONTROL.search(column):
        raise ValueError(f"{column!r} must not contain control characters")
    return column


def _odb_varno(value: Any) -> tuple[Mapping[str, Any], ...]:
    """Overrides of the ODB exporter's (standard_name, level, method, period) -> varno rules,
    checked here so a typo fails the catalog's load, not the first export."""
    from ionbeam_dagster.exporters.varno import VarnoMapping, VarnoMappingError

    try:
        VarnoMapping.from_overrides(value)
    except VarnoMappingError as exc:
        raise ValueError("; ".join(exc.problems)) from None
    return tuple(dict(entry) for entry in value)


def _aligned(start: datetime, span: timedelta) -> None:
    # Dagster's first partition starts at `start`; off a boundary, partitions and windows differ.
    floor = window_of(start, span).start
    if floor != start:
        raise ValueError(
            f"{format_time(start)} is not the start of a {format_duration(span)} window "
            f"(windows are aligned to the epoch); use {format_time(floor)}"
        )


_CHECKS = {
    "name": _name,
    "description": _text,
    "aggregation_span": _span,
    "subject_to_change_window": _duration,
    "start": _start,
    "allow_incomplete_windows": _bool,
    "exporters": _exporters,
    "keywords": _strings,
    "source_links": _links,
    "station_column": _column,
    "licence": _text,
    "attribution": _text,
    "odb_varno": _odb_varno,
}


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field_message(field: str, problem: str) -> str:
    return f"{field}{problem}" if problem.startswith("[") else f"{field}: {problem}"


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class DatasetSpec:
    """One declared dataset: its windows, late-data policy, exporters and description."""

    name: str
    description: str
    aggregation_span: timedelta
    subject_to_change_window: timedelta
    start: datetime
    allow_incomplete_windows: bool = False
    exporters: tuple[str, ...] = ("geoparquet",)
    keywords: tuple[str, ...] = ()
    source_links: tuple[Link, ...] = ()
    station_column: str = "station_id"
    #: Terms of the data (e.g. ``ODbL-1.0``) and the credit line they require; shown with the
    #: dataset's assets and in the README. Not in DatasetMetadata: the wire contract is fixed.
    licence: str = ""
    attribution: str = ""
    #: ODB exporter: overrides of the default varno mapping (see exporters/varno.py).
    odb_varno: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for field, check in _CHECKS.items():
            try:
                value = check(getattr(self, field))
            except ValueError as exc:
                raise CatalogError(f"dataset {self.name!r}: {_field_message(field, str(exc))}") from None
            object.__setattr__(self, field, value)
        try:
            _aligned(self.start, self.aggregation_span)
        except ValueError as exc:
            raise CatalogError(f"dataset {self.name!r}: start: {exc}") from None

    def metadata(self) -> DatasetMetadata:
        """The DatasetMetadata this platform puts in the messages it sends for the dataset."""
        return DatasetMetadata(
            name=self.name,
            description=self.description,
            aggregation_span=self.aggregation_span,
            subject_to_change_window=self.subject_to_change_window,
            source_links=list(self.source_links),
            keywords=list(self.keywords),
        )


@dataclass(frozen=True)
class Catalog:
    """Datasets by name, in the order the file declares them."""

    datasets: dict[str, DatasetSpec]

    def get(self, name: str) -> DatasetSpec | None:
        return self.datasets.get(name)

    def __iter__(self) -> Iterator[DatasetSpec]:
        return iter(self.datasets.values())

    def __len__(self) -> int:
        return len(self.datasets)

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.datasets)


# ---------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        # "<<: *anchor" merges may legitimately be overridden by the mapping's own keys.
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: construct_mapping reports it properly
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and validate the catalog file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """Validate catalog YAML; a CatalogError lists every problem, one per line."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, Mapping):
        raise CatalogError(f"{source}: expected a mapping with a 'datasets' list, got {_kind(document)}")
    errors: list[str] = []
    for key in document:
        if key not in _TOP_KEYS:
            errors.append(f"unknown top-level key {key!r}{_did_you_mean(key, _TOP_KEYS)}")
    entries = document.get("datasets")
    if entries is None:
        entries = []
        if "datasets" not in document:
            errors.append("datasets: required (a list of dataset entries)")
    if not isinstance(entries, list):
        errors.append(f"datasets: expected a list of dataset entries, got {_kind(entries)}")
        entries = []

    datasets: dict[str, DatasetSpec] = {}
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        spec = _parse_entry(index, entry, errors)
        if spec is None:
            continue
        if spec.name in datasets:
            errors.append(
                f"datasets[{index}] ({spec.name}): name: {spec.name!r} is already declared by "
                f"datasets[{first_index[spec.name]}]"
            )
            continue
        datasets[spec.name] = spec
        first_index[spec.name] = index
    if errors:
        raise CatalogError("\n".join(f"{source}: {error}" for error in errors))
    return Catalog(datasets)


def _parse_entry(index: int, entry: Any, errors: list[str]) -> DatasetSpec | None:
    if not isinstance(entry, Mapping):
        errors.append(f"datasets[{index}]: expected a mapping, got {_kind(entry)}")
        return None
    raw_name = entry.get("name")
    label = f"datasets[{index}] ({raw_name})" if isinstance(raw_name, str) else f"datasets[{index}]"
    before = len(errors)
    for key in entry:
        if key not in _ENTRY_KEYS:
            errors.append(f"{label}: unknown key {key!r}{_did_you_mean(key, _ENTRY_KEYS)}")
    for key in _REQUIRED:
        if key not in entry:
            errors.append(f"{label}: {key}: required")
    values: dict[str, Any] = {}
    for field, check in _CHECKS.items():
        if field in entry:
            try:
                values[field] = check(entry[field])
            except ValueError as exc:
                errors.append(f"{label}: {_field_message(field, str(exc))}")
    if "start" in values and "aggregation_span" in values:
        try:
            _aligned(values["start"], values["aggregation_span"])
        except ValueError as exc:
            errors.append(f"{label}: start: {exc}")
    if len(errors) > before:
        return None
    values.setdefault("description", "")
    values.setdefault("subject_to_change_window", timedelta(0))
    return DatasetSpec(**values)
