"""The Netatmo feed sensor: drain the EUMETNET MQTT feed into the buffer, and re-publish
partitions that changed after they were published.

Each tick:

1. When ``IONBEAM_NETATMO_MQTT_URL`` is set, connects with the persistent session, drains a
   bounded batch (``IONBEAM_NETATMO_MQTT_BATCH`` messages, ``IONBEAM_NETATMO_MQTT_MAX_SECONDS``),
   stores it in the Redis buffer and only then acks it (:mod:`ionbeam_dagster.sources.netatmo_mqtt`).
   A broker that cannot be reached is logged; nothing is lost (the broker keeps the session).
2. Requests a run of ``netatmo_source`` for every buffered partition that is due (ended at
   least the lag ago), quiet (no change for ``IONBEAM_NETATMO_LATE_DEBOUNCE``, default 60 s,
   so a trickle of late messages becomes one re-publication), and whose buffer revision is
   newer than the one its last payload held: late messages for a published window go out as
   a new ingestion of that window, which the coordinator turns into a rebuild. A partition
   never published is left to the schedule for one more fetch span, then requested here too
   (e.g. a backlog drained after an outage, older than the schedule looks).
   Run keys are ``netatmo-buffer|<partition>|<revision>|<attempt>``: one run per revision,
   a failed one retried (up to MAX_ATTEMPTS) with the next attempt number.
3. Forgets buckets older than ``IONBEAM_NETATMO_RETENTION`` (default P7D).

No ``from __future__ import annotations``: Dagster inspects sensor signatures.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Optional

import dagster as dg

from assets.sources import KIND_TAG, PARTITION_TAG, SOURCE_TAG, TRIGGER_TAG, source_job_name
from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.resources import sensor_interval
from ionbeam_dagster.sources.base import Source, source_lag
from ionbeam_dagster.sources.netatmo import NetatmoSource
from ionbeam_dagster.sources.netatmo_buffer import ObservationBuffer
from ionbeam_dagster.sources.netatmo_mqtt import MqttSettings, drain
from ionbeam_dagster.windows import Window, partition_key

SENSOR_NAME = "netatmo_mqtt_sensor"
BUFFER_TRIGGER = "netatmo_buffer"
REVISION_TAG = "ionbeam/netatmo_revision"
MAX_ATTEMPTS = 5
MAX_REQUESTS_PER_TICK = 50
_ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def buffer_run_key(pk: str, revision: int, attempt: int) -> str:
    return f"netatmo-buffer|{pk}|{revision}|{attempt}"


def _attempt(instance: dg.DagsterInstance, job_name: str, pk: str, revision: int) -> Optional[int]:
    """The attempt number for publishing ``revision`` of ``pk``, or None: a run of the partition
    is in flight (it reads the newest buffer anyway), this revision is done, or it failed too often."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: pk}), limit=50)
    if any(r.dagster_run.status in _ACTIVE for r in records):
        return None
    mine = [r for r in records if r.dagster_run.tags.get(REVISION_TAG) == str(revision)]
    if any(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in mine):
        return None
    failed = sum(r.dagster_run.status in _FAILED for r in mine)
    return failed if failed < MAX_ATTEMPTS else None


def due_buffer_requests(
    instance: dg.DagsterInstance, source: NetatmoSource, buffer: ObservationBuffer, now: datetime
) -> list[dg.RunRequest]:
    lag = source_lag(source)
    settings = source.settings
    job_name = source_job_name(source.name)
    requests: list[dg.RunRequest] = []
    for bucket in buffer.buckets(since=now - settings.retention):
        if len(requests) >= MAX_REQUESTS_PER_TICK:
            break
        window = Window(bucket.start, bucket.start + source.fetch_span)
        published = -1 if bucket.published is None else bucket.published
        if bucket.rev <= published or bucket.start < source.start:
            continue
        if window.end + lag > now or bucket.changed_at > (now - settings.late_debounce).timestamp():
            continue
        if bucket.published is None and window.end + lag + source.fetch_span + settings.late_debounce > now:
            continue  # the schedule's turn first
        pk = partition_key(window)
        attempt = _attempt(instance, job_name, pk, bucket.rev)
        if attempt is None:
            continue
        requests.append(
            dg.RunRequest(
                run_key=buffer_run_key(pk, bucket.rev, attempt),
                job_name=job_name,
                partition_key=pk,
                tags={
                    TRIGGER_TAG: BUFFER_TRIGGER,
                    KIND_TAG: "source",
                    SOURCE_TAG: source.name,
                    REVISION_TAG: str(bucket.rev),
                    "ionbeam/attempt": str(attempt),
                },
            )
        )
    return requests


def build_netatmo_sensors(sources: Sequence[Source]) -> list[dg.SensorDefinition]:
    """The feed sensor, if the netatmo source is registered (its dataset is in the catalog)."""
    found = [s for s in sources if isinstance(s, NetatmoSource)]
    if not found:
        return []
    source = found[0]

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=source_job_name(source.name),
        minimum_interval_seconds=sensor_interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Drains the EUMETNET Netatmo MQTT feed (IONBEAM_NETATMO_MQTT_URL) into the Redis buffer, acking only "
            "what is stored, and launches netatmo_source runs for partitions that changed after they were published."
        ),
    )
    def netatmo_mqtt_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        settings = MqttSettings.from_env(prefix=source.settings.prefix)
        buffer = source.buffer()
        try:
            if settings is None:
                context.log.debug("IONBEAM_NETATMO_MQTT_URL is not set: not consuming the feed")
            else:
                try:
                    result = drain(settings, buffer, log=context.log)
                    if result.received:
                        context.log.info(f"netatmo feed {settings.where}: {result.summary()}")
                except TransientError as exc:
                    context.log.warning(f"netatmo feed unavailable this tick (nothing acked, nothing lost): {exc}")
            now = datetime.now(UTC)
            requests = due_buffer_requests(context.instance, source, buffer, now)
            pruned = buffer.prune(now - source.settings.retention)
            if requests or pruned:
                context.log.info(f"netatmo: requesting {len(requests)} partition runs; forgot {pruned} old buckets")
        finally:
            buffer.close()
        return dg.SensorResult(run_requests=requests)

    return [netatmo_mqtt_sensor]
