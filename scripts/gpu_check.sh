#!/usr/bin/env bash
# The GPU device check (docs/gpu.md): tests on the GPU, then the benchmark in float32 (full and
# default precision) and bfloat16. No install step: the device machine's own Python and packages.
# Everything goes to $OUT (default ./gpu_out). GPU_CHECK_ALLOW_CPU=1 dry-runs the plumbing on CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d shared/golden ]; then export JCB_GOLDEN_DIR=$PWD/shared/golden; else echo "WARNING: no shared/golden: golden tests will skip" | tee -a "$OUT/summary.txt"; fi
DRY=${GPU_CHECK_ALLOW_CPU:-0}
step() {  # step NAME TIMEOUT CMD...: run, log, record rc and wall time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc wall=$((SECONDS - t0))s ($*)" | tee -a "$OUT/summary.txt"
  return $rc
}
{ nvidia-smi || true; } > "$OUT/env.txt" 2>&1
step env 60 "$PY" -c "
import jax, jaxlib, sys
print(sys.version); print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())
try:
    import torch; print('torch', torch.__version__, torch.cuda.is_available())
except Exception as e: print('torch:', e)
if jax.default_backend() != 'gpu' and '$DRY' != '1': sys.exit('not on a GPU: jax.default_backend() is ' + jax.default_backend())
" || exit 1
cat "$OUT/env.log" >> "$OUT/env.txt"; rm -f "$OUT/env.log"
if [ "$DRY" = 1 ]; then QUICK=(--quick --shapes ms_doc_k3s1_valid,hifigan_up4_k4s2p1_b16); TESTK=(-k "export or precision"); NPROC=2
else QUICK=(--reps 5 --warmup 2); TESTK=(); NPROC=4; fi
# The oracle tests call conv_transpose at DEFAULT precision (TF32 on NVIDIA) with float32 tolerances.
JAX_DEFAULT_MATMUL_PRECISION=float32 step tests 150 "$PY" -m pytest tests/test_golden.py tests/test_golden_ops.py \
  tests/test_oracles.py tests/test_conv_transpose.py tests/test_transforms_nd.py tests/test_export.py \
  tests/test_precision.py -q -p no:cacheprovider -n "$NPROC" --junitxml="$OUT/tests.xml" "${TESTK[@]}"
step bench 110 "$PY" -m jax_conv_bpi.bench "${QUICK[@]}" --no-progress --json "$OUT/bench_f32.json"
step bench 60 "$PY" -m jax_conv_bpi.bench "${QUICK[@]}" --no-progress --no-training --precision default --json "$OUT/bench_f32_default.json"
step bench 60 "$PY" -m jax_conv_bpi.bench "${QUICK[@]}" --no-progress --no-training --dtype bfloat16 --json "$OUT/bench_bf16.json"
echo "done: $OUT" | tee -a "$OUT/summary.txt"
