"""The coordinator sensor: DataAvailableEvents -> window state in Redis -> build runs.

A sensor, not a service (DESIGN.md). Each tick:

1. takes a bounded batch of events off ``{prefix}.data.available.coordinator`` and acks each
   only after its effect is in Redis (or it was dead-lettered with its reason);
2. reviews the windows that are due, oldest first across datasets, and requests a build
   for each ready window whose event set changed. Windows held back by their
   subject-to-change window come due again by themselves as time passes.

Every request is derived from Redis, and the run key carries dataset, window, event-set hash
and attempt, so a tick that times out and is evaluated again requests nothing twice.
A window that keeps failing is given up on after a few attempts and reported as an asset
observation, so it shows on the dataset's page instead of blocking other windows.
"""


from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ionbeam_dagster.contracts import parse_data_available
from ionbeam_dagster.coordinator import Coordinator
from ionbeam_dagster.errors import Rejection, TransientError
from ionbeam_dagster.resources import BrokerResource, CatalogResource, RedisResource, sensor_interval
from ionbeam_dagster.windows import partition_key
from sensors.runs import PREFIX_TAG, REQUEST_TAG, RunLookup

MAX_EVENTS_PER_TICK = 500
MAX_WINDOWS_PER_TICK = 200


def build_job_name(dataset: str) -> str:
    return f"build_{dataset}"


def build_coordinator_sensor(build_jobs: list[UnresolvedAssetJobDefinition]) -> dg.SensorDefinition:
    @dg.sensor(
        name="coordinator_sensor",
        jobs=build_jobs,
        minimum_interval_seconds=sensor_interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Tracks which ingestions cover each window and requests a build when a ready window changed.",
    )
    def coordinator_sensor(
        context: dg.SensorEvaluationContext,
        broker: BrokerResource,
        redis: RedisResource,
        catalog: CatalogResource,
    ) -> dg.SensorResult:
        client = redis.client()
        coordinator = Coordinator(redis.windows(client), catalog.load())
        applied = rejected = 0
        try:
            with broker.open() as b:
                for delivery in b.get_batch(b.topology.coordinator_queue, MAX_EVENTS_PER_TICK):
                    try:
                        coordinator.apply_event(parse_data_available(delivery.body))
                        applied += 1
                    except Rejection as rejection:
                        b.dead_letter(delivery.body, rejection.code, rejection.message)
                        rejected += 1
                        context.log.warning(f"dead-lettered an event: {rejection.code}: {rejection.message}")
                    b.ack(delivery)
        except TransientError as exc:
            context.log.warning(f"broker unavailable this tick: {exc}")

        runs = RunLookup(context.instance, redis.leases(client))
        reaped = runs.reap("build", redis.prefix)
        outcome = coordinator.review(datetime.now(UTC), runs.state, MAX_WINDOWS_PER_TICK)
        client.close()

        requests = []
        for build in outcome.requests:
            key = build.run_key
            requests.append(
                dg.RunRequest(
                    job_name=build_job_name(build.dataset),
                    partition_key=partition_key(build.window),
                    run_key=key,
                    tags={
                        REQUEST_TAG: key,
                        PREFIX_TAG: redis.prefix,
                        "ionbeam/dataset": build.dataset,
                        "ionbeam/event_hash": build.hash,
                        "ionbeam/attempt": str(build.attempt),
                    },
                )
            )
        observations = [
            dg.AssetObservation(
                asset_key=dg.AssetKey([dataset, "dataset"]),
                partition=partition_key(window),
                metadata={"build_status": "failed", "error": error},
            )
            for dataset, window, error in outcome.gave_up
        ]
        if applied or rejected or requests or outcome.gave_up or reaped:
            context.log.info(
                f"events applied {applied}, dead-lettered {rejected}; builds requested {len(requests)}, "
                f"in flight {outcome.in_flight}, waiting for cutoff {outcome.waiting_for_cutoff}, "
                f"waiting for data {outcome.waiting_for_data}, given up {len(outcome.gave_up)}, "
                f"dead runs failed {len(reaped)}"
            )
        return dg.SensorResult(run_requests=requests, asset_events=observations)

    return coordinator_sensor
