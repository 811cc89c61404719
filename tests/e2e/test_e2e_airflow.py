"""ClaudeBatchOperator on a real Airflow: scheduler, dag-processor, triggerer, api-server, one worker slot.

Everything is observed the way an operator of the deployment would: through the REST API, the task
log and the emulator's admin state. The tests share one harness (see ``conftest.py``) and run in
file order; the leak check runs last so it scans every log the others produced.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from e2e_batch import BATCH_DAG, BATCH_REQUESTS, BATCH_TASK, E2E_API_KEY
from harness import AirflowHarness

pytestmark = pytest.mark.e2e

PROGRESS_LINE = "is in_progress"


def batch_of(harness: AirflowHarness, batch_id: str) -> dict[str, Any] | None:
    assert harness.emulator is not None
    return next((b for b in harness.emulator.state()["batches"] if b["id"] == batch_id), None)


def wait_for_trigger_running(harness: AirflowHarness, run_id: str) -> None:
    """Until the trigger's first progress line is in the task log: the triggerer is polling the batch."""
    harness.wait_for_state(BATCH_DAG, run_id, BATCH_TASK, ["deferred"], timeout=90)
    harness.wait_for(
        lambda: PROGRESS_LINE in harness.task_log(BATCH_DAG, run_id, BATCH_TASK),
        timeout=60,
        what=f"the trigger of {run_id} to log progress",
    )


@pytest.fixture(scope="module")
def two_runs(airflow_harness: AirflowHarness) -> dict[str, Any]:
    """Two runs whose batches take 25 s, with one worker slot; records the states seen meanwhile."""
    harness = airflow_harness
    assert harness.emulator is not None
    harness.emulator.configure(processing_seconds=25)
    run_ids = ["parallel_1", "parallel_2"]
    for run_id in run_ids:
        harness.trigger_dag(BATCH_DAG, run_id)
    seen: dict[str, Any] = {"links": {}}

    def both_deferred() -> bool:
        states = {run_id: harness.ti_state(BATCH_DAG, run_id, BATCH_TASK) for run_id in run_ids}
        seen.setdefault("history", []).append(states)
        if set(states.values()) == {"deferred"}:
            # The extra link must already be there while the task waits (we push its XCom ourselves).
            for run_id in run_ids:
                path = f"/api/v2/dags/{BATCH_DAG}/dagRuns/{run_id}/taskInstances/{BATCH_TASK}/links"
                seen["links"][run_id] = harness.api("GET", path)
            seen["both_deferred_at"] = time.monotonic()
            return True
        return False

    harness.wait_for(both_deferred, timeout=90, what="both batch tasks deferred at the same time")
    for run_id in run_ids:
        harness.wait_for_state(BATCH_DAG, run_id, BATCH_TASK, ["success"], timeout=120)
    seen["run_ids"] = run_ids
    return seen


def test_one_worker_slot_two_batch_tasks_deferred_at_once_then_both_land(airflow_harness, two_runs):
    harness = airflow_harness
    # parallelism=1: both could be deferred together only because a deferred task holds no slot.
    assert harness.env["AIRFLOW__CORE__PARALLELISM"] == "1"
    assert two_runs["history"][-1] == {"parallel_1": "deferred", "parallel_2": "deferred"}
    for run_id in two_runs["run_ids"]:
        assert harness.ti_state(BATCH_DAG, run_id, BATCH_TASK) == "success"
        manifest = harness.xcom(BATCH_DAG, run_id, BATCH_TASK)
        assert manifest["request_count"] == BATCH_REQUESTS
        assert manifest["counts"]["succeeded"] == BATCH_REQUESTS
        rows = harness.results_rows(manifest)
        assert len(rows) == BATCH_REQUESTS
        assert {row["status"] for row in rows} == {"succeeded"}
        assert batch_of(harness, manifest["batch_id"])["processing_status"] == "ended"
        # The "Claude batch" extra link was served while the task was deferred.
        links = two_runs["links"][run_id]["extra_links"]
        assert (
            links["Claude batch"]
            == f"{harness.api_url}/claude-batch/task/{BATCH_DAG}/{run_id}/{BATCH_TASK}?map_index=-1"
        )


def test_marking_a_deferred_task_failed_cancels_its_batch(airflow_harness):
    harness = airflow_harness
    assert harness.emulator is not None
    harness.emulator.configure(processing_seconds=300)
    run_id = "mark_failed"
    harness.trigger_dag(BATCH_DAG, run_id)
    wait_for_trigger_running(harness, run_id)
    batch_id = harness.xcom(BATCH_DAG, run_id, BATCH_TASK, key="batch_id")
    assert batch_of(harness, batch_id)["processing_status"] == "in_progress"

    harness.set_ti_state(BATCH_DAG, run_id, BATCH_TASK, "failed")

    # Airflow 3.3 calls the trigger's on_kill on a user action; ours cancels the batch.
    batch = harness.wait_for(
        lambda: (b := batch_of(harness, batch_id)) and b["processing_status"] in ("canceling", "ended") and b,
        timeout=60,
        what=f"batch {batch_id} to be cancelled",
    )
    assert batch["cancel_initiated_at"] is not None
    ended = harness.wait_for(
        lambda: (b := batch_of(harness, batch_id)) and b["processing_status"] == "ended" and b,
        timeout=30,
        what=f"batch {batch_id} to end after the cancel",
    )
    assert ended["request_counts"]["canceled"] >= 1
    assert ended["request_counts"]["processing"] == 0
    assert harness.ti_state(BATCH_DAG, run_id, BATCH_TASK) == "failed"
    assert "cancelled Claude batch" in harness.task_log(BATCH_DAG, run_id, BATCH_TASK)


def test_killing_the_triggerer_mid_wait_and_starting_another_still_completes(airflow_harness):
    harness = airflow_harness
    assert harness.emulator is not None
    harness.emulator.configure(processing_seconds=30)
    run_id = "triggerer_killed"
    harness.trigger_dag(BATCH_DAG, run_id)
    wait_for_trigger_running(harness, run_id)

    old = harness.processes["triggerer"]
    harness.kill_component("triggerer")  # SIGKILL to its process group: no clean shutdown, no end date
    assert old.returncode == -signal.SIGKILL
    assert harness.ti_state(BATCH_DAG, run_id, BATCH_TASK) == "deferred"
    harness.start_component("triggerer")

    harness.wait_for_state(BATCH_DAG, run_id, BATCH_TASK, ["success"], timeout=150)
    manifest = harness.xcom(BATCH_DAG, run_id, BATCH_TASK)
    assert len(harness.results_rows(manifest)) == BATCH_REQUESTS
    # Two triggerer jobs each wrote a trigger log for this task: the trigger really moved.
    task_logs = harness.home / "logs" / f"dag_id={BATCH_DAG}" / f"run_id={run_id}" / f"task_id={BATCH_TASK}"
    assert len(list(task_logs.glob("attempt=1.log.trigger.*.log"))) >= 2
    # Only one batch was ever created for the task: the new triggerer resumed waiting, it did not resubmit.
    assert harness.xcom(BATCH_DAG, run_id, BATCH_TASK, key="batch_ids") == [manifest["batch_id"]]


def test_task_log_has_trigger_progress_and_no_api_key_anywhere(airflow_harness, two_runs):
    harness = airflow_harness
    run_id = two_runs["run_ids"][0]
    log = harness.task_log(BATCH_DAG, run_id, BATCH_TASK)
    manifest = harness.xcom(BATCH_DAG, run_id, BATCH_TASK)
    assert f"Claude batch {manifest['batch_id']} {PROGRESS_LINE}" in log
    assert f"Claude batch {manifest['batch_id']} is ended" in log
    assert "Landed 3 result row(s)" in log

    responses = [
        log,
        json.dumps(harness.task_instance(BATCH_DAG, run_id, BATCH_TASK)),
        json.dumps(
            harness.api("GET", f"/api/v2/dags/{BATCH_DAG}/dagRuns/{run_id}/taskInstances/{BATCH_TASK}/xcomEntries")
        ),
        json.dumps(harness.api("GET", "/api/v2/connections")),
        json.dumps(harness.api("GET", "/claude-batch/api/batches")),
    ]
    for run in ("mark_failed", "triggerer_killed"):
        responses.append(harness.task_log(BATCH_DAG, run, BATCH_TASK))
    for body in responses:
        assert E2E_API_KEY not in body
    assert harness.files_containing(E2E_API_KEY) == []
    assert any(harness.home.joinpath("logs").rglob("*.log.trigger.*.log"))  # the scan did cover trigger logs


def test_plugin_api_on_the_real_api_server(airflow_harness, two_runs):
    harness = airflow_harness
    assert harness.request("GET", "/claude-batch/api/batches", auth=False).status_code == 401
    assert harness.request("GET", "/claude-batch/", auth=False).status_code == 401
    rows = harness.api("GET", "/claude-batch/api/batches")["rows"]
    by_run = {row["run_id"]: row for row in rows if row["dag_id"] == BATCH_DAG}
    assert by_run["parallel_1"]["status"] == "ended" and by_run["parallel_1"]["landed"]
    assert by_run["parallel_1"]["cost"]["saving_usd"] > 0
    assert by_run["mark_failed"]["task_state"] == "failed"
    assert by_run["mark_failed"]["request_counts"].get("canceled", 0) >= 1
