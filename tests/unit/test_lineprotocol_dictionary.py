"""The encoder's dictionary path (few distinct values: format each once, gather per row)
writes exactly the bytes of the row-by-row path, whatever the nulls and values."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionbeam_dagster import lineprotocol
from ionbeam_dagster.lineprotocol import encode_lines

# Few distinct values (so a column takes the dictionary path when allowed), including the
# ones whose text is easy to get wrong: -0.0, tiny and huge magnitudes, integers as floats.
FLOATS = st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e-7, 1.2345678901234567e300, 80.0, 0.1, None])
TAGS = st.sampled_from(["a", "b c", "d,e=f", "back\\slash", "per%cent", "", None])


def _encode(table: pa.Table, tags: list[str], fields: list[str], share: float, monkeypatch: pytest.MonkeyPatch) -> pa.Array:
    monkeypatch.setattr(lineprotocol, "_DICTIONARY_MAX_SHARE", share)
    return encode_lines(table, measurement="m x", time_column="time", tag_columns=tags, field_columns=fields)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(min_value=1, max_value=60),
    data=st.data(),
)
def test_dictionary_and_plain_paths_agree(rows: int, data: st.DataObject) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        f1 = data.draw(st.lists(FLOATS, min_size=rows, max_size=rows))
        f2 = data.draw(st.lists(FLOATS, min_size=rows, max_size=rows))
        if not any(v is not None for v in f1):
            f1[0] = 3.0  # keep the first field dense-or-sparse but never leave a row without fields
        f2 = [v if v is not None or f1[i] is not None else 1.0 for i, v in enumerate(f2)]
        table = pa.table(
            {
                "time": pa.array(data.draw(st.lists(st.sampled_from([0, 1, 10**18, 5]), min_size=rows, max_size=rows)), pa.int64()),
                "station": pa.array(data.draw(st.lists(TAGS, min_size=rows, max_size=rows)), pa.string()),
                "f1": pa.array(f1, pa.float64()),
                "f2": pa.array(f2, pa.float64()),
            }
        )
        plain = _encode(table, ["station"], ["f1", "f2"], -1.0, monkeypatch)
        dictionary = _encode(table, ["station"], ["f1", "f2"], 1.0, monkeypatch)
        assert dictionary.equals(plain)
        for line, f in zip(plain.to_pylist(), f1):
            assert line.startswith("m\\ x")
            if f is not None and not (f == 0 and math.copysign(1, f) < 0):
                assert f"f1={pa.array([f]).cast(pa.string())[0].as_py()}" in line


def test_a_large_low_cardinality_table_takes_the_dictionary_path_and_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 250_000  # over the per-thread slice, so slices of the dictionary indices are used too
    table = pa.table(
        {
            "time": pa.array([(i // 100) * 10**9 for i in range(rows)], pa.int64()),
            "station": pa.array([f"st{i % 100}" for i in range(rows)]),
            "t": pa.array([round((i % 37) * 0.1, 1) for i in range(rows)], pa.float64()),
            "p": pa.array([None if i % 5 else float(i % 7) for i in range(rows)], pa.float64()),
        }
    )
    plain = _encode(table, ["station"], ["t", "p"], -1.0, monkeypatch)
    dictionary = _encode(table, ["station"], ["t", "p"], lineprotocol._DICTIONARY_MAX_SHARE, monkeypatch)
    assert dictionary.equals(plain)
    assert plain[6].as_py() == "m\\ x,station=st6 t=0.6 0\n"
    assert plain[5].as_py() == "m\\ x,station=st5 t=0.5,p=5 0\n"


def test_only_sparse_fields_agree_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    table = pa.table(
        {
            "time": pa.array([1, 2, 3, 4], pa.int64()),
            "a": pa.array([1.0, None, 3.0, None]),
            "b": pa.array([None, 2.0, 3.0, 4.0]),
        }
    )
    plain = _encode(table, [], ["a", "b"], -1.0, monkeypatch)
    dictionary = _encode(table, [], ["a", "b"], 1.0, monkeypatch)
    assert plain.to_pylist() == ["m\\ x a=1 1\n", "m\\ x b=2 2\n", "m\\ x a=3,b=3 3\n", "m\\ x b=4 4\n"]
    assert dictionary.equals(plain)
