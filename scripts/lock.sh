#!/usr/bin/env bash
# Regenerate cluster/requirements.lock (the cluster's runtime environment, every package pinned)
# and cluster/requirements-test.lock (what the test extra adds on top, for local runs and CI).
#
# Uses pip's own resolver, so it needs nothing beyond pip >= 23 and the package index pip is
# configured with: `pip install --dry-run --ignore-installed --report` resolves the full transitive
# set from the index as if into an empty environment (what is installed in the interpreter used here
# does not matter) and the report is written out as exact == pins.
# Resolution follows the running interpreter and platform, so run it with CPython 3.11 on Linux
# x86_64: the platform of the cluster nodes and of the KubeRay image.
#
# Usage: scripts/lock.sh            (PYTHON=/path/to/python3.11 to choose the interpreter;
#                                    default .venv/bin/python, else python3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3.11; fi
fi
# Packages the cluster needs that are not fer-sweep dependencies (one per word):
#   boto3 - the Ray autoscaler's AWS node provider, run on the head by cluster/aws.yaml.
CLUSTER_EXTRAS="boto3"

"$PY" - <<'EOF' || exit 1
import platform, sys
import pip
ok = (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
      and sys.platform == "linux" and platform.machine() == "x86_64")
if not ok:
    sys.exit(f"lock.sh: resolve with CPython 3.11 on Linux x86_64 (the cluster's platform); "
             f"found {sys.implementation.name} {platform.python_version()} {sys.platform} {platform.machine()}")
if int(pip.__version__.split(".")[0]) < 23:
    sys.exit(f"lock.sh: pip >= 23 is needed for --dry-run --report (found {pip.__version__})")
EOF

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "lock.sh: resolving fer-sweep + $CLUSTER_EXTRAS" >&2
# shellcheck disable=SC2086
"$PY" -m pip install --dry-run --ignore-installed --quiet --report "$tmp/runtime.json" . $CLUSTER_EXTRAS
"$PY" scripts/lock_write.py runtime "$tmp/runtime.json" "$tmp/requirements.lock" "$CLUSTER_EXTRAS"
mv "$tmp/requirements.lock" cluster/requirements.lock

echo "lock.sh: resolving the test extra on top of cluster/requirements.lock" >&2
# shellcheck disable=SC2086
"$PY" -m pip install --dry-run --ignore-installed --quiet --report "$tmp/test.json" \
  -c cluster/requirements.lock '.[test]' $CLUSTER_EXTRAS
"$PY" scripts/lock_write.py test "$tmp/test.json" cluster/requirements.lock "$tmp/requirements-test.lock"
mv "$tmp/requirements-test.lock" cluster/requirements-test.lock
echo "lock.sh: wrote cluster/requirements.lock and cluster/requirements-test.lock" >&2
