#!/usr/bin/env bash
# The checks that need a GPU (CI has none): the CUDA tests, the trainer-overhead benchmark on CUDA, and a
# real `fer train` + `fer evaluate` of B++ on the default data set in bf16.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # PYTHON=... to pick the interpreter (default: python3)
#
# Needs torch with CUDA, numpy, pillow, pyarrow, pyyaml, pytest; the default data set must exist
# (runs/default/data: `bash scripts/main.sh` or `fer data synth` + `fer data ingest` make it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FER_NO_PROGRESS=1
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"

echo "== CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_augment.py tests/test_metrics.py \
    tests/test_losses.py 2>&1 | tee "$OUT/pytest.log" || status=1

echo "== trainer overhead on CUDA"
$PY benchmarks/trainer_overhead.py --device cuda --n 20000 --models fer_cnn_bplusplus,resnet18 --repeats 3 \
    2>&1 | tee "$OUT/overhead.log" || status=1

echo "== fer train B++ on the default data, CUDA, bf16"
rm -rf "$OUT/bpp"
$PY -m fer_cli train --set preset=fer_cnn_bplusplus --set device=cuda --set epochs=15 \
    --set data=runs/default/data --out "$OUT/bpp" --evaluate 2>&1 | tee "$OUT/train.log" || status=1
exit $status
