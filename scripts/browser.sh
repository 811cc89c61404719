#!/usr/bin/env bash
# Sourced by the test scripts: make sure the browser tests have Debian's Chromium, or say they cannot.
# Installs it when this shell can (root, or password-less sudo, with apt-get). When it cannot, exports
# CLAUDE_BATCH_NO_BROWSER: tests/e2e/conftest.py then leaves the browser tests out by name and lists
# them at the end of the run with the one command that installs Chromium (never a silent skip).
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
  export CLAUDE_BATCH_NO_BROWSER="Chromium is not installed at $CHROMIUM and could not be installed here. Install it with:  $INSTALL_CHROMIUM   (or set CLAUDE_BATCH_CHROMIUM to a Chromium binary), then run again."
  echo "!! $CLAUDE_BATCH_NO_BROWSER"
fi
