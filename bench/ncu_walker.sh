#!/usr/bin/env bash
# Nsight Compute profile of one connected (local-energy) walk of the CUDA engine, on the
# GPU machine after the build of bench/gpu_run.sh (or `python3 -m pip install
# --no-build-isolation -e .`). Writes to $OUT: ncu-details.csv (the --set full
# sections), ncu-sass.csv.gz (per-instruction stall samples, SASS with source lines) and
# ncu-lines.txt (bench/ncu_lines.py: samples per source line and per function of
# walk_kernel.cuh). The .ncu-rep itself stays in /tmp (tens of MB).
#
#   OUT=dir NAQS_PIXELCNN_MATH=tf32 bash bench/ncu_walker.sh [L blocks samples le_samples]
#
# (profile_walker.py launches the sampling walk, the forward walk of the local energy,
# then the connected walk: --launch-skip 2 takes the third; NAQS_NCU_SKIP=0 the sampling
# walk, e.g. `NAQS_NCU_SKIP=0 bash bench/ncu_walker.sh 21 20 256 1`.)
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
ARGS=${*:-12 10 1000 256}
REP=/tmp/naqs-walker
rm -f "$REP.ncu-rep"
SKIP=${NAQS_NCU_SKIP:-2}
timeout 300 ncu --launch-skip $SKIP --launch-count 1 -k regex:walk_kernel --set full --import-source yes -o "$REP" \
  python3 bench/profile_walker.py $ARGS > "$OUT/ncu.log" 2>&1
echo "ncu rc=$? ($ARGS, launch-skip $SKIP, NAQS_PIXELCNN_MATH=${NAQS_PIXELCNN_MATH:-ffma})"
ncu -i "$REP.ncu-rep" --page details --csv > "$OUT/ncu-details.csv" 2>> "$OUT/ncu.log"
ncu -i "$REP.ncu-rep" --page source --print-source sass --csv 2>> "$OUT/ncu.log" | gzip > "$OUT/ncu-sass.csv.gz"
# the line table of the same build's SASS (cuobjdump/nvdisasm of the CUDA toolkit)
TMPD=$(mktemp -d)
SASS=""
bash bench/walker_sass.sh "$TMPD/walker.sass" && SASS="$TMPD/walker.sass"
[ -z "$SASS" ] && echo "no SASS line table (walk_*.cu.o, cuobjdump or nvdisasm missing): samples by opcode only"
python3 bench/ncu_lines.py "$OUT/ncu-sass.csv.gz" $SASS > "$OUT/ncu-lines.txt" 2>&1 || tail -5 "$OUT/ncu-lines.txt"
head -60 "$OUT/ncu-lines.txt"
