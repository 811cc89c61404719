#!/usr/bin/env bash
# The core tests again on the oldest Airflow we support (declared in pyproject: apache-airflow>=3.1),
# with the UI plugin and its browser tests (the 3.1 UI fills a view's URL differently from 3.3).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MIN_AIRFLOW="${MIN_AIRFLOW:-3.1.8}"
export CLAUDE_BATCH_VENV="${CLAUDE_BATCH_MIN_VENV:-$ROOT/.venv-airflow-$MIN_AIRFLOW}"
VENV="$CLAUDE_BATCH_VENV"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON_BIN" -m venv "$VENV"
fi
stamp="$VENV/.installed-$MIN_AIRFLOW"
if [ ! -f "$stamp" ]; then
  echo ">> installing apache-airflow==$MIN_AIRFLOW into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "apache-airflow==$MIN_AIRFLOW" -e "$ROOT[test]"
  touch "$stamp"
fi
cd "$ROOT"
source "$ROOT/scripts/browser.sh"
echo ">> pytest on apache-airflow $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')"
"$VENV/bin/python" -m pytest -m "not latest_airflow_only" tests/test_requests.py tests/test_hook.py tests/test_trigger.py \
  tests/test_batch_operator.py tests/test_sensor.py tests/test_provider_registration.py tests/test_policy.py \
  tests/test_message_operator.py tests/test_audit.py \
  tests/test_ui_plugin.py tests/e2e/test_ui_browser.py "$@"
