"""OGC API - Features over the GeoParquet exports, served by pygeoapi.

- ``exports``: where a dataset's export files live and which window each one holds.
- ``config``: extents from the files' footers, the pygeoapi configuration, atomic writes.
- ``provider``: the pygeoapi feature provider reading a dataset's export directory.
- ``settings``: the ``IONBEAM_API_*`` environment.
- ``refresh``: regenerate the configuration when exports change (cached per file).
- ``server``: ``python -m ionbeam_dagster.ogcapi.server``, gunicorn on loopback + reloads.

Nothing here imports Dagster: the API runs beside the pipeline, reading what it exported.
"""

from __future__ import annotations
