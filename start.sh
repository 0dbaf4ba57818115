#!/usr/bin/env bash
# Serve the backend with gunicorn (ASGI workers). Environment: PORT (9090), WORKERS (1), THREADS (8),
# TIMEOUT (300 s per request), and every backend setting (see docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x "${VENV_DIR:-.venv}/bin/python" ]; then python="${VENV_DIR:-.venv}/bin/python"; fi
export THREADS="${THREADS:-8}"
# Ultralytics would pip-install a package named by a model file or wanted by an unreadable image at run
# time; a server installs nothing while it runs.
export YOLO_AUTOINSTALL="${YOLO_AUTOINSTALL:-false}"
# Load weight files with torch's weights-only unpickler and Ultralytics' list of known classes: a .pt
# file that would run code when unpickled is refused instead (422, "references types outside ...").
export ULTRALYTICS_SAFE_LOAD="${ULTRALYTICS_SAFE_LOAD:-true}"
. scripts/omp-wait-policy.sh  # PASSIVE unless set: OpenMP threads that wait sleep rather than spin
# Workers share /metrics through files in this folder (prometheus_client's multiprocess mode); it must
# start empty, or counts from an earlier run would be added in.
if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  PROMETHEUS_MULTIPROC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/yolo-backend-metrics.XXXXXX")"
else
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
fi
export PROMETHEUS_MULTIPROC_DIR
exec "$python" -m gunicorn 'server.app:create_app()' \
  --config server/gunicorn_conf.py \
  --bind "${HOST:-0.0.0.0}:${PORT:-9090}" \
  --workers "${WORKERS:-1}" \
  --worker-class uvicorn_worker.UvicornWorker \
  --timeout "${TIMEOUT:-300}" \
  --graceful-timeout "${GRACEFUL_TIMEOUT:-120}" \
  --log-level "$(echo "${LOG_LEVEL:-info}" | tr '[:upper:]' '[:lower:]')" \
  --no-control-socket \
  --access-logfile -
