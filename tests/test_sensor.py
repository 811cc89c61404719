"""ClaudeBatchSensor: waits for batches submitted elsewhere, deferred or poking, with the outcome policy."""

from __future__ import annotations

from datetime import datetime

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests
from airflow_provider_claude_batch.sensors.batch import ClaudeBatchSensor

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=32)


def submit(items: list) -> str:
    return ClaudeHook().create_batch(prepare_requests(items, DEFAULTS)).id


def sensor_dag(dag_id: str, **kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        ClaudeBatchSensor(task_id="wait", min_poll_interval=0.05, max_poll_interval=0.2, **kwargs)
    return dag


@pytest.mark.parametrize("deferrable", [True, False])
def test_waits_for_batches_submitted_elsewhere(claude_emulator, deferrable):
    claude_emulator.configure(processing_seconds=0.5)
    ids = [submit(["a", "b"]), submit(["c"])]
    outcome = run_dag(sensor_dag(f"sensor_ok_{deferrable}", batch_ids=ids, deferrable=deferrable, poke_interval=0.2))
    assert outcome.task_states == {"wait": "success"}
    result = outcome.xcom("wait")
    assert result["counts"] == {"succeeded": 3, "errored": 0, "canceled": 0, "expired": 0}
    assert [b["batch_id"] for b in result["batches"]] == ids


def test_outcome_policy_fails_and_points_at_the_results(claude_emulator, capfd):
    claude_emulator.configure(outcomes=[{"match": "^bad", "result": "errored"}])
    batch_id = submit([{"custom_id": "bad1", "prompt": "x"}, {"custom_id": "ok1", "prompt": "y"}])
    outcome = run_dag(sensor_dag("sensor_policy", batch_ids=batch_id, max_failed_fraction=0.4))
    assert outcome.task_states == {"wait": "failed"}
    text = "".join(capfd.readouterr())
    assert "1 of 2 requests did not succeed (errored 1), more than max_failed_fraction=0.4 allows" in text
    assert f"{batch_id} -> {claude_emulator.url}/v1/messages/batches/{batch_id}/results" in text


def test_killing_the_sensor_never_cancels_batches_it_does_not_own():
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import TaskDeferred

    sensor = ClaudeBatchSensor(task_id="s", batch_ids=["msgbatch_x"])
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    assert deferred.value.trigger.cancel_on_kill is False


def test_rejects_empty_batch_ids_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="batch_ids needs at least one batch id"):
        ClaudeBatchSensor(task_id="s", batch_ids=[])
