"""The ionbeam wire contract as pydantic v2 models, plus the parsers the consumers use.

Wire compatibility with the reference ionbeam models is the point of this module:
field names, nesting and defaults match them, unknown fields are ignored (a newer source
may send more), and what we write parses with the reference models. Where we are stricter
it is because the value would break something downstream: dataset names become Redis keys,
object keys and Dagster asset names; column names become InfluxDB identifiers; canonical
names must split back into their parts.

Times: naive datetimes are read as UTC (the reference writes naive times when its sources
do), every time is held as aware UTC and written as ISO 8601 ending in "Z". Durations are
ISO 8601 strings on the wire ("PT1H", "P1D"), written in one canonical form.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from ionbeam_dagster.canonical import CanonicalName, level_problem, part_problem
from ionbeam_dagster.durations import format_duration, parse_duration
from ionbeam_dagster.errors import Rejection

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SUPPORTED_VERSION",
    "DATASET_NAME_PATTERN",
    "RESERVED_COLUMNS",
    "FieldProblem",
    "Link",
    "DatasetMetadata",
    "TimeAxis",
    "LatitudeAxis",
    "LongitudeAxis",
    "CanonicalVariable",
    "MetadataVariable",
    "DataIngestionMap",
    "IngestionMetadata",
    "IngestDataCommand",
    "DataAvailableEvent",
    "DataSetAvailableEvent",
    "StartSourceCommand",
    "UtcDatetime",
    "Duration",
    "as_utc",
    "format_time",
    "check_dataset_name",
    "parse_ingest_command",
    "parse_data_available",
    "parse_message",
    "describe_validation_error",
    "to_json_bytes",
]

# A broker message is held whole in memory by every consumer; a bound keeps one bad
# producer from taking the sensor down. Real commands are a few kilobytes.
MAX_MESSAGE_BYTES = 1 << 20
SUPPORTED_VERSION = 1
DATASET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_DATASET_NAME = re.compile(DATASET_NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Axis names of the stored dataset (and "time", which InfluxDB refuses as a tag key): a
# metadata column with one of these names would collide with them.
RESERVED_COLUMNS = ("time", "timestamp", "latitude", "longitude")


class FieldProblem(ValueError):
    """A problem found by a model-level check, naming the field below that model.

    Pydantic locates a model validator's error at the model itself; carrying the sub-path
    lets :func:`parse_message` report ``...ingestion_map.metadata_variables[1].column``
    instead of just ``...ingestion_map``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# ---------------------------------------------------------------- field types


def as_utc(value: datetime) -> datetime:
    """Aware UTC; naive means UTC (the reference's sources often send naive times)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # Only reachable at the very ends of the calendar (9999-12-31T23:59-01:00); it must
        # surface as a validation error, not crash the consumer.
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a "Z" (what pydantic writes for UTC, so the reference reads it)."""
    return as_utc(value).replace(tzinfo=None).isoformat() + "Z"


def _duration(value: Any) -> timedelta:
    # Strings are what the reference writes; numbers (seconds) are what pydantic, and so the
    # reference, also accepts, so a hand-written producer sending them still works.
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, str):
        return parse_duration(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration")
        try:
            td = timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"{value!r} seconds is longer than a duration here can hold") from None
    else:
        raise ValueError(f"expected an ISO 8601 duration such as PT1H, got {type(value).__name__}")
    if td < timedelta(0):
        raise ValueError(f"-{format_duration(-td)}: negative durations are not allowed")
    return td


def _column_name(value: str) -> str:
    if not value:
        raise ValueError("column name must not be empty")
    if _CONTROL.search(value):
        raise ValueError(f"column name {value!r} must not contain control characters")
    return value


def check_dataset_name(value: str) -> str:
    """Dataset names become Redis keys, object keys and asset names, hence the narrow pattern."""
    # fullmatch, not match: "$" would let a trailing newline through.
    if not _DATASET_NAME.fullmatch(value):
        raise ValueError(f"{value!r} must match {DATASET_NAME_PATTERN}")
    return value


def _canonical_part(value: str) -> str:
    problem = part_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(as_utc), PlainSerializer(format_time, when_used="json")]
Duration = Annotated[
    timedelta,
    PlainValidator(_duration, json_schema_input_type=str),
    PlainSerializer(format_duration, when_used="json", return_type=str),
]
ColumnName = Annotated[str, AfterValidator(_column_name)]
DatasetName = Annotated[str, AfterValidator(check_dataset_name)]
CanonicalPart = Annotated[str, AfterValidator(_canonical_part)]


class _Model(BaseModel):
    # Ignore unknown fields: a producer on a newer contract must not be dead-lettered for
    # sending something we do not read yet.
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- metadata


class Link(_Model):
    mime_type: str
    title: str
    href: str


class DatasetMetadata(_Model):
    name: DatasetName
    description: str = ""
    aggregation_span: Duration = timedelta(days=1)
    subject_to_change_window: Duration = timedelta(0)
    source_links: list[Link] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)


class TimeAxis(_Model):
    from_col: ColumnName | None = None
    dtype: str | None = "datetime64[ns, UTC]"

    @property
    def column(self) -> str:
        """The payload column holding observation times (null ``from_col`` = the default)."""
        return self.from_col or "datetime"


class LatitudeAxis(_Model):
    standard_name: str = "latitude"
    cf_unit: str = "degrees_north"
    from_col: ColumnName | None = None
    dtype: str | None = "float64"

    @property
    def column(self) -> str:
        return self.from_col or "lat"


class LongitudeAxis(_Model):
    standard_name: str = "longitude"
    cf_unit: str = "degrees_east"
    from_col: ColumnName | None = None
    dtype: str | None = "float64"

    @property
    def column(self) -> str:
        return self.from_col or "lon"


class CanonicalVariable(_Model):
    column: ColumnName
    standard_name: CanonicalPart
    cf_unit: CanonicalPart
    level: float = 0.0
    method: CanonicalPart = "point"
    period: CanonicalPart = "PT0S"
    dtype: str | None = "float64"

    @field_validator("level")
    @classmethod
    def _finite_level(cls, value: float) -> float:
        # NaN would print as "nan" and never compare equal, so the name would not round-trip.
        problem = level_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def canonical(self) -> CanonicalName:
        return CanonicalName(self.standard_name, self.cf_unit, self.level, self.method, self.period)

    @property
    def canonical_name(self) -> str:
        """The stored column name, e.g. ``air_temperature__degC__2.0__point__PT0S``."""
        return str(self.canonical)


class MetadataVariable(_Model):
    column: ColumnName
    dtype: str | None = "string"


class DataIngestionMap(_Model):
    datetime: TimeAxis
    lat: LatitudeAxis
    lon: LongitudeAxis
    canonical_variables: list[CanonicalVariable]
    metadata_variables: list[MetadataVariable] = Field(default_factory=list)

    @model_validator(mode="after")
    def _columns_do_not_collide(self) -> DataIngestionMap:
        # Every canonical name and metadata column becomes one column of the stored dataset
        # (and one InfluxDB field or tag): two with one name would overwrite each other.
        canonical: dict[str, int] = {}
        for i, variable in enumerate(self.canonical_variables):
            name = variable.canonical_name
            if name in canonical:
                raise FieldProblem(
                    f"canonical_variables[{i}]",
                    f"canonical name {name!r} is already declared by canonical_variables[{canonical[name]}]",
                )
            canonical[name] = i
        seen: dict[str, int] = {}
        for i, metadata_variable in enumerate(self.metadata_variables):
            column = metadata_variable.column
            path = f"metadata_variables[{i}].column"
            if column in RESERVED_COLUMNS:
                raise FieldProblem(path, f"{column!r} is reserved for the axes ({', '.join(RESERVED_COLUMNS)})")
            if column in canonical:
                raise FieldProblem(
                    path, f"{column!r} is the canonical name of canonical_variables[{canonical[column]}]"
                )
            if column in seen:
                raise FieldProblem(path, f"{column!r} is already declared by metadata_variables[{seen[column]}]")
            seen[column] = i
        return self


class IngestionMetadata(_Model):
    dataset: DatasetMetadata
    ingestion_map: DataIngestionMap
    # Not restricted here: an unknown version is its own rejection code, checked after the
    # schema by the parsers, so the dead-letter reason says "version" rather than "schema".
    version: int = SUPPORTED_VERSION


# ---------------------------------------------------------------- messages


class IngestDataCommand(_Model):
    id: UUID
    metadata: IngestionMetadata
    payload_location: str
    start_time: UtcDatetime
    end_time: UtcDatetime


class DataAvailableEvent(_Model):
    id: UUID
    metadata: IngestionMetadata
    start_time: UtcDatetime
    end_time: UtcDatetime


class DataSetAvailableEvent(_Model):
    id: UUID
    metadata: DatasetMetadata
    dataset_location: str
    start_time: UtcDatetime
    end_time: UtcDatetime


class StartSourceCommand(_Model):
    id: UUID
    source_name: str
    start_time: UtcDatetime
    end_time: UtcDatetime


# ---------------------------------------------------------------- parsing

M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and no other reader accepts.
    raise ValueError(f"{name} is not a JSON value")


def _load_object(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    if len(body) > MAX_MESSAGE_BYTES:
        raise Rejection("message_too_large", f"body: {len(body)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection("malformed_json", f"body: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise Rejection(
            "malformed_json", f"body: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise Rejection("malformed_json", f"body: not JSON ({exc})") from None
    except RecursionError:
        raise Rejection("malformed_json", "body: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise Rejection("malformed_json", f"body: a JSON {_json_kind(value)}, expected an object")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(path: str, sub: str) -> str:
    if not path:
        return sub
    return path + sub if sub.startswith("[") else f"{path}.{sub}"


def describe_validation_error(exc: ValidationError) -> str:
    """``<dotted.field.path>: <problem>`` for the first error: one sentence an operator can act on."""
    error = exc.errors()[0]
    path = _path(error["loc"])
    cause = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    if isinstance(cause, FieldProblem):
        return f"{_join(path, cause.path)}: {cause.problem}"
    if isinstance(cause, Exception):
        problem = str(cause)
    else:
        problem = error["msg"]
        value = error.get("input")
        if error["type"] != "missing" and (value is None or isinstance(value, str | int | float | bool)):
            shown = repr(value)
            problem += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
    return f"{path or '<message>'}: {problem}"


def parse_message(body: bytes | bytearray | memoryview, model: type[M]) -> M:
    """Size, JSON and schema checks shared by every consumer, as Rejections with their codes."""
    value = _load_object(body)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise Rejection("invalid_message", describe_validation_error(exc)) from None


def _check_version(metadata: IngestionMetadata) -> None:
    if metadata.version != SUPPORTED_VERSION:
        raise Rejection(
            "unsupported_version",
            f"metadata.version: {metadata.version} is not supported (this platform speaks version {SUPPORTED_VERSION})",
        )


def _check_time_range(start: datetime, end: datetime) -> None:
    if start >= end:
        raise Rejection(
            "invalid_time_range",
            f"start_time: {format_time(start)} must be before end_time {format_time(end)}",
        )


def _parse_versioned(body: bytes | bytearray | memoryview, model: type[M]) -> M:
    """The version is checked on the raw JSON before the schema: a future version may change
    the layout, and its sender deserves "unsupported_version", not a schema complaint."""
    value = _load_object(body)
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        version = metadata.get("version", SUPPORTED_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version != SUPPORTED_VERSION:
            raise Rejection(
                "unsupported_version",
                f"metadata.version: {version} is not supported (this platform speaks version {SUPPORTED_VERSION})",
            )
    try:
        parsed = model.model_validate(value)
    except ValidationError as exc:
        raise Rejection("invalid_message", describe_validation_error(exc)) from None
    _check_version(parsed.metadata)  # type: ignore[attr-defined]
    return parsed


def parse_ingest_command(body: bytes | bytearray | memoryview) -> IngestDataCommand:
    """Validate an IngestDataCommand; every failure is a Rejection with its contract code."""
    command = _parse_versioned(body, IngestDataCommand)
    _check_time_range(command.start_time, command.end_time)
    return command


def parse_data_available(body: bytes | bytearray | memoryview) -> DataAvailableEvent:
    """Validate a DataAvailableEvent with the same codes as :func:`parse_ingest_command`."""
    event = _parse_versioned(body, DataAvailableEvent)
    _check_time_range(event.start_time, event.end_time)
    return event


def to_json_bytes(model: BaseModel) -> bytes:
    """UTF-8 JSON: times in UTC ending in "Z", canonical ISO 8601 durations, UUIDs as strings."""
    return model.model_dump_json().encode("utf-8")
