#!/usr/bin/env bash
# The Dagster webserver and daemon for local use, with DAGSTER_HOME kept between runs in
# .ionbeam/dagster. The instance config is rewritten each time so it keeps run start fast:
# a queued coordinator that dequeues every second (the default waits several).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.ionbeam/dagster}"
mkdir -p "$DAGSTER_HOME" "$ROOT/.ionbeam/logs"
.venv/bin/python -m ionbeam_dagster.instance_config "$DAGSTER_HOME/dagster.yaml"
# Create the instance's storage before two processes open it at once: on a fresh home both
# would stamp the SQLite schema, and every later open would fail ("more than one head").
.venv/bin/python -c 'import dagster; dagster.DagsterInstance.get().dispose()'

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

.venv/bin/dagster-daemon run -w workspace.yaml &
pids+=($!)
.venv/bin/dagster-webserver -h "${IONBEAM_UI_HOST:-127.0.0.1}" -p "${IONBEAM_UI_PORT:-3000}" -w workspace.yaml &
pids+=($!)
bash scripts/api.sh &
pids+=($!)
echo "ionbeam-dagster: OGC API on http://${IONBEAM_API_HOST:-127.0.0.1}:${IONBEAM_API_PORT:-5000}"
echo "ionbeam-dagster: UI on http://${IONBEAM_UI_HOST:-127.0.0.1}:${IONBEAM_UI_PORT:-3000} (DAGSTER_HOME=$DAGSTER_HOME)"
wait -n "${pids[@]}"
