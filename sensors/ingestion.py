"""The ingestion sensor: broker queue -> durable staging in Redis -> one ingest run per command.

Per tick it takes a bounded batch off ``{prefix}.ingestion.ingestV1``. A message is acked only
after it is either dead-lettered (bad input, with its reason) or staged in Redis, so a tick
that dies at any point loses nothing: an unacked message is redelivered, and staging is
idempotent by command id, so a redelivery has no second effect.

Runs are derived from Redis, never from the messages, so a command staged by a tick that
died before launching its run is launched by the next tick. A failed run is retried with
backoff for as long as it takes: an accepted command is never dropped because a service
was down.
"""


import time

import dagster as dg

from ionbeam_dagster.errors import Rejection, TransientError
from ionbeam_dagster.ingestion import admit
from ionbeam_dagster.resources import BrokerResource, CatalogResource, ObjectStoreResource, RedisResource, sensor_interval
from sensors.runs import PREFIX_TAG, REQUEST_TAG, RunLookup, RunState

MAX_MESSAGES_PER_TICK = 200
MAX_LAUNCHES_PER_TICK = 50
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


def ingest_request_key(command_id: str, attempt: int) -> str:
    return f"ingest|{command_id}|{attempt}"


def retry_delay(attempt: int) -> float:
    return min(RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), RETRY_MAX_SECONDS)


def build_ingestion_sensor(ingest_job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="ingestion_sensor",
        job=ingest_job,
        minimum_interval_seconds=sensor_interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Stages IngestDataCommands from RabbitMQ in Redis and launches an ingest run for each.",
    )
    def ingestion_sensor(
        context: dg.SensorEvaluationContext,
        broker: BrokerResource,
        redis: RedisResource,
        objects: ObjectStoreResource,
        catalog: CatalogResource,
    ) -> dg.SensorResult:
        client = redis.client()
        ledger = redis.ledger(client)
        store = objects.store()
        cat = catalog.load()
        staged = duplicates = rejected = 0
        try:
            with broker.open() as b:
                for delivery in b.get_batch(b.topology.ingestion_queue, MAX_MESSAGES_PER_TICK):
                    try:
                        command = admit(delivery.body, cat, store)
                    except Rejection as rejection:
                        b.dead_letter(delivery.body, rejection.code, rejection.message)
                        b.ack(delivery)
                        rejected += 1
                        context.log.warning(f"dead-lettered a command: {rejection.code}: {rejection.message}")
                        continue
                    if ledger.stage(str(command.id), delivery.body):
                        staged += 1
                    else:
                        duplicates += 1
                    b.ack(delivery)
        except TransientError as exc:
            # Nothing was lost: unacked messages stay in the queue. Still launch what is staged.
            context.log.warning(f"broker unavailable this tick: {exc}")

        runs = RunLookup(context.instance, redis.leases(client))
        reaped = runs.reap("ingest", redis.prefix)
        requests: list[dg.RunRequest] = []
        waiting = 0
        for command_id in ledger.pending(MAX_LAUNCHES_PER_TICK * 4):
            if len(requests) >= MAX_LAUNCHES_PER_TICK:
                break
            attempt = ledger.attempts(command_id)
            view = runs.view(ingest_request_key(command_id, attempt))
            if view.state is RunState.ACTIVE:
                waiting += 1
                continue
            if view.state in (RunState.FAILED, RunState.SUCCEEDED):
                # SUCCEEDED while still pending means the run ended without recording the
                # command (it should not happen); retrying is the safe answer.
                if view.ended_at and time.time() < view.ended_at + retry_delay(attempt + 1):
                    waiting += 1
                    continue
                attempt = ledger.note_attempt(command_id)
            key = ingest_request_key(command_id, attempt)
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    run_config={"ops": {"ingest_command": {"config": {"command_id": command_id}}}},
                    tags={
                        REQUEST_TAG: key,
                        PREFIX_TAG: redis.prefix,
                        "ionbeam/command_id": command_id,
                        "ionbeam/attempt": str(attempt),
                    },
                )
            )
        client.close()
        if staged or rejected or duplicates or requests or reaped:
            context.log.info(
                f"staged {staged}, duplicates {duplicates}, dead-lettered {rejected}, launching {len(requests)}, "
                f"in flight {waiting}, dead runs failed {len(reaped)}"
            )
        return dg.SensorResult(run_requests=requests)

    return ingestion_sensor
