"""Memory: peak RSS of a process that builds one window, next to the window's Arrow size.

The build runs in a fresh subprocess (``python -m benchmarks.memory``) that reports its own
``ru_maxrss`` after the imports and after the build.

The child is started through ``sh``, which forks it: Linux carries a process's peak RSS
across ``execve`` (and Python spawns with vfork, sharing the parent's memory until then),
so a child exec'd straight from this process would report at least *our* RSS, hundreds
of MB of benchmark tables. A child forked by a small shell starts from the shell's few MB.
For the same reason RUSAGE_CHILDREN here is not used: it would count the shell.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.config import REPO
from benchmarks.services import BenchServices

MB = 1 << 20


@dataclass
class MemoryMeasurement:
    window_rows: int
    arrow_bytes: int
    peak_rss_bytes: int
    baseline_rss_bytes: int
    build_s: float

    def summary(self) -> dict[str, Any]:
        arrow_mb = self.arrow_bytes / MB
        peak_mb = self.peak_rss_bytes / MB
        return {
            "window_rows": self.window_rows,
            "arrow_mb": arrow_mb,
            "peak_rss_mb": peak_mb,
            "baseline_rss_mb": self.baseline_rss_bytes / MB,
            "budget_mb": 3 * arrow_mb + 300,
            "build_s": self.build_s,
        }


def measure_memory(
    services: BenchServices, measurement: str, rows: int, *, log: Callable[[str], None] = print
) -> MemoryMeasurement:
    args = {
        "influx_url": services.config.influx_url,
        "database": services.influx.database,
        "redis_url": services.config.redis_url,
        "amqp_url": services.config.amqp_url,
        "prefix": services.prefix,
        "objects": services.objects_dir.as_uri(),
        "measurement": measurement,
    }
    completed = subprocess.run(
        # Not `exec`: the shell must fork the child (see the module docstring).
        ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m", "benchmarks.memory", json.dumps(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory child failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    if report["rows"] != rows:
        raise AssertionError(f"memory child built {report['rows']} of {rows} rows")
    arrow = services.store.read_table(report["key"]).nbytes
    result = MemoryMeasurement(
        window_rows=rows,
        arrow_bytes=arrow,
        peak_rss_bytes=report["peak_rss_bytes"],
        baseline_rss_bytes=report["baseline_rss_bytes"],
        build_s=report["seconds"],
    )
    log(
        f"  memory {rows:>9} rows: arrow {arrow / MB:7.1f} MB, peak RSS {result.peak_rss_bytes / MB:7.1f} MB "
        f"(after imports {result.baseline_rss_bytes / MB:.1f} MB)"
    )
    return result


def _child(args: dict[str, Any]) -> None:
    """Build the window in this process and print one JSON line about it."""
    import time

    import redis

    from benchmarks.data import WINDOW, dataset_spec
    from ionbeam_dagster.broker import Broker, Topology
    from ionbeam_dagster.build import build_window
    from ionbeam_dagster.influx import InfluxClient
    from ionbeam_dagster.objectstore import ObjectStore
    from ionbeam_dagster.windowstate import WindowState

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    client = redis.Redis.from_url(args["redis_url"])
    with Broker(args["amqp_url"], Topology(args["prefix"])) as broker, InfluxClient(args["influx_url"], args["database"]) as influx:
        started = time.perf_counter()
        built = build_window(
            dataset_spec(args["measurement"]),
            WINDOW,
            influx=influx,
            store=ObjectStore.from_url(args["objects"]),
            state=WindowState(client, args["prefix"]),
            broker=broker,
        )
        seconds = time.perf_counter() - started
    client.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": built.rows, "key": built.key, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline, "seconds": seconds}))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
