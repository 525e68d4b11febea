#!/usr/bin/env bash
# One call on the GPU machine: build naqs._C with CUDA, run the CUDA tests of
# tests/test_ed.py, solve the 36-site symmetric sector through the command line, then
# the ED benchmark. Logs and tables go to $OUT (default ./gpu-out). Usage on the GPU
# box, from the repository root:
#   NAQS_GIT_COMMIT=<hash> bash bench/gpu_ed.sh
# At most 8 files land in $OUT (build.log, ptxas.txt, tests.log, ed-36-cli.json/.err,
# bench.log, the results tables). Environment: NAQS_BUILT=1 skips the build (done by the caller, log in $OUT/build.log);
# NAQS_GPU_BUDGET_S (default 470) caps the whole script; NAQS_ED_PLAIN=1 adds the plain
# sector rows (square-4x4 ... square-30) to the benchmark; NAQS_ED_STEPS (default
# "tests cli bench verify") picks the steps: verify = the independent checks of the
# 36-site sector (bench_ed.py --verify: orbit sizes tile the sector, byte-table
# enumeration and operator agree with the torus form, symmetric operator, tight solve);
# translations = the 36-site energy again in the translations-only k = 0 sector (~1.3e8
# representatives; not in the default steps).
#
# Build: `python3 -m pip install --no-build-isolation -v -e .` (the bare pip there
# belongs to another Python; -v keeps the ptxas register/spill report in the log).
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export NAQS_EXPECT_CUDA=1 PYTHONUNBUFFERED=1 NAQS_CACHE_DIR=/tmp/naqs-cache
PY=python3
BUDGET=${NAQS_GPU_BUDGET_S:-470}
left() { echo $(( BUDGET - SECONDS )); }
STEPS=" ${NAQS_ED_STEPS:-tests cli bench verify} "
step() { case "$STEPS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1
if [ "${NAQS_BUILT:-0}" != 1 ]; then
  timeout 300 $PY -m pip install --no-build-isolation -v -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
echo "build done at ${SECONDS}s"
# Registers/spills of the ED kernels (ptxas -v: a "Compiling entry function" line, then
# the stack/spill line and the registers line).
$PY - "$OUT/build.log" > "$OUT/ptxas.txt" <<'PYEOF'
import re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
for k, line in enumerate(lines):
    m = re.search(r"Compiling entry function '([^']+)'", line)
    if not m or "naqs2ed" not in m.group(1):
        continue
    name = re.search(r"\d+([a-z_]+_kernel)(?:ILi(\d)ELi(\d)E)?", m.group(1))
    label = name.group(1) + (f"<{name.group(2)},{name.group(3)}>" if name.group(2) else "") if name else m.group(1)
    info = " ".join(l.strip() for l in lines[k + 1:k + 4] if "spill" in l or "registers" in l)
    print(f"{label}: {info}")
PYEOF
cat "$OUT/ptxas.txt"
$PY -c "import naqs.ops as o; print('build_info', o.build_info())" 2>&1

if step tests; then
  echo "== CUDA tests (tests/test_ed.py -m cuda)"
  timeout 150 $PY -m pytest -m cuda -q -rfEs --durations=8 tests/test_ed.py -p no:cacheprovider 2>&1 \
    | tee "$OUT/tests.log" | tail -20
  echo "tests done at ${SECONDS}s"
fi

if step cli; then
  echo "== 36 sites, symmetric sector, command line"
  T=$(( $(left) - 120 )); [ "$T" -gt 200 ] && T=200
  [ "$T" -gt 30 ] && timeout $T $PY -m naqs.cli ed --cluster square-36 --symmetric --device cuda --json --no-cache \
    > "$OUT/ed-36-cli.json" 2> "$OUT/ed-36-cli.err"; echo "rc=$? at ${SECONDS}s"
  cat "$OUT/ed-36-cli.json"; tail -3 "$OUT/ed-36-cli.err"
fi

DATE=$(date +%F)
if step bench; then
  echo "== benchmark"
  PLAIN=""
  [ "${NAQS_ED_PLAIN:-0}" = 1 ] && PLAIN="square-4x4 square-24 triangle-24 kagome-24 square-30"
  SYM=${NAQS_ED_SYMMETRIC:-square-24 triangle-24 kagome-24 square-36}
  echo "seconds left for the benchmark: $(left)"
  timeout $(left) $PY bench/bench_ed.py --device cuda --clusters $PLAIN \
    --symmetric $SYM --compare-tables square-24 ${NAQS_ED_BENCH_ARGS:---lanczos} --repeats 5 \
    --out "$OUT/ed-sym-cuda-$DATE.md" 2>&1 | tee "$OUT/bench.log" | tail -12
fi
if step verify; then
  echo "== checks of the 36-site symmetric sector (seconds left: $(left))"
  timeout $(left) $PY bench/bench_ed.py --device cuda --clusters --verify square-36 \
    --out "$OUT/ed-verify-cuda-$DATE.md" 2>&1 | tee "$OUT/verify.log" | tail -12
fi
if step translations; then
  echo "== 36 sites again, translations-only k = 0 sector (seconds left: $(left))"
  timeout $(left) $PY bench/bench_ed.py --device cuda --clusters --verify-translations square-36 \
    --out "$OUT/ed-translations-cuda-$DATE.md" 2>&1 | tee "$OUT/translations.log" | tail -6
fi
echo "all done at ${SECONDS}s"
