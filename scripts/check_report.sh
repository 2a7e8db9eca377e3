#!/usr/bin/env bash
# Open a study report in headless Chromium and check it: every figure loaded, no JS errors; save a full-page
# screenshot. Usage: bash scripts/check_report.sh STUDY_DIR|REPORT_DIR [SCREENSHOT.png]
# A study directory without report/index.html gets its report built first (plasticity report).
# Screenshot default: <report dir>/browser-check.png. Chromium: `chromium`, `chromium-browser` or $PLASTICITY_CHROMIUM
# (Debian: apt-get install chromium). Exit 0: ok; 1: check failed; 2: usage error, no report or no Chromium.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
DIR="${1%/}"
if [ -f "$DIR/index.html" ]; then
  REPORT="$DIR"
elif [ -f "$DIR/report/index.html" ]; then
  REPORT="$DIR/report"
elif [ -f "$DIR/results.csv" ]; then
  echo "building the report of $DIR" >&2
  "$PY" -m plasticity.cli report "$DIR" >&2 || exit 2
  REPORT="$DIR/report"
else
  echo "error: no report at $DIR (no index.html, report/index.html or results.csv)" >&2
  exit 2
fi
SHOT="${2:-$REPORT/browser-check.png}"
exec "$PY" -m plasticity.report.browser "$REPORT" --screenshot "$SHOT"
