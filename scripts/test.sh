#!/usr/bin/env bash
# Install everything the tests need and run them: lint, then the whole pytest suite
# (unit, HTTP integration, slow, and end-to-end against a real Label Studio in its own venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(scripts/setup.sh requirements-test.txt | tail -n 1)"
bash .ci/install_label_studio.sh >/dev/null
# The try-it page's browser tests drive Debian's chromium (Playwright cannot download browsers here).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "could not install chromium: tests/test_ui_browser.py will say so" >&2
fi
# The job tests start a real redis-server (Debian's package) per session: RQ's queues and locks are Redis.
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1; } \
    || echo "could not install redis-server: tests/test_jobs.py will say so" >&2
fi
export YOLO_OFFLINE=1
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
