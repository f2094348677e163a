"""The ingest job: one run per staged IngestDataCommand.

Ingestion is an op job, not an asset: a command is an event, not a piece of data with a
lineage of its own; what it produces (points in InfluxDB) feeds the dataset assets through
the coordinator. Running it as a Dagster run still gives operators logs, retries and a UI.
"""


from datetime import timedelta

import dagster as dg

from ionbeam_dagster.contracts import parse_ingest_command
from ionbeam_dagster.errors import Rejection
from ionbeam_dagster.ingestion import RetrySchedule, ingest
from ionbeam_dagster.resources import BrokerResource, InfluxResource, ObjectStoreResource, RedisResource


class IngestCommandConfig(dg.Config):
    command_id: str
    # How long a payload that is not (yet) in the object store is waited for before the
    # command is dead-lettered as payload_not_found (sources may announce before upload ends).
    payload_wait_seconds: float = 60.0


@dg.op(name="ingest_command", tags={"kind": "influxdb"})
def ingest_command(
    context: dg.OpExecutionContext,
    config: IngestCommandConfig,
    broker: BrokerResource,
    redis: RedisResource,
    influx: InfluxResource,
    objects: ObjectStoreResource,
) -> dg.Output[None]:
    client = redis.client()
    ledger = redis.ledger(client)
    status = ledger.status(config.command_id)
    if status != "pending":
        # Already done, rejected or unknown: a second run of the same command is a no-op.
        context.log.info(f"command {config.command_id} is {status or 'unknown'}; nothing to do")
        return dg.Output(None, metadata={"command_id": config.command_id, "outcome": f"skipped ({status})"})
    body = ledger.body(config.command_id)
    assert body is not None, "a pending command always has its body staged"
    with redis.leases(client).hold(context.run_id), broker.open() as b:
        try:
            result = ingest(
                parse_ingest_command(body),
                store=objects.store(),
                influx=influx.client(),
                broker=b,
                payload_wait=RetrySchedule(timeout=timedelta(seconds=config.payload_wait_seconds)),
                declare_columns=ledger.note_columns,
            )
        except Rejection as rejection:
            b.dead_letter(body, rejection.code, rejection.message)
            ledger.complete(config.command_id, "rejected", {"code": rejection.code, "error": rejection.message})
            context.log.warning(f"command {config.command_id} rejected: {rejection.code}: {rejection.message}")
            return dg.Output(
                None,
                metadata={"command_id": config.command_id, "outcome": "rejected", "error_code": rejection.code, "error": rejection.message},
            )
    ledger.complete(config.command_id, "done", {"rows_written": result.rows_written})
    return dg.Output(
        None,
        metadata={
            "command_id": result.command_id,
            "outcome": "ingested",
            "dataset": result.dataset,
            "payload": result.payload_key,
            "rows_in": result.rows_in,
            "rows_written": result.rows_written,
            "rows_dropped": sum(result.dropped.values()),
            "dropped_by_reason": result.dropped,
            "stations": result.stations,
            "variables": result.variables,
            "seconds": round(result.seconds, 3),
        },
    )


@dg.job(name="ingest", tags={"ionbeam/kind": "ingest"}, description="Ingest one staged IngestDataCommand into InfluxDB.")
def ingest_job() -> None:
    ingest_command()
