"""Writers that turn a built dataset window (Arrow, the contract's dataset schema) into export formats.

Writers are pure: they take a table and a writable stream and return what they wrote. Where the
bytes go (object store, atomic placement) is the caller's business.
"""

from __future__ import annotations

from ionbeam_dagster.exporters.geoparquet import GeoParquetStats, write_geoparquet

__all__ = ["GeoParquetStats", "write_geoparquet"]
