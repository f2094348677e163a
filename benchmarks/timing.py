"""Timing helpers: best-of-N wall time, and waiting for InfluxDB to go quiet between trials.

Best of N, not the mean: on a shared machine the noise only ever adds time, so the fastest
trial is the closest to what the code itself costs.

InfluxDB compacts in the background after a large write and can keep a core busy for
seconds; on a 2-core machine that would slow whichever trial comes next. :func:`settle`
waits (bounded) until the server process is idle, so every trial starts from the same state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Trials(Generic[T]):
    seconds: list[float] = field(default_factory=list)
    results: list[T] = field(default_factory=list)
    # CPU seconds of this process and of the InfluxDB server during each trial (see Cpu).
    cpu: list[tuple[float, float]] = field(default_factory=list)

    def add(self, seconds: float, result: T, cpu: tuple[float, float] | None = None) -> None:
        self.seconds.append(seconds)
        self.results.append(result)
        if cpu is not None:
            self.cpu.append(cpu)

    @property
    def best_cpu(self) -> tuple[float, float] | None:
        """(client, server) CPU seconds of the trial with the least CPU in total."""
        return min(self.cpu, key=sum) if self.cpu else None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def best_result(self) -> T:
        return self.results[self.seconds.index(self.best)]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


class Cpu:
    """CPU seconds spent by this process (all threads) and by the local InfluxDB server.

    Wall time on a shared machine mostly measures how much CPU the others left us; CPU
    time measures the work. The server's count includes whatever other clients made it
    do meanwhile, so it is an upper bound when the server is shared.
    """

    def __init__(self) -> None:
        self._pids = _influxd_pids()
        self._client = self._server = 0.0

    def __enter__(self) -> Cpu:
        self._start = (time.process_time(), _cpu_ticks(self._pids))
        return self

    def __exit__(self, *exc: object) -> None:
        self._client = time.process_time() - self._start[0]
        self._server = (_cpu_ticks(self._pids) - self._start[1]) / _TICKS

    @property
    def seconds(self) -> tuple[float, float]:
        return self._client, self._server


def timed_cpu(fn: Callable[[], T]) -> tuple[float, T, tuple[float, float]]:
    with Cpu() as cpu:
        seconds, result = timed(fn)
    return seconds, result, cpu.seconds


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def _influxd_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "influxd":
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def settle(max_seconds: float = 10.0, idle_fraction: float = 0.1, probe: float = 0.5) -> float:
    """Wait until InfluxDB uses under ``idle_fraction`` of a core; returns seconds waited.

    Only when the server runs on this machine (a remote one is not ours to watch).
    """
    pids = _influxd_pids()
    if not pids:
        return 0.0
    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        before = _cpu_ticks(pids)
        time.sleep(probe)
        used = (_cpu_ticks(pids) - before) / _TICKS
        if used < idle_fraction * probe:
            break
    return time.monotonic() - started


def cpu_summary(ours: Trials[Any], raw: Trials[Any]) -> dict[str, Any]:
    """CPU seconds (client, InfluxDB server) of each side's leanest trial: far less noisy
    than wall time on a shared machine; ``cpu_ratio`` is raw total / ours total."""
    if ours.best_cpu is None or raw.best_cpu is None:
        return {}
    return {
        "ours_cpu_s": {"client": ours.best_cpu[0], "server": ours.best_cpu[1]},
        "raw_cpu_s": {"client": raw.best_cpu[0], "server": raw.best_cpu[1]},
        "cpu_ratio": sum(raw.best_cpu) / sum(ours.best_cpu),
    }


def paired_ratio(ours: list[float], raw: list[float]) -> float | None:
    """Median over repetitions of raw / ours, each pair measured back to back.

    Best-of on each side can pair a raw trial from a quiet moment with ours from a busy
    one; trials of one repetition ran seconds apart, so their ratio shares most of the
    machine's mood. Reported next to the best-of ratio, not instead of it.
    """
    pairs = sorted(r / o for o, r in zip(ours, raw) if o > 0)
    if not pairs:
        return None
    middle = len(pairs) // 2
    return pairs[middle] if len(pairs) % 2 else (pairs[middle - 1] + pairs[middle]) / 2
