"""The API's settings, from the environment (same conventions as the rest of ionbeam).

| variable | default |
|---|---|
| `IONBEAM_API_HOST` | `127.0.0.1` (loopback: put a reverse proxy in front to publish) |
| `IONBEAM_API_PORT` | `5000` |
| `IONBEAM_API_URL` | `http://<host>:<port>` (the public base URL written in links) |
| `IONBEAM_API_DIR` | `<repo>/.ionbeam/api` (generated pygeoapi config and OpenAPI document) |
| `IONBEAM_API_WORKERS` | `2` (gunicorn worker processes) |
| `IONBEAM_API_POLL_SECONDS` | `2` (how often export directories are checked for new windows) |
| `IONBEAM_API_MAP_URL` | OpenStreetMap tiles (fetched by browsers for the HTML map) |
| `IONBEAM_OBJECT_STORE`, `IONBEAM_DATASETS` | as for the pipeline |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ionbeam_dagster.catalog import DEFAULT_CATALOG_PATH
from ionbeam_dagster.objectstore import ObjectStore
from ionbeam_dagster.ogcapi.config import DEFAULT_MAP_URL

__all__ = ["ApiSettings", "local_store_root"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ApiSettings:
    host: str
    port: int
    url: str
    state_dir: Path
    store_url: str
    catalog_path: Path
    workers: int
    poll_seconds: float
    map_url: str

    @property
    def config_path(self) -> Path:
        return self.state_dir / "pygeoapi-config.yml"

    @property
    def openapi_path(self) -> Path:
        # JSON, not YAML: pygeoapi serves a JSON document as it is, while it would expand
        # ${VAR} in a YAML one (and a dataset description is free text).
        return self.state_dir / "pygeoapi-openapi.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        host = env.get("IONBEAM_API_HOST", "127.0.0.1")
        port = _int(env, "IONBEAM_API_PORT", 5000, 1, 65535)
        url_host = f"[{host}]" if ":" in host else host
        return cls(
            host=host,
            port=port,
            url=env.get("IONBEAM_API_URL", f"http://{url_host}:{port}").rstrip("/"),
            state_dir=Path(env.get("IONBEAM_API_DIR", str(REPO_ROOT / ".ionbeam" / "api"))),
            store_url=env.get("IONBEAM_OBJECT_STORE", (REPO_ROOT / ".ionbeam" / "objects").as_uri()),
            catalog_path=Path(env.get("IONBEAM_DATASETS", str(DEFAULT_CATALOG_PATH))),
            workers=_int(env, "IONBEAM_API_WORKERS", 2, 1, 64),
            poll_seconds=float(env.get("IONBEAM_API_POLL_SECONDS", "2")),
            map_url=env.get("IONBEAM_API_MAP_URL", DEFAULT_MAP_URL),
        )


def local_store_root(store_url: str) -> Path:
    """The directory of a ``file://`` object store; the API cannot serve an S3 store yet."""
    store = ObjectStore.from_url(store_url)
    if not store.is_local:
        raise ValueError(
            f"IONBEAM_OBJECT_STORE={store.root_url}: the OGC API serves exports from a local (file://) "
            "object store only; point it at a file:// store or mount the bucket"
        )
    return Path(store.root_url.removeprefix("file://"))


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value}: expected {low}..{high}")
    return value
