#!/usr/bin/env bash
# Run one RQ worker for prediction and training jobs (REDIS_URL), with the same settings and virtual
# environment as start.sh: as many as you like, on any host that shares MODEL_ROOT (docs/deployment.md).
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x "${VENV_DIR:-.venv}/bin/python" ]; then python="${VENV_DIR:-.venv}/bin/python"; fi
export YOLO_AUTOINSTALL="${YOLO_AUTOINSTALL:-false}"
export ULTRALYTICS_SAFE_LOAD="${ULTRALYTICS_SAFE_LOAD:-true}"
. scripts/omp-wait-policy.sh  # PASSIVE unless set, as start.sh
: "${REDIS_URL:?set REDIS_URL, e.g. redis://localhost:6379/0}"
exec "$python" worker.py
