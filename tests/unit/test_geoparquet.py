"""GeoParquet export of a dataset window: readable, complete, stable ids, prunable by bbox."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import shapely

from ionbeam_dagster.contracts import DataIngestionMap
from ionbeam_dagster.exporters import GeoParquetStats, write_geoparquet
from ionbeam_dagster.synthetic import generate_observations, synthetic_ingestion_map

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=1)
DATASET = "synthetic"
ADDED = ("id", "geometry", "bbox")


def dataset_table(start: datetime = START, end: datetime = END, *, stations: int = 20) -> pa.Table:
    """Synthetic observations in the contract's dataset schema (axes renamed, variables canonical)."""
    raw = generate_observations(start, end, stations=stations)
    mapping = DataIngestionMap.model_validate(synthetic_ingestion_map())
    names = {mapping.datetime.column: "timestamp", mapping.lat.column: "latitude", mapping.lon.column: "longitude"}
    names |= {v.column: v.canonical_name for v in mapping.canonical_variables}
    return raw.rename_columns([names.get(c, c) for c in raw.column_names])


def write(table: pa.Table, **kwargs) -> tuple[bytes, GeoParquetStats]:
    sink = io.BytesIO()
    args = {"window_start": START, "window_end": END, "dataset": DATASET, "dataset_version": "v1"} | kwargs
    stats = write_geoparquet(table, sink, **args)
    return sink.getvalue(), stats


def geo_metadata(data: bytes) -> dict:
    return json.loads(pq.ParquetFile(io.BytesIO(data)).schema_arrow.metadata[b"geo"])


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return dataset_table()


@pytest.fixture(scope="module")
def written(table: pa.Table) -> tuple[bytes, GeoParquetStats]:
    return write(table)


def test_geopandas_reads_points_in_epsg_4326_at_the_observed_positions(written: tuple[bytes, GeoParquetStats]) -> None:
    frame = gpd.read_parquet(io.BytesIO(written[0]))
    assert frame.crs is not None and frame.crs.to_epsg() == 4326
    assert frame.geometry.name == "geometry"
    assert set(frame.geometry.geom_type) == {"Point"}
    np.testing.assert_array_equal(shapely.get_x(frame.geometry.values), frame["longitude"].to_numpy())
    np.testing.assert_array_equal(shapely.get_y(frame.geometry.values), frame["latitude"].to_numpy())


def test_every_dataset_column_is_kept_with_its_values(table: pa.Table, written: tuple[bytes, GeoParquetStats]) -> None:
    back = pq.read_table(io.BytesIO(written[0]))
    assert set(back.column_names) == set(table.column_names) | set(ADDED)
    assert back.num_rows == table.num_rows
    for name in table.column_names:
        assert back.schema.field(name).type == table.schema.field(name).type, name
    keys = [("station_id", "ascending"), ("timestamp", "ascending")]
    assert back.select(table.column_names).sort_by(keys).equals(table.sort_by(keys))


def test_stats_report_what_was_written(table: pa.Table, written: tuple[bytes, GeoParquetStats]) -> None:
    data, stats = written
    assert stats.rows == table.num_rows
    assert stats.bytes_written == len(data)
    assert set(stats.variables) == {c for c in table.column_names if "__" in c}
    assert stats.metadata_columns == ("station_id",)
    assert stats.columns == tuple(pq.read_schema(io.BytesIO(data)).names)
    assert stats.row_groups == pq.ParquetFile(io.BytesIO(data)).num_row_groups
    assert stats.geometry_encoding == "WKB"


def test_file_metadata_carries_window_dataset_and_version(written: tuple[bytes, GeoParquetStats]) -> None:
    metadata = pq.ParquetFile(io.BytesIO(written[0])).schema_arrow.metadata
    assert metadata[b"ionbeam:window_start"] == b"2024-01-01T00:00:00Z"
    assert metadata[b"ionbeam:window_end"] == b"2024-01-01T01:00:00Z"
    assert metadata[b"ionbeam:dataset"] == b"synthetic"
    assert metadata[b"ionbeam:dataset_version"] == b"v1"


def test_geo_metadata_is_geoparquet_1_1_with_bbox_covering(table: pa.Table, written: tuple[bytes, GeoParquetStats]) -> None:
    geo = geo_metadata(written[0])
    assert geo["version"] == "1.1.0"
    assert geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB"
    assert column["geometry_types"] == ["Point"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert column["covering"] == {
        "bbox": {"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"], "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}
    }
    lon, lat = table["longitude"], table["latitude"]
    assert column["bbox"] == [pc.min(lon).as_py(), pc.min(lat).as_py(), pc.max(lon).as_py(), pc.max(lat).as_py()]


def test_bbox_column_holds_each_point(written: tuple[bytes, GeoParquetStats]) -> None:
    back = pq.read_table(io.BytesIO(written[0]))
    bbox = back["bbox"].combine_chunks()
    assert back.schema.field("bbox").type == pa.struct([(n, pa.float64()) for n in ("xmin", "ymin", "xmax", "ymax")])
    for field, axis in (("xmin", "longitude"), ("xmax", "longitude"), ("ymin", "latitude"), ("ymax", "latitude")):
        assert bbox.field(field).equals(back[axis].combine_chunks())


def test_ids_are_unique_and_identical_across_two_writes(table: pa.Table, written: tuple[bytes, GeoParquetStats]) -> None:
    again, _ = write(table)
    first = pq.read_table(io.BytesIO(written[0]))
    second = pq.read_table(io.BytesIO(again))
    assert first["id"].equals(second["id"])
    assert pc.count_distinct(first["id"]).as_py() == first.num_rows
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first["id"].to_pylist()[:100])


def test_row_order_and_bytes_do_not_depend_on_input_order(table: pa.Table, written: tuple[bytes, GeoParquetStats]) -> None:
    shuffled = table.take(pa.array(np.random.default_rng(7).permutation(table.num_rows)))
    data, _ = write(shuffled)
    assert data == written[0]


def test_an_observation_keeps_its_id_when_the_window_is_rebuilt_with_more_data(table: pa.Table) -> None:
    # First build: only part of the network has reported; the rebuild adds late stations and
    # corrects a value. Observations present in both must keep their ids.
    early = table.filter(pc.is_in(table["station_id"], table["station_id"].unique()[:8]))
    variable = "air_temperature__degC__2.0__point__PT0S"
    corrected = table.set_column(
        table.schema.get_field_index(variable), variable, pc.add(table[variable], pa.scalar(0.5))
    )
    first = pq.read_table(io.BytesIO(write(early, dataset_version="v1")[0]))
    rebuilt = pq.read_table(io.BytesIO(write(corrected, dataset_version="v2")[0]))

    def ids(t: pa.Table) -> dict[tuple[str, object], str]:
        return {(s, ts): i for s, ts, i in zip(t["station_id"].to_pylist(), t["timestamp"].to_pylist(), t["id"].to_pylist())}

    before, after = ids(first), ids(rebuilt)
    assert len(before) == early.num_rows
    assert all(after[key] == value for key, value in before.items())


def test_ids_differ_between_datasets(table: pa.Table) -> None:
    a = pq.read_table(io.BytesIO(write(table, dataset="synthetic")[0]), columns=["id"])
    b = pq.read_table(io.BytesIO(write(table, dataset="synthetic_copy")[0]), columns=["id"])
    assert not set(a["id"].to_pylist()) & set(b["id"].to_pylist())


def test_ids_without_metadata_columns_use_the_position(table: pa.Table) -> None:
    anonymous = table.drop_columns(["station_id"])
    back = pq.read_table(io.BytesIO(write(anonymous)[0]))
    assert pc.count_distinct(back["id"]).as_py() == back.num_rows
    assert "station_id" not in back.column_names


def test_several_metadata_columns_and_null_values_are_kept(table: pa.Table) -> None:
    module = pc.if_else(pc.equal(pc.bit_wise_and(pc.cast(pc.hour(table["timestamp"]), pa.int64()), 1), 0), "indoor", None)
    extra = table.append_column("module_id", pc.cast(module, pa.string()))
    # A variable that some rows did not report: nulls must survive, not become NaN or 0.
    sparse = extra.append_column("rain__mm__0.0__sum__PT1H", pa.array([None] * extra.num_rows, type=pa.float64()))
    data, stats = write(sparse)
    back = pq.read_table(io.BytesIO(data))
    assert stats.metadata_columns == ("station_id", "module_id")
    assert "rain__mm__0.0__sum__PT1H" in stats.variables
    assert back["rain__mm__0.0__sum__PT1H"].null_count == back.num_rows
    assert back["module_id"].null_count == sparse["module_id"].null_count
    assert pc.count_distinct(back["id"]).as_py() == back.num_rows


def test_row_groups_carry_bbox_statistics_and_a_spatial_filter_skips_some(tmp_path: Path) -> None:
    table = dataset_table(stations=50)  # 50 stations x 60 minutes = 3000 rows
    path = tmp_path / "window.parquet"
    with path.open("wb") as sink:
        write_geoparquet(
            table, sink, window_start=START, window_end=END, dataset=DATASET, dataset_version="v1", row_group_size=300
        )
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 10
    paths = [metadata.row_group(0).column(i).path_in_schema for i in range(metadata.num_columns)]
    for group in range(metadata.num_row_groups):
        for leaf in ("bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax"):
            statistics = metadata.row_group(group).column(paths.index(leaf)).statistics
            assert statistics is not None and statistics.has_min_max, (group, leaf)

    # South-west Europe: the Iberian corner of the network.
    region = (
        (pc.field("bbox", "xmax") >= -10.0)
        & (pc.field("bbox", "xmin") <= 5.0)
        & (pc.field("bbox", "ymax") >= 36.0)
        & (pc.field("bbox", "ymin") <= 45.0)
    )
    fragment = next(ds.dataset(path, format="parquet").get_fragments())
    kept = fragment.split_by_row_group(region)
    assert 0 < len(kept) < metadata.num_row_groups
    expected = table.filter((pc.field("longitude") <= 5.0) & (pc.field("latitude") <= 45.0))
    got = ds.dataset(path, format="parquet").to_table(filter=region)
    assert got.num_rows == expected.num_rows > 0
    # geopandas finds the covering through the `geo` metadata and filters with it.
    assert len(gpd.read_parquet(path, bbox=(-10.0, 36.0, 5.0, 45.0))) == expected.num_rows


def test_empty_table_writes_a_valid_file_with_the_full_schema(table: pa.Table) -> None:
    data, stats = write(table.slice(0, 0))
    assert stats.rows == 0 and stats.bytes_written == len(data)
    assert stats.row_groups == pq.ParquetFile(io.BytesIO(data)).num_row_groups == 0
    assert pq.read_table(io.BytesIO(data)).num_rows == 0
    frame = gpd.read_parquet(io.BytesIO(data))
    assert len(frame) == 0
    assert frame.crs.to_epsg() == 4326
    # geopandas hides the covering column on read (it is an index, not data); the schema check covers it.
    assert set(frame.columns) == set(table.column_names) | {"id", "geometry"}
    full = pq.read_schema(io.BytesIO(write(table)[0]))
    assert pq.read_schema(io.BytesIO(data)).remove_metadata() == full.remove_metadata()
    assert geo_metadata(data)["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]


def test_geoarrow_point_encoding_also_reads_back(table: pa.Table) -> None:
    data, stats = write(table, geometry_encoding="point")
    assert stats.geometry_encoding == "point"
    assert geo_metadata(data)["columns"]["geometry"]["encoding"] == "point"
    frame = gpd.read_parquet(io.BytesIO(data))
    assert frame.crs.to_epsg() == 4326
    np.testing.assert_array_equal(shapely.get_x(frame.geometry.values), frame["longitude"].to_numpy())
    np.testing.assert_array_equal(shapely.get_y(frame.geometry.values), frame["latitude"].to_numpy())


def test_writes_to_a_stream_that_cannot_seek_or_tell_and_leaves_it_open(table: pa.Table) -> None:
    class WriteOnly:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> int:
            self.chunks.append(bytes(data))
            return len(data)

    sink = WriteOnly()
    stats = write_geoparquet(
        table, sink, window_start=START, window_end=END, dataset=DATASET, dataset_version="v1"  # type: ignore[arg-type]
    )
    data = b"".join(sink.chunks)
    assert not sink.closed
    assert stats.bytes_written == len(data)
    assert pq.read_table(io.BytesIO(data)).num_rows == table.num_rows


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["latitude"]), r"missing column\(s\) \['latitude'\]"),
        (lambda t: t.append_column("id", pa.array(["x"] * t.num_rows)), r"\['id'\] clash"),
        (lambda t: pa.concat_tables([t, t.slice(0, 1)]), "duplicate observation"),
        (
            lambda t: t.set_column(1, "latitude", pa.array([91.0] * t.num_rows)),
            r"latitude: \d+ value\(s\) outside \[-90, 90\]",
        ),
        (
            lambda t: t.set_column(0, "timestamp", pc.add(t["timestamp"], pa.scalar(timedelta(hours=1)))),
            "outside the window",
        ),
    ],
)
def test_tables_breaking_the_dataset_contract_are_refused(table: pa.Table, mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write(mutate(table))


def test_naive_window_bounds_are_refused(table: pa.Table) -> None:
    with pytest.raises(ValueError, match="window_start: .* naive"):
        write(table, window_start=datetime(2024, 1, 1))
