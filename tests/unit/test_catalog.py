from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ionbeam_dagster.catalog import (
    DEFAULT_CATALOG_PATH,
    KNOWN_EXPORTERS,
    Catalog,
    DatasetSpec,
    load_catalog,
    parse_catalog,
)
from ionbeam_dagster.contracts import DatasetMetadata, Link
from ionbeam_dagster.errors import CatalogError

VALID = """\
datasets:
  - name: synthetic
    description: Synthetic observations
    aggregation_span: PT10M
    subject_to_change_window: PT0S
    start: 2024-01-01T00:00:00Z
    allow_incomplete_windows: false
    exporters: [geoparquet]
    keywords: [synthetic, test]
    source_links:
      - {mime_type: text/html, title: Home, href: "https://example.org"}
  - name: netatmo
    aggregation_span: PT1H
    subject_to_change_window: PT6H
    start: 2024-01-01
    allow_incomplete_windows: true
    station_column: module_id
"""


def entry(**fields: str | None) -> str:
    """A catalog with one entry: a valid synthetic dataset with ``fields`` replaced (raw YAML)."""
    base: dict[str, str | None] = {
        "name": "synthetic",
        "aggregation_span": "PT10M",
        "subject_to_change_window": "PT0S",
        "start": "2024-01-01T00:00:00Z",
    }
    base.update(fields)
    lines = ["datasets:"]
    first = True
    for key, value in base.items():
        if value is None:
            continue
        lines.append(f"  {'- ' if first else '  '}{key}: {value}")
        first = False
    return "\n".join(lines) + "\n"


def catalog_error(text: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, source="test.yaml")
    return str(info.value)


def test_valid_catalog_loads_with_types_and_defaults() -> None:
    catalog = parse_catalog(VALID)
    assert isinstance(catalog, Catalog)
    assert catalog.names == ("synthetic", "netatmo")
    assert [spec.name for spec in catalog] == ["synthetic", "netatmo"]
    assert len(catalog) == 2 and "netatmo" in catalog and catalog.get("missing") is None
    synthetic = catalog.get("synthetic")
    assert synthetic == DatasetSpec(
        name="synthetic",
        description="Synthetic observations",
        aggregation_span=timedelta(minutes=10),
        subject_to_change_window=timedelta(0),
        start=datetime(2024, 1, 1, tzinfo=UTC),
        allow_incomplete_windows=False,
        exporters=("geoparquet",),
        keywords=("synthetic", "test"),
        source_links=(Link(mime_type="text/html", title="Home", href="https://example.org"),),
    )
    netatmo = catalog.get("netatmo")
    assert netatmo is not None
    assert netatmo.description == ""
    assert netatmo.start == datetime(2024, 1, 1, tzinfo=UTC)  # a bare YAML date is midnight UTC
    assert netatmo.subject_to_change_window == timedelta(hours=6)
    assert netatmo.allow_incomplete_windows is True
    assert netatmo.exporters == ("geoparquet",)
    assert netatmo.station_column == "module_id"


def test_metadata_is_the_contract_dataset_metadata() -> None:
    spec = parse_catalog(VALID).get("synthetic")
    assert spec is not None
    assert spec.metadata() == DatasetMetadata(
        name="synthetic",
        description="Synthetic observations",
        aggregation_span=timedelta(minutes=10),
        subject_to_change_window=timedelta(0),
        source_links=[Link(mime_type="text/html", title="Home", href="https://example.org")],
        keywords=["synthetic", "test"],
    )


def test_shipped_catalog_declares_synthetic() -> None:
    assert DEFAULT_CATALOG_PATH == Path(__file__).resolve().parents[2] / "ionbeam_dagster" / "catalog" / "datasets.yaml"
    catalog = load_catalog(DEFAULT_CATALOG_PATH)
    spec = catalog.get("synthetic")
    assert spec is not None
    assert spec.aggregation_span == timedelta(minutes=10)
    assert spec.subject_to_change_window == timedelta(0)
    assert spec.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert spec.allow_incomplete_windows is False
    assert spec.exporters == ("geoparquet", "odb", "netcdf")
    assert spec.description and spec.keywords and spec.source_links


def test_licence_and_attribution_are_optional_text() -> None:
    spec = parse_catalog(entry(licence="ODbL-1.0", attribution="'Contains data from X, under the ODbL 1.0.'")).datasets["synthetic"]
    assert (spec.licence, spec.attribution) == ("ODbL-1.0", "Contains data from X, under the ODbL 1.0.")
    plain = parse_catalog(entry()).datasets["synthetic"]
    assert (plain.licence, plain.attribution) == ("", "")
    # They describe the data, not the wire contract: DatasetMetadata stays as the reference has it.
    assert "licence" not in spec.metadata().model_dump()
    with pytest.raises(CatalogError, match="licence: expected a string"):
        DatasetSpec(
            name="x", description="", aggregation_span=timedelta(hours=1), subject_to_change_window=timedelta(0),
            start=datetime(2024, 1, 1, tzinfo=UTC), licence=3,  # type: ignore[arg-type]
        )


def test_shipped_catalog_declares_sensor_community_with_its_licence() -> None:
    spec = load_catalog(DEFAULT_CATALOG_PATH).get("sensor_community")
    assert spec is not None
    assert spec.aggregation_span == timedelta(hours=1)
    assert spec.subject_to_change_window == timedelta(days=1)
    assert spec.start == datetime(2015, 10, 1, tzinfo=UTC)
    assert spec.licence == "ODbL-1.0" and "Sensor.Community" in spec.attribution and "ODbL" in spec.attribution
    assert spec.description and spec.keywords
    assert any("archive.sensor.community" in link.href for link in spec.source_links)


def test_empty_dataset_list_is_a_valid_catalog() -> None:
    assert len(parse_catalog("datasets: []\n")) == 0


def test_other_offsets_and_naive_starts_are_utc() -> None:
    assert parse_catalog(entry(start="2024-01-01T01:00:00+01:00")).datasets["synthetic"].start == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_catalog(entry(start="2024-01-01 00:10:00")).datasets["synthetic"].start == datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    assert parse_catalog(entry(start="'2024-01-01T00:20:00Z'")).datasets["synthetic"].start == datetime(2024, 1, 1, 0, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bad names
        (entry(name="Bad-Name"), "datasets[0] (Bad-Name): name: 'Bad-Name' must match ^[a-z][a-z0-9_]{0,62}$"),
        (entry(name="sensor.community"), "datasets[0] (sensor.community): name: 'sensor.community' must match"),
        (entry(name="a" * 64), "name: '" + "a" * 64 + "' must match"),
        (entry(name="123"), "datasets[0]: name: expected a string, got int"),
        (entry(name=None), "datasets[0]: name: required"),
        # bad spans
        (entry(aggregation_span="PT7M"), "datasets[0] (synthetic): aggregation_span: PT7M does not divide an hour"),
        (entry(aggregation_span="PT90M"), "datasets[0] (synthetic): aggregation_span: PT90M (= PT1H30M) does not divide a day"),
        (entry(aggregation_span="P2D"), "datasets[0] (synthetic): aggregation_span: P2D is longer than a day"),
        (entry(aggregation_span="P1M"), "aggregation_span: 'P1M': years and months have no fixed length"),
        (entry(aggregation_span="600"), "aggregation_span: expected an ISO 8601 duration string such as PT10M, got int 600"),
        (entry(aggregation_span="1:30"), "aggregation_span: expected an ISO 8601 duration string"),
        (entry(aggregation_span=None), "datasets[0] (synthetic): aggregation_span: required"),
        # bad STC
        (entry(subject_to_change_window="-PT1H"), "datasets[0] (synthetic): subject_to_change_window: '-PT1H': negative durations are not allowed"),
        (entry(subject_to_change_window="soon"), "datasets[0] (synthetic): subject_to_change_window: 'soon': not an ISO 8601 duration"),
        (entry(subject_to_change_window="P1Y"), "subject_to_change_window: 'P1Y': years and months"),
        # exporters
        (entry(exporters="[grib]"), "datasets[0] (synthetic): exporters[0]: unknown exporter 'grib'; known: geoparquet, odb, netcdf"),
        (entry(exporters="[geoparqet]"), "exporters[0]: unknown exporter 'geoparqet' (did you mean 'geoparquet'?)"),
        (entry(exporters="[geoparquet, geoparquet]"), "exporters[1]: exporter 'geoparquet' is listed twice"),
        (entry(exporters="geoparquet"), "exporters: expected a list of strings, got str"),
        # unknown keys
        (entry(aggregation_spam="PT10M"), "datasets[0] (synthetic): unknown key 'aggregation_spam' (did you mean 'aggregation_span'?)"),
        (entry(allow_incomplete_window="true"), "unknown key 'allow_incomplete_window' (did you mean 'allow_incomplete_windows'?)"),
        (entry(source_links="[{mime_type: a, title: b, href: c, rel: d}]"), "source_links[0]: unknown key 'rel'"),
        (entry(source_links="[{mime_type: a, title: b}]"), "source_links[0].href: required"),
        ("datasets: []\ndataset: []\n", "unknown top-level key 'dataset' (did you mean 'datasets'?)"),
        # start
        (entry(start="2024-01-01T00:05:00Z"), "datasets[0] (synthetic): start: 2024-01-01T00:05:00Z is not the start of a PT10M window (windows are aligned to the epoch); use 2024-01-01T00:00:00Z"),
        (entry(start="next tuesday"), "start: 'next tuesday' is not an ISO 8601 time"),
        (entry(start=None), "datasets[0] (synthetic): start: required"),
        # other fields
        (entry(allow_incomplete_windows="'yes'"), "allow_incomplete_windows: expected true or false, got str 'yes'"),
        (entry(keywords="[a, 1]"), "keywords[1]: expected a string, got int"),
        (entry(station_column="''"), "station_column: must not be empty"),
        (entry(description="[a]"), "description: expected a string, got a list"),
        (entry(licence="[ODbL]"), "datasets[0] (synthetic): licence: expected a string, got a list"),
        (entry(attribution="1"), "datasets[0] (synthetic): attribution: expected a string, got int"),
        (entry(license="ODbL-1.0"), "unknown key 'license' (did you mean 'licence'?)"),
    ],
)
def test_invalid_entries_fail_naming_the_entry_and_the_field(text: str, expected: str) -> None:
    message = catalog_error(text)
    assert expected in message, message
    assert message.startswith("test.yaml: ")


def test_duplicate_names_are_refused() -> None:
    text = VALID + "  - name: synthetic\n    aggregation_span: PT1H\n    start: 2024-01-01\n"
    assert "datasets[2] (synthetic): name: 'synthetic' is already declared by datasets[0]" in catalog_error(text)


def test_a_key_given_twice_in_one_entry_is_refused() -> None:
    text = entry() + "    aggregation_span: PT1H\n"
    assert "found duplicate key 'aggregation_span'" in catalog_error(text)


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace("aggregation_span: PT1H", "aggregation_span: PT7M").replace("exporters: [geoparquet]", "exporters: [grib]")
    lines = catalog_error(text).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("test.yaml: datasets[0] (synthetic): exporters[0]")
    assert lines[1].startswith("test.yaml: datasets[1] (netatmo): aggregation_span: PT7M")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a mapping with a 'datasets' list, got null"),
        ("- a\n", "expected a mapping with a 'datasets' list, got a list"),
        ("{}\n", "datasets: required"),
        ("datasets: {}\n", "datasets: expected a list of dataset entries, got a mapping"),
        ("datasets: [synthetic]\n", "datasets[0]: expected a mapping, got str"),
        ("datasets: [\n", "not valid YAML"),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    assert expected in catalog_error(text)


def test_load_catalog_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "missing.yaml")


def test_load_catalog_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "datasets.yaml"
    path.write_text(entry(aggregation_span="PT7M"))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}: datasets[0] (synthetic): aggregation_span: PT7M")


def test_dataset_spec_built_in_code_obeys_the_same_rules() -> None:
    common = {"description": "", "subject_to_change_window": timedelta(0)}
    with pytest.raises(CatalogError, match=r"dataset 'x': aggregation_span: PT7M does not divide an hour"):
        DatasetSpec(name="x", aggregation_span=timedelta(minutes=7), start=datetime(2024, 1, 1, tzinfo=UTC), **common)  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match=r"dataset 'x': start: .* is not the start of a PT1H window"):
        DatasetSpec(name="x", aggregation_span=timedelta(hours=1), start=datetime(2024, 1, 1, 0, 30, tzinfo=UTC), **common)  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match=r"exporters\[0\]: unknown exporter 'csv'"):
        DatasetSpec(name="x", aggregation_span=timedelta(hours=1), start=datetime(2024, 1, 1, tzinfo=UTC), exporters=("csv",), **common)  # type: ignore[arg-type]


def test_known_exporters() -> None:
    assert "geoparquet" in KNOWN_EXPORTERS


def test_yaml_merge_keys_may_be_overridden_without_counting_as_duplicates() -> None:
    text = "datasets:\n- &base {name: a, aggregation_span: PT10M, start: 2024-01-01}\n- <<: *base\n  name: b\n"
    catalog = parse_catalog(text)
    assert catalog.names == ("a", "b")
    assert catalog.datasets["b"].aggregation_span == timedelta(minutes=10)


def test_unhashable_keys_are_a_yaml_error_not_a_crash() -> None:
    assert "not valid YAML" in catalog_error("datasets:\n- {[a]: 1}\n")


def test_odb_varno_overrides_are_checked_at_load() -> None:
    """A typo in an ODB override fails the catalog's load, naming the entry and field,
    instead of failing the first export hours later."""
    text = """
datasets:
  - name: obs
    aggregation_span: PT10M
    start: 2026-01-01T00:00:00Z
    exporters: [odb]
    odb_varno:
      - {standard_name: air_temperature, level: 1.5, method: point, period: PT0S, varno: "39"}
"""
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text)
    message = str(caught.value)
    assert "datasets[0] (obs)" in message and "odb_varno" in message and "varno" in message
    good = parse_catalog(text.replace('varno: "39"', "varno: 39"))
    assert good.datasets["obs"].odb_varno[0]["level"] == 1.5
