#!/usr/bin/env bash
# The SASS of the build's walker kernel instances, with source lines (the build passes
# -lineinfo): `nvdisasm -g` of every cubin that `cuobjdump -xelf all` extracts from the
# walk_*.cu objects (csrc/pixelcnn/cuda/walk_*.cu, the object library naqs_cuda_kernels),
# concatenated into one file for bench/spill_lines.py and bench/ncu_lines.py.
#
#   bash bench/walker_sass.sh OUT.sass      (from the repository root, after a CUDA build)
#
# Exit status 1 when there are no such objects or cuobjdump / nvdisasm are missing.
set -u -o pipefail
DEST=${1:?usage: bash bench/walker_sass.sh OUT.sass}
command -v cuobjdump > /dev/null && command -v nvdisasm > /dev/null || exit 1
mapfile -t OBJS < <(find build -name "walk_*.cu.o" 2>/dev/null | sort)
[ ${#OBJS[@]} -gt 0 ] || exit 1
TMPD=$(mktemp -d)
: > "$DEST"
for i in "${!OBJS[@]}"; do  # one folder per object: the cubins' names may repeat
  mkdir -p "$TMPD/$i"
  (cd "$TMPD/$i" && cuobjdump -xelf all "$OLDPWD/${OBJS[$i]}" > /dev/null 2>&1)
  for CUBIN in "$TMPD/$i"/*.cubin; do
    [ -f "$CUBIN" ] && nvdisasm -g -c "$CUBIN" >> "$DEST" 2>/dev/null
  done
done
rm -rf "$TMPD"
[ -s "$DEST" ]
