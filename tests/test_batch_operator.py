"""ClaudeBatchOperator end to end: real Airflow (``dag.test()``), the real SDK, the emulator over HTTP."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_support import run_dag
from support import TEST_API_KEY

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")

START = datetime(2026, 1, 1)


def read_rows(uri: str) -> list[dict]:
    path = Path(uri.removeprefix("file://"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_dag(dag_id: str, **operator_kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(task_id="batch", min_poll_interval=0.05, max_poll_interval=0.2, **operator_kwargs)
    return dag


def test_submits_defers_completes_and_lands_one_row_per_request(claude_emulator, tmp_path):
    claude_emulator.configure(
        processing_seconds=0.5,
        outcomes=[
            {"match": "^bad-", "result": "errored", "error_type": "invalid_request_error"},
            {"match": "^late-", "result": "expired"},
        ],
    )
    requests = [{"custom_id": f"ok-{i}", "prompt": f"Summarise item {i}"} for i in range(5)]
    requests += [{"custom_id": "bad-1", "prompt": "x"}, {"custom_id": "late-1", "prompt": "y"}]
    dag = make_dag(
        "core_happy",
        requests=requests,
        model="claude-sonnet-4-6",
        max_tokens=64,
        results_uri=f"file://{tmp_path}/out",
        max_failed_fraction=0.5,
        retry_rounds=0,
    )
    outcome = run_dag(dag)

    assert outcome.task_states == {"batch": "success"}
    manifest = outcome.xcom("batch")
    assert manifest["counts"] == {"succeeded": 5, "errored": 1, "expired": 1, "canceled": 0, "invalid_output": 0}
    assert manifest["request_count"] == 7
    assert manifest["results_uri"] == f"file://{tmp_path}/out/results.jsonl"
    assert manifest["usage"]["output_tokens"] > 0
    assert manifest["cost"]["batch_usd"] * 2 == pytest.approx(manifest["cost"]["sync_usd"])

    rows = read_rows(manifest["results_uri"])
    assert sorted(row["custom_id"] for row in rows) == sorted(r["custom_id"] for r in requests)
    status = {row["custom_id"]: row["status"] for row in rows}
    assert status["bad-1"] == "errored" and status["late-1"] == "expired"
    assert all(status[f"ok-{i}"] == "succeeded" for i in range(5))
    bad = next(row for row in rows if row["custom_id"] == "bad-1")
    assert bad["error"]["type"] == "invalid_request_error"
    good = next(row for row in rows if row["custom_id"] == "ok-0")
    assert good["text"] and good["stop_reason"] and good["usage"]["input_tokens"] > 0

    state = claude_emulator.state()
    assert state["batch_count"] == 1
    [batch] = state["batches"]
    assert outcome.xcom("batch", "batch_id") == batch["id"] == manifest["batch_id"]
    # The wait went through the trigger and its shared poller: status came from list pages (no
    # retrieve), and the results were fetched from the results_url the last status gave (one call).
    assert state["calls"]["GET /v1/messages/batches"] >= 2  # the marker before the create, then polling
    assert state["calls"].get("GET /v1/messages/batches/{message_batch_id}", 0) == 0
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}/results"] == 1
    assert json.loads(Path(tmp_path, "out", "manifest.json").read_text())["counts"] == manifest["counts"]


def test_failure_policy_fails_the_task_and_says_where_the_results_are(claude_emulator, tmp_path, capfd):
    claude_emulator.configure(outcomes=[{"match": "^bad-", "result": "errored"}])
    dag = make_dag(
        "core_policy",
        requests=[{"custom_id": "bad-1", "prompt": "x"}, "fine"],
        model="claude-haiku-4-5",
        results_uri=f"file://{tmp_path}/out",
        max_failed_fraction=0.25,
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    output = capfd.readouterr()
    text = output.out + output.err
    assert "1 of 2 requests did not succeed (errored 1), more than max_failed_fraction=0.25 allows" in text
    assert f"{tmp_path}/out/results.jsonl" in text
    assert len(read_rows(f"file://{tmp_path}/out/results.jsonl")) == 2


def test_non_deferrable_polls_in_the_worker_with_the_same_logic(claude_emulator, tmp_path):
    dag = make_dag(
        "core_sync_wait",
        requests=["a", "b", "c"],
        model="claude-haiku-4-5",
        deferrable=False,
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    assert outcome.xcom("batch")["counts"]["succeeded"] == 3


def test_wait_for_completion_false_returns_after_submission(claude_emulator, tmp_path):
    claude_emulator.configure(processing_seconds=60)
    dag = make_dag(
        "core_no_wait",
        requests=["a", "b"],
        model="claude-haiku-4-5",
        wait_for_completion=False,
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    result = outcome.xcom("batch")
    assert result["request_count"] == 2
    assert claude_emulator.state()["batches"][0]["processing_status"] == "in_progress"
    # The submission record lands beside where the results will go; the results themselves do not exist yet.
    assert Path(tmp_path, "out", "submission.json").exists()
    assert not Path(tmp_path, "out", "results.jsonl").exists()


def test_invalid_requests_fail_before_any_network_call(claude_emulator, tmp_path, capfd):
    dag = make_dag(
        "core_invalid",
        requests=[{"custom_id": "bad id", "prompt": "x"}, {"custom_id": "ok", "prompt": "y", "max_tokens": 0}],
        model="claude-haiku-4-5",
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    text = "".join(capfd.readouterr())
    assert "request[0] (custom_id 'bad id'): custom_id must be 1-64 characters" in text
    assert "request[1] (custom_id 'ok'): 'max_tokens' must be an integer of at least 1, got 0" in text
    assert claude_emulator.state()["create_calls"] == 0


def test_requests_from_a_jsonl_file_and_from_an_upstream_xcom(claude_emulator, tmp_path):
    from airflow.sdk import DAG, task

    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(json.dumps({"custom_id": f"f{i}", "prompt": f"p{i}"}) for i in range(4)) + "\n")
    with DAG("core_sources", schedule=None, start_date=START, catchup=False) as dag:

        @task
        def build() -> list[dict]:
            return [{"custom_id": f"x{i}", "prompt": f"q{i}"} for i in range(3)]

        ClaudeBatchOperator(
            task_id="from_file",
            requests=f"file://{source}",
            model="claude-haiku-4-5",
            results_uri=f"file://{tmp_path}/file",
            min_poll_interval=0.05,
            max_poll_interval=0.2,
        )
        ClaudeBatchOperator(
            task_id="from_xcom",
            requests=build(),
            model="claude-haiku-4-5",
            results_uri=f"file://{tmp_path}/xcom",
            min_poll_interval=0.05,
            max_poll_interval=0.2,
        )
    outcome = run_dag(dag)
    assert outcome.task_states == {"build": "success", "from_file": "success", "from_xcom": "success"}
    assert sorted(r["custom_id"] for r in read_rows(f"file://{tmp_path}/file/results.jsonl")) == [
        "f0",
        "f1",
        "f2",
        "f3",
    ]
    assert sorted(r["custom_id"] for r in read_rows(f"file://{tmp_path}/xcom/results.jsonl")) == ["x0", "x1", "x2"]


def test_missing_jsonl_file_is_a_clear_error(claude_emulator, tmp_path, capfd):
    dag = make_dag("core_missing_file", requests=f"file://{tmp_path}/nope.jsonl", model="claude-haiku-4-5")
    assert run_dag(dag).task_states == {"batch": "failed"}
    assert "is read as the URI of a JSONL file, but there is no such file" in "".join(capfd.readouterr())
    assert claude_emulator.state()["create_calls"] == 0


def test_templated_fields_render(claude_emulator, tmp_path):
    dag = make_dag(
        "core_templates",
        requests=["Report for {{ ds }}"],
        model="{{ 'claude-' + 'haiku-4-5' }}",
        results_uri=f"file://{tmp_path}/{{{{ ds_nodash }}}}",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    rendered = outcome.rendered["batch"]
    assert rendered["model"] == "claude-haiku-4-5"
    assert "Report for 20" in json.dumps(rendered["requests"])
    assert Path(rendered["results_uri"].removeprefix("file://"), "results.jsonl").exists()


def test_default_results_folder_is_under_airflow_home(claude_emulator, airflow_home):
    dag = make_dag("core_default_folder", requests=["a"], model="claude-haiku-4-5")
    outcome = run_dag(dag)
    uri = outcome.xcom("batch")["results_uri"]
    assert uri.startswith(f"file://{airflow_home}/claude_batch_results/core_default_folder/")
    assert uri.endswith("/batch/results.jsonl")
    assert len(read_rows(uri)) == 1


def test_the_api_key_never_leaks(claude_emulator, tmp_path, capfd, caplog):
    claude_emulator.configure(outcomes=[{"match": "^bad-", "result": "errored"}])
    dag = make_dag(
        "core_secrets",
        requests=[{"custom_id": "bad-1", "prompt": "x"}, "fine"],
        model="claude-haiku-4-5",
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    captured = "".join(capfd.readouterr()) + caplog.text
    assert "did not succeed" in captured  # the failure was logged...
    assert TEST_API_KEY not in captured  # ...without the key
    assert TEST_API_KEY not in repr(outcome.xcoms)
    assert TEST_API_KEY not in json.dumps(outcome.rendered, default=str)
    for path in Path(tmp_path, "out").iterdir():
        assert TEST_API_KEY not in path.read_text()
