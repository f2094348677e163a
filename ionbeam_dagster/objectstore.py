"""One object store over pyarrow.fs: a local directory or an S3 bucket (any endpoint).

Keys come from the outside (``payload_location`` in an IngestDataCommand), so every public
method passes its key through :meth:`ObjectStore.key_for`, which refuses anything that could
leave the configured root. Writes are atomic: a reader sees the old object or the whole new
one, never a prefix of it, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as paipc
import pyarrow.parquet as pq

from .errors import Rejection, TransientError

__all__ = ["ObjectStore", "MAX_KEY_BYTES"]

# S3's own limit on key length; local file systems allow 4096 per path but one rule for both
# keeps a key valid whichever store it moves to.
MAX_KEY_BYTES = 1024
# Most local file systems cap one path component at 255 bytes.
_MAX_SEGMENT_BYTES = 255
# Temporary files carry this marker; keys containing it are refused and listings hide it, so
# nobody can read or list a half-written object.
_TMP_MARK = ".ionbeam-tmp-"
# A leading "word:" is a URL scheme (or a Windows drive); only this store's own URLs pass.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Keys ending with one of these are taken as they are; any other key is first tried as
# ``<key>.parquet`` because the reference client appends that suffix to the key it publishes.
_TABLE_SUFFIXES = (".parquet", ".pq", ".arrow", ".arrows", ".ipc", ".feather")
_COPY_CHUNK = 8 << 20

_PARQUET_MAGIC = b"PAR1"
_PARQUET_ENCRYPTED_MAGIC = b"PARE"
_IPC_FILE_MAGIC = b"ARROW1"
_IPC_CONTINUATION = b"\xff\xff\xff\xff"

Scheme = Literal["file", "s3"]


def _reject(field: str, location: object, problem: str) -> Rejection:
    return Rejection("invalid_payload_location", f"{field}: {location!r} {problem}")


def _has_control_chars(text: str) -> bool:
    # C0, DEL and C1 controls: none belongs in a key, and \n or \r would forge log lines.
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


class ObjectStore:
    """Objects under one root: ``file:///abs/dir`` or ``s3://bucket/prefix``.

    Build it with :meth:`from_url`. Safe to share between threads: it holds no mutable
    state of its own, and pyarrow's file systems are thread-safe.
    """

    def __init__(
        self,
        filesystem: pafs.FileSystem,
        root: str,
        scheme: Scheme,
        *,
        spool_dir: str | None = None,
    ) -> None:
        if scheme not in ("file", "s3"):
            raise ValueError(f"scheme: {scheme!r} must be 'file' or 's3'")
        root = root.rstrip("/") if scheme == "s3" else ("/" + root.strip("/"))
        if scheme == "file" and root == "/":
            # A store rooted at "/" would make "never escapes its root" meaningless.
            raise ValueError("root: '/' is not allowed as an object store root")
        if "\\" in root or _has_control_chars(root) or any(p in (".", "..") for p in root.split("/")):
            raise ValueError(f"root: {root!r} must not contain '.', '..', backslashes or control characters")
        self._fs = filesystem
        # normpath collapses "//" so that listing paths (which pyarrow normalises) match.
        self._root = os.path.normpath(root) if scheme == "file" else root
        self._scheme: Scheme = scheme
        self._spool_dir = spool_dir

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        s3_endpoint: str | None = None,
        s3_region: str = "us-east-1",
        spool_dir: str | None = None,
    ) -> ObjectStore:
        """``file:///abs/dir`` (or a bare absolute path) or ``s3://bucket[/prefix]``.

        S3 credentials come from the AWS SDK chain (``AWS_ACCESS_KEY_ID`` ... in the
        environment, then ~/.aws). ``s3_endpoint`` is e.g. ``http://127.0.0.1:9000``;
        without one, AWS itself. No network I/O happens here.
        """
        if url.startswith("/"):
            return cls(pafs.LocalFileSystem(), url, "file", spool_dir=spool_dir)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError(f"object store url: {url!r} must be file:///absolute/path")
            if parts.query or parts.fragment:
                raise ValueError(f"object store url: {url!r} must not have a query or fragment")
            return cls(pafs.LocalFileSystem(), parts.path, "file", spool_dir=spool_dir)
        if parts.scheme == "s3":
            bucket, _, prefix = url[len("s3://") :].partition("/")
            if not _BUCKET_RE.match(bucket):
                raise ValueError(f"object store url: bucket {bucket!r} is not a valid S3 bucket name")
            prefix = prefix.strip("/")
            if "?" in prefix or "#" in prefix:
                raise ValueError(f"object store url: {url!r} must not have a query or fragment")
            kwargs: dict[str, object] = {
                "region": s3_region,
                # Fail fast on a dead endpoint: the caller retries the whole unit of work.
                "connect_timeout": 5,
                "request_timeout": 60,
            }
            if s3_endpoint:
                scheme, netloc = _split_endpoint(s3_endpoint)
                kwargs["scheme"] = scheme
                kwargs["endpoint_override"] = netloc
            fs = pafs.S3FileSystem(**kwargs)  # type: ignore[arg-type]
            root = f"{bucket}/{prefix}" if prefix else bucket
            return cls(fs, root, "s3", spool_dir=spool_dir)
        raise ValueError(f"object store url: {url!r} must start with file:/// or s3://")

    # ----------------------------------------------------------------- naming

    @property
    def root_url(self) -> str:
        return f"file://{self._root}" if self._scheme == "file" else f"s3://{self._root}"

    @property
    def is_local(self) -> bool:
        return self._scheme == "file"

    def __repr__(self) -> str:
        return f"ObjectStore({self.root_url!r})"

    def url(self, key: str) -> str:
        """The full URL of ``key``; :meth:`key_for` maps it back to ``key``."""
        return f"{self.root_url}/{self.key_for(key)}"

    def key_for(self, location: str, *, field: str = "payload_location") -> str:
        """The key (relative to the root) that ``location`` names, or Rejection.

        ``location`` is a relative key (``raw/x.parquet``) or a URL inside this store's root
        (``file:///root/raw/x``, ``s3://bucket/prefix/raw/x``). URLs are taken literally (no
        percent-decoding) so that :meth:`url` and this method are exact inverses.
        """
        if not isinstance(location, str):
            raise _reject(field, location, "must be a string")
        if location == "":
            raise _reject(field, location, "is empty")
        if _has_control_chars(location):
            raise _reject(field, location, "contains control characters")
        if "\\" in location:
            # Backslash is a separator on Windows and an escape elsewhere: ambiguous, refuse it.
            raise _reject(field, location, "contains a backslash")
        if _SCHEME_RE.match(location):
            key = self._strip_own_url(location, field)
        elif location.startswith("/"):
            if self._scheme == "file" and location.startswith(self._root + "/"):
                key = location[len(self._root) + 1 :]
            else:
                raise _reject(field, location, f"is an absolute path outside the store root {self.root_url}")
        else:
            key = location
        self._check_key(key, location, field)
        return key

    def _strip_own_url(self, location: str, field: str) -> str:
        scheme = _SCHEME_RE.match(location).group(1).lower()  # type: ignore[union-attr]
        rest = location[len(scheme) + 1 :]
        if scheme != self._scheme:
            raise _reject(field, location, f"uses scheme {scheme!r}, but this store is {self.root_url}")
        if not rest.startswith("//"):
            raise _reject(field, location, f"is not a {scheme}:// URL")
        rest = rest[2:]
        if self._scheme == "file":
            authority, slash, path = rest.partition("/")
            if authority not in ("", "localhost"):
                raise _reject(field, location, f"names host {authority!r}; only local files are served")
            path = slash + path
            if not path.startswith(self._root + "/"):
                raise _reject(field, location, f"is outside the store root {self.root_url}")
            return path[len(self._root) + 1 :]
        bucket = rest.partition("/")[0]
        if bucket != self._root.partition("/")[0]:
            raise _reject(field, location, f"names bucket {bucket!r}, but this store is {self.root_url}")
        if not rest.startswith(self._root + "/"):
            raise _reject(field, location, f"is outside the store root {self.root_url}")
        return rest[len(self._root) + 1 :]

    @staticmethod
    def _check_key(key: str, location: str, field: str) -> None:
        if key == "":
            raise _reject(field, location, "names the store root, not an object")
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise _reject(field, location, "is not valid Unicode text") from None
        if size > MAX_KEY_BYTES:
            raise _reject(field, location, f"is {size} bytes long; keys are limited to {MAX_KEY_BYTES}")
        for segment in key.split("/"):
            if segment == "":
                raise _reject(field, location, "has an empty path segment ('//', or a leading or trailing '/')")
            # Also refuse %2e%2e: whatever later percent-decodes the key must not see "..".
            if segment in (".", "..") or urllib.parse.unquote(segment) in (".", ".."):
                raise _reject(field, location, "contains a '.' or '..' segment, which could escape the store root")
            if _TMP_MARK in segment:
                raise _reject(field, location, "names a temporary file of an unfinished write")
            if len(segment.encode("utf-8")) > _MAX_SEGMENT_BYTES:
                raise _reject(field, location, f"has a path segment longer than {_MAX_SEGMENT_BYTES} bytes")

    def _path(self, key: str) -> str:
        return f"{self._root}/{self.key_for(key)}"

    # ----------------------------------------------------------------- errors

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """S3 failures other than "no such object" mean the service did not answer as it
        should (unreachable, throttled, 5xx, credentials): retry later, never dead-letter."""
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as exc:
            if self._scheme == "s3":
                raise TransientError(f"object store {self.root_url}: {what} failed: {exc}") from exc
            raise

    # ----------------------------------------------------------------- reading

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with self._io(f"stat {key!r}"):
            return self._fs.get_file_info(path).type == pafs.FileType.File

    def size(self, key: str) -> int:
        path = self._path(key)
        with self._io(f"stat {key!r}"):
            info = self._fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"no object {key!r} in {self.root_url}")
        return int(info.size)

    def read_bytes(self, key: str) -> bytes:
        return self._read_buffer(self.key_for(key)).to_pybytes()

    def _read_buffer(self, key: str) -> pa.Buffer:
        path = self._path(key)
        # open_input_file: one HEAD and one GET. open_input_stream issues hundreds of ranged
        # GETs against some servers (moto: ~150x slower).
        try:
            with self._io(f"read {key!r}"):
                with self._fs.open_input_file(path) as f:
                    return f.read_buffer()
        except OSError as exc:
            # A key naming a directory has no object: report it like S3 does (not found),
            # rather than as an I/O failure the caller would retry forever.
            if self._scheme == "file" and not isinstance(exc, FileNotFoundError) and os.path.isdir(path):
                raise FileNotFoundError(f"no object {key!r} in {self.root_url} (it is a directory)") from None
            raise

    def read_table(self, key: str) -> pa.Table:
        """Parquet, Arrow IPC file or Arrow IPC stream, told apart by their magic bytes.

        A key without a table suffix is tried as ``<key>.parquet`` first. Missing:
        FileNotFoundError. Not decodable: Rejection("payload_unreadable").
        """
        key = self.key_for(key)
        buf: pa.Buffer | None = None
        if not key.lower().endswith(_TABLE_SUFFIXES):
            candidate = key + ".parquet"
            try:
                self._check_key(candidate, key, "payload_location")
                buf, key = self._read_buffer(candidate), candidate
            except (FileNotFoundError, Rejection):
                buf = None
        if buf is None:
            buf = self._read_buffer(key)
        # The whole object is fetched before decoding, so an I/O error can never be mistaken
        # for corrupt data (pyarrow raises OSError for both).
        return _decode_table(buf, key)

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (a plain string prefix), sorted. Directory markers
        and temporary files of unfinished writes are not objects and are left out."""
        if prefix:
            check = prefix[:-1] if prefix.endswith("/") else prefix
            self.key_for(check, field="prefix")
        base = prefix.rpartition("/")[0]
        path = f"{self._root}/{base}" if base else self._root
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        with self._io(f"list {prefix!r}"):
            infos = self._fs.get_file_info(selector)
        cut = len(self._root) + 1
        keys = [
            info.path[cut:]
            for info in infos
            if info.type == pafs.FileType.File and _TMP_MARK not in info.base_name
        ]
        return sorted(k for k in keys if k.startswith(prefix))

    # ----------------------------------------------------------------- writing

    def write_bytes(self, key: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
        path = self._path(key)
        if self._scheme == "file":
            with self.open_atomic_output(key) as out:
                out.write(data)
            return
        # In memory already: no spool needed. pyarrow uploads it as one multipart upload,
        # which becomes visible only when completed.
        with self._io(f"write {key!r}"):
            with self._fs.open_output_stream(path) as out:
                out.write(data)

    @contextmanager
    def open_atomic_output(self, key: str) -> Iterator[pa.NativeFile]:
        """A writable stream whose content appears at ``key`` only if the block succeeds."""
        path = self._path(key)
        if self._scheme == "file":
            with _local_atomic(path) as out:
                yield out
            return
        # pyarrow's S3 output stream cannot be aborted: closing it, even from its destructor
        # after an exception, completes the upload and publishes a truncated object. So the
        # bytes are spooled to a local file and uploaded only once the producer has finished.
        fd, spool = tempfile.mkstemp(prefix="ionbeam-spool-", dir=self._spool_dir)
        os.close(fd)
        try:
            with pa.OSFile(spool, "wb") as out:
                yield out
            with self._io(f"write {key!r}"):
                with pa.OSFile(spool, "rb") as src, self._fs.open_output_stream(path) as dst:
                    while (chunk := src.read_buffer(_COPY_CHUNK)).size:
                        dst.write(chunk)
        finally:
            _unlink_quietly(spool)

    def write_ipc(
        self,
        key: str,
        data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
        schema: pa.Schema | None = None,
        *,
        compression: str | None = None,
    ) -> int:
        """Write an Arrow IPC *file* (random access, what exporters expect); returns rows."""
        if isinstance(data, pa.Table):
            schema = schema or data.schema
            batches: Iterable[pa.RecordBatch] = data.to_batches()
        elif isinstance(data, pa.RecordBatch):
            schema = schema or data.schema
            batches = [data]
        else:
            if schema is None:
                raise ValueError("schema: required when writing an iterable of record batches")
            batches = data
        options = paipc.IpcWriteOptions(compression=compression)
        rows = 0
        with self.open_atomic_output(key) as sink:
            with paipc.new_file(sink, schema, options=options) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        return rows

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed. Deleting a missing key is not an error, so a
        retried clean-up is harmless."""
        path = self._path(key)
        try:
            with self._io(f"delete {key!r}"):
                # pyarrow's S3 delete leaves an empty "dir/" marker behind so the parent
                # "directory" survives; list() skips markers.
                self._fs.delete_file(path)
        except FileNotFoundError:
            return False
        return True


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    if "://" not in endpoint:
        return "https", endpoint.rstrip("/")
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"s3_endpoint: {endpoint!r} must look like http(s)://host:port")
    return parts.scheme, parts.netloc


@contextmanager
def _local_atomic(path: str) -> Iterator[pa.NativeFile]:
    """Temporary file in the target's directory, fsync, rename: rename is atomic only
    within one file system, and the fsyncs make the object survive a crash once we return."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    # Cut the name by bytes so the temporary name stays within the 255-byte component limit.
    stem = name.encode("utf-8")[:150].decode("utf-8", errors="ignore")
    tmp = os.path.join(parent, f".{stem}{_TMP_MARK}{secrets.token_hex(8)}")
    out = pa.OSFile(tmp, "wb")
    try:
        yield out
        out.close()
        _fsync_path(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync_path(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException:
        if not out.closed:
            out.close()
        _unlink_quietly(tmp)
        raise


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _decode_table(buf: pa.Buffer, key: str) -> pa.Table:
    def unreadable(problem: str) -> Rejection:
        return Rejection("payload_unreadable", f"payload_location: {key!r} {problem}")

    size = buf.size
    if size == 0:
        raise unreadable("is empty (0 bytes); expected Parquet or Arrow IPC")
    head = buf.slice(0, min(size, 8)).to_pybytes()
    if head[:4] == _PARQUET_ENCRYPTED_MAGIC:
        raise unreadable("is an encrypted Parquet file; encryption is not supported")
    if head[:4] == _PARQUET_MAGIC:
        fmt = "Parquet"
        if size < 12 or buf.slice(size - 4).to_pybytes() != _PARQUET_MAGIC:
            raise unreadable("starts like Parquet but has no Parquet footer (truncated?)")
    elif head[:6] == _IPC_FILE_MAGIC:
        fmt = "an Arrow IPC file"
    elif head[:4] == _IPC_CONTINUATION:
        fmt = "an Arrow IPC stream"
    else:
        raise unreadable(f"is neither Parquet nor Arrow IPC (first bytes {head!r})")
    try:
        if fmt == "Parquet":
            return pq.ParquetFile(pa.BufferReader(buf)).read()
        if fmt == "an Arrow IPC file":
            return paipc.open_file(buf).read_all()
        return paipc.open_stream(buf).read_all()
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise unreadable(f"could not be decoded as {fmt}: {exc}") from exc
