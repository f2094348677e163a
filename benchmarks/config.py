"""Benchmark settings, read once from the environment (``make bench`` passes them through)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def _int(name: str, default: int) -> int:
    text = os.environ.get(name, "").replace(",", "").replace("_", "").strip()
    if not text:
        return default
    value = int(text)
    if value <= 0:
        raise ValueError(f"{name}: {value} must be positive")
    return value


@dataclass(frozen=True)
class BenchConfig:
    rows: int
    repeat: int
    latency_windows: int
    influx_url: str
    redis_url: str
    amqp_url: str
    results_dir: Path
    # Parts can be skipped while iterating on one of them (comma-separated names).
    skip: frozenset[str]

    @classmethod
    def from_env(cls) -> BenchConfig:
        return cls(
            rows=_int("BENCH_ROWS", 1_000_000),
            repeat=_int("BENCH_REPEAT", 3),
            latency_windows=_int("BENCH_LATENCY_WINDOWS", 10),
            influx_url=os.environ.get("IONBEAM_INFLUXDB_URL", "http://127.0.0.1:8086"),
            redis_url=os.environ.get("IONBEAM_REDIS_URL", "redis://127.0.0.1:6379/0"),
            amqp_url=os.environ.get("IONBEAM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            results_dir=Path(os.environ.get("BENCH_RESULTS_DIR", str(RESULTS_DIR))),
            skip=frozenset(p.strip() for p in os.environ.get("BENCH_SKIP", "").split(",") if p.strip()),
        )

    def scaling_sizes(self) -> list[int]:
        """10k, 100k and 1M rows, capped at BENCH_ROWS (which is always the largest)."""
        sizes = sorted({n for n in (10_000, 100_000, 1_000_000) if n < self.rows} | {self.rows})
        return sizes
