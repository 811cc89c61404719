#!/usr/bin/env bash
# The test command: lint, then the whole test suite (real Airflow, real SDK, the local emulator).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k trigger
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
echo ">> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo ">> pytest"
"$PY" -m pytest "$@"
