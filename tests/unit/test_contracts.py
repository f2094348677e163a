from __future__ import annotations

import json
import uuid
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ionbeam_dagster.contracts import (
    MAX_MESSAGE_BYTES,
    CanonicalVariable,
    DataAvailableEvent,
    DataIngestionMap,
    DatasetMetadata,
    DataSetAvailableEvent,
    IngestDataCommand,
    IngestionMetadata,
    LatitudeAxis,
    Link,
    LongitudeAxis,
    MetadataVariable,
    StartSourceCommand,
    TimeAxis,
    parse_data_available,
    parse_ingest_command,
    parse_message,
    to_json_bytes,
)
from ionbeam_dagster.errors import Rejection

COMMAND_ID = "5f0c6f4e-8d1b-4a53-9a3e-2f7c1d9b6e10"

# What a reference data source (netatmo-like, as in the contract) sends, exactly as its
# pydantic models serialise it.
INGESTION_METADATA: dict[str, Any] = {
    "dataset": {
        "name": "netatmo",
        "description": "raw IoT data collected from NetAtmo",
        "aggregation_span": "PT1H",
        "source_links": [{"mime_type": "text/html", "title": "NetAtmo weathermap", "href": "https://weathermap.netatmo.com"}],
        "keywords": ["netatmo", "iot", "data"],
        "subject_to_change_window": "PT6H",
    },
    "ingestion_map": {
        "datetime": {"from_col": "time", "dtype": "datetime64[ns, UTC]"},
        "lat": {"standard_name": "latitude", "cf_unit": "degrees_north", "from_col": "lat", "dtype": "float64"},
        "lon": {"standard_name": "longitude", "cf_unit": "degrees_east", "from_col": "lon", "dtype": "float64"},
        "canonical_variables": [
            {"column": "temperature", "standard_name": "air_temperature", "cf_unit": "degC", "level": 2.0, "method": "point", "period": "PT0S", "dtype": "float64"},
            {"column": "humidity", "standard_name": "relative_humidity", "cf_unit": "1", "level": 2.0, "method": "point", "period": "PT0S", "dtype": "float64"},
            {"column": "pressure", "standard_name": "air_pressure_at_mean_sea_level", "cf_unit": "hPa", "level": 0.0, "method": "point", "period": "PT0S", "dtype": "float64"},
            {"column": "wind_strength", "standard_name": "wind_speed", "cf_unit": "km h-1", "level": 10.0, "method": "mean", "period": "PT5M", "dtype": "float64"},
            {"column": "rain_60min", "standard_name": "precipitation_amount", "cf_unit": "kg/m2", "level": 0.0, "method": "sum", "period": "PT1H", "dtype": "float64"},
        ],
        "metadata_variables": [{"column": "station_id", "dtype": "string"}, {"column": "module_id", "dtype": "string"}],
    },
    "version": 1,
}

INGEST_COMMAND: dict[str, Any] = {
    "id": COMMAND_ID,
    "metadata": INGESTION_METADATA,
    "payload_location": "raw/netatmo/2024-01-15T14:00:00+00:00-2024-01-15T15:00:00+00:00_2024-01-15T15:02:11+00:00",
    "start_time": "2024-01-15T14:00:00Z",
    "end_time": "2024-01-15T15:00:00Z",
}

DATA_AVAILABLE: dict[str, Any] = {
    "id": COMMAND_ID,
    "metadata": INGESTION_METADATA,
    "start_time": "2024-01-15T14:00:00Z",
    "end_time": "2024-01-15T14:59:58Z",
}

DATASET_AVAILABLE: dict[str, Any] = {
    "id": "0b6d2e55-3f3c-4c1e-9f0e-6a1d7e2c4b99",
    "metadata": {
        "name": "netatmo",
        "description": "raw IoT data collected from NetAtmo",
        "aggregation_span": "PT1H",
        "subject_to_change_window": "PT6H",
        "source_links": [],
        "keywords": ["netatmo"],
    },
    "dataset_location": "datasets/netatmo/2024-01-15T14:00_PT1H_3f9a.arrow",
    "start_time": "2024-01-15T14:00:00Z",
    "end_time": "2024-01-15T15:00:00Z",
}

START_SOURCE: dict[str, Any] = {
    "id": "c1f3a1d2-7e6b-4b1a-8d8e-0f5e7b3a2c11",
    "source_name": "netatmo",
    "start_time": "2024-01-15T14:00:00Z",
    "end_time": "2024-01-15T15:00:00Z",
}


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode("utf-8")


def command_with(**changes: Any) -> dict[str, Any]:
    """A deep copy of INGEST_COMMAND with dotted paths replaced (a value of ... deletes)."""
    message = deepcopy(INGEST_COMMAND)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node: Any = message
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return message


def rejection(message: dict[str, Any] | bytes, parse: Any = parse_ingest_command) -> Rejection:
    with pytest.raises(Rejection) as info:
        parse(message if isinstance(message, bytes) else body(message))
    return info.value


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (IngestDataCommand, INGEST_COMMAND),
        (DataAvailableEvent, DATA_AVAILABLE),
        (DataSetAvailableEvent, DATASET_AVAILABLE),
        (StartSourceCommand, START_SOURCE),
        (IngestionMetadata, INGESTION_METADATA),
    ],
)
def test_every_contract_message_round_trips_through_json(model: type[BaseModel], message: dict[str, Any]) -> None:
    parsed = parse_message(body(message), model)
    written = to_json_bytes(parsed)
    # What we write is what the reference wrote (canonical times and durations already).
    assert json.loads(written) == message
    assert parse_message(written, model) == parsed


def test_ingest_command_parses_into_typed_fields() -> None:
    command = parse_ingest_command(body(INGEST_COMMAND))
    assert command.id == uuid.UUID(COMMAND_ID)
    assert command.start_time == datetime(2024, 1, 15, 14, tzinfo=UTC)
    dataset = command.metadata.dataset
    assert dataset.aggregation_span == timedelta(hours=1)
    assert dataset.subject_to_change_window == timedelta(hours=6)
    assert dataset.source_links == [Link(mime_type="text/html", title="NetAtmo weathermap", href="https://weathermap.netatmo.com")]
    ingestion_map = command.metadata.ingestion_map
    assert ingestion_map.datetime.column == "time"
    assert ingestion_map.lat.column == "lat"
    assert [v.canonical_name for v in ingestion_map.canonical_variables] == [
        "air_temperature__degC__2.0__point__PT0S",
        "relative_humidity__1__2.0__point__PT0S",
        "air_pressure_at_mean_sea_level__hPa__0.0__point__PT0S",
        "wind_speed__km h-1__10.0__mean__PT5M",
        "precipitation_amount__kg/m2__0.0__sum__PT1H",
    ]
    assert [v.column for v in ingestion_map.metadata_variables] == ["station_id", "module_id"]


def test_data_available_event_parses() -> None:
    event = parse_data_available(body(DATA_AVAILABLE))
    assert event.end_time == datetime(2024, 1, 15, 14, 59, 58, tzinfo=UTC)
    assert event.metadata.dataset.name == "netatmo"


def test_defaults_follow_the_contract_and_are_written_out() -> None:
    # A minimal producer: reference-required fields we default must still appear in what
    # we write, because the reference models require them.
    minimal = {
        "dataset": {"name": "minimal"},
        "ingestion_map": {
            "datetime": {},
            "lat": {},
            "lon": {},
            "canonical_variables": [{"column": "t", "standard_name": "air_temperature", "cf_unit": "K"}],
        },
    }
    metadata = IngestionMetadata.model_validate(minimal)
    assert metadata.version == 1
    assert metadata.dataset.aggregation_span == timedelta(days=1)
    assert metadata.dataset.subject_to_change_window == timedelta(0)
    assert (metadata.ingestion_map.datetime.column, metadata.ingestion_map.lat.column, metadata.ingestion_map.lon.column) == ("datetime", "lat", "lon")
    assert metadata.ingestion_map.canonical_variables[0].canonical_name == "air_temperature__K__0.0__point__PT0S"
    written = json.loads(to_json_bytes(metadata))
    assert written["dataset"] == {
        "name": "minimal",
        "description": "",
        "aggregation_span": "P1D",
        "subject_to_change_window": "PT0S",
        "source_links": [],
        "keywords": [],
    }
    assert written["ingestion_map"]["lat"] == {"standard_name": "latitude", "cf_unit": "degrees_north", "from_col": None, "dtype": "float64"}
    assert written["ingestion_map"]["lon"]["standard_name"] == "longitude"
    assert written["ingestion_map"]["datetime"] == {"from_col": None, "dtype": "datetime64[ns, UTC]"}
    assert written["ingestion_map"]["metadata_variables"] == []
    assert written["ingestion_map"]["canonical_variables"][0]["level"] == 0.0


def test_unknown_fields_are_ignored() -> None:
    message = command_with(extra_top="x")
    message["metadata"]["dataset"]["future_field"] = {"a": 1}
    message["metadata"]["ingestion_map"]["canonical_variables"][0]["qc"] = True
    command = parse_ingest_command(body(message))
    assert "extra_top" not in json.loads(to_json_bytes(command))


def test_models_built_in_code_serialise_like_the_wire() -> None:
    event = DataSetAvailableEvent(
        id=uuid.UUID(DATASET_AVAILABLE["id"]),
        metadata=DatasetMetadata(name="netatmo", description="raw IoT data collected from NetAtmo", aggregation_span=timedelta(hours=1), subject_to_change_window=timedelta(hours=6), keywords=["netatmo"]),
        dataset_location=DATASET_AVAILABLE["dataset_location"],
        start_time=datetime(2024, 1, 15, 14, tzinfo=UTC),
        end_time=datetime(2024, 1, 15, 15, tzinfo=UTC),
    )
    assert json.loads(to_json_bytes(event)) == DATASET_AVAILABLE


def test_model_built_in_code_with_full_ingestion_map() -> None:
    ingestion_map = DataIngestionMap(
        datetime=TimeAxis(from_col="time"),
        lat=LatitudeAxis(from_col="lat"),
        lon=LongitudeAxis(from_col="lon"),
        canonical_variables=[CanonicalVariable(column="temperature", standard_name="air_temperature", cf_unit="degC", level=2)],
        metadata_variables=[MetadataVariable(column="station_id")],
    )
    assert ingestion_map.canonical_variables[0].canonical_name == "air_temperature__degC__2.0__point__PT0S"


# ---------------------------------------------------------------- times and durations


@pytest.mark.parametrize(
    ("wire", "expected", "written"),
    [
        ("2024-01-15T14:00:00", datetime(2024, 1, 15, 14, tzinfo=UTC), "2024-01-15T14:00:00Z"),
        ("2024-01-15T14:00:00Z", datetime(2024, 1, 15, 14, tzinfo=UTC), "2024-01-15T14:00:00Z"),
        ("2024-01-15T15:00:00+01:00", datetime(2024, 1, 15, 14, tzinfo=UTC), "2024-01-15T14:00:00Z"),
        ("2024-01-15T14:00:00.250000", datetime(2024, 1, 15, 14, 0, 0, 250000, tzinfo=UTC), "2024-01-15T14:00:00.250000Z"),
    ],
)
def test_times_are_held_as_utc_naive_meaning_utc(wire: str, expected: datetime, written: str) -> None:
    command = parse_ingest_command(body(command_with(start_time=wire, end_time="2024-01-15T16:00:00Z")))
    assert command.start_time == expected
    assert command.start_time.tzinfo is UTC
    assert json.loads(to_json_bytes(command))["start_time"] == written


def test_naive_datetimes_built_in_code_are_utc_too() -> None:
    source = StartSourceCommand(id=uuid.uuid4(), source_name="x", start_time=datetime(2024, 1, 1), end_time=datetime(2024, 1, 2))
    assert source.start_time == datetime(2024, 1, 1, tzinfo=UTC)
    assert json.loads(to_json_bytes(source))["end_time"] == "2024-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("wire", "expected", "written"),
    [
        ("PT1H", timedelta(hours=1), "PT1H"),
        ("P1D", timedelta(days=1), "P1D"),
        ("PT10M", timedelta(minutes=10), "PT10M"),
        ("PT0S", timedelta(0), "PT0S"),
        ("PT3600S", timedelta(hours=1), "PT1H"),
        ("P1DT6H", timedelta(days=1, hours=6), "P1DT6H"),
        ("P1W", timedelta(weeks=1), "P7D"),
        ("PT0.5S", timedelta(seconds=0.5), "PT0.5S"),
        (3600, timedelta(hours=1), "PT1H"),  # pydantic (so the reference) also accepts seconds
    ],
)
def test_durations_parse_and_serialise_canonically(wire: Any, expected: timedelta, written: str) -> None:
    message = deepcopy(DATASET_AVAILABLE)
    message["metadata"]["aggregation_span"] = wire
    event = parse_message(body(message), DataSetAvailableEvent)
    assert event.metadata.aggregation_span == expected
    assert json.loads(to_json_bytes(event))["metadata"]["aggregation_span"] == written


# ---------------------------------------------------------------- wire compatibility with the reference


class _RefLink(BaseModel):
    mime_type: str
    title: str
    href: str


class _RefDatasetMetadata(BaseModel):
    """The reference's DatasetMetadata with its plain pydantic types (numpy dtypes aside)."""

    name: str
    description: str
    aggregation_span: timedelta = timedelta(days=1)
    source_links: list[_RefLink]
    keywords: list[str]
    subject_to_change_window: timedelta = timedelta(hours=0)


class _RefDataSetAvailableEvent(BaseModel):
    id: uuid.UUID
    metadata: _RefDatasetMetadata
    dataset_location: str
    start_time: datetime
    end_time: datetime


def test_what_we_write_the_reference_models_read_and_vice_versa() -> None:
    ours = parse_message(body(DATASET_AVAILABLE), DataSetAvailableEvent)
    theirs = _RefDataSetAvailableEvent.model_validate_json(to_json_bytes(ours))
    assert theirs.metadata.aggregation_span == ours.metadata.aggregation_span
    assert theirs.start_time == ours.start_time
    assert parse_message(theirs.model_dump_json().encode(), DataSetAvailableEvent) == ours


# ---------------------------------------------------------------- rejections


def test_message_too_large_is_checked_first() -> None:
    error = rejection(b"{" + b" " * MAX_MESSAGE_BYTES)  # too large AND not JSON
    assert error.code == "message_too_large"
    assert str(MAX_MESSAGE_BYTES) in error.message


def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    raw = body(INGEST_COMMAND)
    padded = raw[:-1] + b" " * (MAX_MESSAGE_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_MESSAGE_BYTES
    assert parse_ingest_command(padded).id == uuid.UUID(COMMAND_ID)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"id": 1,}', "not JSON"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b"[1, 2]", "a JSON array, expected an object"),
        (b'"IngestDataCommand"', "a JSON string, expected an object"),
        (b"null", "a JSON null, expected an object"),
        (b"42", "a JSON number, expected an object"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_malformed_json(raw: bytes, problem: str) -> None:
    error = rejection(raw)
    assert error.code == "malformed_json"
    assert problem in error.message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (command_with(id=...), "id: Field required"),
        (command_with(id="not-a-uuid"), "id: Input should be a valid UUID"),
        (command_with(payload_location=...), "payload_location: Field required"),
        (command_with(start_time="yesterday"), "start_time: Input should be a valid datetime"),
        (command_with(metadata__dataset__name="Bad-Name"), "metadata.dataset.name: 'Bad-Name' must match ^[a-z][a-z0-9_]{0,62}$"),
        (command_with(metadata__dataset__name="sensor.community"), "metadata.dataset.name: 'sensor.community' must match"),
        (command_with(metadata__dataset__name="ok\n"), "metadata.dataset.name: 'ok\\n' must match"),
        (command_with(metadata__dataset__name=...), "metadata.dataset.name: Field required"),
        (command_with(metadata__dataset__aggregation_span="P1M"), "metadata.dataset.aggregation_span: 'P1M': years and months have no fixed length"),
        (command_with(metadata__dataset__subject_to_change_window="-PT1H"), "metadata.dataset.subject_to_change_window: '-PT1H': negative durations are not allowed"),
        (command_with(metadata__dataset__subject_to_change_window=-60), "metadata.dataset.subject_to_change_window: -PT1M: negative durations are not allowed"),
        (command_with(metadata__dataset__source_links__0__href=...), "metadata.dataset.source_links[0].href: Field required"),
        (command_with(metadata__ingestion_map__lat=...), "metadata.ingestion_map.lat: Field required"),
        (command_with(metadata__ingestion_map__datetime__from_col=""), "metadata.ingestion_map.datetime.from_col: column name must not be empty"),
        (command_with(metadata__ingestion_map__canonical_variables__1__column=...), "metadata.ingestion_map.canonical_variables[1].column: Field required"),
        (command_with(metadata__ingestion_map__canonical_variables__1__column="hum\x00"), "metadata.ingestion_map.canonical_variables[1].column: column name 'hum\\x00' must not contain control characters"),
        (command_with(metadata__ingestion_map__canonical_variables__0__level="high"), "metadata.ingestion_map.canonical_variables[0].level: Input should be a valid number"),
        (command_with(metadata__ingestion_map__canonical_variables__0__standard_name="air__temperature"), "metadata.ingestion_map.canonical_variables[0].standard_name: 'air__temperature' must not contain '__'"),
        (command_with(metadata__ingestion_map__canonical_variables__0__cf_unit="_K"), "metadata.ingestion_map.canonical_variables[0].cf_unit: '_K' must not start or end with '_'"),
        (command_with(metadata__ingestion_map__canonical_variables__2__standard_name="relative_humidity", metadata__ingestion_map__canonical_variables__2__cf_unit="1", metadata__ingestion_map__canonical_variables__2__level=2.0),
         "metadata.ingestion_map.canonical_variables[2]: canonical name 'relative_humidity__1__2.0__point__PT0S' is already declared by canonical_variables[1]"),
        (command_with(metadata__ingestion_map__metadata_variables__1__column="station_id"), "metadata.ingestion_map.metadata_variables[1].column: 'station_id' is already declared by metadata_variables[0]"),
        (command_with(metadata__ingestion_map__metadata_variables__1__column="latitude"), "metadata.ingestion_map.metadata_variables[1].column: 'latitude' is reserved for the axes"),
        (command_with(metadata__ingestion_map__metadata_variables__0__column="time"), "metadata.ingestion_map.metadata_variables[0].column: 'time' is reserved"),
        (command_with(metadata__ingestion_map__metadata_variables__0__column="air_temperature__degC__2.0__point__PT0S"), "metadata.ingestion_map.metadata_variables[0].column: 'air_temperature__degC__2.0__point__PT0S' is the canonical name of canonical_variables[0]"),
        (command_with(metadata__version="one"), "metadata.version: Input should be a valid integer"),
        (command_with(metadata__ingestion_map__canonical_variables={}), "metadata.ingestion_map.canonical_variables: Input should be a valid list"),
    ],
)
def test_invalid_message_names_the_dotted_field_path(message: dict[str, Any], expected: str) -> None:
    error = rejection(message)
    assert error.code == "invalid_message"
    assert error.message.startswith(expected), error.message


def test_invalid_message_shows_the_offending_value() -> None:
    error = rejection(command_with(start_time="yesterday"))
    assert "'yesterday'" in error.message


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_version(version: int) -> None:
    error = rejection(command_with(metadata__version=version))
    assert error.code == "unsupported_version"
    assert error.message.startswith(f"metadata.version: {version} is not supported")


def test_version_is_checked_before_the_schema() -> None:
    """A future version may change the layout; its sender should hear "unsupported_version"."""
    error = rejection(command_with(metadata__version=2, id="x"))
    assert error.code == "unsupported_version"
    assert error.message.startswith("metadata.version: 2")


@pytest.mark.parametrize(
    ("start", "end"),
    [("2024-01-15T15:00:00Z", "2024-01-15T15:00:00Z"), ("2024-01-15T15:00:00Z", "2024-01-15T14:00:00Z"), ("2024-01-15T16:00:00+01:00", "2024-01-15T15:00:00Z")],
)
def test_invalid_time_range(start: str, end: str) -> None:
    error = rejection(command_with(start_time=start, end_time=end))
    assert error.code == "invalid_time_range"
    assert error.message.startswith("start_time: ")
    assert "must be before end_time" in error.message


def test_version_comes_before_the_time_range() -> None:
    message = command_with(metadata__version=2, start_time="2024-01-15T15:00:00Z", end_time="2024-01-15T14:00:00Z")
    assert rejection(message).code == "unsupported_version"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"[]", "malformed_json"),
        ({**DATA_AVAILABLE, "id": "nope"}, "invalid_message"),
        ({**DATA_AVAILABLE, "metadata": {**INGESTION_METADATA, "version": 3}}, "unsupported_version"),
        ({**DATA_AVAILABLE, "end_time": DATA_AVAILABLE["start_time"]}, "invalid_time_range"),
    ],
)
def test_data_available_uses_the_same_codes(message: dict[str, Any] | bytes, code: str) -> None:
    assert rejection(message, parse_data_available).code == code


def test_data_available_needs_no_payload_location() -> None:
    assert "payload_location" not in DATA_AVAILABLE
    parse_data_available(body(DATA_AVAILABLE))


def test_models_refuse_bad_values_when_built_in_code() -> None:
    with pytest.raises(ValidationError):
        DatasetMetadata(name="Bad")
    with pytest.raises(ValidationError):
        CanonicalVariable(column="t", standard_name="t", cf_unit="K", level=float("nan"))


@pytest.mark.parametrize("field", ["start_time", "end_time"])
def test_times_out_of_range_in_utc_are_invalid_messages(field: str) -> None:
    value = "9999-12-31T23:59:59-01:00" if field == "end_time" else "0001-01-01T00:00:00+01:00"
    error = rejection(command_with(**{field: value}))
    assert error.code == "invalid_message"
    assert error.message.startswith(f"{field}: {value} is out of range in UTC")


# ---------------------------------------------------------------- nothing but Rejection escapes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    items = enumerate(node) if isinstance(node, list) else node.items() if isinstance(node, dict) else None
    if items is None:
        return [prefix]
    paths = [prefix] if prefix else []
    for key, child in items:
        paths += _leaf_paths(child, (*prefix, str(key)))
    return paths


LEAF_PATHS = _leaf_paths(INGEST_COMMAND)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_rejection(raw: bytes) -> None:
    try:
        parse_ingest_command(raw)
    except Rejection:
        pass


@given(st.sampled_from(LEAF_PATHS), json_values)
def test_any_value_at_any_field_is_accepted_or_rejected_never_crashes(path: tuple[str, ...], value: Any) -> None:
    message = command_with(**{"__".join(path): value})
    try:
        command = parse_ingest_command(body(message))
    except Rejection as exc:
        assert exc.code in {"invalid_message", "unsupported_version", "invalid_time_range"}
        assert exc.message and ":" in exc.message
    else:
        # whatever was accepted is written back in a form that parses again
        assert parse_ingest_command(to_json_bytes(command)) == command
