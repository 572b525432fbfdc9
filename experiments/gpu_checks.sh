#!/usr/bin/env bash
# Every GPU measurement of the project in one call of the device machine (see paper/README.md).
#
# Run from the repository root with the data the GPU path needs copied into the
# git-ignored folder device_data/ (mnist/mnist.npz, yahpo/rbv2_xgboost and
# yahpo/global_statistics, surrogates/yahpo: a trained meta-surrogate), named in the
# call's carry. Writes the tables under $OUT (default /tmp/gpu_checks) and prints
# a short summary last. Nothing here needs tensorflow-datasets, optuna or ray.
#   QUICK=1 bash experiments/gpu_checks.sh    # the same steps at toy sizes (CPU smoke test)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu_checks}
PY=${PY:-python3}
mkdir -p "$OUT"
start=$(date +%s)
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || true) \
  | tee "$OUT/gpu.txt"
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
  | tee -a "$OUT/gpu.txt"
if [ -n "${QUICK:-}" ]; then
  T=(--num-configs 8 --epochs 1 --sizes 32 --vmap-only 16); M=(--envs 16 --rounds 2); S=(--quick)
else
  T=(--num-configs 256 --epochs 2 --sizes 128 --vmap-only 2048); M=(--envs 4096 16384 --rounds 3)
  S=()
fi
status=0
timeout 240 $PY experiments/bench_training_vmap.py --task mnist/mlp --data-dir device_data \
  "${T[@]}" --out "$OUT/training_vmap_gpu.md" 2>&1 | tee "$OUT/training.log" | grep -v Warning
status=$((status | PIPESTATUS[0]))
echo "elapsed $(( $(date +%s) - start )) s"
timeout 200 $PY experiments/bench_meta_train.py "${M[@]}" --out "$OUT/meta_train_speed_gpu.md" \
  2>&1 | tee "$OUT/meta.log"
status=$((status | PIPESTATUS[0]))
echo "elapsed $(( $(date +%s) - start )) s"
timeout 120 $PY experiments/bench_surrogate.py "${S[@]}" --surrogate device_data/surrogates/yahpo \
  --data-dir device_data --out "$OUT/surrogate_speed_gpu.md" 2>&1 | tee "$OUT/surrogate.log"
status=$((status | PIPESTATUS[0]))
echo "=== summary (elapsed $(( $(date +%s) - start )) s, exit status $status) ==="
grep -h "^| " "$OUT"/training_vmap_gpu.md "$OUT"/meta_train_speed_gpu.md \
  "$OUT"/surrogate_speed_gpu.md 2>/dev/null | grep -v "^|---"
exit $status
