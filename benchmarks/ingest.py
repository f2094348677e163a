"""Ingest: payload in the object store -> validated -> InfluxDB, ours against the raw limit.

- ours: :func:`ionbeam_dagster.ingestion.ingest` with the real ObjectStore, InfluxClient and
  Broker: read Parquet, normalise, encode line protocol, write, publish the event.
- raw: the same rows as pre-serialised line protocol (our encoder's exact bytes, split into
  bodies before the clock starts) POSTed to /write; the best of 1 and 2 concurrent writers
  and 10k and 50k lines per request.
- reference: how ionbeam serialises, pandas + influxdb-client's DataframeSerializer, on the
  same rows, then the same write (1 writer, 10k lines per request): serialisation + write.
  The DataFrame is built before the clock starts: the reference holds its data as one.

Every trial writes a measurement of its own (new series, new points) so no side benefits
from writing over points another trial left, and trials of the two sides are interleaved so
background compaction of earlier writes falls on both.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import requests

from benchmarks.data import dataset_spec, ingest_command, observations, write_payload
from benchmarks.services import BenchServices
from benchmarks.timing import Trials, cpu_summary, paired_ratio, rate, settle, timed, timed_cpu
from ionbeam_dagster.ingestion import IngestionResult, ingest
from ionbeam_dagster.lineprotocol import encode_lines
from ionbeam_dagster.normalise import normalise

RAW_WRITERS = (1, 2)
RAW_LINES_PER_REQUEST = (10_000, 50_000)
REFERENCE_LINES_PER_REQUEST = 10_000


@dataclass
class IngestMeasurement:
    rows: int
    ours: Trials[IngestionResult] = field(default_factory=Trials)
    raw: dict[str, Trials[None]] = field(default_factory=dict)
    reference: Trials[None] = field(default_factory=Trials)
    reference_serialise: Trials[None] = field(default_factory=Trials)
    ours_measurement: str = ""  # a measurement holding the window, written by our path

    @property
    def raw_best(self) -> tuple[str, float]:
        config = min(self.raw, key=lambda k: self.raw[k].best)
        return config, self.raw[config].best

    def summary(self) -> dict[str, Any]:
        if not self.raw:
            return {"ours_rows_per_s": rate(self.rows, self.ours.best), "ours_s": self.ours.best}
        config, raw_s = self.raw_best
        out: dict[str, Any] = {
            "ours_rows_per_s": rate(self.rows, self.ours.best),
            "raw_rows_per_s": rate(self.rows, raw_s),
            "ratio": raw_s / self.ours.best,
            "ours_s": self.ours.best,
            "raw_s": raw_s,
            "raw_best_config": config,
            "raw_rows_per_s_by_config": {k: rate(self.rows, t.best) for k, t in self.raw.items()},
            "ours_trials_s": self.ours.seconds,
            # Per repetition, the fastest raw configuration of that repetition against ours.
            "paired_ratio_median": paired_ratio(
                self.ours.seconds, [min(trials) for trials in zip(*(t.seconds for t in self.raw.values()))]
            ),
            **cpu_summary(self.ours, self.raw[config]),
        }
        if self.reference.seconds:
            out["reference_rows_per_s"] = rate(self.rows, self.reference.best)
            out["reference_measures"] = "pandas DataFrame -> DataframeSerializer -> /write (1 writer, 10k lines/request)"
            out["reference_serialise_only_rows_per_s"] = rate(self.rows, self.reference_serialise.best)
        return out


def config_name(writers: int, per_request: int) -> str:
    return f"{writers}w_{per_request // 1000}k"


def parse_config(name: str) -> tuple[int, int]:
    writers, per = name.split("w_")
    return int(writers), int(per.rstrip("k")) * 1000


def _name(kind: str, rows: int, trial: int) -> str:
    """A measurement (and dataset) name per trial: fresh series for every trial."""
    return f"b{kind}_{rows}_{trial}"


def _bodies(lines: pa.Array, per_request: int) -> list[bytes]:
    """Request bodies of ``per_request`` lines, cut at line ends from the string offsets."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2])
    cuts = list(range(0, len(lines), per_request)) + [len(lines)]
    return [bytes(data[offsets[a] : offsets[b]]) for a, b in zip(cuts, cuts[1:])]


def _rename(bodies: list[bytes], old: str, new: str) -> list[bytes]:
    # Pre-encoded bodies get each trial's measurement by a byte replace rather than a second
    # encode: the measurement opens every line and nothing else in a line equals "<name>,".
    before, after = f"{old},".encode(), f"{new},".encode()
    return [body.replace(before, after) for body in bodies]


def write_bodies(url: str, database: str, bodies: list[bytes], writers: int) -> None:
    """POST every body to /write with ``writers`` concurrent connections."""

    def post_all(part: list[bytes]) -> None:
        with requests.Session() as session:
            session.headers["Accept-Encoding"] = "identity"
            for body in part:
                response = session.post(
                    f"{url}/write",
                    params={"db": database, "precision": "ns"},
                    data=body,
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=120,
                )
                if response.status_code != 204:
                    raise RuntimeError(f"raw write refused ({response.status_code}): {response.text[:300]}")

    parts = [bodies[i::writers] for i in range(writers)]
    with ThreadPoolExecutor(max_workers=writers) as pool:
        for future in [pool.submit(post_all, part) for part in parts]:
            future.result()


def _reference_frame(table: pa.Table) -> Any:
    """The normalised rows as the pandas frame the reference serialises: a UTC DatetimeIndex."""
    import pandas as pd

    frame = table.to_pandas()
    frame.index = pd.to_datetime(frame.pop("time"), utc=True)
    return frame


def _reference_lines(frame: Any, measurement: str, tags: list[str]) -> list[str]:
    from influxdb_client import WritePrecision
    from influxdb_client.client.write.dataframe_serializer import DataframeSerializer
    from influxdb_client.client.write_api import PointSettings

    serializer = DataframeSerializer(
        frame,
        PointSettings(),
        WritePrecision.NS,
        data_frame_measurement_name=measurement,
        data_frame_tag_columns=tags,
    )
    return serializer.serialize()


def _reference_trial(services: BenchServices, frame: Any, measurement: str) -> tuple[float, float]:
    """(serialise seconds, serialise + write seconds)."""
    url, database = services.config.influx_url, services.influx.database
    serialise_s, lines = timed(lambda: _reference_lines(frame, measurement, ["station_id"]))

    def write() -> None:
        bodies = [
            ("\n".join(lines[i : i + REFERENCE_LINES_PER_REQUEST]) + "\n").encode()
            for i in range(0, len(lines), REFERENCE_LINES_PER_REQUEST)
        ]
        write_bodies(url, database, bodies, writers=1)

    written, _ = timed(write)
    return serialise_s, serialise_s + written


def measure_ingest(
    services: BenchServices,
    rows: int,
    repeat: int,
    *,
    raw: bool = True,
    raw_configs: list[tuple[int, int]] | None = None,
    reference: bool = False,
    log: Callable[[str], None] = print,
) -> IngestMeasurement:
    """``raw_configs``: (writers, lines per request) pairs; default every combination."""
    configs = raw_configs or [(w, per) for w in RAW_WRITERS for per in RAW_LINES_PER_REQUEST]
    table = observations(rows)
    payload = write_payload(services.store, table, "bench")
    result = IngestMeasurement(rows=rows)

    # Line protocol for the raw side: the bytes our encoder produces for these rows.
    probe = ingest_command(dataset_spec("bench"), payload)
    normalised = normalise(table, probe, now=datetime.now(UTC)).table
    fields = ["latitude", "longitude", *(v.canonical_name for v in probe.metadata.ingestion_map.canonical_variables)]
    template = _name("raw", rows, 0)
    lines = encode_lines(normalised, measurement=template, time_column="time", tag_columns=["station_id"], field_columns=fields)
    bodies = {per: _bodies(lines, per) for per in sorted({per for _, per in configs})}
    del lines
    frame = _reference_frame(normalised) if reference else None
    del normalised

    for trial in range(repeat):
        settle()
        name = _name("ours", rows, trial)
        command = ingest_command(dataset_spec(name), payload)
        with services.fresh_broker() as broker:
            seconds, outcome, cpu = timed_cpu(
                lambda: ingest(command, store=services.store, influx=services.influx, broker=broker)
            )
        if outcome.rows_written != rows:
            raise AssertionError(f"ours wrote {outcome.rows_written} of {rows} rows")
        result.ours.add(seconds, outcome, cpu)
        result.ours_measurement = name
        log(f"  ingest ours    {rows:>9} rows  {seconds:7.3f} s  {rate(rows, seconds):>10,.0f} rows/s")
        if raw:
            for writers, per in configs:
                settle()
                key = config_name(writers, per)
                renamed = _rename(bodies[per], template, _name(f"r{writers}{per // 1000}", rows, trial))
                seconds, _, cpu = timed_cpu(
                    lambda: write_bodies(services.config.influx_url, services.influx.database, renamed, writers)
                )
                result.raw.setdefault(key, Trials()).add(seconds, None, cpu)
                log(f"  ingest raw {key:>7} {rows:>7} rows  {seconds:7.3f} s  {rate(rows, seconds):>10,.0f} rows/s")
        if frame is not None:
            settle()
            serialise_s, total_s = _reference_trial(services, frame, _name("ref", rows, trial))
            result.reference_serialise.add(serialise_s, None)
            result.reference.add(total_s, None)
            log(
                f"  ingest ref     {rows:>9} rows  {total_s:7.3f} s  {rate(rows, total_s):>10,.0f} rows/s "
                f"(serialise only {rate(rows, serialise_s):,.0f} rows/s)"
            )
    return result
