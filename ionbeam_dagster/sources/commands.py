"""StartSourceCommand admission: from a message on ``{prefix}.source.<name>.start`` to a plan
for one run of that source's job.

Everything here needs no Dagster and no service, so the source sensor only does I/O: it
dead-letters a :class:`Rejection`, stages a :class:`StartPlan` (its JSON) in Redis, acks, and
later launches the run the staged plan describes.

The requested range is clipped to what exists: not before the source's first partition, not
after now (the run clips again when it starts). A range the source can never serve is
refused, as is one so long that a single run would take days: history is what Dagster
backfills are for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from ionbeam_dagster.contracts import StartSourceCommand, as_utc, format_time, parse_message
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.sources.base import Source, fetch_windows
from ionbeam_dagster.windows import partition_key

__all__ = ["MAX_PARTITIONS_PER_COMMAND", "StartPlan", "admit_start", "ledger_id"]

#: One run per command; beyond this many partitions, ask for a backfill instead.
MAX_PARTITIONS_PER_COMMAND = 400
# Clocks differ between the scheduler that sends a command and this platform.
CLOCK_TOLERANCE = timedelta(minutes=5)


def ledger_id(source: str, command_id: str) -> str:
    """Staging id: per source, so one id sent to two sources starts both."""
    return f"{source}:{command_id}"


@dataclass(frozen=True)
class StartPlan:
    """What one StartSourceCommand asks for, clipped: the run's range and partitions."""

    command_id: str
    source: str
    start: str  # ISO 8601 UTC, clipped
    end: str
    requested_start: str
    requested_end: str
    partition_start: str  # first and last partition keys of the run
    partition_end: str
    partitions: int
    body: str  # the original message, for the dead-letter queue if the run keeps failing

    @property
    def ledger_id(self) -> str:
        return ledger_id(self.source, self.command_id)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> StartPlan:
        return cls(**json.loads(raw))


def admit_start(body: bytes, source: Source, now: datetime, *, max_partitions: int = MAX_PARTITIONS_PER_COMMAND) -> StartPlan:
    """Validate a StartSourceCommand taken off ``source``'s queue; raises Rejection."""
    command = parse_message(body, StartSourceCommand)
    if command.source_name != source.name:
        raise Rejection(
            "source_mismatch",
            f"source_name: {command.source_name!r} arrived on the queue of source {source.name!r}; "
            f"send it to the queue of the source it names",
        )
    start, end, now = as_utc(command.start_time), as_utc(command.end_time), as_utc(now)
    if start >= end:
        raise Rejection("invalid_time_range", f"start_time: {format_time(start)} must be before end_time {format_time(end)}")
    if end <= source.start:
        raise Rejection(
            "invalid_time_range",
            f"end_time: {format_time(end)} is not after the first data of source {source.name!r} ({format_time(source.start)})",
        )
    if start >= now + CLOCK_TOLERANCE:
        raise Rejection("invalid_time_range", f"start_time: {format_time(start)} is in the future (now {format_time(now)})")
    clipped_start, clipped_end = max(start, source.start), min(end, now)
    if clipped_start >= clipped_end:
        raise Rejection("invalid_time_range", f"start_time: {format_time(start)} leaves nothing to fetch before now ({format_time(now)})")
    problem = source.check_range(clipped_start, clipped_end, now)
    if problem is not None:
        raise Rejection("range_not_available", f"start_time/end_time: {problem}")
    windows = fetch_windows(source, clipped_start, clipped_end)
    if len(windows) > max_partitions:
        raise Rejection(
            "invalid_time_range",
            f"start_time/end_time: [{format_time(clipped_start)}, {format_time(clipped_end)}) covers {len(windows)} "
            f"{format_duration(source.fetch_span)} partitions of {source.name!r}, more than {max_partitions} for one run; "
            f"split it, or run a backfill of sources/{source.name} in Dagster",
        )
    return StartPlan(
        command_id=str(command.id),
        source=source.name,
        start=format_time(clipped_start),
        end=format_time(clipped_end),
        requested_start=format_time(start),
        requested_end=format_time(end),
        partition_start=partition_key(windows[0]),
        partition_end=partition_key(windows[-1]),
        partitions=len(windows),
        body=bytes(body).decode("utf-8"),
    )
