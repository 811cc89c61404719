"""The DAG the module-scoped e2e harness deploys, and the names its tests look it up by."""

from __future__ import annotations

from fleet import batch_dag_source

# Distinctive, so a leak check can look for it in every log file and every REST response.
E2E_API_KEY = "sk-ant-e2e-LEAKCHECK-7f3a9c1e5b2d"
BATCH_DAG = "e2e_batch"
BATCH_TASK = "summarise"
BATCH_REQUESTS = 3

DAGS = {
    f"{BATCH_DAG}.py": batch_dag_source(BATCH_DAG, BATCH_REQUESTS, task_id=BATCH_TASK),
}
