#!/usr/bin/env bash
# The test command: lint, then the whole test suite (real Airflow, real SDK, the local emulator, a real browser).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k trigger
#
# The browser tests drive Debian's Chromium. Missing, it is installed here when this shell can
# (root, or password-less sudo, with apt-get); when it cannot, the browser tests are left out by
# name and listed at the end of the run with the one command that installs Chromium: never silently.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
source "$ROOT/scripts/browser.sh"

echo ">> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo ">> pytest"
# -rs: every skipped test is listed with its reason (e.g. the production-topology test without the
# Debian packages postgresql and redis-server, when not root to install them).
"$PY" -m pytest -rs "$@"
