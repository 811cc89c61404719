"""Shared fixtures: a throwaway AIRFLOW_HOME with a migrated SQLite database, and connections.

The environment is set before anything imports Airflow, so every test (and every Airflow
subprocess a test starts) uses the temporary home, never the developer's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import claude_connection_uri

_HOME = Path(tempfile.mkdtemp(prefix="claude-batch-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
(_HOME / "dags").mkdir()
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
os.environ.pop("ANTHROPIC_API_KEY", None)
os.environ.pop("ANTHROPIC_BASE_URL", None)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata database (``dag.test()`` needs one)."""
    marker = airflow_home / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
            timeout=300,
        )
        marker.touch()
    return airflow_home


@pytest.fixture(autouse=True)
def _fresh_request_budgets() -> Iterator[None]:
    """Each test starts with full request budgets (they are process-wide, like a real worker's)."""
    from airflow_provider_claude_batch.budget import forget_budgets

    forget_budgets()
    yield
    forget_budgets()


@pytest.fixture
def claude_conn(claude_emulator, monkeypatch) -> Iterator[str]:
    """``claude_default`` pointed at the emulator; yields the connection id."""
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url))
    yield "claude_default"
