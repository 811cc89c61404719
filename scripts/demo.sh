#!/usr/bin/env bash
# The main job end to end on the embedded default: SQLite Airflow + the local Anthropic API
# emulator. No API key, no network. Extra arguments go to `claude-batch demo`.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
"$VENV/bin/claude-batch" demo "$@"
