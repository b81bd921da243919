#!/usr/bin/env bash
# Quick start: install kmq into ./.venv and run the main job on a built-in photograph.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/kmq demo "$@"
