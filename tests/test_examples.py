"""The example DAGs: they parse under the routing policy, and the audit prices the portfolio split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_provider_claude_batch.pricing import price_for

EXAMPLES = Path(__file__).resolve().parent.parent / "dags_examples"
EXAMPLE_DAGS = {"nightly_test_generation", "compliance_audit", "pre_merge_review"}


VIOLATION = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

with DAG("control_blocking", schedule=None, start_date=pendulum.datetime(2026, 1, 1), tags=["blocking"]):
    ClaudeBatchOperator(task_id="t", requests=["x"], model="claude-haiku-4-5")
"""


def test_examples_parse_with_the_routing_policy_on(airflow_home, tmp_path):
    (tmp_path / "control.py").write_text(VIOLATION)
    code = (
        "import json, sys\n"
        "from airflow.models.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(EXAMPLES)!r})\n"
        f"control = DagBag(dag_folder={str(tmp_path)!r})\n"
        "print(json.dumps({'dags': sorted(bag.dags), 'errors': bag.import_errors,"
        " 'control': list(control.import_errors.values())}))\n"
    )
    env = {**os.environ, "AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING": "True"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == EXAMPLE_DAGS
    # The same parse refuses a blocking batch DAG: the policy really was active.
    assert "AirflowClusterPolicyViolation" in parsed["control"][0]


def run_audit() -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_provider_claude_batch.cli",
            "audit",
            "--dags-folder",
            str(EXAMPLES),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def usd(millions_in: str, millions_out: str, batch: bool) -> Decimal:
    price = price_for("claude-sonnet-4-6")
    cost = Decimal(millions_in) * price.input + Decimal(millions_out) * price.output
    return cost / 2 if batch else cost


@pytest.fixture(scope="module")
def audit() -> dict:
    return run_audit()


def test_audit_shows_the_split_batch_the_nightly_job_keep_the_pre_merge_check_sync(audit):
    rows = {row["dag_id"]: row for row in audit["tasks"]}
    assert set(rows) == EXAMPLE_DAGS
    assert {dag: (row["route"], row["rule_route"], row["verdict"]) for dag, row in rows.items()} == {
        "nightly_test_generation": ("batch", "batch", "OK"),
        "compliance_audit": ("batch", "batch", "OK"),
        "pre_merge_review": ("sync", "sync", "OK"),
    }
    assert "a person waits on this pre-merge review" in rows["pre_merge_review"]["reasons"][0]


def test_audit_figures_match_the_price_table(audit):
    rows = {row["dag_id"]: row for row in audit["tasks"]}
    nightly = rows["nightly_test_generation"]
    assert nightly["runs_per_month"] == 30
    assert Decimal(str(nightly["monthly"]["sync_usd"])) == 30 * usd("1.5", "0.9", batch=False)  # $540
    assert Decimal(str(nightly["monthly"]["batch_usd"])) == 30 * usd("1.5", "0.9", batch=True)  # $270
    weekly = rows["compliance_audit"]
    assert weekly["runs_per_month"] == pytest.approx(30 / 7)
    assert weekly["per_run"]["sync_usd"] == float(usd("0.4", "0.1", batch=False))  # $2.70
    assert weekly["monthly"]["batch_usd"] == pytest.approx(float(usd("0.4", "0.1", batch=True)) * 30 / 7, abs=1e-6)
    review = rows["pre_merge_review"]
    assert review["per_run"]["sync_usd"] == pytest.approx(float(usd("0.02", "0.003", batch=False)))  # $0.105


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_nightly_generation_writes_tests_then_skips_a_night_with_no_changes(claude_emulator, airflow_home):
    from airflow.models.dagbag import DagBag
    from airflow_support import run_dag

    state = airflow_home / "claude_batch_state" / "nightly_test_generation.json"
    state.unlink(missing_ok=True)
    claude_emulator.configure(processing_seconds=0.2)
    dag = DagBag(dag_folder=str(EXAMPLES / "nightly_test_generation.py")).dags["nightly_test_generation"]
    for task in dag.tasks:  # poll the emulator's short batches quickly
        if hasattr(task, "min_poll_interval"):
            task.min_poll_interval, task.max_poll_interval = 0.05, 0.2

    first = run_dag(dag)
    assert first.task_states == {
        "collect_changed_modules": "success",
        "generate_tests": "success",
        "write_test_files": "success",
    }
    assert sorted(first.xcom("write_test_files")["test_files"]) == ["test_pricing.py", "test_stock.py", "test_text.py"]
    assert claude_emulator.state()["create_calls"] == 1

    second = run_dag(dag)  # nothing changed since: nothing to submit, and that is not a failure
    assert set(second.task_states.values()) == {"skipped"}
    assert claude_emulator.state()["create_calls"] == 1
