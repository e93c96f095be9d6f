#!/usr/bin/env bash
# Installs nestlearn and what it needs into the active Python.
# The CPU build of PyTorch is pinned first: an unpinned `torch` would pull a multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev,plot,hf,eval]"
# Build the fused CPU chunk kernel now (about 30 s, once per machine), not inside the first run.
# A failure is not fatal: the library warns and uses PyTorch ops.
python -c "from nestlearn.memory.write import fused; fused.kernel()" || true
