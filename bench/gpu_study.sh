#!/usr/bin/env bash
# The generalization study on the GPU machine in one call (< 10 minutes): build, then
# the sweeps of Figs. 2-5 as concurrent processes (each fit group is small, so one GPU
# serves several), each under a time limit. Sweeps resume, so a cut sweep keeps its
# finished rows; every process shares one ED cache. Results (CSV, JSON, PNG, logs,
# timings) go to $OUT/study-gpu.tgz.
#   OUT=/some/dir NAQS_STUDY_SECONDS=420 bash bench/gpu_study.sh [PHASE ...]
# PHASE: fig2 fig3 fig4 sr express fig5 (default: all).
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
RUNS="$OUT/runs"
mkdir -p "$RUNS"
export PYTHONUNBUFFERED=1 NAQS_CACHE_DIR=${NAQS_CACHE_DIR:-/tmp/naqs-cache} OMP_NUM_THREADS=2
LIMIT=${NAQS_STUDY_SECONDS:-420}
PHASES=${*:-fig2 fig3 fig4 sr express fig5}
T0=$SECONDS
python3 -m pip install --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build $((SECONDS - T0)) s" | tee "$OUT/timings.txt"
python3 -c "import torch, naqs.ops as o; print(o.build_info(), torch.cuda.get_device_name())" | tee -a "$OUT/timings.txt"
# Rows already measured (bench/results/study-gpu-*.csv) seed the run folders: the sweeps
# resume, so a later call only runs what is missing (e.g. the CNN curves of Fig. 2).
seed_rows() {  # seed_rows RESULT_CSV RUN_DIR FILE
  if [ -f "bench/results/$1" ] && [ ! -f "$RUNS/$2/$3" ]; then mkdir -p "$RUNS/$2" && cp "bench/results/$1" "$RUNS/$2/$3"; fi
}
seed_rows study-gpu-h100-square-24-fig2a.csv fig2-square-24 generalization.csv
seed_rows study-gpu-h100-triangle-24-fig2b.csv fig2-triangle-24 generalization.csv
seed_rows study-gpu-h100-kagome-24-fig2c.csv fig2-kagome-24 generalization.csv
seed_rows study-gpu-h100-kagome-24-fig3.csv fig3-kagome-24 eps_sweep.csv
seed_rows study-gpu-h100-kagome-24-fig4.csv fig4-kagome-24 generalization.csv
seed_rows study-gpu-h100-square-30-fig5.csv fig5-square-30 eps_sweep.csv
seed_rows study-gpu-h100-square-36-fig5.csv fig5-square-36 eps_sweep.csv
for c in square-24 triangle-24 kagome-24; do  # SR rows of the GPU and the CPU runs, one header
  if [ ! -f "$RUNS/sr-$c/sr.csv" ] && ls bench/results/study-*-"$c"-sr.csv > /dev/null 2>&1; then
    mkdir -p "$RUNS/sr-$c" && awk 'FNR > 1 || NR == 1' bench/results/study-*-"$c"-sr.csv > "$RUNS/sr-$c/sr.csv"
  fi
done
COMMON=(--device cuda --quiet --no-plot)
FIT=(--max-epochs 100 --patience 10)

# job NAME CMD... : run CMD in the background under the time limit, log to $RUNS/NAME.log
job() {
  local name=$1
  shift
  (
    local t0=$SECONDS
    timeout "$LIMIT" "$@" > "$RUNS/$name.log" 2>&1
    echo "$name rc=$? $((SECONDS - t0)) s" >> "$OUT/timings.txt"
  ) &
}
STUDY=(python3 -m naqs.cli study)
j2_grid() { case $1 in square-24) echo 0:1:0.1 ;; *) echo 0:2:0.25 ;; esac; }
sr_grid() { case $1 in square-24) echo 0:1:0.1 ;; *) echo 0:2:0.25 ;; esac; }

for phase in $PHASES; do
  case $phase in
    fig2)  # Fig. 2a-c: sign overlap vs J2, eps_train = 1 %, three architectures, 5 repeats
      for c in square-24 triangle-24 kagome-24; do
        job "fig2-$c" "${STUDY[@]}" generalization --cluster "$c" --j2 "$(j2_grid "$c")" --eps 0.01 --arch dense1,dense2,cnn \
          --target sign --repeats 5 --group-size 3 "${FIT[@]}" "${COMMON[@]}" --out "$RUNS/fig2-$c"
      done ;;
    fig4)  # Fig. 4: amplitudes along J2 for kagome (the sign rows come from fig2)
      job fig4-kagome-24 "${STUDY[@]}" generalization --cluster kagome-24 --j2 0:2:0.25 --eps 0.01 --arch dense2 \
        --target sign,amplitude --repeats 3 "${FIT[@]}" "${COMMON[@]}" --out "$RUNS/fig4-kagome-24" ;;
    fig3)  # Fig. 3: overlap vs eps_train, kagome-24
      job fig3-kagome-24 "${STUDY[@]}" eps-sweep --cluster kagome-24 --j2 0.4,0.5,0.6,1.0 \
        --eps 0.0005,0.001,0.002,0.005,0.01,0.02,0.05,0.1 --repeats 3 "${FIT[@]}" "${COMMON[@]}" --out "$RUNS/fig3-kagome-24" ;;
    sr)    # Fig. 2d-f: SR with two dense networks, overlap with ED vs J2
      for c in ${SR_CLUSTERS:-square-24 triangle-24 kagome-24}; do
        job "sr-$c" "${STUDY[@]}" sr --cluster "$c" --j2 "$(sr_grid "$c")" --steps 300 --samples 1024 --chains 1024 \
          --device cuda --quiet --no-plot --out "$RUNS/sr-$c"
      done ;;
    express)  # Fig. 2 dashed lines: training on the full basis; the frustrated points
              # (triangle and kagome at J2 = 1) need the most epochs, each its own process
      for c in triangle-24 kagome-24; do
        job "express-$c" "${STUDY[@]}" expressibility --cluster "$c" --j2 1.0 --arch dense2 --target sign \
          --max-epochs "${EXPRESS_EPOCHS:-100}" --patience 10 --batch-size 2048 "${COMMON[@]}" --out "$RUNS/express-$c"
      done ;;
    fig5)  # Fig. 5: eps sweeps of the square clusters (24 sites: seeded rows; 30: full
           # basis; 36: symmetric ED, sampled sets); `naqs study critical-eps` on the merged
           # rows gives the critical eps_train per K
      job fig5-square-30 "${STUDY[@]}" eps-sweep --cluster square-30 --j2 0.0 \
        --eps 0.00002,0.00005,0.0001,0.00015,0.0002,0.0005,0.001 --repeats 2 "${FIT[@]}" "${COMMON[@]}" --out "$RUNS/fig5-square-30"
      [ "${FIG5_36:-1}" = 1 ] && job fig5-square-36 "${STUDY[@]}" eps-sweep --cluster square-36 --j2 0.0 \
        --eps 0.000001,0.000002,0.000005,0.00001,0.00002,0.00005 --repeats 2 "${FIT[@]}" "${COMMON[@]}" \
        --out "$RUNS/fig5-square-36" ;;
    *) echo "unknown phase $phase" >&2 ;;
  esac
done
wait
echo "total $((SECONDS - T0)) s" | tee -a "$OUT/timings.txt"
cat "$OUT/timings.txt"
for f in "$RUNS"/*.log; do echo "== $f"; tail -4 "$f"; done
tar -czf "$OUT/study-gpu.tgz" -C "$OUT" runs timings.txt build.log
