"""Where exporters put their files: one current object per (exporter, dataset, window).

The name carries no version, so a rebuilt window replaces its file (atomically) and users
always find the current one at the same key; the version is inside the file's metadata.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta

from ionbeam_dagster.durations import format_duration
from ionbeam_dagster.windows import Window

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SUFFIX = re.compile(r"^[a-z0-9]{1,8}$")


def export_key(exporter: str, dataset: str, window: Window, span: timedelta, suffix: str) -> str:
    for what, value, pattern in (("exporter", exporter, _NAME), ("dataset", dataset, _NAME), ("suffix", suffix, _SUFFIX)):
        if not pattern.match(value):
            raise ValueError(f"{what} {value!r} must match {pattern.pattern}")
    stamp = window.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"exports/{exporter}/{dataset}/{dataset}_{stamp}_{format_duration(span)}.{suffix}"
