"""Keep the pygeoapi configuration in step with what has been exported.

:class:`ConfigRefresher` remembers each file's extents by (mtime, size, inode), so a
refresh after one new window reads one footer, not one per window of the dataset's history.
:func:`export_signature` is what the server polls: the export directories' own mtimes,
which change whenever the exporter renames a file into place (new or replaced window).

``python -m ionbeam_dagster.ogcapi.refresh`` regenerates the configuration once, from the
same environment the server uses; the running server notices the new file and reloads.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from ionbeam_dagster.catalog import Catalog, load_catalog
from ionbeam_dagster.ogcapi.config import (
    Extents,
    build_pygeoapi_config,
    dump_yaml,
    file_extents,
    merge_extents,
    published_datasets,
    write_config_atomically,
)
from ionbeam_dagster.ogcapi.exports import EXPORT_PREFIX, export_dir, list_exports
from ionbeam_dagster.ogcapi.settings import ApiSettings, local_store_root

__all__ = ["ConfigRefresher", "export_signature", "refresh_config", "refresher_for"]

LOGGER = logging.getLogger("ionbeam.ogcapi")

_FileKey = tuple[int, int, int]


class ConfigRefresher:
    """Builds the configuration from the store; :meth:`refresh` writes it when it changed."""

    def __init__(
        self,
        catalog: Catalog,
        store_root: Path,
        server_url: str,
        config_path: Path,
        **config_options: Any,
    ) -> None:
        self.catalog = catalog
        self.store_root = store_root
        self.server_url = server_url
        self.config_path = config_path
        self.config_options = config_options
        self._cache: dict[Path, tuple[_FileKey, Extents]] = {}

    def extents(self) -> dict[str, Extents]:
        """Extents of each GeoParquet dataset that has at least one export file."""
        result: dict[str, Extents] = {}
        seen: set[Path] = set()
        for name in published_datasets(self.catalog):
            per_file: list[Extents] = []
            for export in list_exports(export_dir(self.store_root, name), name):
                extents = self._file(export.path)
                if extents is not None:
                    seen.add(export.path)
                    per_file.append(extents)
            if per_file:
                result[name] = merge_extents(per_file)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        return result

    def config(self) -> dict[str, Any]:
        return build_pygeoapi_config(self.catalog, self.store_root, self.server_url, self.extents(), **self.config_options)

    def refresh(self) -> bool:
        """Regenerate; True when the file changed (a worker reload is then due)."""
        return write_config_atomically(self.config_path, dump_yaml(self.config()))

    def _file(self, path: Path) -> Extents | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            extents = file_extents(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the rest
            LOGGER.warning("skipping %s in the extents: %s", path, exc)
            return None
        self._cache[path] = (key, extents)
        return extents


def export_signature(catalog: Catalog, store_root: Path) -> tuple[Any, ...]:
    """Changes whenever an export file is added, replaced or removed (directory mtimes)."""
    parts: list[Any] = []
    for directory in [store_root / EXPORT_PREFIX, *(export_dir(store_root, n) for n in published_datasets(catalog))]:
        try:
            st = directory.stat()
            parts.append((st.st_mtime_ns, st.st_ino))
        except FileNotFoundError:
            parts.append(None)
    return tuple(parts)


def refresher_for(settings: ApiSettings, catalog: Catalog | None = None) -> ConfigRefresher:
    """The refresher the server uses; anything else regenerating the file must use the same
    options, or the two would keep rewriting each other's version."""
    return ConfigRefresher(
        catalog or load_catalog(settings.catalog_path),
        local_store_root(settings.store_url),
        settings.url,
        settings.config_path,
        bind=(settings.host, settings.port),
        map_url=settings.map_url,
    )


def refresh_config(settings: ApiSettings | None = None) -> bool:
    """One regeneration from the environment's settings (what an exporter would call)."""
    return refresher_for(settings or ApiSettings.from_env()).refresh()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ionbeam-api %(levelname)s %(message)s")
    settings = ApiSettings.from_env()
    changed = refresh_config(settings)
    print(f"{settings.config_path}: {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
