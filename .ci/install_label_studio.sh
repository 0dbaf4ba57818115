#!/usr/bin/env bash
# Create (or reuse) a separate virtualenv holding label-studio==1.23.2 for the end-to-end tests.
#
# Label Studio pins many packages (Django, numpy, ...) differently from this project, so it lives in
# its own venv, by default ${LS_VENV:-$HOME/.cache/ylsb/ls-venv-1.23.2}. The script is idempotent:
# when the venv already imports the right label_studio version it does nothing but print the path.
# The LAST line printed on stdout is the venv's python executable.
#
# Never check an install with `label-studio --version`: that command STARTS A SERVER on 0.0.0.0.
#
# Environment:
#   LS_VENV     where the venv goes (default above)
#   LS_VERSION  label-studio version (default 1.23.2; the tests are written against 1.23.2)
#   LS_PYTHON   interpreter used to create the venv (default: python3.11, else python3)
set -euo pipefail

LS_VERSION="${LS_VERSION:-1.23.2}"
LS_VENV="${LS_VENV:-$HOME/.cache/ylsb/ls-venv-${LS_VERSION}}"
PY="$LS_VENV/bin/python"

is_installed() {
    [ -x "$PY" ] && "$PY" - "$LS_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version

import label_studio  # noqa: F401  (the import must work, not only the metadata)

sys.exit(0 if version("label-studio") == sys.argv[1] else 1)
EOF
}

if is_installed; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV" >&2
    echo "$PY"
    exit 0
fi

if [ -z "${LS_PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then LS_PYTHON=python3.11; else LS_PYTHON=python3; fi
fi

echo "installing label-studio $LS_VERSION into $LS_VENV (once; under a minute on a fast connection)" >&2
start=$(date +%s)
if [ -f "$LS_VENV/pyvenv.cfg" ]; then
    echo "removing the incomplete venv $LS_VENV" >&2
    rm -rf "$LS_VENV"
elif [ -e "$LS_VENV" ] && [ -n "$(ls -A "$LS_VENV" 2>/dev/null)" ]; then
    echo "ERROR: $LS_VENV exists and is not a virtualenv; not touching it (set LS_VENV elsewhere)" >&2
    exit 1
fi
mkdir -p "$(dirname "$LS_VENV")"
"$LS_PYTHON" -m venv "$LS_VENV"
# (this machine's pip config lists local indexes that may lack a package: drop pip's noise about them)
quiet_pip() {
    "$PY" -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
}
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet "label-studio==$LS_VERSION"

if ! is_installed; then
    echo "ERROR: label-studio $LS_VERSION does not import from $LS_VENV after installing" >&2
    exit 1
fi
echo "installed label-studio $LS_VERSION in $(( $(date +%s) - start )) s" >&2
echo "$PY"
