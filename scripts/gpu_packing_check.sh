#!/usr/bin/env bash
# Issue 14's GPU figures in one prepared run on a GPU machine (plain processes, no Ray: it runs from a bare
# checkout with torch, numpy, pyarrow, pyyaml, pillow, matplotlib, scikit-learn and pytest):
#   1. the CUDA tests of packed trials and of the trainer's GPU options (compile + CUDA graphs, fused
#      optimizer, memory fraction);
#   2. benchmarks/gpu_packing.py: N trial processes vs K packed trials, images/s and % of the GPU's bf16
#      peak, most important first (B++: every N and K; then fer_cnn_small and resnet18; then compile);
#   3. B++ with compile=true (CUDA graphs): one trial process and a pack of K, against their rows of step 2.
# Every step writes OUT_DIR/<step>.log and is cut off by one shared deadline (BUDGET_S), so a run that is
# short of time still returns the rows it measured; a step cut off or failed makes the exit status 1.
#
#   bash scripts/gpu_packing_check.sh [OUT_DIR]     # env: BUDGET_S (default 540), PYTHON (python3),
#                                                   # DEVICE (cuda; cpu for a small dry run), IMAGES, EPOCHS
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
OUT=${1:-runs/gpu-packing}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda}
if [[ $DEVICE == cpu ]]; then
    IMAGES=${IMAGES:-256} EPOCHS=${EPOCHS:-2} NS_ALL=1,2 NS=1 KS_ALL=2 KS=2 MODELS=fer_cnn_tiny,fer_cnn_small,fer_cnn_tiny
else
    IMAGES=${IMAGES:-8000} EPOCHS=${EPOCHS:-3} NS_ALL=1,2,4,8,16 NS=1,4,16 KS_ALL=4,8,16 KS=16
    MODELS=fer_cnn_bplusplus,fer_cnn_small,resnet18
fi
for v in BUDGET_S IMAGES EPOCHS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "gpu_packing_check: $v=${!v} is not a positive whole number" >&2; exit 2; }
done
IFS=, read -r FIRST SECOND THIRD <<<"$MODELS"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FER_NO_PROGRESS=1
end=$((SECONDS + BUDGET_S))
status=0

# step NAME MAX_S CMD...: CMD's output to the screen and OUT/NAME.log, cut at MAX_S or at the deadline.
# CMD is a program (timeout cannot run a shell function); timeout signals its whole process group, so the benchmark's trial processes go with it.
step() {
    local name=$1 max=$2 left rc
    shift 2
    left=$((end - SECONDS))
    ((left < max)) && max=$left
    if ((max < 20)); then
        echo "== $name: skipped, the deadline is near" | tee "$OUT/$name.log"
        status=1
        return
    fi
    echo "== $name (at most ${max}s)"
    timeout -k 5 "$max" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    if ((rc == 124 || rc == 137)); then echo "== $name: cut off at ${max}s"; fi
    ((rc != 0)) && status=1
    return 0
}

BENCH=("$PY" benchmarks/gpu_packing.py --device "$DEVICE" --images "$IMAGES" --epochs "$EPOCHS")

{
    if [[ $DEVICE != cpu ]]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    fi
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else '-')"
    nproc
} 2>&1 | tee "$OUT/machine.log"

step tests 200 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_trainer_gpu_options.py tests/test_cuda.py \
    tests/test_packed.py tests/test_augment.py tests/test_metrics.py
step "bench-1-$FIRST" 240 "${BENCH[@]}" --models "$FIRST" --n-list "$NS_ALL" --packed "$KS_ALL" --packed-modes packed
step "bench-2-$SECOND" 90 "${BENCH[@]}" --models "$SECOND" --n-list "$NS" --packed "$KS" --packed-modes packed
step "bench-3-$THIRD" 90 "${BENCH[@]}" --models "$THIRD" --n-list "$NS" --packed "$KS" --packed-modes packed
step "bench-4-$FIRST-compile" 120 "${BENCH[@]}" --models "$FIRST" --n-list 1 --packed "$KS" --packed-modes packed --compile
echo "gpu_packing_check: $((SECONDS))s, logs in $OUT, exit $status"
exit $status
