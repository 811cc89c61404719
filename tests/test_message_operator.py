"""ClaudeMessageOperator: the synchronous route, through real Airflow and the real SDK against the emulator."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator, send_messages
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests
from airflow_provider_claude_batch.results import ResultRow

START = datetime(2026, 1, 1)
REQUESTS = [{"custom_id": f"q-{i}", "prompt": f"Review change {i}"} for i in range(6)]


def read_rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


def make_dag(dag_id: str, operator: type = ClaudeMessageOperator, **kwargs):
    from airflow.sdk import DAG

    if operator is ClaudeBatchOperator:
        kwargs.update(min_poll_interval=0.05, max_poll_interval=0.2)
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        operator(task_id="claude", **kwargs)
    return dag


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_lands_the_same_rows_and_manifest_as_the_batch_route(claude_emulator, tmp_path):
    common = {"requests": REQUESTS, "model": "claude-haiku-4-5", "max_tokens": 64}
    sync = run_dag(make_dag("sync_rows", results_uri=f"file://{tmp_path}/sync", max_concurrency=3, **common))
    batch = run_dag(make_dag("batch_rows", ClaudeBatchOperator, results_uri=f"file://{tmp_path}/batch", **common))

    assert sync.task_states == batch.task_states == {"claude": "success"}
    state = claude_emulator.state()
    assert state["messages_calls"] == 6 and state["create_calls"] == 1  # one batch, six messages

    sync_manifest, batch_manifest = sync.xcom("claude"), batch.xcom("claude")
    assert sync_manifest["route"] == "sync" and batch_manifest["route"] == "batch"
    assert set(sync_manifest) - {"max_concurrency"} == set(batch_manifest)  # the same manifest keys
    assert (
        sync_manifest["counts"]
        == batch_manifest["counts"]
        == {
            "succeeded": 6,
            "errored": 0,
            "expired": 0,
            "canceled": 0,
            "invalid_output": 0,
        }
    )
    assert sync_manifest["batch_ids"] == [] and sync_manifest["batch_id"] is None
    assert sync_manifest["usage_by_model"]["claude-haiku-4-5"]["output_tokens"] > 0
    # Billed at the sync price: the cost block is the same, the route says which column was paid.
    assert sync_manifest["cost"]["sync_usd"] == pytest.approx(2 * sync_manifest["cost"]["batch_usd"])
    assert sync_manifest["billing"]["billed_usd"] == sync_manifest["cost"]["sync_usd"]
    assert batch_manifest["billing"]["billed_usd"] == batch_manifest["cost"]["batch_usd"]
    assert json.loads(Path(tmp_path, "sync", "manifest.json").read_text())["route"] == "sync"

    sync_rows = {row["custom_id"]: row for row in read_rows(sync_manifest["results_uri"])}
    batch_rows = {row["custom_id"]: row for row in read_rows(batch_manifest["results_uri"])}
    assert sorted(sync_rows) == sorted(batch_rows) == [r["custom_id"] for r in REQUESTS]
    for custom_id, row in sync_rows.items():
        assert list(row) == list(batch_rows[custom_id])  # the same keys in the same order
        assert row["status"] == "succeeded" and row["batch_id"] == ""
        assert row["route"] == "sync" and batch_rows[custom_id]["route"] == "batch"  # which API produced each row
        assert row["text"] and row["model"] == "claude-haiku-4-5" and row["usage"]["input_tokens"] > 0
    # No temporary file is left next to the published results.
    assert sorted(p.name for p in Path(tmp_path, "sync").iterdir()) == ["manifest.json", "results.jsonl"]


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_an_api_error_becomes_an_errored_row_and_the_failure_policy_applies(claude_emulator, tmp_path, capfd):
    # A 400 is an answer, not a transient failure: the SDK does not retry it.
    claude_emulator.configure(faults=[{"method": "POST", "path": "/v1/messages", "status": 400, "count": 1}])
    dag = make_dag(
        "sync_errors",
        requests=["only one"],
        model="claude-haiku-4-5",
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"claude": "failed"}
    text = "".join(capfd.readouterr())
    assert "1 of 1 requests did not succeed (errored 1), more than max_failed_fraction=0 allows" in text
    [row] = read_rows(f"file://{tmp_path}/out/results.jsonl")
    assert row["status"] == "errored"
    assert row["error"]["type"] == "invalid_request_error"
    assert "Emulated fault: HTTP 400" in row["error"]["message"]
    manifest = json.loads(Path(tmp_path, "out", "manifest.json").read_text())
    assert manifest["route"] == "sync" and manifest["error_types"] == {"invalid_request_error": 1}


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_sdk_retries_transient_errors_and_partial_failures_within_the_fraction_pass(claude_emulator, tmp_path):
    claude_emulator.configure(
        faults=[
            {"method": "POST", "path": "/v1/messages", "status": 529, "count": 1, "retry_after": 0},
            {"method": "POST", "path": "/v1/messages", "status": 400, "count": 1, "message": "bad one"},
        ]
    )
    dag = make_dag(
        "sync_partial",
        requests=["a", "b", "c", "d"],
        model="claude-haiku-4-5",
        max_concurrency=1,  # one at a time, so the faults hit in order
        results_uri=f"file://{tmp_path}/out",
        max_failed_fraction=0.25,
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"claude": "success"}
    assert outcome.xcom("claude")["counts"]["succeeded"] == 3
    assert outcome.xcom("claude")["counts"]["errored"] == 1
    assert claude_emulator.state()["messages_calls"] == 5  # the 529 was retried by the SDK


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_streaming_and_request_params_the_sdk_does_not_name(claude_emulator, tmp_path):
    dag = make_dag(
        "sync_stream",
        requests=[{"custom_id": "s", "prompt": "stream me", "stream": True}, {"custom_id": "p", "prompt": "plain"}],
        model="claude-haiku-4-5",
        request_params={"temperature": 0.2},
        results_uri=f"file://{tmp_path}/out",
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"claude": "success"}
    rows = {row["custom_id"]: row for row in read_rows(f"file://{tmp_path}/out/results.jsonl")}
    assert rows["s"]["status"] == rows["p"]["status"] == "succeeded"
    assert rows["s"]["text"] and rows["s"]["usage"]["output_tokens"] > 0


def test_no_more_than_max_concurrency_requests_are_in_flight():
    prepared = prepare_requests([f"prompt {i}" for i in range(40)], RequestDefaults(model="m", max_tokens=8))
    in_flight = peak = 0
    rows: list[ResultRow] = []

    async def slow_send(params):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return _message(params)

    asyncio.run(send_messages(prepared, slow_send, rows.append, max_concurrency=5))
    assert peak == 5
    assert sorted(row.custom_id for row in rows) == sorted(prepared.custom_ids)
    assert {row.status for row in rows} == {"succeeded"}


def test_an_unexpected_error_stops_sending_and_propagates():
    prepared = prepare_requests([f"prompt {i}" for i in range(50)], RequestDefaults(model="m", max_tokens=8))
    sent = 0

    async def broken_send(params):
        nonlocal sent
        sent += 1
        await asyncio.sleep(0)
        raise RuntimeError("bug in the sender")

    with pytest.raises(RuntimeError, match="bug in the sender"):
        asyncio.run(send_messages(prepared, broken_send, lambda row: None, max_concurrency=4))
    assert sent < 50


def test_max_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="max_concurrency must be a whole number of at least 1"):
        ClaudeMessageOperator(task_id="t", requests=["x"], max_concurrency=0)


def _message(params):
    from anthropic.types import Message

    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
    )
