"""iter_encoded_bodies: the same bytes as encode_lines + iter_bodies, a slice at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ionbeam_dagster.lineprotocol import encode_lines, iter_bodies, iter_encoded_bodies


def _table(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    values = rng.normal(size=rows)
    sparse = pa.array([None if i % 3 else float(i) for i in range(rows)], pa.float64())
    return pa.table(
        {
            "time": pa.array(np.arange(rows, dtype=np.int64) * 1_000_000_000),
            "station": pa.array([None if i % 7 == 0 else f"st {i % 11}" for i in range(rows)]),
            "t": pa.array(values),
            "p": sparse,
        }
    )


ARGS = dict(measurement="obs", time_column="time", tag_columns=["station"], field_columns=["t", "p"])


@pytest.mark.parametrize("slice_rows", [1, 7, 100, 250_001])
@pytest.mark.parametrize("max_bytes", [100, 1000, 10_000_000])
def test_same_bytes_as_the_whole_table_encoded_at_once(slice_rows: int, max_bytes: int) -> None:
    table = _table(500)
    whole = b"".join(iter_bodies(encode_lines(table, **ARGS), max_bytes))
    bodies = list(iter_encoded_bodies(table, **ARGS, max_bytes=max_bytes, slice_rows=slice_rows))
    assert b"".join(bodies) == whole
    assert all(0 < len(body) <= max_bytes and body.endswith(b"\n") for body in bodies)


def test_more_rows_than_one_thread_slice() -> None:
    # Slices above the per-thread threshold are encoded on several threads, from an offset.
    table = _table(230_000)
    whole = encode_lines(table, **ARGS)
    joined = b"".join(iter_encoded_bodies(table, **ARGS, slice_rows=150_000))
    assert joined == b"".join(iter_bodies(whole, 10_000_000))


def test_an_empty_table_yields_nothing_but_names_are_still_checked() -> None:
    assert list(iter_encoded_bodies(_table(0), **ARGS)) == []
    with pytest.raises(ValueError, match="time"):
        list(iter_encoded_bodies(_table(0).rename_columns(["time", "station", "t", "time2"]), **{**ARGS, "field_columns": ["t", "time"]}))


def test_a_bad_row_anywhere_fails_before_the_first_body() -> None:
    # The NaN is in the last slice; nothing may be produced (and so written) before the error.
    table = _table(1000)
    values = table["t"].to_numpy().copy()
    values[-1] = np.nan
    table = table.set_column(2, "t", pa.array(values))
    bodies = iter_encoded_bodies(table, **ARGS, slice_rows=10)
    with pytest.raises(ValueError, match="NaN"):
        next(bodies)


def test_slice_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slice_rows"):
        list(iter_encoded_bodies(_table(3), **ARGS, slice_rows=0))
