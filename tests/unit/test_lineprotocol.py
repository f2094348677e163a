from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ionbeam_dagster import lineprotocol
from ionbeam_dagster.lineprotocol import (
    check_identifier,
    decode_tag_value,
    encode_lines,
    encode_tag_value,
    iter_bodies,
)


def lines_of(table: pa.Table, *, tags: list[str], fields: list[str], measurement: str = "m") -> list[str]:
    return encode_lines(table, measurement=measurement, time_column="time", tag_columns=tags, field_columns=fields).to_pylist()


def test_one_line_per_row_ending_in_newline() -> None:
    table = pa.table({"time": pa.array([1, 2], pa.int64()), "st": ["a", "b"], "f": [1.5, 2.0]})
    assert lines_of(table, tags=["st"], fields=["f"]) == ["m,st=a f=1.5 1\n", "m,st=b f=2 2\n"]


def test_measurement_escapes_comma_and_space_only() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": [1.0]})
    # "=" needs no escape in a measurement; 1.6.7 would keep a backslash before it literally.
    assert lines_of(table, tags=[], fields=["f"], measurement="a b,c=d") == ["a\\ b\\,c=d f=1 1\n"]


def test_keys_escape_comma_equals_and_space() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "k ,=": ["v"], "wind_speed__m s-1__10.0": [3.0], "precip__kg/m2": [0.5]})
    assert lines_of(table, tags=["k ,="], fields=["wind_speed__m s-1__10.0", "precip__kg/m2"]) == [
        "m,k\\ \\,\\==v wind_speed__m\\ s-1__10.0=3,precip__kg/m2=0.5 1\n"
    ]


def test_tag_values_escape_and_percent_encode() -> None:
    value = "a b,c=d\\e%f\ng\rh\"i'j Zürich ☃"
    table = pa.table({"time": pa.array([1], pa.int64()), "st": [value], "f": [1.0]})
    [line] = lines_of(table, tags=["st"], fields=["f"])
    assert line == "m,st=a\\ b\\,c\\=d%5Ce%25f%0Ag%0Dh\"i'j\\ Zürich\\ ☃ f=1 1\n"
    # The line itself never holds a raw newline or CR, which would end it early.
    assert line.count("\n") == 1 and "\r" not in line


def test_a_value_ending_in_backslash_is_representable() -> None:
    # 1.6.7 cannot parse a tag value ending in "\" (nor in "\\"); percent-encoding avoids both.
    table = pa.table({"time": pa.array([1], pa.int64()), "st": ["end\\"], "f": [1.0]})
    assert lines_of(table, tags=["st"], fields=["f"]) == ["m,st=end%5C f=1 1\n"]


def test_null_and_empty_tags_are_omitted() -> None:
    table = pa.table({"time": pa.array([1, 2, 3], pa.int64()), "a": ["x", None, ""], "b": [None, "y", "z"], "f": [1.0, 2.0, 3.0]})
    assert lines_of(table, tags=["a", "b"], fields=["f"]) == ["m,a=x f=1 1\n", "m,b=y f=2 2\n", "m,b=z f=3 3\n"]


def test_null_fields_are_omitted_with_their_commas() -> None:
    table = pa.table(
        {
            "time": pa.array([1, 2, 3, 4], pa.int64()),
            "lat": [10.0, 11.0, 12.0, 13.0],  # dense: no nulls
            "f": [None, 1.0, None, 2.0],
            "g": [None, None, 3.0, 4.0],
        }
    )
    assert lines_of(table, tags=[], fields=["lat", "f", "g"]) == [
        "m lat=10 1\n",
        "m lat=11,f=1 2\n",
        "m lat=12,g=3 3\n",
        "m lat=13,f=1 4\n".replace("f=1", "f=2,g=4"),
    ]


def test_only_sparse_fields_still_join_with_commas() -> None:
    table = pa.table({"time": pa.array([1, 2, 3], pa.int64()), "f": [None, 1.0, 5.0], "g": [2.0, None, 6.0]})
    assert lines_of(table, tags=[], fields=["f", "g"]) == ["m g=2 1\n", "m f=1 2\n", "m f=5,g=6 3\n"]


def test_a_row_without_any_field_is_refused() -> None:
    table = pa.table({"time": pa.array([1, 2], pa.int64()), "f": [None, 1.0], "g": pa.array([None, None], pa.float64())})
    with pytest.raises(ValueError, match="1 row"):
        lines_of(table, tags=[], fields=["f", "g"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_fields_are_refused(bad: float) -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": [bad]})
    with pytest.raises(ValueError, match="NaN or infinite"):
        lines_of(table, tags=[], fields=["f"])


def test_floats_use_the_shortest_round_trip_form() -> None:
    values = [1e-05, 1e20, -0.0, 0.1, 80.0, 5e-324, 1.7976931348623157e308, 1 / 3, 2.5e-7]
    table = pa.table({"time": pa.array(range(len(values)), pa.int64()), "f": values})
    written = [line.split(" ")[1].removeprefix("f=") for line in lines_of(table, tags=[], fields=["f"])]
    assert written[:3] == ["0.00001", "1e+20", "-0"]
    # Each form parses back to exactly the same float (InfluxDB uses Go's ParseFloat: same result).
    assert [float(w) for w in written] == values
    assert str(float(written[2])) == "-0.0"


def test_float32_and_integer_fields_are_written_as_their_float64_value() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": pa.array([0.1], pa.float32()), "i": pa.array([7], pa.int32())})
    [line] = lines_of(table, tags=[], fields=["f", "i"])
    assert line == f"m f={float(np.float32(0.1))!r},i=7 1\n"


def test_non_numeric_field_is_a_type_error() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": ["1.0"]})
    with pytest.raises(TypeError, match="not numeric"):
        lines_of(table, tags=[], fields=["f"])


def test_time_as_timestamp_and_non_string_tags() -> None:
    table = pa.table(
        {
            "time": pa.array([1_704_067_200_000_000], pa.timestamp("us", "UTC")),
            "st": pa.array([42], pa.int64()),
            "f": [1.0],
        }
    )
    assert lines_of(table, tags=["st"], fields=["f"]) == ["m,st=42 f=1 1704067200000000000\n"]


def test_null_time_is_refused() -> None:
    table = pa.table({"time": pa.array([None], pa.int64()), "f": [1.0]})
    with pytest.raises(ValueError, match="null"):
        lines_of(table, tags=[], fields=["f"])


@pytest.mark.parametrize(
    "name",
    ["a\nb", "a\rb", "tab\there", "nul\x00", "del\x7f", "", "a\\", "a\\\\b", "a\\,b", "a\\ b", "a\\=b"],
)
def test_identifiers_that_cannot_be_stored_exactly_are_refused(name: str) -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": [1.0], name: [1.0]})
    with pytest.raises(ValueError):
        encode_lines(table, measurement="m", time_column="time", tag_columns=[], field_columns=[name])
    with pytest.raises(ValueError):
        encode_lines(table, measurement=name, time_column="time", tag_columns=[], field_columns=["f"])


def test_control_character_in_tag_key_is_refused_with_the_name() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": [1.0], "st\n": ["x"]})
    with pytest.raises(ValueError, match="control character"):
        encode_lines(table, measurement="m", time_column="time", tag_columns=["st\n"], field_columns=["f"])


def test_a_lone_backslash_inside_a_name_is_kept_literally() -> None:
    # 1.x, 2.x and 3.x all read "a\b" as a, backslash, b.
    check_identifier("a\\b", "key")
    table = pa.table({"time": pa.array([1], pa.int64()), "k\\ey": ["v"], "f\\g": [1.0]})
    assert lines_of(table, tags=["k\\ey"], fields=["f\\g"]) == ["m,k\\ey=v f\\g=1 1\n"]


@pytest.mark.parametrize("name", ["time"])
def test_reserved_key_is_refused(name: str) -> None:
    table = pa.table({"t": pa.array([1], pa.int64()), name: [1.0]})
    with pytest.raises(ValueError, match="refuses"):
        encode_lines(table, measurement="m", time_column="t", tag_columns=[], field_columns=[name])


def test_comment_measurement_and_clashing_keys_are_refused() -> None:
    table = pa.table({"time": pa.array([1], pa.int64()), "f": [1.0], "s": ["x"]})
    with pytest.raises(ValueError, match="comment"):
        encode_lines(table, measurement="#m", time_column="time", tag_columns=[], field_columns=["f"])
    with pytest.raises(ValueError, match="distinct"):
        encode_lines(table, measurement="m", time_column="time", tag_columns=["f"], field_columns=["f"])
    with pytest.raises(ValueError, match="at least one field"):
        encode_lines(table, measurement="m", time_column="time", tag_columns=["s"], field_columns=[])


def test_empty_table_gives_no_lines() -> None:
    table = pa.table({"time": pa.array([], pa.int64()), "f": pa.array([], pa.float64())})
    assert len(encode_lines(table, measurement="m", time_column="time", tag_columns=[], field_columns=["f"])) == 0


def test_parallel_slices_give_the_same_lines_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 1_000
    rng = np.random.default_rng(1)
    table = pa.Table.from_batches(
        pa.table(
            {
                "time": pa.array(np.arange(n, dtype=np.int64)),
                "st": pa.array([None if i % 7 == 0 else f"s {i % 13}" for i in range(n)]),
                "f": pa.array([None if i % 5 == 0 else float(x) for i, x in enumerate(rng.normal(size=n))]),
                "g": rng.normal(size=n),
            }
        ).to_batches(max_chunksize=300)  # several chunks, as read from a file
    )
    args = dict(measurement="m", time_column="time", tag_columns=["st"], field_columns=["f", "g"])
    serial = encode_lines(table, **args)
    monkeypatch.setattr(lineprotocol, "_MIN_ROWS_PER_THREAD", 10)
    parallel = encode_lines(table, **args)
    assert isinstance(parallel, pa.Array)
    assert parallel.equals(serial)
    assert parallel[0].as_py() == f"m g={table['g'][0].as_py()!r} 0\n"


@given(st.text())
def test_percent_encoding_round_trips(value: str) -> None:
    encoded = encode_tag_value(value)
    assert not set(encoded) & {"\n", "\r", "\\"}
    assert decode_tag_value(encoded) == value
    [decoded] = decode_tag_value(pa.array([encoded])).to_pylist()
    assert decoded == value


def test_percent_decoding_is_one_pass() -> None:
    # A literal "%0A" is encoded as "%250A" and must come back as "%0A", not a newline.
    assert encode_tag_value("%0A") == "%250A"
    assert decode_tag_value("%250A") == "%0A"
    assert decode_tag_value(pa.array(["%250A", None, "plain", "%25%5C%0D"])).to_pylist() == ["%0A", None, "plain", "%\\\r"]


def test_bodies_split_on_line_boundaries_under_the_limit() -> None:
    lines = pa.array([f"m f={i} {i}\n" for i in range(1000)])
    whole = "".join(lines.to_pylist()).encode()
    for limit in (len(max(lines.to_pylist(), key=len)), 50, 1000, 10_000_000):
        bodies = list(iter_bodies(lines, limit))
        assert all(0 < len(body) <= limit for body in bodies)
        assert all(body.endswith(b"\n") for body in bodies)
        assert b"".join(bodies) == whole
        if limit == 10_000_000:
            assert len(bodies) == 1
    # Greedy: every body but the last is as full as the next line allows.
    bodies = list(iter_bodies(lines, 1000))
    assert all(len(b) + len(lines[0].as_py()) > 1000 - 6 for b in bodies[:-1])


def test_bodies_of_a_sliced_and_chunked_array() -> None:
    lines = pa.array([f"m f={i} {i}\n" for i in range(100)])
    sliced = lines.slice(10, 20)
    assert b"".join(iter_bodies(sliced, 40)) == "".join(sliced.to_pylist()).encode()
    chunked = pa.chunked_array([lines.slice(0, 50), lines.slice(50)])
    assert b"".join(iter_bodies(chunked, 100)) == "".join(lines.to_pylist()).encode()
    large = lines.cast(pa.large_string())
    assert b"".join(iter_bodies(large, 100)) == "".join(lines.to_pylist()).encode()


def test_a_line_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        list(iter_bodies(pa.array(["m f=1 1\n", "m f=1234567890 2\n"]), 10))
