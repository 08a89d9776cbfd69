#!/usr/bin/env bash
# Start a Ray head plus N worker nodes on this machine (token auth on), for trying multi-node runs.
# Usage: cluster/local.sh [N_WORKERS=1] [CPUS_PER_NODE=2];  stop with: ray stop --force
set -euo pipefail
N=${1:-1}
CPUS=${2:-2}
export RAY_AUTH_MODE=token
ray get-auth-token --generate >/dev/null     # creates ~/.ray/auth_token when there is none yet
ray start --head --port 6379 --num-cpus "$CPUS" --dashboard-host 127.0.0.1 --disable-usage-stats
for _ in $(seq 1 "$N"); do
  # the head's job agent holds HTTP port 52365; on this same machine a worker's agent takes a free one (0), or it
  # runs without HTTP (dashboard_agent.N.log: "Failed to start HTTP server")
  ray start --address 127.0.0.1:6379 --num-cpus "$CPUS" --dashboard-agent-listen-port 0
done
echo "submit with: RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python sweeps/regularization.py"
