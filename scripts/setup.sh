#!/usr/bin/env bash
# Create (or reuse) the virtual environment with the backend's dependencies.
#   scripts/setup.sh                 -> .venv with requirements.txt
#   scripts/setup.sh requirements-test.txt
# VENV_DIR overrides the location. Re-running is cheap: a stamp of the requirements' hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
venv="${VENV_DIR:-.venv}"
stamp="$venv/.requirements-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ -f "$stamp" ] && "$venv/bin/python" -c "import ultralytics, fastapi" 2>/dev/null; then
  echo "$venv" && exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet -r "$requirements" >&2
touch "$stamp"
echo "$venv"
