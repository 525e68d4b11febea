#!/usr/bin/env bash
# One call on the GPU machine: build naqs._C with CUDA, run the CUDA tests of
# tests/test_ed.py, then the ED benchmark. Logs and the results table go to $OUT
# (default ./gpu-out). Usage on the GPU box, from the repository root:
#   NAQS_GIT_COMMIT=<hash> bash bench/gpu_ed.sh
#
# Build: `python3 -m pip install --no-build-isolation -e .` (the bare pip there
# belongs to another Python), skipped when bench/gpu_run.sh already built.
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export NAQS_EXPECT_CUDA=1 PYTHONUNBUFFERED=1 NAQS_CACHE_DIR=/tmp/naqs-cache
PY=python3
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
PRELOAD=""
# bench/gpu_run.sh builds first and sets NAQS_BUILT=1; standalone, build here.
if [ "${NAQS_BUILT:-0}" != 1 ]; then
  timeout 300 $PY -m pip install --no-build-isolation -v -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
grep -h -A3 "heisenberg_sector_matvec_kernel" "$OUT/build.log" "$OUT/build-private.log" 2>/dev/null | grep -E "registers|spill" | head -4
$PY -c "${PRELOAD}import naqs.ops as o; print('build_info', o.build_info())" 2>&1 | tee "$OUT/build_info.txt"

echo "== CUDA tests"
timeout 120 $PY -c "${PRELOAD}import sys, pytest; sys.exit(pytest.main(['-m', 'cuda', '-q', '-rA', '--durations=5', 'tests/test_ed.py', '-p', 'no:cacheprovider']))" 2>&1 | tee "$OUT/tests.log" | tail -25

echo "== benchmark"
DATE=$(date +%F)
LEFT=$(( ${NAQS_GPU_BUDGET_S:-470} - SECONDS )); echo "seconds left for the benchmark: $LEFT"
timeout $LEFT $PY -c "${PRELOAD}import runpy, sys; sys.argv = ['bench/bench_ed.py'] + sys.argv[1:]; runpy.run_path('bench/bench_ed.py', run_name='__main__')" \
  --device cuda --clusters square-4x4 square-24 triangle-24 kagome-24 square-30 --lanczos --variants 0 1 --repeats 7 \
  --out "$OUT/ed-cuda-$DATE.md" 2>&1 | tee "$OUT/bench.log" | tail -20
