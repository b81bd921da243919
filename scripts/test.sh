#!/usr/bin/env bash
# Install the test dependencies (system programs and Python packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/venv.sh test
exec .venv/bin/python -m pytest -q "$@"
