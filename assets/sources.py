"""Data sources as Dagster assets: ``sources/<name>``, one per registered Source.

Each source gets three things from :func:`build_source`:

- the asset, partitioned by the source's fetch span (daily for the sensor.community archive).
  A run covers one partition (schedule), a range (backfills, StartSourceCommands: range tags),
  and may be narrowed by run config to part of it (a StartSourceCommand's exact range). It
  fetches and publishes one payload per partition, through exactly the path an external
  ionbeam source uses: raw Parquet in the object store, then an IngestDataCommand. A range is
  never fetched past now, so a payload never claims the future.
- the job ``<name>_source`` (Dagster backfills of history use it, or the asset directly).
- the schedule ``<name>_source_schedule``: on each tick, the newest ``catch_up`` partitions that
  ended at least the lag ago (``IONBEAM_SOURCE_LAG_<NAME>``, an ISO 8601 duration, or the
  source's default), each fetched once by the schedule; a failed one is tried again on later
  ticks, up to MAX_SCHEDULED_ATTEMPTS times.

No ``from __future__ import annotations`` here: Dagster reads the config class's annotations
at definition time.
"""

from datetime import UTC, datetime
from typing import Any, Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ionbeam_dagster.catalog import Catalog, DatasetSpec
from ionbeam_dagster.contracts import as_utc, format_time
from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.resources import BrokerResource, ObjectStoreResource, RedisResource
from ionbeam_dagster.sources.base import Source, due_windows, fetch_notes, fetch_windows, schedule_running, source_lag
from ionbeam_dagster.sources.publish import publish_payload
from ionbeam_dagster.windows import cron_for_span, partition_fmt, partition_key

SOURCE_GROUP = "sources"
TRIGGER_TAG = "ionbeam/trigger"
SOURCE_TAG = "ionbeam/source"
KIND_TAG = "ionbeam/kind"
PARTITION_TAG = "dagster/partition"
MAX_SCHEDULED_ATTEMPTS = 5
_ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def source_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([SOURCE_GROUP, name])


def source_op_name(name: str) -> str:
    """The asset's op, under which its run config goes."""
    return f"{SOURCE_GROUP}__{name}"


def source_job_name(name: str) -> str:
    return f"{name}_source"


def source_schedule_name(name: str) -> str:
    return f"{name}_source_schedule"


def source_partitions(source: Source) -> dg.TimeWindowPartitionsDefinition:
    # end_offset=1: the partition in progress exists, so a StartSourceCommand for "the last
    # minutes" (live feeds) has a partition to run; the asset never fetches past now.
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron_for_span(source.fetch_span),
        start=source.start,
        fmt=partition_fmt(source.fetch_span),
        timezone="UTC",
        end_offset=1,
    )


class SourceRunConfig(dg.Config):
    """Narrow a run to part of its partitions (what a StartSourceCommand asked for)."""

    start: Optional[str] = None  # ISO 8601; default: the partitions' start
    end: Optional[str] = None  # ISO 8601; default: the partitions' end (never past now)
    command_id: Optional[str] = None  # the StartSourceCommand this run serves, for the record


def _config_time(field: str, value: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise dg.Failure(description=f"config {field}: {value!r} is not an ISO 8601 time") from None


def run_range(window: dg.TimeWindow, config: SourceRunConfig, now: datetime) -> tuple[datetime, datetime]:
    """The range a run fetches: its partitions, narrowed by config, never past now."""
    start, end = as_utc(window.start), as_utc(window.end)
    if config.start:
        start = max(start, _config_time("start", config.start))
    if config.end:
        end = min(end, _config_time("end", config.end))
    return start, min(end, now)


def _description(source: Source, spec: DatasetSpec) -> str:
    text = source.description or f"Fetches {source.name} into the {spec.name} dataset."
    text += f" Feeds the `{spec.name}` dataset; partitions of {format_duration(source.fetch_span)}."
    if spec.licence:
        text += f" Licence: {spec.licence}."
    if spec.attribution:
        text += f" {spec.attribution}"
    return text


def build_source(
    source: Source, catalog: Catalog
) -> tuple[dg.AssetsDefinition, UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    spec = catalog.get(source.dataset)
    if spec is None:
        raise ValueError(f"source {source.name!r}: its dataset {source.dataset!r} is not in the catalog")
    lag = source_lag(source)  # an invalid IONBEAM_SOURCE_LAG_<NAME> fails the load, naming it
    partitions = source_partitions(source)
    key = source_asset_key(source.name)

    @dg.asset(
        key=key,
        partitions_def=partitions,
        group_name=SOURCE_GROUP,
        description=_description(source, spec),
        kinds={"python"},
        tags={"ionbeam/dataset": spec.name},
    )
    def _source(
        context: dg.AssetExecutionContext,
        config: SourceRunConfig,
        objects: ObjectStoreResource,
        broker: BrokerResource,
        redis: RedisResource,
    ) -> dg.MaterializeResult:
        now = datetime.now(UTC)
        start, end = run_range(context.partition_time_window, config, now)
        if start >= end:
            raise dg.Failure(description=f"nothing to fetch: [{format_time(start)}, {format_time(end)}) is empty or in the future")
        problem = source.check_range(start, end, now)
        if problem is not None:
            raise dg.Failure(description=problem)
        store = objects.store()
        imap = source.ingestion_map()
        published: list[dict[str, Any]] = []
        client = redis.client()
        try:
            # The lease lets the source sensor tell this run's death from a slow fetch.
            with redis.leases(client).hold(context.run_id), source.http_client() as http, broker.open() as b:
                for window in fetch_windows(source, start, end):
                    lo, hi = max(window.start, start), min(window.end, end)
                    table = source.fetch(lo, hi, http, context.log)
                    command = publish_payload(
                        table, dataset=spec, ingestion_map=imap, start=lo, end=hi, store=store, broker=b, source=source.name
                    )
                    source.published(lo, hi, table)
                    context.log.info(
                        f"{source.name} [{format_time(lo)}, {format_time(hi)}): {table.num_rows} rows -> "
                        f"{command.payload_location} (command {command.id})"
                    )
                    station = imap.metadata_variables[0].column if imap.metadata_variables else None
                    published.append(_summary(table, station, lo, hi, command.payload_location, str(command.id)))
        finally:
            client.close()
        return dg.MaterializeResult(metadata=_metadata(published, config))

    job = dg.define_asset_job(
        source_job_name(source.name),
        selection=[key],
        partitions_def=partitions,
        description=f"Fetch {source.name} into {spec.name} (one partition, or a range through the range tags).",
        tags={KIND_TAG: "source", SOURCE_TAG: source.name},
    )

    @dg.schedule(
        name=source_schedule_name(source.name),
        cron_schedule=source.schedule_cron,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule_running(source) else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Fetch the newest {source.catch_up} {format_duration(source.fetch_span)} partitions of {source.name} "
            f"that ended at least {format_duration(lag)} ago (IONBEAM_SOURCE_LAG_{source.name.upper()})."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or datetime.now(UTC)
        requests = []
        for window in due_windows(source, now, lag):
            pk = partition_key(window)
            attempt = _scheduled_attempt(context.instance, job.name, pk)
            if attempt is None:
                continue
            # The run key counts failures: a failed fetch is tried again on a later tick,
            # while a re-evaluated tick never launches a second run of the same attempt.
            requests.append(dg.RunRequest(run_key=f"{pk}|{attempt}", partition_key=pk, tags={TRIGGER_TAG: "schedule"}))
        return requests

    return _source, job, _schedule


def _scheduled_attempt(instance: dg.DagsterInstance, job_name: str, pk: str) -> Optional[int]:
    """The next attempt number for the schedule's fetch of ``pk``, or None: fetched already,
    in flight, or failed too often (then it needs an operator, or a backfill)."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: pk, TRIGGER_TAG: "schedule"}), limit=50
    )
    statuses = [r.dagster_run.status for r in records]
    if dg.DagsterRunStatus.SUCCESS in statuses or any(s in _ACTIVE for s in statuses):
        return None
    failed = sum(s in _FAILED for s in statuses)
    return failed if failed < MAX_SCHEDULED_ATTEMPTS else None


def _summary(
    table: pa.Table, station_column: Optional[str], start: datetime, end: datetime, key: str, command_id: str
) -> dict[str, Any]:
    stations = 0
    if station_column and station_column in table.column_names and table.num_rows:
        stations = int(pc.count_distinct(table.column(station_column)).as_py())
    return {
        "start": format_time(start),
        "end": format_time(end),
        "rows": table.num_rows,
        "stations": stations,
        "payload": key,
        "command_id": command_id,
        "notes": fetch_notes(table),
    }


def _metadata(published: list[dict[str, Any]], config: SourceRunConfig) -> dict[str, Any]:
    extra = {"start_command_id": config.command_id} if config.command_id else {}
    if len(published) == 1:
        p = published[0]
        return {
            "rows": p["rows"],
            "stations": p["stations"],
            "start": p["start"],
            "end": p["end"],
            "payload": p["payload"],
            "command_id": p["command_id"],
            "fetch": dg.MetadataValue.json(p["notes"]),
            **extra,
        }
    return {
        "payloads": len(published),
        "rows": sum(p["rows"] for p in published),
        "start": published[0]["start"] if published else None,
        "end": published[-1]["end"] if published else None,
        "published": dg.MetadataValue.json([{k: v for k, v in p.items() if k != "notes"} for p in published]),
        **extra,
    }

