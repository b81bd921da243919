#!/usr/bin/env bash
# Create ./.venv (Python >= 3.11) and install kmq into it with the extras given as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "error: kmq needs Python 3.11 or newer" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
extras="${1:-}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
