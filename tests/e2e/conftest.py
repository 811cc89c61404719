"""One real Airflow per test module (starting one costs ~15-30 s), always torn down by PID.

Module scope, not session: a module that needs other DAGs starts its own harness (the browser test
deploys the example DAGs), and two Airflows never run at once on a small machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_batch import DAGS, E2E_API_KEY
from harness import AirflowHarness


@pytest.fixture(scope="module")
def airflow_harness(request: pytest.FixtureRequest) -> Iterator[AirflowHarness]:
    """Scheduler, dag-processor, triggerer and api-server on a temporary home, one worker slot."""
    root = Path(tempfile.mkdtemp(prefix="claude-batch-e2e-"))
    harness = AirflowHarness(root / "home", DAGS, api_key=E2E_API_KEY, emulator_config={"processing_seconds": 5})
    # Registered before starting: a start that fails half-way still stops what it started.
    request.addfinalizer(harness.stop)
    with harness:
        yield harness


# -- browser tests on a machine without Chromium -------------------------------------------------
# scripts/test.sh sets CLAUDE_BATCH_NO_BROWSER (why, and the command that installs Chromium) when it
# could not install Chromium. The browser tests are then deselected by name and listed at the end,
# never skipped silently. Run directly without Chromium, they fail and say how to install it.
NO_BROWSER_ENV = "CLAUDE_BATCH_NO_BROWSER"
_left_out: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get(NO_BROWSER_ENV):
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        _left_out.extend(item.nodeid for item in browser)
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if not item.get_closest_marker("browser")]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _left_out:
        return
    terminalreporter.section("browser tests NOT run", sep="!", red=True)
    for nodeid in _left_out:
        terminalreporter.line(f"  {nodeid}")
    terminalreporter.line(os.environ[NO_BROWSER_ENV])
