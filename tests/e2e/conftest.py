"""One real Airflow per test module (starting one costs ~15-30 s), always torn down by PID.

Module scope, not session: a module that needs other DAGs starts its own harness (the browser test
deploys the example DAGs), and two Airflows never run at once on a small machine.
"""

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

DAGS = {
    f"{BATCH_DAG}.py": batch_dag_source(BATCH_DAG, BATCH_REQUESTS, task_id=BATCH_TASK),
}


@pytest.fixture(scope="module")
def airflow_harness(request: pytest.FixtureRequest) -> Iterator[AirflowHarness]:
    """Scheduler, dag-processor, triggerer and api-server on a temporary home, one worker slot."""
    root = Path(tempfile.mkdtemp(prefix="claude-batch-e2e-"))
    harness = AirflowHarness(root / "home", DAGS, api_key=E2E_API_KEY, emulator_config={"processing_seconds": 5})
    # Registered before starting: a start that fails half-way still stops what it started.
    request.addfinalizer(harness.stop)
    with harness:
        yield harness
