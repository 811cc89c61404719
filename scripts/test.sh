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
CHROMIUM="${CLAUDE_BATCH_CHROMIUM:-/usr/bin/chromium}"
INSTALL_CHROMIUM="sudo apt-get install -y chromium"

have_chromium() { [ -x "$CHROMIUM" ] || command -v "$CHROMIUM" >/dev/null 2>&1; }

install_chromium() {
  local as_root=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || return 1
    as_root=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  echo ">> installing Debian's chromium for the browser tests (apt-get)"
  "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

if ! have_chromium; then
  install_chromium || echo "!! could not install chromium here (needs root or password-less sudo, and apt-get)"
fi
if ! have_chromium; then
  # Read by tests/e2e/conftest.py: it leaves the browser tests out by name and lists them, with this
  # text, at the end of the run.
  export CLAUDE_BATCH_NO_BROWSER="Chromium is not installed at $CHROMIUM and could not be installed here. Install it with:  $INSTALL_CHROMIUM   (or set CLAUDE_BATCH_CHROMIUM to a Chromium binary), then run again."
  echo "!! $CLAUDE_BATCH_NO_BROWSER"
fi

echo ">> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo ">> pytest"
"$PY" -m pytest "$@"
