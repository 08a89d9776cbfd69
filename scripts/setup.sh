#!/usr/bin/env bash
# Create .venv/ in the repository root (if needed) and install fer-sweep with its test tools.
# Re-running is cheap: it reinstalls only when pyproject.toml, a lock file or this script changed.
# On Linux x86_64 (CI, the cluster's platform) the lock files are constraints, so local runs, CI and
# the cluster get the same versions; they were resolved for that platform only (scripts/lock.sh).
# boto3 is what the cluster adds to fer-sweep's dependencies (CLUSTER_EXTRAS in scripts/lock.sh):
# with it the venv holds the cluster's whole environment, and tests/test_cluster_env.py can check it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "fer-sweep needs Python 3.11, found " + sys.version' \
  || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.fer-sweep-installed
want=$(cat pyproject.toml cluster/requirements.lock cluster/requirements-test.lock scripts/setup.sh | sha256sum | cut -d' ' -f1)
constraints=()
if [ "$(uname -s) $(uname -m)" = "Linux x86_64" ]; then
  constraints=(-c cluster/requirements.lock -c cluster/requirements-test.lock)
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing fer-sweep and its dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet ${constraints[@]+"${constraints[@]}"} -e '.[test]' boto3
  echo "$want" > "$stamp"
fi
