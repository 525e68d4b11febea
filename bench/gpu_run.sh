#!/usr/bin/env bash
# THE one script run on the GPU machine (one `run` call): build naqs._C with CUDA (and
# the C++ microbenchmarks), log the -Xptxas -v lines of the engine kernels, run every
# CUDA test of the repository (pytest -m cuda, NAQS_EXPECT_CUDA=1), the C++
# microbenchmarks, the engine benchmark, then bench/gpu_ed.sh when it exists. Logs and
# tables go to $OUT (at most 8 files come back); a short summary is printed last.
#
#   OUT=/some/dir bash bench/gpu_run.sh         (from the repository root)
#
# Time budget: NAQS_GPU_BUDGET_S (default 520 s) for the whole script. NAQS_GPU_QUICK=1
# skips the C++ microbenchmarks and the ED benchmark and runs the engine benchmark's
# quick set (for a short lease). NAQS_GPU_ENGINE_ONLY=1 also skips the CUDA tests
# outside tests/test_engine.py. NAQS_BENCH_ARGS: extra arguments of bench_engine.py
# (e.g. "--configs 21x20x4096 --vmc 12x10x1000n --profile"); the default adds
# --legacy (the first kernel timed side by side). NAQS_GPU_SKIP_ED=1 skips bench/gpu_ed.sh.
# NAQS_GPU_TEST_ENV="VAR=VALUE ...": the engine tests once more with those kernel switches.
# NAQS_GPU_AB: bench/ab_switches.py once per line of it (interleaved A/B of kernel
# switches; a line is its arguments, shell-quoted, e.g. --config 12x10x1000 --le-batch
# 1000 --rounds 3 --settings 'A;B'), after the tests; the tables go into the summary.
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export NAQS_EXPECT_CUDA=1 PYTHONUNBUFFERED=1
BUDGET=${NAQS_GPU_BUDGET_S:-520}
PY=python3
COMMIT=${NAQS_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
export NAQS_GIT_COMMIT=$COMMIT
DATE=$(date +%F)
SUMMARY="$OUT/summary.txt"
{ echo "commit $COMMIT (+ working tree), date $DATE"; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; } > "$SUMMARY" 2>&1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9._-')

echo "== build"
T0=$SECONDS
MICRO=ON; { [ "${NAQS_GPU_ENGINE_ONLY:-0}" = 1 ] || [ "${NAQS_GPU_QUICK:-0}" = 1 ]; } && MICRO=OFF
if timeout 330 $PY -m pip install --no-build-isolation -v -e . -C cmake.define.NAQS_BUILD_BENCH=$MICRO > "$OUT/build.log" 2>&1; then
  echo "build: ok (microbenchmarks $MICRO, $((SECONDS - T0)) s)" | tee -a "$SUMMARY"
else
  echo "build with microbenchmarks FAILED; retrying without" | tee -a "$SUMMARY"
  tail -30 "$OUT/build.log"
  timeout 200 $PY -m pip install --no-build-isolation -v -e . -C cmake.define.NAQS_BUILD_BENCH=OFF >> "$OUT/build.log" 2>&1 ||
    { echo "build FAILED" | tee -a "$SUMMARY"; tail -40 "$OUT/build.log"; exit 1; }
fi
{ echo "-- ptxas of the engine kernels (legacy<dtype>: walker_legacy.cu; walk<dtype,threads,channels,math[,bulk][,pipe][,wg]>: walk_kernel.cuh, channels 0 = any, math 0 FFMA / 1 3xTF32 / 2 TF32, bulk: weights by bulk copies, pipe: pipelined segment passes, wg: their wgmma variant)"
  $PY bench/spill_lines.py --ptxas "$OUT/build.log" | head -24; } | tee -a "$SUMMARY"
# where those spills are (bench/spill_lines.py: spill instructions per kernel instance,
# and how many of them sit in the per-chunk code: products, gathers, finishing sums)
SPD=$(mktemp -d)
if bash bench/walker_sass.sh "$SPD/walker.sass"; then
  { echo "-- spill instructions by place (bench/spill_lines.py)"; $PY bench/spill_lines.py "$SPD/walker.sass" 2>&1 | grep "^walk<f"; } | tee -a "$SUMMARY"
else
  echo "spill places: walk_*.cu.o, cuobjdump or nvdisasm missing" | tee -a "$SUMMARY"
fi
echo "profilers: $(for t in ncu nsys; do command -v $t > /dev/null && printf '%s ' $t; done)" | tee -a "$SUMMARY"
$PY -c "import torch, naqs.ops as o; print('build_info', o.build_info())" 2>&1 | tee -a "$SUMMARY"

echo "== CUDA tests (all of the repository; the engine's first, then the rest)"
T0=$SECONDS
timeout 200 $PY -X faulthandler -m pytest -m cuda -q -rfE --durations=8 -p no:cacheprovider tests/test_engine.py > "$OUT/tests.log" 2>&1
RC=$?
echo "pytest -m cuda tests/test_engine.py rc=$RC ($((SECONDS - T0)) s): $(tail -1 "$OUT/tests.log")" | tee -a "$SUMMARY"
if [ -n "${NAQS_GPU_TEST_MATH:-}" ]; then  # the float32 tests again with tensor-core products
  NAQS_PIXELCNN_MATH=$NAQS_GPU_TEST_MATH timeout 90 $PY -m pytest -m cuda -q -p no:cacheprovider tests/test_engine.py -k "not bad_inputs" > "$OUT/tests-math.log" 2>&1
  echo "  with NAQS_PIXELCNN_MATH=$NAQS_GPU_TEST_MATH (not bad_inputs): rc=$? $(tail -1 "$OUT/tests-math.log")" | tee -a "$SUMMARY"
  grep -E "^(FAILED|ERROR)|^E  .*(rel|Mismatch|Greatest)" "$OUT/tests-math.log" | head -12 | tee -a "$SUMMARY"
fi
if [ -n "${NAQS_GPU_TEST_ENV:-}" ]; then  # the engine tests again with a kernel switch, e.g. NAQS_PIXELCNN_PRESUM=1
  env $NAQS_GPU_TEST_ENV timeout 150 $PY -m pytest -m cuda -q -p no:cacheprovider tests/test_engine.py -k "not bad_inputs" > "$OUT/tests-env.log" 2>&1
  echo "  with $NAQS_GPU_TEST_ENV (not bad_inputs): rc=$? $(tail -1 "$OUT/tests-env.log")" | tee -a "$SUMMARY"
  grep -E "^(FAILED|ERROR)|^E  .*(rel|Mismatch|Greatest|differ)" "$OUT/tests-env.log" | head -12 | tee -a "$SUMMARY"
fi
if [ $RC != 0 ]; then  # which kernel variant fails (A/B switches of the walker)
  for VAR in NAQS_PIXELCNN_THREADS=256 NAQS_PIXELCNN_WEIGHTS_SMEM=0; do
    env $VAR timeout 60 $PY -m pytest -m cuda -q -x -p no:cacheprovider tests/test_engine.py -k "not bad_inputs" > "$OUT/tests-variant.log" 2>&1
    echo "  with $VAR: rc=$? $(tail -1 "$OUT/tests-variant.log")" | tee -a "$SUMMARY"
  done
fi
T0=$SECONDS
if [ "${NAQS_GPU_ENGINE_ONLY:-0}" != 1 ]; then
  timeout 120 $PY -m pytest -m cuda -q -rfE -p no:cacheprovider tests --deselect tests/test_engine.py >> "$OUT/tests.log" 2>&1
  echo "pytest -m cuda (rest of tests/) rc=$? ($((SECONDS - T0)) s): $(tail -1 "$OUT/tests.log")" | tee -a "$SUMMARY"
fi
grep -E "^(FAILED|ERROR)|Fatal Python|line [0-9]+ in test_" "$OUT/tests.log" | head -20 | tee -a "$SUMMARY"
if grep -q "Fatal Python" "$OUT/tests.log"; then
  echo "-- crash diagnosis (gdb backtrace of test_bad_inputs[cuda])" | tee -a "$SUMMARY"
  if command -v gdb > /dev/null; then
    timeout 90 gdb -q -batch -ex run -ex bt --args $PY -m pytest -q -p no:cacheprovider "tests/test_engine.py::test_bad_inputs[cuda]" 2>&1 | grep -E "^#|signal" | head -25 | tee -a "$SUMMARY"
  else
    echo "no gdb" | tee -a "$SUMMARY"
  fi
fi

if [ -n "${NAQS_GPU_AB:-}" ]; then
  echo "== A/B of kernel switches (bench/ab_switches.py)"
  N=0
  mapfile -t AB_RUNS <<< "$NAQS_GPU_AB"
  for AB in "${AB_RUNS[@]}"; do
    [ -n "$AB" ] || continue
    N=$((N + 1))
    # (tables into the summary: at most 8 files come back from $OUT)
    eval "timeout 240 $PY bench/ab_switches.py $AB --out /tmp/naqs-ab-$N.md" > /tmp/naqs-ab-$N.log 2>&1
    AB_RC=$?
    echo "ab_switches $AB: rc=$AB_RC" | tee -a "$SUMMARY"
    grep -E "^\|" /tmp/naqs-ab-$N.md 2>/dev/null | tee -a "$SUMMARY"
    [ $AB_RC = 0 ] || tail -8 /tmp/naqs-ab-$N.log | tee -a "$SUMMARY"
  done
fi

echo "== C++ microbenchmarks"
QUICK=${NAQS_GPU_QUICK:-0}
BENCH_BIN=$(find build -name naqs_bench_walker -type f 2>/dev/null | head -1)
if [ "$QUICK" = 1 ] || [ "${NAQS_GPU_ENGINE_ONLY:-0}" = 1 ]; then
  echo "microbenchmarks skipped (NAQS_GPU_QUICK=1 or NAQS_GPU_ENGINE_ONLY=1)" | tee -a "$SUMMARY"
elif [ -n "$BENCH_BIN" ]; then
  for cfg in "12 12 10 32 1000" "21 21 20 32 4096"; do
    timeout 60 "$BENCH_BIN" $cfg cuda >> "$OUT/micro.log" 2>&1
  done
  timeout 30 "$BENCH_BIN" 6 6 10 32 256 cpu >> "$OUT/micro.log" 2>&1
  # the ED sector matvec (24 sites): binary-search baseline vs the kernels, CPU and CUDA
  ED_BIN=$(find build -name naqs_bench_ed -type f 2>/dev/null | head -1)
  if [ -n "$ED_BIN" ]; then
    timeout 90 "$ED_BIN" 6 4 cuda 5 >> "$OUT/micro.log" 2>&1
    timeout 90 "$ED_BIN" 6 4 cpu 3 >> "$OUT/micro.log" 2>&1
  fi
  # the TF32 chunk product on wgmma vs mma.sync's ceiling (sm_90a builds only)
  MMA_BIN=$(find build -name naqs_bench_mma -type f 2>/dev/null | head -1)
  [ -n "$MMA_BIN" ] && timeout 30 "$MMA_BIN" >> "$OUT/micro.log" 2>&1
  cat "$OUT/micro.log"
else
  echo "no microbenchmark binary" | tee -a "$SUMMARY"
fi

echo "== engine benchmark"
LEFT=$((BUDGET - SECONDS - 100))
[ $LEFT -lt 60 ] && LEFT=60
RESULT="$OUT/engine-${GPU:-gpu}-$DATE.md"
QUICK_FLAG=""; [ "$QUICK" = 1 ] && QUICK_FLAG="--quick"
BENCH_ARGS=${NAQS_BENCH_ARGS:---legacy}
timeout $LEFT $PY bench/bench_engine.py --device cuda $QUICK_FLAG $BENCH_ARGS --out "$RESULT" > "$OUT/bench.log" 2>&1
echo "bench rc=$? ($LEFT s allowed; args: $QUICK_FLAG $BENCH_ARGS)" | tee -a "$SUMMARY"
grep "naqs-walker-profile\|^profile" "$OUT/bench.log" | tee -a "$SUMMARY"

if [ -f bench/gpu_ed.sh ] && [ "$QUICK" != 1 ] && [ "${NAQS_GPU_ENGINE_ONLY:-0}" != 1 ] && [ "${NAQS_GPU_SKIP_ED:-0}" != 1 ]; then
  echo "== bench/gpu_ed.sh (exact diagonalization)"
  LEFT=$((BUDGET - SECONDS - 10))
  if [ $LEFT -gt 40 ]; then
    mkdir -p /tmp/ed-out
    OUT=/tmp/ed-out NAQS_BUILT=1 NAQS_GPU_BUDGET_S=$LEFT timeout $LEFT bash bench/gpu_ed.sh > /tmp/ed-out/gpu_ed.log 2>&1
    echo "gpu_ed.sh rc=$? ($LEFT s allowed)" | tee -a "$SUMMARY"
    tar -czf "$OUT/ed-out.tgz" -C /tmp ed-out
  else
    echo "gpu_ed.sh skipped: $LEFT s left" | tee -a "$SUMMARY"
  fi
fi

echo "== summary ($SECONDS s)"
cat "$SUMMARY"
grep -E "^\|" "$RESULT" 2>/dev/null || tail -30 "$OUT/bench.log"
