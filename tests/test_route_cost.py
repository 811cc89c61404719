"""What each route's manifest says about money: the batch route saved, the synchronous one did not.

On the synchronous route the difference between the two prices was never saved; its manifest (the
XCom and ``manifest.json``) names it ``batching_would_save_usd``, and the log line says "would have
saved". Through real Airflow (``dag.test()``) and the real SDK against the emulator.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")
REQUESTS = [f"Review change {i}" for i in range(3)]


def run_one(dag_id: str, operator: type, results: Path, **kwargs) -> dict:
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        operator(task_id="claude", requests=REQUESTS, model="claude-haiku-4-5", max_tokens=64,
                 results_uri=f"file://{results}", **kwargs)  # fmt: skip
    outcome = run_dag(dag)
    assert outcome.task_states == {"claude": "success"}
    return outcome.xcom("claude")


def test_the_synchronous_manifest_reports_what_batching_would_have_saved_not_a_saving(tmp_path, capfd):
    manifest = run_one("cost_sync", ClaudeMessageOperator, tmp_path / "sync")
    cost = manifest["cost"]
    assert "saving_usd" not in cost
    assert cost["batching_would_save_usd"] == pytest.approx(cost["sync_usd"] - cost["batch_usd"], abs=1e-6)
    assert cost["batching_would_save_usd"] > 0
    on_disk = json.loads((tmp_path / "sync" / "manifest.json").read_text())
    assert on_disk["cost"] == cost
    log = capfd.readouterr()
    assert "on the sync route" in log.out + log.err and "batching would have saved $" in log.out + log.err


def test_the_batch_manifest_reports_the_saving_it_made(tmp_path, capfd):
    manifest = run_one("cost_batch", ClaudeBatchOperator, tmp_path / "batch", min_poll_interval=0.05,
                       max_poll_interval=0.2)  # fmt: skip
    cost = manifest["cost"]
    assert "batching_would_save_usd" not in cost
    assert (
        cost["saving_usd"] == pytest.approx(cost["sync_usd"] - cost["batch_usd"], abs=1e-6) and cost["saving_usd"] > 0
    )
    assert manifest["submitted_at"] <= manifest["landed_at"]
    log = capfd.readouterr()
    assert "batching saved $" in log.out + log.err
