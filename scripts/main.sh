#!/usr/bin/env bash
# The main job on the embedded default data: synthesize faces, ingest them, print the data report.
# Usage: scripts/main.sh [OUT_DIR]   (default: runs/default)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-runs/default}
export PATH="$PWD/.venv/bin:$PATH"
fer data synth --out "$OUT/raw" --overwrite
fer data ingest "$OUT/raw" --out "$OUT/data" --overwrite
fer data report "$OUT/data"
