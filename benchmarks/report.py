"""The benchmark report: one JSON document (benchmarks/results/latest.json) and a table.

Pure functions of the measured numbers, so the shape is testable without timing anything.
Documented shape (more fields are added freely)::

    {"rows": 1000000,
     "ingest":  {"ours_rows_per_s", "raw_rows_per_s", "ratio", "reference_rows_per_s"},
     "build":   {"ours_rows_per_s", "raw_rows_per_s", "ratio"},
     "exports": {"odb": {...}, "geoparquet": {...}, "netcdf": {...}},   each ours/raw/ratio
     "latency": {"windows", "p50_s", "p95_s"},
     "memory":  {"window_rows", "arrow_mb", "peak_rss_mb"},
     "scaling": [{"rows", "ingest_s", "build_s"}],
     "machine": {...},
     "targets": {name: {"goal", "value", "met"}}}

An exporter whose module does not exist yet is reported as ``{"status": "missing", ...}``
with no numbers, never with made-up ones.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXPORT_NAMES = ("odb", "geoparquet", "netcdf")
INGEST_TARGET = 0.9
BUILD_TARGET = 0.9
EXPORT_TARGET = 0.8
LATENCY_P50_TARGET_S = 10.0
LATENCY_P95_TARGET_S = 20.0
SCALING_TOLERANCE = 0.2


def _round(value: Any) -> Any:
    """Stable, readable numbers: rates as integers, everything else to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if abs(value) >= 1000:
            return round(value)
        return float(f"{value:.4g}")
    if isinstance(value, Mapping):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def scaling_growth(scaling: Sequence[Mapping[str, Any]], stage: str) -> float | None:
    """Per-row cost at the largest size over the cheapest per-row cost at a smaller size.

    1.0 is linear; above 1 the largest size costs more per row (super-linear). A smaller
    size being dearer per row (fixed costs not yet amortised) is not a scaling problem, so
    the comparison is against the cheapest smaller size.
    """
    points = [(p["rows"], p[f"{stage}_s"]) for p in scaling if p.get(f"{stage}_s")]
    if len(points) < 2:
        return None
    points.sort()
    largest_rows, largest_s = points[-1]
    cheapest = min(s / n for n, s in points[:-1])
    return (largest_s / largest_rows) / cheapest


def _target(goal: str, value: float | None, met: bool | None) -> dict[str, Any]:
    return {"goal": goal, "value": value, "met": met}


def evaluate_targets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}
    for part, goal in (("ingest", INGEST_TARGET), ("build", BUILD_TARGET)):
        ratio = (report.get(part) or {}).get("ratio")
        targets[part] = _target(f"ratio >= {goal}", ratio, None if ratio is None else ratio >= goal)
    for name, export in (report.get("exports") or {}).items():
        ratio = export.get("ratio") if isinstance(export, Mapping) else None
        targets[f"export_{name}"] = _target(f"ratio >= {EXPORT_TARGET}", ratio, None if ratio is None else ratio >= EXPORT_TARGET)
    latency = report.get("latency") or {}
    for key, goal in (("p50_s", LATENCY_P50_TARGET_S), ("p95_s", LATENCY_P95_TARGET_S)):
        value = latency.get(key)
        targets[f"latency_{key[:-2]}"] = _target(f"<= {goal:g} s", value, None if value is None else value <= goal)
    memory = report.get("memory") or {}
    if memory.get("peak_rss_mb") is not None and memory.get("arrow_mb") is not None:
        budget = 3 * memory["arrow_mb"] + 300
        targets["memory"] = _target(
            f"peak RSS <= 3 x Arrow + 300 MB ({budget:.0f} MB)", memory["peak_rss_mb"], memory["peak_rss_mb"] <= budget
        )
    else:
        targets["memory"] = _target("peak RSS <= 3 x Arrow + 300 MB", None, None)
    for stage in ("ingest", "build"):
        growth = scaling_growth(report.get("scaling") or [], stage)
        targets[f"scaling_{stage}"] = _target(
            f"per-row cost at the largest size <= {1 + SCALING_TOLERANCE:g} x the cheapest smaller size",
            growth,
            None if growth is None else growth <= 1 + SCALING_TOLERANCE,
        )
        # The same growth of the raw side: when it is as large, the server is what bends.
        targets[f"scaling_{stage}"]["raw_value"] = scaling_growth(report.get("scaling") or [], f"raw_{stage}")
    return targets


def build_report(
    *,
    rows: int,
    repeat: int,
    ingest: Mapping[str, Any] | None,
    build: Mapping[str, Any] | None,
    exports: Mapping[str, Mapping[str, Any]],
    latency: Mapping[str, Any] | None,
    memory: Mapping[str, Any] | None,
    scaling: Sequence[Mapping[str, Any]],
    machine: Mapping[str, Any],
    notes: Sequence[str] = (),
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    """The report document; ``exports`` maps each exporter to its numbers or to a
    ``{"status": "missing"|"skipped"|"failed", "reason": ...}`` entry."""
    report: dict[str, Any] = {
        "rows": rows,
        "repeat": repeat,
        "finished_at": (finished_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ingest": dict(ingest or {}),
        "build": dict(build or {}),
        "exports": {name: dict(exports.get(name) or {"status": "skipped", "reason": "not measured"}) for name in EXPORT_NAMES},
        "latency": dict(latency or {}),
        "memory": dict(memory or {}),
        "scaling": [dict(p) for p in scaling],
        "machine": dict(machine),
        "notes": list(notes),
    }
    report = _round(report)
    report["targets"] = _round(evaluate_targets(report))
    return report


def write_report(report: Mapping[str, Any], directory: Path) -> Path:
    """Write ``latest.json`` atomically (a reader never sees half a report)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "latest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- the table


def _num(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}{suffix}"
    if isinstance(value, float):
        return f"{value:.3g}{suffix}"
    return f"{value}{suffix}"


def _verdict(target: Mapping[str, Any] | None) -> str:
    if not target or target.get("met") is None:
        return ""
    return "ok" if target["met"] else "MISSED"


def format_table(report: Mapping[str, Any]) -> str:
    targets = report.get("targets", {})
    lines = [f"ionbeam-dagster benchmark: {report['rows']:,} rows, best of {report.get('repeat', '?')}"]
    header = f"{'':<22}{'ours':>14}{'raw':>14}{'ratio':>8}  {'target':<12}"
    lines += [header, "-" * len(header)]

    def row(label: str, part: Mapping[str, Any], target_key: str, unit: str = " rows/s") -> None:
        if part.get("status"):
            lines.append(f"{label:<22}{part['status']}: {part.get('reason', '')}")
            return
        if not part:
            lines.append(f"{label:<22}not measured")
            return
        target = targets.get(target_key, {})
        extra = [
            f"paired median {_num(part['paired_ratio_median'])}" if part.get("paired_ratio_median") is not None else "",
            f"CPU-time ratio {_num(part['cpu_ratio'])}" if part.get("cpu_ratio") is not None else "",
        ]
        cpu = f"  ({', '.join(e for e in extra if e)})" if any(extra) else ""
        lines.append(
            f"{label:<22}{_num(part.get('ours_rows_per_s')):>14}{_num(part.get('raw_rows_per_s')):>14}"
            f"{_num(part.get('ratio')):>8}  {target.get('goal', ''):<12} {_verdict(target):<6}{cpu}"
        )

    ingest = report.get("ingest") or {}
    row("ingest (rows/s)", ingest, "ingest")
    if ingest.get("reference_rows_per_s") is not None:
        lines.append(
            f"{'  reference (rows/s)':<22}{_num(ingest['reference_rows_per_s']):>14}"
            f"   pandas + DataframeSerializer, serialisation + write"
            f" (serialisation alone {_num(ingest.get('reference_serialise_only_rows_per_s'))})"
        )
    row("build (rows/s)", report.get("build") or {}, "build")
    for name, export in (report.get("exports") or {}).items():
        row(f"export {name} (rows/s)", export, f"export_{name}")

    latency = report.get("latency") or {}
    if latency:
        lines.append(
            f"{'latency':<22}p50 {_num(latency.get('p50_s'), ' s')}  p95 {_num(latency.get('p95_s'), ' s')}"
            f" over {latency.get('windows')} windows   (<= 10 s / <= 20 s: "
            f"{_verdict(targets.get('latency_p50')) or '-'} / {_verdict(targets.get('latency_p95')) or '-'})"
        )
    memory = report.get("memory") or {}
    if memory:
        lines.append(
            f"{'memory':<22}peak RSS {_num(memory.get('peak_rss_mb'), ' MB')} building {_num(memory.get('window_rows'))} rows"
            f" (Arrow {_num(memory.get('arrow_mb'), ' MB')}; {targets.get('memory', {}).get('goal', '')}) "
            f"{_verdict(targets.get('memory'))}"
        )
    scaling = report.get("scaling") or []
    if scaling:
        lines.append(f"{'scaling':<22}{'rows':>12}{'ingest s':>12}{'raw':>10}{'build s':>12}{'raw':>10}")
        for point in scaling:
            lines.append(
                f"{'':<22}{_num(point['rows']):>12}{_num(point.get('ingest_s')):>12}{_num(point.get('raw_ingest_s')):>10}"
                f"{_num(point.get('build_s')):>12}{_num(point.get('raw_build_s')):>10}"
            )
        for stage in ("ingest", "build"):
            target = targets.get(f"scaling_{stage}", {})
            lines.append(
                f"{'':<22}{stage}: per-row cost growth {_num(target.get('value'))} (<= {1 + SCALING_TOLERANCE:g}) "
                f"{_verdict(target)}; raw side {_num(target.get('raw_value'))}"
            )
    machine = report.get("machine") or {}
    if machine:
        lines.append(
            f"machine: {machine.get('cpu')}, {machine.get('cores')} cores, {_num(machine.get('mem_mb'), ' MB')}, "
            f"load {machine.get('load_average_at_start')} -> {machine.get('load_average_at_end')}"
        )
    for note in report.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)
