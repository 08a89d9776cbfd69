#!/usr/bin/env bash
# The main job on the embedded default data: synthesize faces, ingest them (report printed), then run
# the regularization sweep on a local Ray (Optuna TPE + ASHA + collapse stopping).
# Usage: scripts/main.sh [OUT_DIR] [extra sweep flags...]   (default OUT_DIR: runs/default)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-runs/default}
shift || true
export PATH="$PWD/.venv/bin:$PATH"
fer data synth --out "$OUT/raw" --overwrite
fer data ingest "$OUT/raw" --out "$OUT/data" --group-by '^[^/]+/(S[0-9]+)_' --overwrite
fer data report "$OUT/data"
python sweeps/regularization.py --data "$OUT/data" --storage "$OUT/sweeps" --name regularization --overwrite "$@"
EXP="$OUT/sweeps/regularization"
fer dashboard build "$EXP" --out "$EXP/report.html"
fer export-best "$EXP" --out "$EXP/best.yaml"
echo "main: sweep in $EXP - open $EXP/report.html; retrain the winner with: fer retrain $EXP/best.yaml"
