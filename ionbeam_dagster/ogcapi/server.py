"""``python -m ionbeam_dagster.ogcapi.server``: pygeoapi on 127.0.0.1:$IONBEAM_API_PORT.

The process generates the pygeoapi configuration, starts gunicorn (the WSGI server
pygeoapi's own images use) as its child, and stays as a small supervisor:

- New windows of a dataset already served need nothing: the provider lists the export
  directory on every request.
- What lives in the configuration does need a reload: collection extents (pygeoapi also
  refuses a ``datetime`` outside the configured temporal extent) and the first window of a
  dataset (its collection appears). Every ``IONBEAM_API_POLL_SECONDS`` the supervisor looks at
  the export directories' mtimes (a stat each); when one moved it regenerates the config,
  reading only the new files' footers. Whenever the config file changes, by this process or
  anyone else (``python -m ionbeam_dagster.ogcapi.refresh``), it regenerates the OpenAPI
  document and sends SIGHUP to gunicorn: the master keeps the listening socket and its pid,
  starts workers that load the new files, and lets the old ones finish their requests.

SIGTERM or SIGINT stop gunicorn and then this process; if gunicorn dies, this process exits
with its status, so a script waiting on it notices.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ionbeam_dagster.catalog import load_catalog
from ionbeam_dagster.ogcapi.config import write_config_atomically
from ionbeam_dagster.ogcapi.refresh import ConfigRefresher, export_signature, refresher_for
from ionbeam_dagster.ogcapi.settings import ApiSettings

__all__ = ["ApiServer", "gunicorn_command", "main", "write_openapi"]

LOGGER = logging.getLogger("ionbeam.ogcapi")

# A full regeneration now and then even without a directory change: mtimes have a coarse
# tick on some file systems, and this bounds how long such a miss can last.
FULL_REFRESH_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def gunicorn_command(settings: ApiSettings) -> list[str]:
    bind = f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", bind,
        "--workers", str(settings.workers),
        # Threads let a worker answer small requests while another thread streams a big page.
        "--worker-class", "gthread", "--threads", "4",
        "--timeout", "120", "--graceful-timeout", "30",
        # gunicorn 25.1+ opens a control socket at one fixed path per user
        # (~/.gunicorn/gunicorn.ctl), which two instances would fight over; the supervisor
        # signals the master instead.
        "--no-control-socket",
        "pygeoapi.flask_app:APP",
    ]  # fmt: skip


def write_openapi(config_path: Path, openapi_path: Path) -> bool:
    """Regenerate pygeoapi's OpenAPI document from its config (workers load it at start)."""
    # Imported here: pygeoapi is heavy, and nothing else in this process needs it.
    from pygeoapi.openapi import get_oas
    from pygeoapi.util import to_json, yaml_load

    with config_path.open(encoding="utf-8") as fh:
        config = yaml_load(fh)
    # One collection the provider cannot open must not keep the others' documentation out.
    document = get_oas(config, fail_on_invalid_collection=False)
    return write_config_atomically(openapi_path, to_json(document, pretty=False))


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ApiServer:
    def __init__(self, settings: ApiSettings, refresher: ConfigRefresher) -> None:
        self.settings = settings
        self.refresher = refresher
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self._served: tuple[int, int, int] | None = None  # config the workers were started with
        self._exports: tuple[Any, ...] | None = None
        self._last_full = 0.0

    def start(self) -> None:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self._regenerate()
        write_openapi(s.config_path, s.openapi_path)
        self._served = _signature(s.config_path)
        env = dict(os.environ, PYGEOAPI_CONFIG=str(s.config_path), PYGEOAPI_OPENAPI=str(s.openapi_path))
        self.process = subprocess.Popen(gunicorn_command(s), env=env)
        LOGGER.info("OGC API on %s (pid %d, config %s)", s.url, self.process.pid, s.config_path)

    def run(self) -> int:
        """Start, then watch until stopped or gunicorn exits; returns the exit status."""
        self.start()
        assert self.process is not None
        try:
            while not self.stopping.wait(self.settings.poll_seconds):
                if self.process.poll() is not None:
                    LOGGER.error("gunicorn exited with status %s", self.process.returncode)
                    return self.process.returncode or 1
                self.tick()
        finally:
            self.stop()
        return 0

    def tick(self) -> None:
        """One poll: regenerate when exports moved, reload workers when the config changed."""
        try:
            self._regenerate()
        except Exception:  # noqa: BLE001 - keep serving the last good config
            LOGGER.exception("regenerating the pygeoapi config failed; serving the previous one")
        current = _signature(self.settings.config_path)
        if current is None or current == self._served:
            return
        try:
            write_openapi(self.settings.config_path, self.settings.openapi_path)
        except Exception:  # noqa: BLE001 - retried on the next tick; workers keep the old config
            LOGGER.exception("regenerating the OpenAPI document failed; not reloading yet")
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self._served = current
        LOGGER.info("config changed: reloading pygeoapi workers")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _regenerate(self) -> None:
        signature = export_signature(self.refresher.catalog, self.refresher.store_root)
        now = time.monotonic()
        if signature == self._exports and now - self._last_full < FULL_REFRESH_SECONDS:
            return
        # Take the signature before reading, so a file landing during the read is seen next tick.
        self._exports, self._last_full = signature, now
        if self.refresher.refresh():
            LOGGER.info("pygeoapi config regenerated from the exports")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ionbeam-api %(levelname)s %(message)s")
    settings = ApiSettings.from_env()
    server = ApiServer(settings, refresher_for(settings, load_catalog(settings.catalog_path)))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return server.run()


if __name__ == "__main__":
    sys.exit(main())
