"""Build: one window from InfluxDB to its Arrow IPC object, ours against the raw query.

- ours: :func:`ionbeam_dagster.build.build_window` with the real clients: schema discovery,
  the streamed chunked-CSV query, typed parsing, the IPC file written atomically to the
  object store, the announcement and the window record in Redis.
- raw: the same SELECT as chunked CSV with requests (no gzip), the whole answer parsed by
  one pyarrow.csv call with explicit column types; nothing written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from benchmarks.data import WINDOW, dataset_spec
from benchmarks.services import BenchServices
from benchmarks.timing import Trials, cpu_summary, paired_ratio, rate, settle, timed_cpu
from ionbeam_dagster.build import BuildResult, build_window
from ionbeam_dagster.influx import AXIS_FIELDS, quote_ident
from ionbeam_dagster.windows import Window


@dataclass
class BuildMeasurement:
    rows: int
    ours: Trials[BuildResult] = field(default_factory=Trials)
    raw: Trials[None] = field(default_factory=Trials)

    def summary(self) -> dict[str, Any]:
        if not self.raw.seconds:
            return {"ours_rows_per_s": rate(self.rows, self.ours.best), "ours_s": self.ours.best}
        return {
            "ours_rows_per_s": rate(self.rows, self.ours.best),
            "raw_rows_per_s": rate(self.rows, self.raw.best),
            "ratio": self.raw.best / self.ours.best,
            "ours_s": self.ours.best,
            "raw_s": self.raw.best,
            "ours_trials_s": self.ours.seconds,
            "raw_trials_s": self.raw.seconds,
            "paired_ratio_median": paired_ratio(self.ours.seconds, self.raw.seconds),
            "object_bytes": self.ours.best_result.bytes,
            **cpu_summary(self.ours, self.raw),
        }


def raw_query(url: str, database: str, measurement: str, window: Window, fields: list[str], tags: list[str]) -> pa.Table:
    """The window as chunked CSV over plain requests, parsed in one pyarrow.csv call."""
    columns = [*AXIS_FIELDS, *fields]
    select = ", ".join([*(f"{quote_ident(c)}::field" for c in columns), *(f"{quote_ident(t)}::tag" for t in tags)])
    q = f"SELECT {select} FROM {quote_ident(measurement)} WHERE time >= {window.start_ns} AND time < {window.end_ns}"
    response = requests.post(
        f"{url}/query",
        params={"db": database, "epoch": "ns", "chunked": "true", "chunk_size": "50000"},
        data={"q": q},
        headers={"Accept": "application/csv", "Accept-Encoding": "identity"},
        timeout=600,
    )
    response.raise_for_status()
    names = ["name", "tags", "time", *columns, *tags]
    types: dict[str, pa.DataType] = {"time": pa.int64(), **{c: pa.float64() for c in columns}, **{t: pa.string() for t in tags}}
    return pacsv.read_csv(
        pa.py_buffer(response.content),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=names[2:]),
    )


def measure_build(
    services: BenchServices,
    measurement: str,
    rows: int,
    repeat: int,
    *,
    raw: bool = True,
    log: Callable[[str], None] = print,
) -> BuildMeasurement:
    spec = dataset_spec(measurement)
    fields = sorted(set(services.influx.field_keys(measurement)) - set(AXIS_FIELDS))
    tags = services.influx.tag_keys(measurement)
    result = BuildMeasurement(rows=rows)
    for _ in range(repeat):
        settle()
        with services.fresh_broker() as broker:
            seconds, built, cpu = timed_cpu(
                lambda: build_window(spec, WINDOW, influx=services.influx, store=services.store, state=services.windows, broker=broker)
            )
        if built.rows != rows:
            raise AssertionError(f"ours built {built.rows} of {rows} rows")
        result.ours.add(seconds, built, cpu)
        log(f"  build ours     {rows:>9} rows  {seconds:7.3f} s  {rate(rows, seconds):>10,.0f} rows/s")
        if not raw:
            continue
        settle()
        seconds, table, cpu = timed_cpu(
            lambda: raw_query(services.config.influx_url, services.influx.database, measurement, WINDOW, fields, tags)
        )
        if table.num_rows != rows:
            raise AssertionError(f"raw query read {table.num_rows} of {rows} rows")
        del table
        result.raw.add(seconds, None, cpu)
        log(f"  build raw      {rows:>9} rows  {seconds:7.3f} s  {rate(rows, seconds):>10,.0f} rows/s")
    return result
