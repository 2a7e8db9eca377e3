#!/usr/bin/env bash
# Create or reuse ./.venv and install plasticity (the distribution lm-plasticity, editable) with its dev extras.
# torch is installed first, pinned (TORCH_SPEC, default torch==2.13.0), from pip's configured index unless
# TORCH_INDEX_URL names another. Which build that is depends on the index: on Linux x86-64, PyPI's torch wheel is
# the CUDA build (several GB, runs on CPU too); the CPU-only build comes from PyTorch's CPU index,
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu. Any torch>=2.6 already in the venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# numpy is installed right after torch: torch imported without numpy warns "Failed to initialize NumPy" on every import.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  torch_index=()
  [ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$TORCH_INDEX_URL")
  .venv/bin/pip install -q --disable-pip-version-check "${torch_index[@]}" "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/pip install -q --disable-pip-version-check "numpy>=1.24" 2>&1 | grep -v '^WARNING: Location' || true
elif ! .venv/bin/python -c "import numpy" >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check "numpy>=1.24" 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c "import torch, numpy" || { echo "torch install failed ($TORCH_SPEC)" >&2; exit 1; }
# Before the rename to lm-plasticity (issue 29) this venv held the distribution `plasticity`: drop it, so that one
# distribution owns the package.
if .venv/bin/python -c "import importlib.metadata as m; m.version('plasticity')" >/dev/null 2>&1; then
  .venv/bin/pip uninstall -q -y plasticity 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import plasticity, transformers, tokenizers" || { echo "package install failed" >&2; exit 1; }
