"""A fleet within the workspace's Batch API limits, against the emulator with its limits on, through the real SDK.

The emulator enforces one rolling requests-per-minute limit across every batch endpoint, a cap on the
requests in the processing queue, and a propagation delay during which a new batch answers 404.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import anthropic
import pytest
from airflow_support import run_dag
from support import TEST_API_KEY, claude_connection_uri, custom_id_counts

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger

pytestmark = pytest.mark.usefixtures("airflow_db")

START = datetime(2026, 1, 1)


def connect(monkeypatch, emulator, **extra) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(emulator.url, **extra))


def create_batches(emulator, count: int) -> list[str]:
    client = anthropic.Anthropic(api_key=TEST_API_KEY, base_url=emulator.url)
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return [
        client.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params}]).id for i in range(count)
    ]


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_three_hundred_triggers_in_one_loop_end_under_a_sixty_per_minute_limit_with_no_429(
    claude_emulator, monkeypatch
):
    claude_emulator.configure(processing_seconds=4)
    ids = create_batches(claude_emulator, 300)  # submitted before the limit is switched on
    claude_emulator.configure(rate_limit_rpm=60)
    connect(monkeypatch, claude_emulator, batch_requests_per_minute=50)
    end_time = time.time() + 120

    async def first_event(trigger: ClaudeBatchTrigger) -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    async def fleet() -> list[dict]:
        triggers = [
            ClaudeBatchTrigger([bid], end_time=end_time, min_poll_interval=1.0, max_poll_interval=5.0) for bid in ids
        ]
        return await asyncio.gather(*(first_event(trigger) for trigger in triggers))

    payloads = asyncio.run(fleet())
    assert Counter(payload["status"] for payload in payloads) == {"ended": 300}
    state = claude_emulator.state()
    assert state["rate_limited"] == 0
    # Status came from list pages: one call a cycle for all three hundred, never one per batch.
    assert state["calls"].get("GET /v1/messages/batches/{message_batch_id}", 0) == 0
    assert state["calls"]["GET /v1/messages/batches"] <= max(payload["polls"] for payload in payloads) + 1


def batch_dag(dag_id: str, requests, tmp_path: Path, **kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(
            task_id="batch",
            requests=requests,
            model="claude-haiku-4-5",
            max_tokens=16,
            min_poll_interval=0.2,
            max_poll_interval=1.0,
            results_uri=f"file://{tmp_path}",
            **kwargs,
        )
    return dag


def test_a_batch_answering_404_for_its_first_seconds_lands_normally(claude_emulator, monkeypatch, tmp_path, capfd):
    # anthropic-sdk-python#1432: seconds after a successful create, retrieve and results answer 404.
    claude_emulator.configure(processing_seconds=0.5, propagation_delay_seconds=4)
    connect(monkeypatch, claude_emulator, not_found_grace_seconds=60)
    outcome = run_dag(batch_dag("fleet_404", ["a", "b", "c"], tmp_path))
    assert outcome.task_states == {"batch": "success"}
    rows = rows_of(tmp_path)
    assert len({row["custom_id"] for row in rows}) == 3
    assert {row["status"] for row in rows} == {"succeeded"}
    state = claude_emulator.state()
    assert state["batch_count"] == 1
    assert "answer 404 moments after its creation" in "".join(capfd.readouterr())


def test_a_three_part_submission_meeting_a_full_queue_completes_with_exactly_three_batches(
    claude_emulator, monkeypatch, tmp_path, capfd
):
    # 250,000 requests are three batches; the queue holds 200,000, so the third create is refused
    # until the first batch ends. The task waits (deferred) instead of failing, and creates nothing twice.
    claude_emulator.configure(processing_seconds=15, max_queued_requests=200_000)
    connect(monkeypatch, claude_emulator)
    source = tmp_path / "requests.jsonl"
    with source.open("w") as out:
        for i in range(250_000):
            out.write(json.dumps({"custom_id": f"q{i}", "prompt": f"p{i}"}) + "\n")
    outcome = run_dag(batch_dag("fleet_queue", f"file://{source}", tmp_path / "out"))
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["batch_count"] == 3
    assert state["queue_refused"] >= 1
    assert sorted(batch["request_count"] for batch in state["batches"]) == [50_000, 100_000, 100_000]
    ids = custom_id_counts(tmp_path / "out" / "results.jsonl")
    assert len(ids) == 250_000 and set(ids.values()) == {1}
    assert "processing queue is full" in "".join(capfd.readouterr())


def test_max_queued_requests_keeps_headroom_in_the_queue(claude_emulator, monkeypatch, tmp_path, capfd):
    # The connection keeps at most 4 requests queued: 10 requests go as 4 + 4 + 2, one part at a time.
    claude_emulator.configure(processing_seconds=1, max_queued_requests=4)
    connect(monkeypatch, claude_emulator, max_queued_requests=4)
    requests = [{"custom_id": f"h{i}", "prompt": f"p{i}"} for i in range(10)]
    outcome = run_dag(batch_dag("fleet_headroom", requests, tmp_path))
    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["queue_refused"] == 0  # our own check kept the queue under the cap: the API never refused
    assert sorted(batch["request_count"] for batch in state["batches"]) == [2, 4, 4]
    assert sorted(row["custom_id"] for row in rows_of(tmp_path)) == sorted(r["custom_id"] for r in requests)
    assert "would pass the connection's max_queued_requests=4" in "".join(capfd.readouterr())
