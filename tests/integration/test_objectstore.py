"""ObjectStore against a local directory and a real S3 HTTP endpoint (moto's server)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as paipc
import pyarrow.parquet as pq
import pytest

from ionbeam_dagster.errors import Rejection, TransientError
from ionbeam_dagster.objectstore import ObjectStore

pytestmark = pytest.mark.services


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield ObjectStore.from_url(f"file://{tmp_path}/objects")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    yield ObjectStore.from_url(f"s3://{bucket}/root", s3_endpoint=endpoint, spool_dir=str(tmp_path))


def _table() -> pa.Table:
    return pa.table(
        {
            "datetime": pa.array([1_700_000_000_000_000_000, 1_700_000_060_000_000_000], pa.timestamp("ns", "UTC")),
            "lat": [52.1, -33.9],
            "lon": [4.3, 151.2],
            "air_temperature": [12.5, None],
            "station_id": ["a", "b"],
        }
    )


@pytest.fixture
def physical(store: ObjectStore, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], list[str]]:
    """Lists what is physically stored, behind the store's back (so also what list() hides)."""
    if store.is_local:
        root = tmp_path / "objects"
        return lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    import boto3

    client = boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint"), region_name="us-east-1")
    bucket = request.getfixturevalue("s3_bucket")
    return lambda: sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


# --------------------------------------------------------------------------- bytes


def test_write_then_read_bytes_round_trips(store: ObjectStore) -> None:
    data = bytes(range(256)) * 10
    store.write_bytes("raw/ds/one.bin", data)
    assert store.exists("raw/ds/one.bin")
    assert store.read_bytes("raw/ds/one.bin") == data
    assert store.size("raw/ds/one.bin") == len(data)
    store.write_bytes("raw/ds/one.bin", b"replaced")
    assert store.read_bytes("raw/ds/one.bin") == b"replaced"


def test_atomic_write_leaves_no_temporary_file(
    store: ObjectStore, physical: Callable[[], list[str]], tmp_path: Path
) -> None:
    store.write_bytes("raw/a.bin", b"a")
    with store.open_atomic_output("raw/b.bin") as out:
        out.write(b"b")
    assert store.list("raw/") == ["raw/a.bin", "raw/b.bin"]
    present = physical()
    assert [p for p in present if "tmp" in p] == []
    assert present == (["raw/a.bin", "raw/b.bin"] if store.is_local else ["root/raw/a.bin", "root/raw/b.bin"])
    # The S3 spool file is removed too.
    assert [p.name for p in tmp_path.glob("ionbeam-spool-*")] == []


def test_failed_atomic_write_leaves_old_object_and_nothing_else(
    store: ObjectStore, physical: Callable[[], list[str]], tmp_path: Path
) -> None:
    store.write_bytes("raw/keep.bin", b"old")
    with pytest.raises(RuntimeError, match="producer failed"):
        with store.open_atomic_output("raw/keep.bin") as out:
            out.write(b"half of the new")
            raise RuntimeError("producer failed")
    with pytest.raises(RuntimeError):
        with store.open_atomic_output("raw/never.bin") as out:
            out.write(b"partial")
            raise RuntimeError("producer failed")
    assert store.read_bytes("raw/keep.bin") == b"old"
    assert not store.exists("raw/never.bin")
    assert physical() == (["raw/keep.bin"] if store.is_local else ["root/raw/keep.bin"])
    assert [p.name for p in tmp_path.glob("ionbeam-spool-*")] == []


# --------------------------------------------------------------------------- tables


def test_parquet_round_trip(store: ObjectStore) -> None:
    table = _table()
    with store.open_atomic_output("raw/ds/t.parquet") as out:
        pq.write_table(table, out)
    assert store.read_table("raw/ds/t.parquet").equals(table)


def test_ipc_file_round_trip(store: ObjectStore) -> None:
    table = _table()
    assert store.write_ipc("datasets/ds/w.arrow", table) == 2
    assert store.read_bytes("datasets/ds/w.arrow")[:6] == b"ARROW1"
    assert store.read_table("datasets/ds/w.arrow").equals(table)


def test_ipc_file_from_batches_with_schema(store: ObjectStore) -> None:
    table = _table()
    batches = (b for b in table.to_batches(max_chunksize=1))
    assert store.write_ipc("datasets/ds/b.arrow", batches, table.schema) == 2
    assert store.read_table("datasets/ds/b.arrow").equals(table)


def test_ipc_stream_round_trip(store: ObjectStore) -> None:
    table = _table()
    sink = pa.BufferOutputStream()
    with paipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    store.write_bytes("raw/ds/s.arrows", sink.getvalue())
    assert store.read_table("raw/ds/s.arrows").equals(table)


def test_suffixless_key_resolves_to_parquet(store: ObjectStore) -> None:
    # The reference client publishes "raw/<ds>/<start>-<end>_<now>" and writes "<key>.parquet".
    key = "raw/ds/20240101T000000Z-20240101T010000Z_20240101T010500Z"
    table = _table()
    with store.open_atomic_output(key + ".parquet") as out:
        pq.write_table(table, out)
    assert not store.exists(key)
    assert store.read_table(key).equals(table)


def test_suffixless_key_without_parquet_sibling_reads_the_key_itself(store: ObjectStore) -> None:
    table = _table()
    store.write_ipc("raw/ds/plain", table)
    assert store.read_table("raw/ds/plain").equals(table)


@pytest.mark.parametrize(
    "data",
    [b"", b"not a table at all", b"PAR1 truncated", b"ARROW1\x00\x00garbage", b"\xff\xff\xff\xffgarbage"],
    ids=["empty", "text", "truncated-parquet", "bad-ipc-file", "bad-ipc-stream"],
)
def test_garbage_bytes_are_payload_unreadable(store: ObjectStore, data: bytes) -> None:
    store.write_bytes("raw/ds/bad.parquet", data)
    with pytest.raises(Rejection) as info:
        store.read_table("raw/ds/bad.parquet")
    assert info.value.code == "payload_unreadable"
    assert "payload_location" in info.value.message and "raw/ds/bad.parquet" in info.value.message


def test_missing_object_raises_file_not_found(store: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_table("raw/ds/missing")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("raw/ds/missing.bin")
    with pytest.raises(FileNotFoundError):
        store.size("raw/ds/missing.bin")
    assert not store.exists("raw/ds/missing.bin")


def test_a_directory_is_not_an_object(store: ObjectStore) -> None:
    store.write_bytes("raw/ds/inside.bin", b"x")
    assert not store.exists("raw/ds")
    with pytest.raises(FileNotFoundError):
        store.read_table("raw/ds")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("raw/ds")


def test_long_multibyte_names_write_atomically(store: ObjectStore) -> None:
    key = "raw/" + "é" * 120 + ".bin"  # 244 bytes: a temp name built from it must be cut
    store.write_bytes(key, b"x")
    assert store.read_bytes(key) == b"x"


# --------------------------------------------------------------------------- key safety


UNSAFE = [
    "",
    "..",
    "../x",
    "raw/../../etc/passwd",
    "raw/%2e%2e/x",
    "/etc/passwd",
    "s3://other-bucket/x",
    "file:///elsewhere",
    "file:///elsewhere/raw/x",
    "http://example.com/x",
    "C:/windows/x",
    "raw\\x",
    "raw/x\n",
    "raw/\x00x",
    "raw//x",
    "raw/x/",
    "raw/./x",
    "raw/.x.ionbeam-tmp-0123",
    "a" * 1025,
]


@pytest.mark.parametrize("location", UNSAFE, ids=[repr(u)[:40] for u in UNSAFE])
def test_unsafe_locations_are_rejected(store: ObjectStore, location: str) -> None:
    with pytest.raises(Rejection) as info:
        store.key_for(location)
    assert info.value.code == "invalid_payload_location"
    assert info.value.message.startswith("payload_location: ")
    # Every entry point refuses, not just key_for.
    with pytest.raises(Rejection):
        store.read_table(location)
    with pytest.raises(Rejection):
        store.write_bytes(location, b"x")


def test_other_roots_of_the_same_scheme_are_rejected(store: ObjectStore) -> None:
    root = store.root_url
    for location in (root + "sibling/x", root.rsplit("/", 1)[0] + "/x", root):
        with pytest.raises(Rejection) as info:
            store.key_for(location)
        assert info.value.code == "invalid_payload_location"


def test_url_of_the_same_store_is_accepted(store: ObjectStore) -> None:
    store.write_bytes("raw/ds/x.bin", b"payload")
    url = store.url("raw/ds/x.bin")
    assert url.startswith(store.root_url + "/")
    assert store.key_for(url) == "raw/ds/x.bin"
    assert store.read_bytes(url) == b"payload"
    # Keys with colons (ISO timestamps) are ordinary keys, not URLs.
    assert store.key_for("raw/ds/2024-01-01T00:00:00Z") == "raw/ds/2024-01-01T00:00:00Z"


def test_local_absolute_path_inside_root_is_accepted(tmp_path: Path) -> None:
    store = ObjectStore.from_url(f"file://{tmp_path}/objects")
    assert store.key_for(f"{tmp_path}/objects/raw/x") == "raw/x"
    assert store.key_for(f"file://localhost{tmp_path}/objects/raw/x") == "raw/x"
    with pytest.raises(Rejection):
        store.key_for(f"{tmp_path}/objects-other/raw/x")


def test_field_name_is_configurable_in_messages(store: ObjectStore) -> None:
    with pytest.raises(Rejection) as info:
        store.key_for("../x", field="dataset_location")
    assert info.value.message.startswith("dataset_location: ")


# --------------------------------------------------------------------------- list / delete


def test_list_and_delete(store: ObjectStore) -> None:
    for key in ("raw/a/1.bin", "raw/a/2.bin", "raw/b/1.bin", "datasets/x.arrow"):
        store.write_bytes(key, key.encode())
    assert store.list() == ["datasets/x.arrow", "raw/a/1.bin", "raw/a/2.bin", "raw/b/1.bin"]
    assert store.list("raw/") == ["raw/a/1.bin", "raw/a/2.bin", "raw/b/1.bin"]
    assert store.list("raw/a") == ["raw/a/1.bin", "raw/a/2.bin"]
    assert store.list("raw/a/2") == ["raw/a/2.bin"]
    assert store.list("nothing/") == []
    assert store.delete("raw/a/1.bin") is True
    assert store.delete("raw/a/1.bin") is False
    assert not store.exists("raw/a/1.bin")
    # pyarrow leaves an S3 "raw/a/" directory marker behind; it is not an object.
    assert store.list("raw/") == ["raw/a/2.bin", "raw/b/1.bin"]
    with pytest.raises(Rejection):
        store.list("../")


# --------------------------------------------------------------------------- construction / outages


def test_from_url_refuses_bad_urls() -> None:
    for url in ("relative/dir", "file://host/dir", "ftp://x/y", "s3://Bad_Bucket/x", "file:///"):
        with pytest.raises(ValueError):
            ObjectStore.from_url(url)


def test_unreachable_s3_endpoint_is_transient() -> None:
    from tests.conftest import free_port

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    store = ObjectStore.from_url("s3://some-bucket/root", s3_endpoint=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TransientError, match="object store s3://some-bucket/root"):
        store.read_table("raw/x")
    with pytest.raises(TransientError):
        store.write_bytes("raw/x.bin", b"x")
    assert time.monotonic() - started < 30
