"""`make bench`: measure every stage against its raw limit, print a table, write latest.json.

Options (environment): BENCH_ROWS (default 1,000,000), BENCH_REPEAT (default 3),
BENCH_LATENCY_WINDOWS (default 10), BENCH_SKIP (comma-separated parts to leave out:
ingest, reference, build, exports, memory, scaling, latency), BENCH_RESULTS_DIR.

A part that fails is reported as failed (with the error) and the others still run; the
exit status is then 1. Everything the run created is removed at the end.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from benchmarks.build import BuildMeasurement, measure_build
from benchmarks.config import BenchConfig
from benchmarks.exports import EXPORTERS, available, measure_export
from benchmarks.ingest import IngestMeasurement, measure_ingest
from benchmarks.latency import measure_latency
from benchmarks.machine import describe, load_average
from benchmarks.memory import measure_memory
from benchmarks.report import build_report, format_table, write_report
from benchmarks.scaling import measure_scaling
from benchmarks.services import BenchServices

T = TypeVar("T")


def log(message: str) -> None:
    print(message, flush=True)


class Parts:
    """Runs each part, keeping its failure (if any) instead of stopping the benchmark."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.failures: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T | None:
        if name in self.config.skip:
            log(f"[{name}] skipped (BENCH_SKIP)")
            return None
        log(f"[{name}]")
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
            traceback.print_exc()
            self.failures[name] = f"{type(exc).__name__}: {exc}"[:2000]
            return None
        log(f"[{name}] done in {time.monotonic() - started:.1f} s")
        return result


def main() -> int:
    config = BenchConfig.from_env()
    parts = Parts(config)
    machine = describe(config.influx_url, config.redis_url, config.amqp_url)
    log(f"benchmark: {config.rows:,} rows, best of {config.repeat}, machine load {machine['load_average_at_start']}")
    exports: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    with BenchServices(config) as services:
        log(f"prefix/database {services.prefix}, objects in {services.objects_dir}")
        ingest: IngestMeasurement | None = parts.run(
            "ingest",
            lambda: measure_ingest(services, config.rows, config.repeat, reference="reference" not in config.skip, log=log),
        )
        build: BuildMeasurement | None = None
        if ingest is not None:
            build = parts.run("build", lambda: measure_build(services, ingest.ours_measurement, config.rows, config.repeat, log=log))

        if build is not None and "exports" not in config.skip:
            table = services.store.read_table(build.ours.best_result.key)
            for name in EXPORTERS:
                if not available(name):
                    exports[name] = {"status": "missing", "reason": f"ionbeam_dagster/exporters/{name}.py does not exist yet"}
                    continue
                measured = parts.run(f"export {name}", lambda n=name: measure_export(n, table, services.root, config.repeat, log=log))
                exports[name] = measured.summary() if measured else {"status": "failed", "reason": parts.failures.get(f"export {name}", "skipped")}
            del table

        memory = None
        if ingest is not None:
            # Before the latency part: RUSAGE_CHILDREN is a maximum over every child reaped.
            memory = parts.run("memory", lambda: measure_memory(services, ingest.ours_measurement, config.rows, log=log))

        scaling: list[dict[str, Any]] = []
        if ingest is not None:
            scaling = parts.run(
                "scaling", lambda: measure_scaling(services, config.scaling_sizes(), config.repeat, (ingest, build), log=log)
            ) or []

        latency = parts.run("latency", lambda: measure_latency(services, config.latency_windows, log=log))

    machine["load_average_at_end"] = load_average()
    for name, failure in parts.failures.items():
        notes.append(f"{name} failed: {failure}")
    report = build_report(
        rows=config.rows,
        repeat=config.repeat,
        ingest=ingest.summary() if ingest else None,
        build=build.summary() if build else None,
        exports=exports,
        latency=latency.summary() if latency else None,
        memory=memory.summary() if memory else None,
        scaling=scaling,
        machine=machine,
        notes=notes,
    )
    path = write_report(report, config.results_dir)
    print()
    print(format_table(report))
    print(f"\nwritten to {path}")
    return 1 if parts.failures else 0


if __name__ == "__main__":
    sys.exit(main())
