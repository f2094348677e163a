"""A scripted HTTP server on 127.0.0.1 for source tests: recorded responses, no network.

Each path has a list of responses served in order; the last one repeats. Every request is
recorded (method, path with query, headers, time), so a test can assert how a client
retried and what it sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Close the connection without answering (a connection error for the client).
    drop: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float
    #: The request body (POST), so a test can check what a client sent (login forms).
    body: bytes = b""


Responder = Callable[[str, dict[str, str]], Reply]


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, list[Reply] | Responder] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._serve(self)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                server._serve(self, self.rfile.read(length) if length else b"")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def route(self, path: str, *replies: Reply | Responder) -> None:
        if len(replies) == 1 and callable(replies[0]) and not isinstance(replies[0], Reply):
            self.routes[path] = replies[0]  # type: ignore[assignment]
        else:
            self.routes[path] = list(replies)  # type: ignore[arg-type]

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if urlsplit(s.path).path == path]

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes = b"") -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.seen.append(Seen(handler.command, handler.path, dict(handler.headers.items()), time.monotonic(), body))
            entry = self.routes.get(path)
            if entry is None:
                reply = Reply(404, b"not found")
            elif callable(entry):
                reply = entry(handler.path, dict(handler.headers.items()))
            else:
                reply = entry.pop(0) if len(entry) > 1 else entry[0]
        if reply.drop:
            handler.close_connection = True
            try:
                handler.connection.shutdown(2)
            except OSError:
                pass
            return
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def local_server() -> Iterator[LocalServer]:
    server = LocalServer().start()
    try:
        yield server
    finally:
        server.stop()


def index_page(path: str, files: list[tuple[str, int]]) -> bytes:
    """An Apache mod_autoindex page (FancyIndexing, HTMLTable), the format
    archive.sensor.community serves: header row, rule, parent link, one row per file, rule."""
    rows = "".join(
        f'<tr><td valign="top"><img src="/icons/unknown.gif" alt="[   ]"></td><td><a href="{name}">{name}</a></td>'
        f'<td align="right">2017-08-31 05:05  </td><td align="right">{size // 1024 or 1}K</td><td>&nbsp;</td></tr>\n'
        for name, size in files
    )
    parent = path.rstrip("/").rsplit("/", 1)[0] + "/"
    return (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n'
        f"  <title>Index of {path.rstrip('/')}</title>\n </head>\n <body>\n<h1>Index of {path.rstrip('/')}</h1>\n"
        '  <table>\n   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>'
        '<th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>'
        '<th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>\n'
        '   <tr><th colspan="5"><hr></th></tr>\n'
        f'<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="{parent}">Parent Directory</a>'
        '</td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>\n'
        f"{rows}"
        '   <tr><th colspan="5"><hr></th></tr>\n</table>\n</body></html>\n'
    ).encode()
