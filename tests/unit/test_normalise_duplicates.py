"""Duplicate detection in normalise: the packed-integer fast path keeps exactly the rows
the general group-by keeps (the last of each time + metadata key, in input order)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ionbeam_dagster.normalise import _last_of_each, _last_of_each_grouped, _packed_key

TIMES = st.sampled_from([0, 1, 2, 10**18, -(10**15)])
TAGS = st.sampled_from(["a", "b", "", None, "a "])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(min_value=1, max_value=40), tags=st.integers(min_value=0, max_value=2))
def test_fast_path_keeps_what_the_group_by_keeps(data: st.DataObject, rows: int, tags: int) -> None:
    columns = {"time": pa.array(data.draw(st.lists(TIMES, min_size=rows, max_size=rows)), pa.int64())}
    for i in range(tags):
        columns[f"tag{i}"] = pa.array(data.draw(st.lists(TAGS, min_size=rows, max_size=rows)), pa.string())
    table = pa.table(columns)
    keys = list(columns)
    assert _last_of_each(table, keys).to_pylist() == _last_of_each_grouped(table, keys).to_pylist()


def test_no_duplicates_in_any_order_keeps_every_row() -> None:
    times = np.random.default_rng(1).permutation(1000).astype(np.int64)
    table = pa.table({"time": pa.array(times), "station": pa.array(["s"] * 1000)})
    assert _last_of_each(table, ["time", "station"]).to_pylist() == list(range(1000))


def test_keys_that_do_not_fit_in_an_int64_take_the_general_path() -> None:
    table = pa.table(
        {
            "time": pa.array([-(2**62), 2**62, 2**62, 0], pa.int64()),
            "station": pa.array(["a", "b", "b", "c"]),
        }
    )
    assert _packed_key(table, ["time", "station"]) is None
    assert _last_of_each(table, ["time", "station"]).to_pylist() == [0, 2, 3]
