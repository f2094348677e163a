"""A writable wrapper that counts what the exporters write to the caller's stream."""

from __future__ import annotations

import io
from typing import Any, BinaryIO


class CountingWriter(io.RawIOBase):
    """Forwards writes to the caller's stream and counts bytes.

    Also answers tell() from the count: the Parquet writer needs positions for its footer,
    and this way the sink may be a stream that cannot tell (a pipe, a socket, an upload).
    Closing it does not close the caller's stream.
    """

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        self._sink.write(data)
        self.count += size
        return size

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        flush = getattr(self._sink, "flush", None)
        if flush is not None:
            flush()
