"""The ``smoke`` job: ``dagster job execute -m ionbeam_dagster.definitions -j smoke``.

Self-contained: it publishes a bundled sample, ingests it, builds and exports its window
in-process against the configured services, and fails the run with the stage that went
wrong.
"""


import dagster as dg

from ionbeam_dagster.resources import BrokerResource, CatalogResource, InfluxResource, ObjectStoreResource, RedisResource
from ionbeam_dagster.smoke import SmokeFailure, run_smoke


@dg.op(name="smoke_check")
def smoke_check(
    context: dg.OpExecutionContext,
    broker: BrokerResource,
    redis: RedisResource,
    influx: InfluxResource,
    objects: ObjectStoreResource,
    catalog: CatalogResource,
) -> dg.Output[None]:
    client = redis.client()
    try:
        with broker.open() as b:
            report = run_smoke(
                catalog=catalog.load(),
                store=objects.store(),
                influx=influx.client(),
                broker=b,
                state=redis.windows(client),
                log=context.log.info,
            )
    except SmokeFailure as failure:
        raise dg.Failure(description=f"smoke check failed: {failure}") from failure
    finally:
        client.close()
    return dg.Output(
        None,
        metadata={
            "window": report.window.start.isoformat(),
            "command_id": report.command_id,
            "rows_published": report.rows_published,
            "rows_in_dataset": report.rows_in_dataset,
            "dataset_key": report.dataset_key,
            "export_key": report.export_key,
            "stages": report.stages,
        },
    )


@dg.job(name="smoke", description="Publish a sample, ingest, build and export its window; fail loudly on any stage.")
def smoke_job() -> None:
    smoke_check()
