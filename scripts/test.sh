#!/usr/bin/env bash
# Set up (if needed), lint (`ruff check src tests benchmarks scripts`) and run the test suite:
# `bash scripts/test.sh [pytest args]`. A lint error fails the run before any test starts.
#
# Phase 1 runs the default tests (not marked slow). When it passes and less than PLASTICITY_SLOW_BUDGET_MIN
# minutes (default 40; the CI limit is 90 in all) have gone by since this script started, phase 2 runs the slow
# tests (`-m slow`: the full kill harness of tests/reliability) with the same pytest args.
# PLASTICITY_SLOW=1: one run with the slow tests included, whatever the time; PLASTICITY_SLOW=0: never slow.
# Exit code 5 (no tests collected) counts as success in every phase; any failure exits non-zero.
# Each phase runs on pytest-xdist workers, one per CPU (PLASTICITY_TEST_WORKERS=N to choose, 0 = no xdist),
# each test file on one worker (--dist loadfile: a file's module fixtures are built once); the session's
# shared runs and token cache are built once for all workers (tests/conftest.py::build_once).
# `run_cli` runs each CLI call in a process forked from a server with torch/transformers imported
# (tests/cli_fork.py; saves 5-10 s of imports per call); PLASTICITY_TEST_FORK=0: a new interpreter per call.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
source scripts/env.sh
# The extra (needs_data) tests read real datasets from $PLASTICITY_DATA_ROOT: ../shared/data beside the checkout
# when it exists and the variable is unset (they skip, with the reason, without it). plasticity itself never
# looks there: its default is ~/.cache/plasticity/data.
if [ -z "${PLASTICITY_DATA_ROOT:-}" ] && [ -d ../shared/data ]; then
  PLASTICITY_DATA_ROOT="$(cd ../shared/data && pwd)"
  export PLASTICITY_DATA_ROOT
fi
echo "== lint: ruff check src tests benchmarks scripts"
.venv/bin/ruff check -q src tests benchmarks scripts || exit 1

workers="${PLASTICITY_TEST_WORKERS:-auto}"
if ! [[ "$workers" =~ ^([0-9]+|auto)$ ]]; then
  echo "PLASTICITY_TEST_WORKERS must be a whole number or auto, got '$workers'" >&2
  exit 2
fi
xdist=(-n "$workers" --dist loadfile)
[ "$workers" = "0" ] && xdist=(-p no:xdist)

run_phase() {  # run_phase NAME MARK [pytest args]: pytest's exit code, 5 (nothing collected) mapped to 0
  local name="$1" mark="$2"
  shift 2
  echo "== test phase: $name (-m \"$mark\", ${workers} xdist workers), $((SECONDS / 60)) min since start"
  .venv/bin/python -m pytest -q "${xdist[@]}" -m "$mark" "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then echo "no tests collected ($name)"; return 0; fi
  return "$rc"
}

budget="${PLASTICITY_SLOW_BUDGET_MIN:-40}"
if ! [[ "$budget" =~ ^[0-9]+$ ]]; then
  echo "PLASTICITY_SLOW_BUDGET_MIN must be a whole number of minutes, got '$budget'" >&2
  exit 2
fi
if [ "${PLASTICITY_SLOW:-}" = "1" ]; then
  run_phase "all tests (PLASTICITY_SLOW=1)" "slow or not slow" "$@"
  exit $?
fi

run_phase "default" "not slow" "$@" || exit $?

if [ "${PLASTICITY_SLOW:-}" = "0" ]; then
  echo "== slow tests skipped (PLASTICITY_SLOW=0)"
elif [ "$SECONDS" -lt $((budget * 60)) ]; then
  run_phase "slow (within the ${budget}-min budget)" "slow" "$@" || exit $?
else
  echo "== slow tests skipped: $((SECONDS / 60)) min used, budget PLASTICITY_SLOW_BUDGET_MIN=${budget} min"
fi
exit 0
