"""The source sensor: StartSourceCommands -> durable staging in Redis -> one run per command.

Per tick it takes a bounded batch off every registered source's queue,
``{prefix}.source.<name>.start`` (the reference's trigger). A message is acked only after it
is either dead-lettered (bad input, with its reason, like the ingestion sensor) or staged in
Redis as a plan (:mod:`ionbeam_dagster.sources.commands`). A tick that dies at any point
therefore loses nothing: an unacked message is redelivered, and staging is idempotent per
(source, command id), so a redelivery has no second effect.

Runs are derived from Redis, never from the messages, with the run key
``source-start|<source>:<command id>|<attempt>``: a plan staged by a tick that died before
launching is launched by the next one, and Dagster's run-key dedupe makes a re-evaluated
tick harmless. One run covers the command's range: partition range tags (or the partition
tag for one partition) plus run config narrowing it to the exact requested times.

A plan is done when its run succeeded. A failed run is retried with backoff; after
MAX_ATTEMPTS the command is dead-lettered as ``fetch_failed`` (with the run id), so an
operator has the original body to re-publish. A run whose worker died is detected by its
lapsed Redis lease, as for ingest runs.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg
import redis as redis_lib
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from assets.sources import KIND_TAG, SOURCE_TAG, TRIGGER_TAG, source_job_name, source_op_name
from ionbeam_dagster.errors import Rejection, TransientError
from ionbeam_dagster.ledger import IngestionLedger
from ionbeam_dagster.resources import BrokerResource, RedisResource, sensor_interval
from ionbeam_dagster.sources.base import Source
from ionbeam_dagster.sources.commands import StartPlan, admit_start
from sensors.runs import PREFIX_TAG, REQUEST_TAG, RunLookup, RunState

SENSOR_NAME = "source_start_sensor"
LEDGER_NAMESPACE = "source-start"
MAX_MESSAGES_PER_TICK = 100  # per source
MAX_LAUNCHES_PER_TICK = 20
MAX_ATTEMPTS = 4
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def start_request_key(ledger_id: str, attempt: int) -> str:
    return f"source-start|{ledger_id}|{attempt}"


def retry_delay(attempt: int) -> float:
    return min(RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), RETRY_MAX_SECONDS)


def start_ledger(redis: RedisResource, client: "redis_lib.Redis") -> IngestionLedger:
    return IngestionLedger(client, redis.prefix, namespace=LEDGER_NAMESPACE)


def run_request(plan: StartPlan, attempt: int, prefix: str) -> dg.RunRequest:
    key = start_request_key(plan.ledger_id, attempt)
    tags = {
        REQUEST_TAG: key,
        PREFIX_TAG: prefix,
        KIND_TAG: "source",
        SOURCE_TAG: plan.source,
        TRIGGER_TAG: "start_source_command",
        "ionbeam/start_command": plan.command_id,
        "ionbeam/attempt": str(attempt),
    }
    run_config = {"ops": {source_op_name(plan.source): {"config": {"start": plan.start, "end": plan.end, "command_id": plan.command_id}}}}
    if plan.partition_start == plan.partition_end:
        return dg.RunRequest(run_key=key, job_name=source_job_name(plan.source), partition_key=plan.partition_start,
                             run_config=run_config, tags=tags)
    return dg.RunRequest(
        run_key=key,
        job_name=source_job_name(plan.source),
        run_config=run_config,
        tags={**tags, RANGE_START_TAG: plan.partition_start, RANGE_END_TAG: plan.partition_end},
    )


def build_source_start_sensor(sources: Sequence[Source], jobs: Sequence[UnresolvedAssetJobDefinition]) -> dg.SensorDefinition:
    by_name = {s.name: s for s in sources}

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=sensor_interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Stages StartSourceCommands from {prefix}.source.<name>.start in Redis and launches a run of the source for each.",
    )
    def source_start_sensor(
        context: dg.SensorEvaluationContext, broker: BrokerResource, redis: RedisResource
    ) -> dg.SensorResult:
        client = redis.client()
        ledger = start_ledger(redis, client)
        staged = duplicates = rejected = 0
        try:
            with broker.open() as b:
                b.declare(sources=list(by_name))
                for source in sources:
                    queue = b.topology.source_start_queue(source.name)
                    for delivery in b.get_batch(queue, MAX_MESSAGES_PER_TICK):
                        try:
                            plan = admit_start(delivery.body, source, datetime.now(UTC))
                        except Rejection as rejection:
                            b.dead_letter(delivery.body, rejection.code, rejection.message)
                            b.ack(delivery)
                            rejected += 1
                            context.log.warning(f"dead-lettered a StartSourceCommand for {source.name}: {rejection.code}: {rejection.message}")
                            continue
                        # Staged before the ack: from here on the command survives any crash.
                        if ledger.stage(plan.ledger_id, plan.to_json()):
                            staged += 1
                        else:
                            duplicates += 1
                        b.ack(delivery)
        except TransientError as exc:
            # Nothing was lost: unacked messages stay queued. Still launch what is staged.
            context.log.warning(f"broker unavailable this tick: {exc}")

        runs = RunLookup(context.instance, redis.leases(client))
        reaped = runs.reap("source", redis.prefix)
        requests: list[dg.RunRequest] = []
        give_up: list[tuple[StartPlan, str]] = []
        waiting = done = 0
        for lid in ledger.pending(MAX_LAUNCHES_PER_TICK * 4):
            if len(requests) >= MAX_LAUNCHES_PER_TICK:
                break
            body = ledger.body(lid)
            if body is None:
                continue  # completed between the two reads
            plan = StartPlan.from_json(body)
            if plan.source not in by_name:
                ledger.complete(lid, "rejected", {"code": "source_mismatch", "error": f"source {plan.source!r} is no longer registered"})
                continue
            attempt = ledger.attempts(lid)
            view = runs.view(start_request_key(lid, attempt))
            if view.state is RunState.ACTIVE:
                waiting += 1
                continue
            if view.state is RunState.SUCCEEDED:
                ledger.complete(lid, "done", {"run_id": view.run_id})
                done += 1
                continue
            if view.state is RunState.FAILED:
                if attempt + 1 >= MAX_ATTEMPTS:
                    give_up.append((plan, view.run_id or "?"))
                    continue
                if view.ended_at and time.time() < view.ended_at + retry_delay(attempt + 1):
                    waiting += 1
                    continue
                attempt = ledger.note_attempt(lid)
            requests.append(run_request(plan, attempt, redis.prefix))

        if give_up:
            _give_up(context, broker, ledger, give_up)
        client.close()
        if staged or rejected or duplicates or requests or reaped or done or give_up:
            context.log.info(
                f"staged {staged}, duplicates {duplicates}, dead-lettered {rejected}, launching {len(requests)}, "
                f"in flight {waiting}, done {done}, gave up {len(give_up)}, dead runs failed {len(reaped)}"
            )
        return dg.SensorResult(run_requests=requests)

    return source_start_sensor


def _give_up(
    context: dg.SensorEvaluationContext, broker: BrokerResource, ledger: IngestionLedger, plans: list[tuple[StartPlan, str]]
) -> None:
    """Dead-letter the original body, then complete: if the broker is down, the plan stays
    pending and the next tick tries again, so the body is never lost."""
    try:
        with broker.open() as b:
            for plan, run_id in plans:
                message = (
                    f"run {run_id}: fetching {plan.source} [{plan.start}, {plan.end}) failed {MAX_ATTEMPTS} times; "
                    "see the run's logs, then re-publish this body to try again"
                )
                b.dead_letter(plan.body.encode("utf-8"), "fetch_failed", message)
                ledger.complete(plan.ledger_id, "rejected", {"code": "fetch_failed", "error": message})
                context.log.warning(f"gave up on StartSourceCommand {plan.command_id}: {message}")
    except TransientError as exc:
        context.log.warning(f"broker unavailable; giving up on {len(plans)} commands waits for the next tick: {exc}")
