#!/usr/bin/env bash
# One call on the 2-GPU machine: build naqs._C, check the NCCL path end to end (a short
# `naqs train` on 2 GPUs, then resumes with 1 and 2 processes), and time weak and strong
# scaling of a VMC step (bench/bench_distributed.py under torchrun with 1, then 2
# processes per node). Logs and the table go to $OUT (default ./gpu-out).
#
#   OUT=/some/dir bash bench/gpu_distributed.sh        (from the repository root)
#
# Time budget: NAQS_GPU_BUDGET_S (default 400 s) for the whole script.
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
# NVLink multicast (NVLS) stays off: it is off on these machines and must not be enabled.
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
BUDGET=${NAQS_GPU_BUDGET_S:-400}
PY=python3  # the bare pip on the GPU box belongs to another Python
COMMIT=${NAQS_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
export NAQS_GIT_COMMIT=$COMMIT
DATE=$(date +%F)
SUMMARY="$OUT/summary.txt"
{ echo "commit $COMMIT (+ working tree), date $DATE, NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE";
  nvidia-smi --query-gpu=index,name,memory.total --format=csv; nvidia-smi topo -m; } > "$SUMMARY" 2>&1
left() { echo $((BUDGET - SECONDS)); }
TORCHRUN="$PY -m torch.distributed.run --master-addr 127.0.0.1"

echo "== build"
T0=$SECONDS
if timeout 200 $PY -m pip install --no-build-isolation -v -e . > "$OUT/build.log" 2>&1; then
  echo "build: ok ($((SECONDS - T0)) s)" | tee -a "$SUMMARY"
else
  echo "build FAILED ($((SECONDS - T0)) s): timings below use the PyTorch reference paths" | tee -a "$SUMMARY"
  tail -25 "$OUT/build.log"
fi
$PY -c "import torch, naqs.ops as o; print('torch', torch.__version__, 'build_info', o.build_info())" 2>&1 | tee -a "$SUMMARY"

echo "== NCCL end to end: naqs train on 2 GPUs, resume with 1 and 2 processes"
RUN=/tmp/naqs-dist-run; rm -rf "$RUN"
TRAIN="-m naqs.cli train --device cuda --size 4x4 --gamma 3 --blocks 3 --channels 8 --steps 12 --batch 256 --lr 3e-3 --checkpoint-every 4 --eval-batch 4096 --quiet --json --out $RUN"
timeout 120 $TORCHRUN --master-port 29511 --nproc-per-node 2 $TRAIN > "$OUT/nccl-train.log" 2>&1
echo "torchrun P=2 train rc=$?" | tee -a "$SUMMARY"
$PY - >> "$SUMMARY" 2>&1 <<PYEOF
import json, torch
s = json.load(open("$RUN/summary.json")); c = torch.load("$RUN/checkpoint.pt", weights_only=False)
print("  summary: processes", s["processes"], "steps", s["steps"], "energy", round(s["energy"], 5), "+-", round(s["energy_error"], 5),
      "exact", s.get("exact_energy"), "rel", s.get("relative_error"), "paths", s["sampler_path"], s["local_energy_path"])
print("  checkpoint: world_size", c["world_size"], "rank states", len(c["ranks"]))
PYEOF
for P in 1 2; do
  timeout 90 $TORCHRUN --master-port $((29520 + P)) --nproc-per-node $P $TRAIN --resume > "$OUT/nccl-resume-P$P.log" 2>&1
  echo "torchrun P=$P resume rc=$? $(grep -c 're-derived' "$OUT/nccl-resume-P$P.log") re-derived warning(s)" | tee -a "$SUMMARY"
done
tail -3 "$OUT/nccl-train.log"

echo "== scaling benchmark"
RES="$OUT/distributed.jsonl"; rm -f "$RES"
for P in 1 2; do
  L=$(left); [ "$P" = 1 ] && L=$(( L * 2 / 5 )); L=$(( L - 15 ))
  if [ $L -lt 40 ]; then echo "bench P=$P skipped: $L s left" | tee -a "$SUMMARY"; continue; fi
  timeout $((L + 10)) $TORCHRUN --master-port $((29530 + P)) --nproc-per-node $P bench/bench_distributed.py \
    --device cuda --warmup 1 --reps 5 --case-budget-s 30 --budget-s $((L - 25)) --results "$RES" > "$OUT/bench-P$P.log" 2>&1
  echo "bench P=$P rc=$? ($L s allowed)" | tee -a "$SUMMARY"
  tail -4 "$OUT/bench-P$P.log"
done
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9._-')
$PY bench/bench_distributed.py --table "$RES" --out "$OUT/distributed-${GPU:-gpu}-$DATE.md" \
  --note "command: OUT=... bash bench/gpu_distributed.sh (torchrun --nproc-per-node 1 and 2, NCCL, NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE)" > /dev/null 2>&1

echo "== summary ($SECONDS s)"
cat "$SUMMARY"
cat "$OUT/distributed-${GPU:-gpu}-$DATE.md" 2>/dev/null
