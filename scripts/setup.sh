#!/usr/bin/env bash
# Set up naqs in ./.venv: the CPU build of torch (unless a torch is already there),
# the build tools, and an editable build of the package with its C++ extension.
# Re-running it is cheap: it only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  # The CPU build (an unpinned torch would pull a multi-GB CUDA build).
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet numpy scipy matplotlib tqdm pytest "scikit-build-core>=0.10" "cmake>=3.26" ninja networkx
# --no-build-isolation: build against the torch installed above, not a fresh download.
python -m pip install --quiet --no-build-isolation -e .
python -c "import torch, naqs.ops as o; print('naqs installed; extension:', o.build_info())"
