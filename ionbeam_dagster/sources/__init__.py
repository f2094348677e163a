"""Data sources: the :class:`~ionbeam_dagster.sources.base.Source` framework and the networks.

A new network is one module with a :class:`Source` subclass, plus one line in
:data:`SOURCE_FACTORIES`. The code location then builds, for every source whose dataset is in
the catalog, its asset ``sources/<name>``, job, schedule, and StartSourceCommand queue.
"""

from __future__ import annotations

from collections.abc import Callable

from ionbeam_dagster.catalog import Catalog
from ionbeam_dagster.sources.acronet import Acronet
from ionbeam_dagster.sources.base import Source, SourceError
from ionbeam_dagster.sources.meteotracker import MeteoTracker
from ionbeam_dagster.sources.netatmo import NetatmoSource
from ionbeam_dagster.sources.sensor_community import SensorCommunityArchive, SensorCommunityLive
from ionbeam_dagster.sources.synthetic import SyntheticSource

__all__ = ["SOURCE_FACTORIES", "Source", "SourceError", "registered_sources"]


def _synthetic(catalog: Catalog) -> Source | None:
    spec = catalog.get("synthetic")
    return SyntheticSource(spec) if spec is not None else None


#: One callable per source, given the catalog; None (or a source whose dataset is not in
#: the catalog) leaves the source out. Settings come from the environment at call time.
SOURCE_FACTORIES: list[Callable[[Catalog], Source | None]] = [
    _synthetic,
    lambda catalog: SensorCommunityArchive(),
    lambda catalog: SensorCommunityLive(),
    lambda catalog: NetatmoSource(),
    lambda catalog: MeteoTracker(),
    lambda catalog: Acronet(),
]


def registered_sources(catalog: Catalog) -> list[Source]:
    """Every source whose dataset the catalog declares, in factory order."""
    sources: list[Source] = []
    for factory in SOURCE_FACTORIES:
        source = factory(catalog)
        if source is not None and source.dataset in catalog:
            sources.append(source)
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"source names must be unique: {', '.join(duplicates)} registered twice")
    return sources
