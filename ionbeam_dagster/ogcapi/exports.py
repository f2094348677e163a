"""A dataset's GeoParquet exports on disk, and the window each file holds.

The exporter writes one current file per window at
``exports/geoparquet/<dataset>/<dataset>_<YYYYmmddTHHMMSSZ>_<span>.parquet``
(:func:`ionbeam_dagster.exporters.keys.export_key`), replacing it atomically through a
hidden temporary file in the same directory. The window is in the name, so a reader can
choose the files a time filter needs from a directory listing alone, without opening any.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ionbeam_dagster.durations import parse_duration

__all__ = ["EXPORT_PREFIX", "ExportFile", "export_dir", "list_exports", "overlapping", "parse_export_name"]

# The directory export_key("geoparquet", dataset, ...) writes into, relative to the store root.
EXPORT_PREFIX = "exports/geoparquet"

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, order=True)
class ExportFile:
    """One window's export: ``[start, end)`` and where it is. Sorts by window start."""

    start: datetime
    end: datetime
    path: Path


SETTLED_SECONDS = 2
# Per process: one entry per (directory, dataset); a handful of datasets in practice.
_MAX_LISTINGS = 256
_LISTINGS: dict[tuple[str, str], tuple[tuple[int, int], tuple[ExportFile, ...]]] = {}


def export_dir(store_root: Path, dataset: str) -> Path:
    return store_root / EXPORT_PREFIX / dataset


# Parsed names by (dataset, name): a year of PT10M windows is 52k names, and pygeoapi lists
# the directory on every request; parsing each again would cost ~50 ms per 1k files.
@lru_cache(maxsize=1 << 18)
def parse_export_name(dataset: str, name: str) -> tuple[datetime, timedelta] | None:
    """(window start, span) from an export file name, or None for anything else.

    Anything else includes the writer's temporary files (they start with a dot) and files an
    operator dropped in by hand: only names the exporter writes are served.
    """
    match = re.fullmatch(rf"{re.escape(dataset)}_(\d{{8}}T\d{{6}}Z)_(P[0-9A-Z.]+)\.parquet", name)
    if match is None:
        return None
    try:
        start = datetime.strptime(match.group(1), _STAMP_FORMAT).replace(tzinfo=UTC)
        span = parse_duration(match.group(2))
    except ValueError:
        return None
    if span <= timedelta(0):
        return None
    return start, span


def list_exports(directory: Path, dataset: str) -> list[ExportFile]:
    """The dataset's export files in window order; [] when nothing was exported yet.

    A listing is reused while the directory's (mtime, inode) stay the same, which is what
    makes a request over a long history cost one stat instead of one listing. Only a
    directory last changed more than :data:`SETTLED_SECONDS` ago is trusted: file system
    timestamps have a coarse tick, so a file renamed in during the same tick as an earlier
    listing leaves the mtime unchanged (git's "racy" index entries have the same cure).
    """
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    key = (str(directory), dataset)
    cached = _LISTINGS.get(key)
    if cached is not None and cached[0] == (st.st_mtime_ns, st.st_ino):
        return list(cached[1])
    files: list[ExportFile] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        parsed = parse_export_name(dataset, entry.name)
        if parsed is None or not entry.is_file():
            continue
        start, span = parsed
        files.append(ExportFile(start, start + span, Path(entry.path)))
    files.sort()
    if time.time_ns() - st.st_mtime_ns > SETTLED_SECONDS * 1_000_000_000:
        if len(_LISTINGS) >= _MAX_LISTINGS:
            _LISTINGS.clear()
        _LISTINGS[key] = ((st.st_mtime_ns, st.st_ino), tuple(files))
    return files


def overlapping(files: Iterable[ExportFile], begin: datetime | None, end: datetime | None) -> list[ExportFile]:
    """Files whose window ``[start, end)`` meets the closed interval ``[begin, end]``.

    None is an open end. OGC API datetime intervals are closed, so a window starting exactly
    at ``end`` is kept (it may hold a row at that instant).
    """
    return [f for f in files if (end is None or f.start <= end) and (begin is None or f.end > begin)]
