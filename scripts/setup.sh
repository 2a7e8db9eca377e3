#!/usr/bin/env bash
# Create or reuse ./.venv and install plasticity with its dev extras.
# torch is installed first, pinned (TORCH_SPEC, default torch==2.13.0 = the CPU wheel), so that no
# dependency pulls a multi-GB CUDA build. GPU users: TORCH_SPEC='torch==2.13.0' with their CUDA index, or any
# torch>=2.6 already in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# numpy is installed with torch: torch imported without numpy warns "Failed to initialize NumPy" on every import.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check "$TORCH_SPEC" "numpy>=1.24" 2>&1 | grep -v '^WARNING: Location' || true
elif ! .venv/bin/python -c "import numpy" >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check "numpy>=1.24" 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c "import torch, numpy" || { echo "torch install failed ($TORCH_SPEC)" >&2; exit 1; }
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import plasticity, transformers, tokenizers" || { echo "package install failed" >&2; exit 1; }
