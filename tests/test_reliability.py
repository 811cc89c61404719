"""Never lose a request, never pay twice: each test counts the batches the emulator received."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import pydantic
import pytest
from airflow_support import run_dag
from support import claude_connection_uri, custom_id_counts

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.landing import ResultsUnavailableError, land_results
from airflow_provider_claude_batch.operators.batch import RESULT_STREAM_ERRORS, ClaudeBatchOperator
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")

START = datetime(2026, 1, 1)
# A status refresh of the shared poller (a list page), not the one-batch marker listed before each create.
POLL = {"method": "GET", "path": r"^/v1/messages/batches$", "query": "limit=1000"}
CREATE = r"^/v1/messages/batches$"


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def batch_dag(dag_id: str, retries: int = 0, **operator_kwargs):
    from airflow.sdk import DAG

    kwargs = {"model": "claude-haiku-4-5", "max_tokens": 64, "min_poll_interval": 0.05, "max_poll_interval": 0.2}
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(
            task_id="batch", retries=retries, retry_delay=timedelta(seconds=0), **{**kwargs, **operator_kwargs}
        )
    return dag


def test_a_crash_after_submission_then_a_retry_submits_once(claude_emulator, tmp_path, capfd):
    # The first wait dies on a permanent error after the batch was submitted; the retry re-attaches.
    claude_emulator.configure(faults=[{**POLL, "status": 403, "count": 1}])
    requests = [{"custom_id": f"r{i}", "prompt": f"p{i}"} for i in range(5)]
    outcome = run_dag(batch_dag("rel_crash_retry", retries=1, requests=requests, results_uri=f"file://{tmp_path}"))
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["create_calls"] == 1 and state["batch_count"] == 1
    assert sorted(row["custom_id"] for row in rows_of(tmp_path)) == [f"r{i}" for i in range(5)]
    assert "Re-attaching to batch(es)" in "".join(capfd.readouterr())
    # Airflow wiped the first try's XComs; the retry told downstream tasks and the UI again.
    assert outcome.xcom("batch", "batch_ids") == [state["batches"][0]["id"]]


def test_a_retry_with_changed_input_cancels_the_stale_batch_and_submits_once_more(claude_emulator, tmp_path, capfd):
    claude_emulator.configure(processing_seconds=2, faults=[{**POLL, "status": 403, "count": 1}])
    outcome = run_dag(
        batch_dag(
            "rel_changed_input",
            retries=1,
            requests=["Report for attempt {{ ti.try_number }}"],
            results_uri=f"file://{tmp_path}",
        )
    )
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["batch_count"] == 2
    first, second = sorted(state["batches"], key=lambda b: b["created_at"])
    assert first["processing_status"] in ("canceling", "ended")
    assert ClaudeHook().retrieve_batch(first["id"]).cancel_initiated_at is not None
    assert [row["batch_id"] for row in rows_of(tmp_path)] == [second["id"]]
    assert "The input changed since an earlier attempt" in "".join(capfd.readouterr())


def test_on_input_change_fail_refuses_to_replace(claude_emulator, tmp_path, capfd):
    claude_emulator.configure(faults=[{**POLL, "status": 403, "count": 1}])
    dag = batch_dag(
        "rel_change_fail",
        retries=1,
        requests=["attempt {{ ti.try_number }}"],
        results_uri=f"file://{tmp_path}",
        on_input_change="fail",
    )
    assert run_dag(dag).task_states == {"batch": "failed"}
    assert claude_emulator.state()["batch_count"] == 1
    assert "on_input_change='fail'" in "".join(capfd.readouterr())


def test_a_create_lost_between_intent_and_record_is_adopted_by_the_retry(claude_emulator, tmp_path, capfd):
    # The server stores the batch but answers 400 (not retried in the attempt): the attempt dies with only
    # its intent recorded, and the retry finds the batch created since the intent.
    claude_emulator.configure(faults=[{"method": "POST", "path": CREATE, "status": 400, "count": 1, "store": True}])
    outcome = run_dag(batch_dag("rel_intent", retries=1, requests=["a", "b", "c"], results_uri=f"file://{tmp_path}"))
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["create_calls"] == 1 and state["batch_count"] == 1
    assert len(rows_of(tmp_path)) == 3
    assert "adopting it instead of submitting again" in "".join(capfd.readouterr())


def test_a_rerun_of_a_finished_task_relands_at_no_cost(claude_emulator, tmp_path):
    dag = batch_dag("rel_rerun", requests=["a", "b"], results_uri=f"file://{tmp_path}")
    first = run_dag(dag)
    (tmp_path / "results.jsonl").unlink()
    second = run_dag(dag)  # a new run of the same task writing to the same folder finds the record there
    assert first.task_states == second.task_states == {"batch": "success"}
    assert claude_emulator.state()["create_calls"] == 1
    assert len(rows_of(tmp_path)) == 2
    assert json.loads((tmp_path / "submission.json").read_text())["landed_at"]


def test_250000_requests_become_three_batches_and_one_results_file(claude_emulator, tmp_path):
    source = tmp_path / "requests.jsonl"
    with source.open("w") as out:
        for i in range(250_000):
            out.write(f'{{"custom_id": "q{i}", "prompt": "Classify item {i}"}}\n')
    claude_emulator.configure(processing_seconds=0.5)
    outcome = run_dag(
        batch_dag("rel_250k", requests=f"file://{source}", max_tokens=16, results_uri=f"file://{tmp_path}/out")
    )
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["batch_count"] == 3
    assert sorted(batch["request_count"] for batch in state["batches"]) == [50_000, 100_000, 100_000]
    ids = custom_id_counts(tmp_path / "out" / "results.jsonl")
    assert len(ids) == 250_000 and set(ids.values()) == {1}
    manifest = outcome.xcom("batch")
    assert manifest["request_count"] == 250_000 and len(manifest["batch_ids"]) == 3


def test_twenty_percent_faults_everywhere_still_one_batch_per_submission(claude_emulator, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url, max_retries=6))
    claude_emulator.configure(
        seed=7,
        processing_seconds=0.3,
        faults=[
            # One create stored by the server but answered with an error, one that stored nothing...
            {"method": "POST", "path": CREATE, "status": 500, "count": 1, "store": True},
            {"method": "POST", "path": CREATE, "status": 529, "count": 1},
            # ...then 20% of every call failing at random, creates included.
            {"method": "POST", "path": CREATE, "status": 500, "rate": 0.1, "store": True},
            {"method": "POST", "path": CREATE, "status": 529, "rate": 0.1},
            {"path": r"^/v1/messages/batches.*", "status": 429, "rate": 0.07, "retry_after": 0},
            {"path": r"^/v1/messages/batches.*", "status": 500, "rate": 0.07},
            {"path": r"^/v1/messages/batches.*", "status": 529, "rate": 0.07},
        ],
    )
    from airflow.sdk import DAG

    with DAG("rel_faults", schedule=None, start_date=START, catchup=False) as dag:
        for n in range(6):
            ClaudeBatchOperator(
                task_id=f"batch_{n}",
                requests=[f"task {n} prompt {i}" for i in range(20)],
                model="claude-haiku-4-5",
                max_tokens=32,
                min_poll_interval=0.05,
                max_poll_interval=0.2,
                results_uri=f"file://{tmp_path}/{n}",
            )
    outcome = run_dag(dag)
    assert set(outcome.task_states.values()) == {"success"}
    state = claude_emulator.state()
    assert state["faults_injected"] > 10
    logs = "".join(capfd.readouterr())
    # A create the server stored was adopted, not sent again; one that stored nothing was sent again...
    assert "was created meanwhile; using it instead of submitting again" in logs
    assert "no batch was created; retrying" in logs
    assert state["create_calls"] >= 7
    assert state["batch_count"] == 6  # ...and exactly one batch per submission exists
    for n in range(6):
        assert len(rows_of(tmp_path / str(n))) == 20


def test_a_results_stream_cut_mid_way_loses_and_duplicates_nothing(claude_emulator, tmp_path):
    claude_emulator.configure(faults=[{"method": "GET", "path": r".*/results$", "cut_after_rows": 7, "count": 2}])
    requests = [{"custom_id": f"c{i}", "prompt": f"p{i}"} for i in range(30)]
    outcome = run_dag(batch_dag("rel_cut", requests=requests, results_uri=f"file://{tmp_path}"))
    assert outcome.task_states == {"batch": "success"}
    assert sorted(row["custom_id"] for row in rows_of(tmp_path)) == sorted(r["custom_id"] for r in requests)
    assert claude_emulator.state()["faults_injected"] == 2


def test_transient_failures_rerun_in_a_second_round_permanent_ones_do_not(claude_emulator, tmp_path):
    claude_emulator.configure(
        outcomes=[
            {"match": "^exp-", "result": "expired", "times": 1},
            {"match": "^ovl-", "result": "errored", "error_type": "overloaded_error", "times": 1},
            {"match": "^bad-", "result": "errored", "error_type": "invalid_request_error"},
        ]
    )
    requests = [{"custom_id": cid, "prompt": cid} for cid in ("ok-1", "exp-1", "ovl-1", "bad-1")]
    outcome = run_dag(
        batch_dag("rel_rounds", requests=requests, results_uri=f"file://{tmp_path}", max_failed_fraction=0.25)
    )
    assert outcome.task_states == {"batch": "success"}
    status = {row["custom_id"]: row["status"] for row in rows_of(tmp_path)}
    assert status == {"ok-1": "succeeded", "exp-1": "succeeded", "ovl-1": "succeeded", "bad-1": "errored"}
    manifest = outcome.xcom("batch")
    assert [(r["round"], r["requests"]) for r in manifest["rounds"]] == [(0, 4), (1, 2)]
    assert manifest["counts"]["succeeded"] == 3 and manifest["counts"]["errored"] == 1
    state = claude_emulator.state()
    assert state["batch_count"] == 2
    assert sorted(b["request_count"] for b in state["batches"]) == [2, 4]


def test_rounds_stop_at_the_configured_number(claude_emulator, tmp_path):
    claude_emulator.configure(outcomes=[{"match": "^exp-", "result": "expired"}])
    outcome = run_dag(
        batch_dag(
            "rel_rounds_cap",
            requests=[{"custom_id": "exp-1", "prompt": "x"}, "fine"],
            retry_rounds=1,
            max_failed_fraction=0.5,
            results_uri=f"file://{tmp_path}",
        )
    )
    assert outcome.task_states == {"batch": "success"}
    assert claude_emulator.state()["batch_count"] == 2
    assert len(rows_of(tmp_path)) == 2


class Verdict(pydantic.BaseModel):
    label: Literal["spam", "ham"]
    reasons: list[str]


def test_structured_output_rows_carry_validated_objects_or_invalid_output(claude_emulator, tmp_path):
    claude_emulator.configure(outcomes=[{"match": "^broken", "result": "invalid_output"}])
    requests = [{"custom_id": "m1", "prompt": "Buy now!!!"}, {"custom_id": "broken1", "prompt": "Hello"}]
    outcome = run_dag(
        batch_dag(
            "rel_structured",
            requests=requests,
            output_schema=Verdict,
            max_failed_fraction=0.5,
            results_uri=f"file://{tmp_path}",
        )
    )
    assert outcome.task_states == {"batch": "success"}
    rows = {row["custom_id"]: row for row in rows_of(tmp_path)}
    assert Verdict.model_validate(rows["m1"]["output"])
    assert rows["m1"]["status"] == "succeeded"
    assert rows["broken1"]["status"] == "invalid_output"
    assert rows["broken1"]["output"] is None
    assert "validation error" in rows["broken1"]["error"]["message"]
    assert outcome.xcom("batch")["counts"]["invalid_output"] == 1
    sent = claude_emulator.state()
    assert sent["batch_count"] == 1  # invalid output is a model answer, not a transient failure: no re-run


def test_invalid_output_counts_in_the_failure_policy(claude_emulator, tmp_path):
    claude_emulator.configure(outcomes=[{"match": "^broken", "result": "invalid_output"}])
    dag = batch_dag(
        "rel_structured_policy",
        requests=[{"custom_id": "broken1", "prompt": "x"}, "y"],
        output_schema=Verdict,
        results_uri=f"file://{tmp_path}",
    )
    assert run_dag(dag).task_states == {"batch": "failed"}


def test_output_schema_must_be_a_pydantic_model():
    with pytest.raises(TypeError, match="output_schema must be a pydantic model class"):
        ClaudeBatchOperator(task_id="t", requests=["x"], output_schema=dict)


def test_timeout_cancels_and_lands_what_completed(claude_emulator, tmp_path, capfd):
    claude_emulator.configure(processing_seconds=8, cancel_seconds=0.3)
    requests = [{"custom_id": f"t{i}", "prompt": f"p{i}"} for i in range(20)]
    outcome = run_dag(
        batch_dag("rel_timeout", requests=requests, timeout=timedelta(seconds=3), results_uri=f"file://{tmp_path}")
    )
    assert outcome.task_states == {"batch": "failed"}
    rows = rows_of(tmp_path)
    assert len(rows) == 20
    statuses = Counter(row["status"] for row in rows)
    assert statuses["succeeded"] >= 1 and statuses["canceled"] >= 1
    assert set(statuses) <= {"succeeded", "canceled"}
    text = "".join(capfd.readouterr())
    assert "They were cancelled" in text and str(tmp_path / "results.jsonl") in text


def test_results_gone_after_29_days_is_a_clear_error(claude_emulator, tmp_path):
    claude_emulator.configure(processing_seconds=0.05)
    hook = ClaudeHook()
    batch = hook.create_batch(prepare_requests(["a"], RequestDefaults(model="claude-haiku-4-5", max_tokens=8)))
    while hook.retrieve_batch(batch.id).processing_status != "ended":
        time.sleep(0.05)
    claude_emulator.advance(30 * 86400)
    import anthropic

    with pytest.raises(ResultsUnavailableError, match="Anthropic keeps results for 29 days after a batch is created"):
        land_results(
            [batch.id],
            hook.stream_results,
            tmp_path / "results.jsonl",
            transient_errors=RESULT_STREAM_ERRORS,
            unavailable_errors=(anthropic.NotFoundError,),
        )
    assert not (tmp_path / "results.jsonl").exists()
