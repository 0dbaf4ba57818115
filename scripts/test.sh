#!/usr/bin/env bash
# Install everything the tests need and run them: lint, then the whole pytest suite
# (unit, HTTP integration, slow, and end-to-end against a real Label Studio in its own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/setup.sh requirements-test.txt | tail -n 1)"
bash .ci/install_label_studio.sh >/dev/null
export YOLO_OFFLINE=1
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
