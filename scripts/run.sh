#!/usr/bin/env bash
# Set up (if needed) and run the embedded default study: `bash scripts/run.sh [study.yaml]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/plasticity study "$@"
