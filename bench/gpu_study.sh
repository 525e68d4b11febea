#!/usr/bin/env bash
# The generalization study's Fig. 2a-c sweeps (dense2 sign networks, eps_train = 1 %) on
# the GPU machine in one short call: build, then one sweep per 24-site cluster with a
# time limit each (sweeps resume, so a cut sweep keeps its finished rows). Results
# (CSV, JSON, PNG, timings) go to $OUT/study-gpu.tgz.
#   OUT=/some/dir NAQS_STUDY_SECONDS=40 bash bench/gpu_study.sh
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/runs"
export PYTHONUNBUFFERED=1 NAQS_CACHE_DIR=/tmp/naqs-cache
LIMIT=${NAQS_STUDY_SECONDS:-40}
T0=$SECONDS
python3 -m pip install --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build $((SECONDS - T0)) s" | tee "$OUT/timings.txt"
python3 -c "import torch, naqs.ops as o; print(o.build_info(), torch.cuda.get_device_name())" | tee -a "$OUT/timings.txt"
for cluster in kagome-24 square-24 triangle-24; do
  case $cluster in square-24) J2=0:1:0.1 ;; *) J2=0:2:0.25 ;; esac
  T0=$SECONDS
  timeout "$LIMIT" python3 -m naqs.cli study generalization --cluster "$cluster" --j2 "$J2" --eps 0.01 \
    --arch dense2 --target sign --repeats 2 --device cuda --max-epochs 30 --group-size 3 --out "$OUT/runs/$cluster" --quiet \
    > "$OUT/runs/$cluster.log" 2>&1
  echo "$cluster rc=$? $((SECONDS - T0)) s (limit $LIMIT s), rows: $(($(cat "$OUT"/runs/$cluster/*.csv 2>/dev/null | wc -l) - 1))" | tee -a "$OUT/timings.txt"
  tail -3 "$OUT/runs/$cluster.log"
done
tar -czf "$OUT/study-gpu.tgz" -C "$OUT" runs timings.txt
