#!/usr/bin/env bash
# The OGC API - Features (pygeoapi) over the GeoParquet exports, on loopback:
# http://${IONBEAM_API_HOST:-127.0.0.1}:${IONBEAM_API_PORT:-5000}. It generates its pygeoapi
# config from the catalog and the exported files (in .ionbeam/api) and reloads itself when
# new windows are exported, so it can start before anything has been exported.
# Runs in the foreground until SIGTERM/SIGINT; scripts/run.sh starts it beside Dagster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p "$ROOT/.ionbeam/api"
exec .venv/bin/python -m ionbeam_dagster.ogcapi.server
