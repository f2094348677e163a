"""The demo source as a :class:`Source`: the fixed synthetic station network of
:mod:`ionbeam_dagster.synthetic`, fetched (generated) one dataset window at a time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pyarrow as pa

from ionbeam_dagster.catalog import DatasetSpec
from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.http import HttpClient
from ionbeam_dagster.sources.base import LOG, Source
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map

__all__ = ["SyntheticSource"]


class SyntheticSource(Source):
    def __init__(self, spec: DatasetSpec, *, stations: int = 50) -> None:
        # One partition per dataset window, from the dataset's start, every minute: a fresh
        # `make run` shows built windows within minutes. No third party, so it runs by default.
        super().__init__(
            name="synthetic",
            dataset=spec.name,
            fetch_span=spec.aggregation_span,
            start=spec.start,
            lag=timedelta(0),
            description="Synthetic stations (fixed positions) with temperature, humidity, pressure and wind.",
            network=False,
            schedule_cron="* * * * *",
            catch_up=2,
        )
        self.stations = stations

    def ingestion_map(self) -> DataIngestionMap:
        return DataIngestionMap.model_validate(synthetic_ingestion_map())

    def fetch(self, start: datetime, end: datetime, http: HttpClient, log: logging.Logger = LOG) -> pa.Table:
        # Rows at epoch-aligned minutes inside [start, end): exactly the requested range.
        return generate_observations(start, end, stations=self.stations)
