"""The benchmark report has the documented shape (benchmarks/report.py); no timing here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import build_report, format_table, scaling_growth, write_report


def _pair(ours: float, raw: float) -> dict[str, float]:
    return {"ours_rows_per_s": ours, "raw_rows_per_s": raw, "ratio": ours / raw}


def _report() -> dict:
    return build_report(
        rows=1_000_000,
        repeat=3,
        ingest={**_pair(280_000.0, 300_000.0), "reference_rows_per_s": 120_000.0},
        build=_pair(400_000.0, 430_000.0),
        exports={
            "geoparquet": _pair(900_000.0, 4_000_000.0),
            "odb": _pair(600_000.0, 650_000.0),
            "netcdf": {"status": "missing", "reason": "ionbeam_dagster/exporters/netcdf.py does not exist yet"},
        },
        latency={"windows": 10, "p50_s": 9.5, "p95_s": 21.0},
        memory={"window_rows": 1_000_000, "arrow_mb": 80.0, "peak_rss_mb": 290.0},
        scaling=[
            {"rows": 10_000, "ingest_s": 0.05, "build_s": 0.04},
            {"rows": 100_000, "ingest_s": 0.4, "build_s": 0.3},
            {"rows": 1_000_000, "ingest_s": 4.4, "build_s": 4.0},
        ],
        machine={"cpu": "test cpu", "cores": 2, "mem_mb": 24_000, "versions": {"pyarrow": "26"}},
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_documented_keys_are_there() -> None:
    report = _report()
    assert report["rows"] == 1_000_000
    assert {"ours_rows_per_s", "raw_rows_per_s", "ratio", "reference_rows_per_s"} <= set(report["ingest"])
    assert {"ours_rows_per_s", "raw_rows_per_s", "ratio"} <= set(report["build"])
    assert set(report["exports"]) == {"odb", "geoparquet", "netcdf"}
    for name in ("odb", "geoparquet"):
        assert {"ours_rows_per_s", "raw_rows_per_s", "ratio"} <= set(report["exports"][name])
    assert {"windows", "p50_s", "p95_s"} <= set(report["latency"])
    assert {"window_rows", "arrow_mb", "peak_rss_mb"} <= set(report["memory"])
    assert all({"rows", "ingest_s", "build_s"} <= set(p) for p in report["scaling"])
    assert {"cpu", "cores", "mem_mb", "versions"} <= set(report["machine"])


def test_a_missing_exporter_has_no_numbers() -> None:
    netcdf = _report()["exports"]["netcdf"]
    assert netcdf["status"] == "missing" and "ratio" not in netcdf
    assert _report()["targets"]["export_netcdf"]["met"] is None


def test_targets_are_judged_from_the_numbers() -> None:
    targets = _report()["targets"]
    assert targets["ingest"]["met"] is True  # 0.93
    assert targets["build"]["met"] is True
    assert targets["export_geoparquet"]["met"] is False
    assert targets["export_odb"]["met"] is True
    assert targets["latency_p50"]["met"] is True
    assert targets["latency_p95"]["met"] is False
    assert targets["memory"]["met"] is True  # 290 <= 3 * 80 + 300
    assert targets["scaling_ingest"]["met"] is True  # 4.4 us/row at 1M vs 4.0 at 100k: 1.1
    assert targets["scaling_build"]["met"] is False  # 4.0 us/row at 1M vs 3.0 at 100k: 1.33


def test_scaling_growth_compares_the_largest_with_the_cheapest_smaller_size() -> None:
    points = [{"rows": 10, "x_s": 1.0}, {"rows": 100, "x_s": 2.0}, {"rows": 1000, "x_s": 30.0}]
    # per row: 0.1, 0.02, 0.03 -> 0.03 / 0.02
    assert abs(scaling_growth(points, "x") - 1.5) < 1e-9
    assert scaling_growth(points[:1], "x") is None


def test_written_json_round_trips_and_the_table_mentions_every_part(tmp_path: Path) -> None:
    report = _report()
    path = write_report(report, tmp_path / "results")
    assert path.name == "latest.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    table = format_table(report)
    for word in ("ingest", "build", "geoparquet", "odb", "netcdf", "missing", "latency", "memory", "scaling", "test cpu"):
        assert word in table


def test_paired_ratio_is_the_median_of_back_to_back_pairs() -> None:
    from benchmarks.timing import paired_ratio

    assert paired_ratio([2.0, 4.0, 1.0], [1.0, 4.0, 1.0]) == 1.0
    assert paired_ratio([2.0, 4.0], [1.0, 3.0]) == (0.5 + 0.75) / 2
    assert paired_ratio([], []) is None
