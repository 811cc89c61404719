"""Batch with a synchronous rescue, end to end: real Airflow (``dag.test()``), the real SDK, the emulator over HTTP.

Requests complete in the emulator at ``processing_seconds * completion_fraction(custom_id)``, so
the tests pick custom ids that finish early (inside the batch, before the rescue point) and late
(after it), and know which route must produce each row.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from airflow_support import run_dag
from support import ids_completing

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.pricing import TokenUsage, price_for

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")

START = datetime(2026, 1, 1)
MODEL = "claude-sonnet-4-6"  # $3/$15 a million tokens: one token more or less shows in the sixth decimal
MESSAGES = r"^/v1/messages$"


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def rescue_dag(dag_id: str, requests: list[str], folder: Path, **kwargs):
    from airflow.sdk import DAG

    arguments = {
        "model": MODEL,
        "max_tokens": 64,
        "min_poll_interval": 0.05,
        "max_poll_interval": 0.2,
        "results_uri": f"file://{folder}",
        "rescue": "sync",
        "rescue_max_concurrency": 4,
        "rescue_seconds_per_request": 1,
        **kwargs,
    }
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(
            task_id="batch",
            requests=[{"custom_id": custom_id, "prompt": f"Summarise {custom_id}"} for custom_id in requests],
            **arguments,
        )
    return dag


def priced(rows: list[dict], route: str) -> Decimal:
    """What ``rows`` cost at ``route``'s price, from their own usage and the price table."""
    price = price_for(MODEL) if route == "sync" else price_for(MODEL).at_batch_rate()
    return sum((price.cost(TokenUsage(**row["usage"])) for row in rows), Decimal(0))


def test_a_batch_that_ends_in_time_is_not_rescued(claude_emulator, tmp_path):
    claude_emulator.configure(processing_seconds=0.5)
    requests = [f"doc-{n}" for n in range(6)]
    outcome = run_dag(rescue_dag("rescue_not_needed", requests, tmp_path, deadline=60, rescue_lead=20))

    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    assert state["create_calls"] == 1 and state["messages_calls"] == 0
    assert state["batches"][0]["cancel_initiated_at"] is None
    rows = rows_of(tmp_path)
    assert sorted(row["custom_id"] for row in rows) == sorted(requests)
    assert {row["route"] for row in rows} == {"batch"}
    manifest = outcome.xcom("batch")
    assert manifest["rescue"]["rescued"] is False
    assert list(manifest["billing"]["by_route"]) == ["batch"]
    assert manifest["billing"]["billed_usd"] == manifest["cost"]["batch_usd"]


def test_a_batch_past_the_rescue_point_is_cancelled_and_finished_synchronously_before_the_deadline(
    claude_emulator, tmp_path, capfd
):
    # A minute-long batch, rescued 10 s in: the early requests finish in the batch, the late ones do not.
    claude_emulator.configure(processing_seconds=60)
    early, late = ids_completing(below=0.03), ids_completing(above=0.5, count=6)
    outcome = run_dag(rescue_dag("rescue_runs", early + late, tmp_path, deadline=40, rescue_lead=30))

    assert outcome.task_states == {"batch": "success"}
    state = claude_emulator.state()
    [batch] = state["batches"]
    assert state["create_calls"] == 1 and batch["cancel_initiated_at"] is not None
    rows = rows_of(tmp_path)
    assert Counter(row["custom_id"] for row in rows) == Counter(early + late)  # every request exactly once
    by_id = {row["custom_id"]: row for row in rows}
    assert all(by_id[c]["route"] == "batch" and by_id[c]["batch_id"] == batch["id"] for c in early)
    assert all(by_id[c]["route"] == "sync" and by_id[c]["batch_id"] == "" for c in late)
    assert {row["status"] for row in rows} == {"succeeded"}
    # Only what the batch did not finish went to the Messages API: nothing that landed was sent again.
    assert state["messages_calls"] == len(late)

    manifest = outcome.xcom("batch")
    record = json.loads((tmp_path / "submission.json").read_text())
    assert manifest["landed_at"] < record["deadline_at"]
    rescue = manifest["rescue"]
    assert rescue["rescued"] and rescue["reason"] == "not_ended"
    assert rescue["canceled_batch_ids"] == [batch["id"]] and rescue["requests_sent"] == len(late)

    # Reported cost: the batch price of the rows the batch finished plus the sync price of the rest, to the token.
    batch_rows = [row for row in rows if row["route"] == "batch"]
    sync_rows = [row for row in rows if row["route"] == "sync"]
    billing = manifest["billing"]
    for route, route_rows in (("batch", batch_rows), ("sync", sync_rows)):
        usage = billing["by_route"][route]["usage_by_model"][MODEL]
        assert billing["by_route"][route]["rows"] == len(route_rows)
        for kind in ("input_tokens", "output_tokens"):
            assert usage[kind] == sum(row["usage"][kind] for row in route_rows)
        assert Decimal(str(billing["by_route"][route]["usd"])) == round(priced(route_rows, route), 6)
    billed = priced(batch_rows, "batch") + priced(sync_rows, "sync")
    assert Decimal(str(billing["billed_usd"])) == round(billed, 6)
    assert Decimal(str(billing["saved_usd"])) == round(priced(rows, "sync") - billed, 6)
    assert "billed: batch $" in "".join(capfd.readouterr())


def test_a_rescue_meeting_transient_faults_still_lands_every_row_once(claude_emulator, tmp_path):
    # One at a time, so the first rescued request meets three overloaded answers in a row: the SDK's two
    # retries are spent, the row errors transiently, and a second pass sends that one request again.
    claude_emulator.configure(
        processing_seconds=60,
        faults=[{"method": "POST", "path": MESSAGES, "status": 529, "count": 3, "retry_after": 0}],
    )
    early, late = ids_completing(below=0.03, count=2), ids_completing(above=0.5, count=4)
    dag = rescue_dag("rescue_faults", early + late, tmp_path, deadline=40, rescue_lead=30, rescue_max_concurrency=1)
    outcome = run_dag(dag)

    assert outcome.task_states == {"batch": "success"}
    rows = rows_of(tmp_path)
    assert Counter(row["custom_id"] for row in rows) == Counter(early + late)
    assert {row["status"] for row in rows} == {"succeeded"}
    assert {row["custom_id"] for row in rows if row["route"] == "sync"} == set(late)
    state = claude_emulator.state()
    assert state["faults_injected"] == 3
    assert state["messages_calls"] == len(late) + 3  # each late request answered once, plus the three faults
    passes = outcome.xcom("batch")["rescue"]["passes"]
    assert [(item["number"], item["request_count"]) for item in passes] == [(1, len(late)), (2, 1)]


def test_a_rescue_the_deadline_cuts_off_fails_loudly_with_one_row_per_request(claude_emulator, tmp_path, capfd):
    # The Messages API answers only after 60 s: the rescue stops sending at the deadline and fails.
    claude_emulator.configure(
        processing_seconds=60,
        faults=[{"method": "POST", "path": MESSAGES, "status": 529, "delay_seconds": 60}],
    )
    early, late = ids_completing(below=0.03, count=2), ids_completing(above=0.5, count=3)
    outcome = run_dag(rescue_dag("rescue_cut_off", early + late, tmp_path, deadline=12, rescue_lead=6))

    assert outcome.task_states == {"batch": "failed"}
    rows = rows_of(tmp_path)
    assert Counter(row["custom_id"] for row in rows) == Counter(early + late)
    assert {row["custom_id"]: row["status"] for row in rows} == {
        **dict.fromkeys(early, "succeeded"),
        **dict.fromkeys(late, "canceled"),
    }
    text = "".join(capfd.readouterr())
    assert "The rescue ran out of time" in text and "cut off 3 request(s)" in text
    assert "3 of 5 requests did not succeed (canceled 3)" in text
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["rescue"]["unanswered"] == 3


def test_a_cancel_that_does_not_end_in_time_is_left_and_every_request_sent(claude_emulator, tmp_path, capfd):
    # The cancelled batch stays "canceling" for a minute: the rescue stops waiting while the whole input still
    # fits before the deadline (5 requests at 4 at a time, 3 s each: 6 s), and sends every request.
    claude_emulator.configure(processing_seconds=60, cancel_seconds=60)
    requests = ids_completing(above=0.5, count=5)
    dag = rescue_dag("rescue_abandon", requests, tmp_path, deadline=20, rescue_lead=12, rescue_seconds_per_request=3)
    outcome = run_dag(dag)

    assert outcome.task_states == {"batch": "success"}
    rows = rows_of(tmp_path)
    assert sorted(row["custom_id"] for row in rows) == sorted(requests)
    assert {(row["route"], row["status"]) for row in rows} == {("sync", "succeeded")}
    [batch] = claude_emulator.state()["batches"]
    assert outcome.xcom("batch")["rescue"]["abandoned_batch_ids"] == [batch["id"]]
    assert "had not ended by" in "".join(capfd.readouterr())


def test_an_input_the_rescue_cannot_finish_is_refused_at_run_time_with_the_numbers(claude_emulator, tmp_path, capfd):
    # Read only at run time (a file), so the policy could not count them: 40 requests, 2 at a time at 10 s
    # each, need 3 minutes and 20 seconds, more than the lead of one minute.
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(f'{{"custom_id": "q{n}", "prompt": "Classify {n}"}}\n' for n in range(40)))
    from airflow.sdk import DAG

    with DAG("rescue_refused", schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(
            task_id="batch",
            requests=f"file://{source}",
            model=MODEL,
            results_uri=f"file://{tmp_path}/out",
            deadline=timedelta(hours=6),
            rescue="sync",
            rescue_lead=timedelta(minutes=1),
            rescue_max_concurrency=2,
            rescue_seconds_per_request=10,
        )
    outcome = run_dag(dag)

    assert outcome.task_states == {"batch": "failed"}
    assert claude_emulator.state()["create_calls"] == 0
    text = "".join(capfd.readouterr())
    assert "40 requests, 2 at a time at about 10 seconds each, take about 3 minutes and 20 seconds" in text
    assert "raise rescue_lead to at least 3 minutes and 20 seconds" in text
    assert "rescue_max_concurrency to at least 7" in text and "Nothing was submitted." in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rescue": "sync", "rescue_lead": 60}, "rescue='sync' keeps a deadline, and this task has none"),
        ({"rescue": "sync", "deadline": 600}, "rescue='sync' needs rescue_lead"),
        ({"rescue": "sync", "deadline": 600, "rescue_lead": 600}, "must be shorter than the deadline"),
        ({"rescue": "batch", "deadline": 600, "rescue_lead": 60}, "rescue must be one of 'sync'"),
        ({"deadline": 600, "rescue_lead": 60}, "rescue_lead is set but rescue is not"),
        (
            {"rescue": "sync", "deadline": 600, "rescue_lead": 60, "wait_for_completion": False},
            "needs wait_for_completion=True",
        ),
        ({"rescue": "sync", "deadline": 600, "rescue_lead": 60, "rescue_max_concurrency": 0}, "at least 1"),
    ],
)
def test_rescue_arguments_are_checked_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        ClaudeBatchOperator(task_id="t", requests=["a"], **kwargs)


def test_failures_with_no_time_for_a_batch_round_before_the_rescue_point_go_to_the_rescue(claude_emulator, tmp_path):
    # The batch ends at once with two overloaded requests; a follow-up batch round needs an hour, and the
    # rescue point is seconds away: the two are sent synchronously instead of being reported.
    claude_emulator.configure(
        processing_seconds=0.3,
        outcomes=[{"match": "^doc-[01]$", "result": "errored", "error_type": "overloaded_error", "times": 1}],
    )
    requests = [f"doc-{n}" for n in range(5)]
    dag = rescue_dag("rescue_failures", requests, tmp_path, deadline=120, rescue_lead=60, min_round_window=3600)
    outcome = run_dag(dag)

    assert outcome.task_states == {"batch": "success"}
    routes = {row["custom_id"]: (row["route"], row["status"]) for row in rows_of(tmp_path)}
    assert routes == {
        **{f"doc-{n}": ("sync", "succeeded") for n in (0, 1)},
        **{f"doc-{n}": ("batch", "succeeded") for n in (2, 3, 4)},
    }
    state = claude_emulator.state()
    assert state["create_calls"] == 1 and state["messages_calls"] == 2
    assert state["batches"][0]["cancel_initiated_at"] is None  # it had ended: nothing to cancel
    assert outcome.xcom("batch")["rescue"]["reason"] == "transient"
