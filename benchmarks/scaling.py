"""Scaling: ingest and build time at 10k, 100k and 1M rows (capped at BENCH_ROWS).

The largest size is the main measurement itself; smaller sizes are measured the same way,
best of BENCH_REPEAT. Each point also carries the raw side (the raw write in the main
measurement's best configuration, the raw query), so a departure from linear can be told
apart: ours, or the server's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.build import BuildMeasurement, measure_build
from benchmarks.ingest import IngestMeasurement, measure_ingest, parse_config
from benchmarks.services import BenchServices


def point(ingest: IngestMeasurement, build: BuildMeasurement | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rows": ingest.rows,
        "ingest_s": ingest.ours.best,
        "build_s": build.ours.best if build is not None else None,
        "ingest_us_per_row": ingest.ours.best / ingest.rows * 1e6,
        "build_us_per_row": build.ours.best / build.rows * 1e6 if build is not None else None,
    }
    if ingest.raw:
        out["raw_ingest_s"] = ingest.raw_best[1]
    if build is not None and build.raw.seconds:
        out["raw_build_s"] = build.raw.best
    return out


def measure_scaling(
    services: BenchServices,
    sizes: list[int],
    repeat: int,
    largest: tuple[IngestMeasurement, BuildMeasurement | None],
    *,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    main_ingest, main_build = largest
    configs = [parse_config(main_ingest.raw_best[0])] if main_ingest.raw else None
    points = []
    for rows in sizes:
        if rows == main_ingest.rows:
            points.append(point(main_ingest, main_build))
            continue
        ingest = measure_ingest(services, rows, repeat, raw=configs is not None, raw_configs=configs, log=log)
        build = measure_build(services, ingest.ours_measurement, rows, repeat, log=log)
        points.append(point(ingest, build))
    return sorted(points, key=lambda p: p["rows"])
