"""ODB-2 export: golden rows decoded by both pyodc and codc, skipped variables, the int32 guard."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import codc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyodc
import pytest

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.exporters.odb import (
    ODB_COLUMNS,
    OdbStats,
    codc_available,
    default_encoder,
    encode_columns,
    write_odb,
)
from ionbeam_dagster.exporters.varno import DEFAULT_MAPPING, VarnoMapping
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map

ENCODERS = ("pyodc", "codc")
DECODERS = ("pyodc", "codc")

# Written out here rather than imported, so the test checks the contract, not the module.
CONTRACT_COLUMNS = {
    "expver@desc": "string",
    "class@desc": "integer",
    "stream@desc": "integer",
    "type@desc": "integer",
    "creaby@desc": "string",
    "andate@desc": "integer",
    "antime@desc": "integer",
    "reportype@hdr": "integer",
    "obstype@hdr": "integer",
    "codetype@hdr": "integer",
    "groupid@hdr": "integer",
    "wigosid@hdr": "string",
    "lat@hdr": "real",
    "lon@hdr": "real",
    "date@hdr": "integer",
    "time@hdr": "integer",
    "varno@body": "integer",
    "obsvalue@body": "real",
    "quality@body": "integer",
}
CONSTANTS = {
    "class@desc": 2,
    "stream@desc": 1247,
    "type@desc": 264,
    "reportype@hdr": 16002,
    "obstype@hdr": 1,
    "codetype@hdr": 11,
    "groupid@hdr": 17,
    "quality@body": 0,
}

T = "air_temperature__degC__2.0__point__PT0S"
RH = "relative_humidity__percent__2.0__point__PT0S"
P = "air_pressure__hPa__0.0__point__PT0S"
WS = "wind_speed__km h-1__10.0__point__PT0S"
WD = "wind_from_direction__degree__10.0__point__PT0S"
GUST = "wind_speed_of_gust__knots__10.0__maximum__PT10M"
RAIN = "precipitation_amount__kg m-2__0.0__sum__PT1H"
DEW_IN_METRES = "dew_point_temperature__m__2.0__point__PT0S"
WIND_AT_2M = "wind_speed__m s-1__2.0__point__PT0S"
T_KELVIN = "air_temperature__K__2.0__point__PT0S"

ANALYSIS = datetime(2024, 3, 2, tzinfo=UTC)
STATIONS = ["ST001", "0-20000-0-15015", "ST001", "Zürich-1"]  # a long WIGOS id, a non-ASCII id


def golden_table() -> pa.Table:
    times = [
        datetime(2024, 3, 1, 12, 34, 56, 789000, tzinfo=UTC),
        datetime(2024, 3, 1, 23, 59, 59, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC),
        datetime(2024, 3, 2, 5, 6, 7, tzinfo=UTC),
    ]
    columns: dict[str, pa.Array] = {
        "timestamp": pa.array(times, type=pa.timestamp("ns", tz="UTC")),
        "latitude": pa.array([45.5, -33.9, 60.0, 47.376886]),
        "longitude": pa.array([7.25, 151.2, -179.5, 8.541694]),
        "station_id": pa.array(STATIONS),
        "network": pa.array(["netatmo"] * 4),  # metadata: neither exported nor reported
        T: pa.array([20.5, -3.0, None, 0.0]),
        RH: pa.array([55.0, 100.0, 12.5, None]),
        P: pa.array([1013.25, None, 985.0, 1000.0]),
        WS: pa.array([36.0, 7.2, None, 0.0]),
        WD: pa.array([270, 90, 359, None], type=pa.int32()),  # integer columns are numbers too
        GUST: pa.array([None, 20.0, None, None]),
        RAIN: pa.array([1.0, 2.0, 3.0, 4.0]),
        DEW_IN_METRES: pa.array([1.0, 2.0, 3.0, 4.0]),
        WIND_AT_2M: pa.array([1.0, 2.0, 3.0, 4.0]),
        T_KELVIN: pa.array([290.0, 291.0, 292.0, 293.0]),
        "battery_voltage": pa.array([3.1, 3.2, 3.3, 3.4]),
        "door_open": pa.array([True, False, True, False]),
    }
    return pa.table(columns)


def expected_rows() -> list[dict[str, Any]]:
    """The rows the golden table must give, computed by hand (not by the module's code)."""
    header = [
        ("ST001", 45.5, 7.25, 20240301, 123456),  # the 0.789 s are dropped, not rounded
        ("0-20000-0-15015", -33.9, 151.2, 20240301, 235959),
        ("ST001", 60.0, -179.5, 20240229, 0),
        ("Zürich-1", 47.376886, 8.541694, 20240302, 50607),
    ]
    knot = 1852.0 / 3600.0
    values = {
        0: {39: 20.5 + 273.15, 58: 0.55, 107: 101325.0, 111: 270.0, 112: 10.0},
        1: {39: -3.0 + 273.15, 58: 1.0, 111: 90.0, 112: 2.0, 261: 20.0 * knot},
        2: {58: 0.125, 107: 98500.0, 111: 359.0},
        3: {39: 273.15, 107: 100000.0, 112: 0.0},
    }
    rows = []
    for obs, (station, lat, lon, date, time) in enumerate(header):
        for varno, value in sorted(values[obs].items()):
            rows.append(
                {
                    "expver@desc": "xxxx",
                    "creaby@desc": "ionbeam",
                    "andate@desc": 20240302,
                    "antime@desc": 0,
                    **CONSTANTS,
                    "wigosid@hdr": station,
                    "lat@hdr": lat,
                    "lon@hdr": lon,
                    "date@hdr": date,
                    "time@hdr": time,
                    "varno@body": varno,
                    "obsvalue@body": value,
                }
            )
    return rows


def write(table: pa.Table, encoder: str, **kwargs: Any) -> tuple[bytes, OdbStats]:
    sink = io.BytesIO()
    args: dict[str, Any] = {"mapping": DEFAULT_MAPPING, "encoder": encoder} | kwargs
    stats = write_odb(table, sink, **args)
    assert stats.bytes_written == len(sink.getvalue())
    return sink.getvalue(), stats


def decode(data: bytes, decoder: str, tmp_path: Path) -> pd.DataFrame:
    if decoder == "pyodc":
        return pyodc.read_odb(io.BytesIO(data), single=True)
    path = tmp_path / "decode.odb"  # codc reads paths and file descriptors only
    path.write_bytes(data)
    return codc.read_odb(str(path), single=True)


def frame_types(data: bytes, decoder: str, tmp_path: Path) -> list[dict[str, str]]:
    """Per frame: column -> ODB type name as stored in the frame header."""
    if decoder == "pyodc":
        frames = pyodc.Reader(io.BytesIO(data), aggregated=False).frames
        return [{c.name: pyodc.DataType(c.dtype).name for c in f.columns} for f in frames]
    path = tmp_path / "types.odb"
    path.write_bytes(data)
    frames = codc.Reader(str(path), aggregated=False).frames
    return [{c.name: codc.DataType(c.dtype).name for c in f.columns} for f in frames]


def family(odb_type: str) -> str:
    return {"INTEGER": "integer", "BITFIELD": "integer", "REAL": "real", "DOUBLE": "real", "STRING": "string"}[odb_type]


def pandas_family(series: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(series.dtype):
        return "integer"
    if pd.api.types.is_float_dtype(series.dtype):
        return "real"
    if pd.api.types.is_string_dtype(series.dtype):
        return "string"
    raise AssertionError(f"{series.name}: unexpected dtype {series.dtype}")


def decode_empty(data: bytes, decoder: str, tmp_path: Path) -> list[Any]:
    if decoder == "pyodc":
        return list(pyodc.read_odb(io.BytesIO(data), single=False))
    path = tmp_path / "empty.odb"
    path.write_bytes(data)
    return codc.Reader(str(path)).frames


# --------------------------------------------------------------------------- environment


def test_codc_works_on_this_machine_and_is_the_default() -> None:
    # Not skipped when codc is missing: the deployment needs it (~6x pyodc), so a machine
    # without it must fail here rather than quietly fall back.
    assert codc_available()
    assert default_encoder() == "codc"


# --------------------------------------------------------------------------- golden rows


@pytest.fixture(scope="module")
def golden() -> dict[str, tuple[bytes, OdbStats]]:
    return {encoder: write(golden_table(), encoder, analysis_time=ANALYSIS) for encoder in ENCODERS}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_golden_rows(golden: dict[str, tuple[bytes, OdbStats]], encoder: str, decoder: str, tmp_path: Path) -> None:
    data, _ = golden[encoder]
    frame = decode(data, decoder, tmp_path)
    assert set(frame.columns) == set(CONTRACT_COLUMNS)
    for name, kind in CONTRACT_COLUMNS.items():
        assert pandas_family(frame[name]) == kind, name

    records = frame.to_dict("records")
    # The file keeps observation order, one observation's varnos ascending.
    expected = expected_rows()
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        for name, value in want.items():
            if name == "obsvalue@body":
                assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (want, got)
            else:
                assert got[name] == value, (name, want, got)
                assert type(got[name]) is type(value) or isinstance(got[name], np.integer | np.floating)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_column_types_in_the_file(golden: dict[str, tuple[bytes, OdbStats]], encoder: str, decoder: str, tmp_path: Path) -> None:
    data, _ = golden[encoder]
    for types in frame_types(data, decoder, tmp_path):
        assert {name: family(t) for name, t in types.items()} == CONTRACT_COLUMNS
        # Reals are 8-byte DOUBLE: REAL is stored as float32 by both encoders.
        assert {t for name, t in types.items() if CONTRACT_COLUMNS[name] == "real"} == {"DOUBLE"}


def test_reals_are_exact_doubles(golden: dict[str, tuple[bytes, OdbStats]], tmp_path: Path) -> None:
    frame = decode(golden["codc"][0], "codc", tmp_path)
    assert 293.65 in set(frame["obsvalue@body"])  # float32 would read 293.649993896...
    assert 47.376886 in set(frame["lat@hdr"])


def test_golden_stats(golden: dict[str, tuple[bytes, OdbStats]]) -> None:
    for encoder, (_, stats) in golden.items():
        assert stats.encoder == encoder
        assert stats.rows == len(expected_rows())
        assert stats.observations == 4
        assert stats.variables_exported == [T, RH, P, WS, WD, GUST]
        assert stats.varnos == {T: 39, RH: 58, P: 107, WS: 112, WD: 111, GUST: 261}
        assert stats.analysis_time == ANALYSIS
        assert stats.values_dropped == {}
        skipped = stats.variables_skipped
        assert set(skipped) == {RAIN, DEW_IN_METRES, WIND_AT_2M, T_KELVIN, "battery_voltage", "door_open"}
        assert "no rule for standard_name 'precipitation_amount'" in skipped[RAIN]
        assert "unit 'm' cannot be converted to 'K'" in skipped[DEW_IN_METRES]
        assert "level 2.0" in skipped[WIND_AT_2M] and "level 10.0" in skipped[WIND_AT_2M]
        assert skipped[T_KELVIN] == f"varno 39 is already exported from column {T!r}"
        assert skipped["battery_voltage"].startswith("not a canonical variable name")
        assert skipped["door_open"] == "type bool is not numeric"


def test_both_encoders_write_the_same_rows(golden: dict[str, tuple[bytes, OdbStats]], tmp_path: Path) -> None:
    frames = [decode(golden[e][0], "pyodc", tmp_path)[list(CONTRACT_COLUMNS)] for e in ENCODERS]
    pd.testing.assert_frame_equal(frames[0], frames[1])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_small_frames_keep_one_layout(encoder: str, tmp_path: Path) -> None:
    data, stats = write(golden_table(), encoder, analysis_time=ANALYSIS, rows_per_frame=4)
    for decoder in DECODERS:
        types = frame_types(data, decoder, tmp_path)
        assert len(types) == -(-stats.rows // 4)
        assert all(t == types[0] for t in types)
        assert len(decode(data, decoder, tmp_path)) == stats.rows


# --------------------------------------------------------------------------- header values


def test_analysis_time_defaults_to_the_cycle_after_the_earliest_observation(tmp_path: Path) -> None:
    data, stats = write(golden_table(), "codc")
    # Earliest exported observation: 2024-02-29 00:00:00 -> the 06 UTC cycle (strictly after).
    assert stats.analysis_time == datetime(2024, 2, 29, 6, tzinfo=UTC)
    frame = decode(data, "codc", tmp_path)
    assert set(frame["andate@desc"]) == {20240229} and set(frame["antime@desc"]) == {60000}


def test_analysis_time_in_another_zone_is_written_in_utc(tmp_path: Path) -> None:
    cet = timezone(timedelta(hours=1))
    data, stats = write(golden_table(), "pyodc", analysis_time=datetime(2024, 3, 2, 13, 0, tzinfo=cet))
    frame = decode(data, "pyodc", tmp_path)
    assert set(frame["andate@desc"]) == {20240302} and set(frame["antime@desc"]) == {120000}
    assert stats.analysis_time == datetime(2024, 3, 2, 12, tzinfo=UTC)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_expver_created_by_and_null_station_ids(encoder: str, tmp_path: Path) -> None:
    table = golden_table()
    table = table.set_column(table.column_names.index("station_id"), "station_id", pa.array(["A", None, "A", None]))
    data, _ = write(table, encoder, expver="0001", created_by="ionbeam-dagster 0.1.0", analysis_time=ANALYSIS)
    for decoder in DECODERS:
        frame = decode(data, decoder, tmp_path)
        assert set(frame["expver@desc"]) == {"0001"}
        assert set(frame["creaby@desc"]) == {"ionbeam-dagster 0.1.0"}
        # A missing id is written as "", which is also how ODB decoders show a missing string.
        assert set(frame["wigosid@hdr"]) == {"A", ""}


def test_date_and_time_before_1970_and_at_day_edges(tmp_path: Path) -> None:
    times = [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2100, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    table = pa.table(
        {
            "timestamp": pa.array(times, type=pa.timestamp("us", tz="UTC")),
            "latitude": [0.0, 1.0, 2.0],
            "longitude": [0.0, 1.0, 2.0],
            "station_id": ["a", "b", "c"],
            T: [1.0, 2.0, 3.0],
        }
    )
    data, _ = write(table, "codc", analysis_time=ANALYSIS)
    for decoder in DECODERS:
        frame = decode(data, decoder, tmp_path)
        assert list(frame["date@hdr"]) == [19691231, 20000101, 21001231]
        assert list(frame["time@hdr"]) == [235959, 0, 235959]


# --------------------------------------------------------------------------- overrides


def test_overrides_from_catalog_dicts_change_what_is_exported(tmp_path: Path) -> None:
    mapping = VarnoMapping.from_overrides(
        [
            {"standard_name": "wind_speed", "level": 2.0, "method": "point", "period": "PT0S", "varno": 112},
            {"standard_name": "wind_speed", "level": 10.0, "method": "point", "period": "PT0S", "varno": None},
            {"standard_name": "relative_humidity", "level": 2.0, "method": "point", "period": "PT0S", "varno": None},
        ]
    )
    data, stats = write(golden_table(), "codc", mapping=mapping, analysis_time=ANALYSIS)
    assert WIND_AT_2M in stats.variables_exported and stats.varnos[WIND_AT_2M] == 112
    assert "excluded by the varno mapping" in stats.variables_skipped[WS]
    assert "excluded by the varno mapping" in stats.variables_skipped[RH]
    frame = decode(data, "codc", tmp_path)
    assert 58 not in set(frame["varno@body"])
    wind = frame[frame["varno@body"] == 112]
    assert list(wind["obsvalue@body"]) == [1.0, 2.0, 3.0, 4.0]


# --------------------------------------------------------------------------- empty results


@pytest.mark.parametrize("encoder", ENCODERS)
def test_empty_table_writes_an_empty_odb_stream(encoder: str, tmp_path: Path) -> None:
    table = golden_table().slice(0, 0)
    data, stats = write(table, encoder)
    assert data == b"" and stats.bytes_written == 0 and stats.rows == 0 and stats.observations == 0
    assert stats.analysis_time is None
    # Nothing is lost from the report: the mapping still ran.
    assert stats.variables_exported == [T, RH, P, WS, WD, GUST] and RAIN in stats.variables_skipped
    for decoder in DECODERS:
        assert decode_empty(data, decoder, tmp_path) == []


@pytest.mark.parametrize("encoder", ENCODERS)
def test_rows_without_any_mapped_value_write_nothing(encoder: str) -> None:
    table = golden_table().select(["timestamp", "latitude", "longitude", "station_id", GUST, RAIN])
    table = table.set_column(4, GUST, pa.nulls(4, pa.float64()))
    data, stats = write(table, encoder)
    assert data == b"" and stats.rows == 0
    assert stats.variables_exported == [GUST] and list(stats.variables_skipped) == [RAIN]


def test_nan_and_infinite_values_are_counted_not_written(tmp_path: Path) -> None:
    table = golden_table().select(["timestamp", "latitude", "longitude", "station_id", T])
    table = table.set_column(4, T, pa.array([float("nan"), float("inf"), None, 1.0]))
    data, stats = write(table, "codc", analysis_time=ANALYSIS)
    assert stats.rows == 1 and stats.values_dropped == {T: 2}
    assert list(decode(data, "codc", tmp_path)["obsvalue@body"]) == [274.15]


# --------------------------------------------------------------------------- the int32 guard


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("value", [2**31 - 1, 2**31, -(2**31) - 1, 2**40])
def test_int32_guard_refuses_integers_odb_cannot_read_back(encoder: str, value: int) -> None:
    # codc would write 2**31 as -2**31 and 2**31 - 1 (the missing marker) as missing, silently.
    sink = io.BytesIO()
    with pytest.raises(ValueError, match=r"varno@body: 1 value\(s\) outside the ODB integer range"):
        encode_columns({"varno@body": np.array([1, value], dtype=np.int64)}, sink, encoder=encoder)
    assert sink.getvalue() == b""


def test_int32_guard_refuses_large_unsigned_values() -> None:
    with pytest.raises(ValueError, match="exceed the ODB integer range"):
        encode_columns({"x": np.array([1, 2**63], dtype=np.uint64)}, io.BytesIO())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_int32_guard_bounds_are_exactly_what_reads_back(encoder: str, tmp_path: Path) -> None:
    sink = io.BytesIO()
    values = np.array([-(2**31), -1, 0, 2**31 - 2], dtype=np.int64)
    encode_columns({"x": values, "y": values.astype(np.int32)}, sink, encoder=encoder)
    for decoder in DECODERS:
        frame = decode(sink.getvalue(), decoder, tmp_path)
        assert list(frame["x"]) == list(values) and list(frame["y"]) == list(values)


@pytest.mark.parametrize(
    ("column", "error", "message"),
    [
        (np.array([True, False]), TypeError, "dtype bool is not encodable"),
        (np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]"), TypeError, "datetime64"),
        (np.array(["a", None], dtype=object), TypeError, "only str"),
        (np.array([1.0, np.nan]), ValueError, "missing value"),
        (np.array([1.0, -2147483647.0]), ValueError, "missing value"),
        (pd.array([1, None], dtype="Int64"), TypeError, "expected a numpy array"),
        (np.array([[1, 2]]), ValueError, "expected a 1-d array"),
    ],
)
def test_encode_columns_refuses_what_the_encoders_mishandle(column: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        encode_columns({"c": column}, io.BytesIO())


def test_encode_columns_checks_lengths_and_frame_size() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        encode_columns({"a": np.zeros(2, np.int64), "b": np.zeros(3, np.int64)}, io.BytesIO())
    with pytest.raises(ValueError, match="rows_per_frame: 40000 must be between 1 and 32767"):
        encode_columns({"a": np.zeros(2, np.int64)}, io.BytesIO(), rows_per_frame=40_000)
    with pytest.raises(ValueError, match="encoder: 'odc'"):
        encode_columns({"a": np.zeros(2, np.int64)}, io.BytesIO(), encoder="odc")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- input contract


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["station_id"]), "station_column: 'station_id' is not a column"),
        (lambda t: t.set_column(3, "station_id", pa.array([1, 2, 3, 4])), "station_id: type int64 must be a string"),
        (lambda t: t.drop_columns(["latitude"]), r"missing column\(s\) \['latitude'\]"),
        (lambda t: t.set_column(1, "latitude", pa.array([1.0, None, 2.0, 3.0])), r"latitude: 1 null value\(s\)"),
        (lambda t: t.set_column(2, "longitude", pa.array([1.0, 181.0, 2.0, 3.0])), r"outside \[-180, 180\]"),
        (lambda t: t.set_column(0, "timestamp", pa.array([1, 2, 3, 4])), "timestamp: type int64 must be a timestamp"),
        (
            lambda t: t.set_column(0, "timestamp", t["timestamp"].cast(pa.timestamp("ns", tz="Europe/Paris"))),
            "timezone 'Europe/Paris' must be UTC",
        ),
    ],
)
def test_tables_breaking_the_dataset_contract_are_refused(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write(change(golden_table()), "codc")


def test_naive_analysis_time_and_empty_expver_are_refused() -> None:
    with pytest.raises(ValueError, match="analysis_time: .* is naive"):
        write(golden_table(), "codc", analysis_time=datetime(2024, 3, 2))
    with pytest.raises(ValueError, match="expver: expected a non-empty string"):
        write(golden_table(), "codc", expver="")


def test_sink_needs_only_write() -> None:
    class WriteOnly:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, data: Any) -> int:
            self.parts.append(bytes(data))
            return len(data)

    for encoder in ENCODERS:
        sink = WriteOnly()
        stats = write_odb(golden_table(), sink, mapping=DEFAULT_MAPPING, encoder=encoder)  # type: ignore[arg-type]
        assert stats.bytes_written == len(b"".join(sink.parts)) > 0


# --------------------------------------------------------------------------- a realistic window


def synthetic_table(hours: int = 2, stations: int = 20) -> pa.Table:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    raw = generate_observations(start, start + timedelta(hours=hours), stations=stations)
    mapping = DataIngestionMap.model_validate(synthetic_ingestion_map())
    names = {mapping.datetime.column: "timestamp", mapping.lat.column: "latitude", mapping.lon.column: "longitude"}
    names |= {v.column: v.canonical_name for v in mapping.canonical_variables}
    return raw.rename_columns([names.get(c, c) for c in raw.column_names])


def test_synthetic_window_exports_every_variable_and_decoders_agree(tmp_path: Path) -> None:
    table = synthetic_table()
    frames = []
    for encoder in ENCODERS:
        data, stats = write(table, encoder)
        assert stats.variables_skipped == {}
        assert sorted(stats.varnos.values()) == [39, 58, 107, 111, 112]
        assert stats.rows == table.num_rows * 5 and stats.observations == table.num_rows
        for decoder in DECODERS:
            frame = decode(data, decoder, tmp_path)[list(CONTRACT_COLUMNS)]
            frames.append(frame)
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    temperature = table["air_temperature__degC__2.0__point__PT0S"].to_numpy()
    written = frames[0][frames[0]["varno@body"] == 39]["obsvalue@body"].to_numpy()
    np.testing.assert_allclose(written, temperature + 273.15, rtol=1e-12)


# --------------------------------------------------------------------------- ECMWF's own file


@pytest.fixture
def example_odb(fixtures_dir: Path) -> Path:
    path = fixtures_dir / "odb" / "example.odb"
    if not path.is_file():
        raise RuntimeError(f"shared fixture not found at {path}")
    return path


@pytest.mark.parametrize("decoder", DECODERS)
def test_example_odb_typing_agrees_with_ours(
    example_odb: Path, golden: dict[str, tuple[bytes, OdbStats]], decoder: str, tmp_path: Path
) -> None:
    data = example_odb.read_bytes()
    example = decode(data, decoder, tmp_path)
    assert example.shape == (4096, 17)
    (example_types,) = frame_types(data, decoder, tmp_path)

    # Compare by the name before "@": the example has bare "expver" and "reportype".
    def by_base(types: dict[str, str]) -> dict[str, str]:
        return {name.split("@")[0]: family(t) for name, t in types.items()}

    theirs = by_base(example_types)
    (our_types,) = frame_types(golden["codc"][0], decoder, tmp_path)
    assert set(our_types) == set(ODB_COLUMNS)
    ours = by_base(our_types)
    shared = set(theirs) & set(ours)
    assert shared == {"expver", "reportype", "obstype", "wigosid", "lat", "lon", "date", "time", "varno", "obsvalue"}
    assert {b: theirs[b] for b in shared} == {b: ours[b] for b in shared}

    # The decoded dtypes agree too, whichever decoder reads them.
    ours_frame = decode(golden["codc"][0], decoder, tmp_path)
    for name in example.columns:
        base = name.split("@")[0]
        if base in shared:
            match = next(c for c in ours_frame.columns if c.split("@")[0] == base)
            assert pandas_family(example[name]) == pandas_family(ours_frame[match]), name

    # Conventions read off the example: YYYYMMDD / HHMMSS integers, and strings as stored
    # (space padding is data the decoders keep, so our ids are written unpadded).
    assert set(example["date@hdr"]) == {20210618} and set(example["time@hdr"]) == {0}
    assert example["expver"].iloc[0] == "    0001"
    assert example["statid@hdr"].iloc[0] == "   96413"
    assert set(example["wigosid@hdr"]) == {""}



def test_the_odb_exporter_first_does_not_break_geoparquet_in_the_same_process() -> None:
    """A build run exports ODB and GeoParquet in one process, in either order. codc's wheel
    bundles a SQLite that, loaded first, broke PROJ (CRSError or a double-free abort); run in
    a fresh interpreter so the import order is the production one."""
    import subprocess
    import sys

    script = """
import io
from datetime import UTC, datetime, timedelta
from ionbeam_dagster.exporters.odb import write_odb
from ionbeam_dagster.exporters.varno import DEFAULT_MAPPING
from ionbeam_dagster.exporters.geoparquet import write_geoparquet
from ionbeam_dagster.synthetic import generate_observations
start = datetime(2026, 1, 1, tzinfo=UTC)
end = start + timedelta(minutes=10)
raw = generate_observations(start, end, stations=3)
table = raw.rename_columns({"datetime": "timestamp", "lat": "latitude", "lon": "longitude",
    "air_temperature": "air_temperature__degC__2.0__point__PT0S"})
table = table.select(["timestamp", "latitude", "longitude", "air_temperature__degC__2.0__point__PT0S", "station_id"])
write_odb(table, io.BytesIO(), mapping=DEFAULT_MAPPING, encoder="codc")
stats = write_geoparquet(table, io.BytesIO(), window_start=start, window_end=end, dataset="d", dataset_version="v")
print("rows", stats.rows)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "rows 30"
