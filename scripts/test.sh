#!/usr/bin/env bash
# Set up .venv/ if needed and run the whole test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FER_NO_PROGRESS=1
exec .venv/bin/python -m pytest "$@"
