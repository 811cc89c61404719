"""One real Airflow for the whole e2e session (starting one costs ~15-30 s), always torn down by PID."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import AirflowHarness, batch_dag_source

# Distinctive, so a leak check can look for it in every log file and every REST response.
E2E_API_KEY = "sk-ant-e2e-LEAKCHECK-7f3a9c1e5b2d"
BATCH_DAG = "e2e_batch"
BATCH_TASK = "summarise"
BATCH_REQUESTS = 3
# The browser test's DAGs: one batch that lands, one still running when the page is shot.
UI_LANDED_DAG = "weekly_compliance_audit"
UI_LANDED_REQUESTS = 12
UI_RUNNING_DAG = "nightly_test_generation"
UI_RUNNING_REQUESTS = 40

DAGS = {
    f"{BATCH_DAG}.py": batch_dag_source(BATCH_DAG, BATCH_REQUESTS, task_id=BATCH_TASK),
    f"{UI_LANDED_DAG}.py": batch_dag_source(UI_LANDED_DAG, UI_LANDED_REQUESTS, task_id="audit_documents"),
    f"{UI_RUNNING_DAG}.py": batch_dag_source(UI_RUNNING_DAG, UI_RUNNING_REQUESTS, task_id="generate_tests"),
}


@pytest.fixture(scope="session")
def airflow_harness(request: pytest.FixtureRequest) -> Iterator[AirflowHarness]:
    """Scheduler, dag-processor, triggerer and api-server on a temporary home, one worker slot."""
    root = Path(tempfile.mkdtemp(prefix="claude-batch-e2e-"))
    harness = AirflowHarness(root / "home", DAGS, api_key=E2E_API_KEY, emulator_config={"processing_seconds": 5})
    # Registered before starting: a start that fails half-way still stops what it started.
    request.addfinalizer(harness.stop)
    with harness:
        yield harness
