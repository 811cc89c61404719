"""``@task.claude_batch``: registered through provider info, mapped with ``.expand()``, resumable."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_support import run_dag
from support import ids_completing

pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")


def rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


def test_the_decorator_is_available_as_task_claude_batch():
    from airflow.sdk import task

    assert callable(task.claude_batch)


def test_function_returns_the_requests_and_maps_over_teams(claude_emulator, airflow_home):
    from airflow.sdk import DAG, task

    with DAG("deco_mapped", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task
        def teams() -> list[str]:
            return ["billing", "search"]

        @task.claude_batch(model="claude-haiku-4-5", max_tokens=64, min_poll_interval=0.05, max_poll_interval=0.2)
        def weekly_summary(team: str, ds: str | None = None) -> list[dict]:
            return [{"custom_id": f"{team}-{i}", "prompt": f"Summarise {team} incident {i} of {ds}"} for i in range(3)]

        weekly_summary.expand(team=teams())

    outcome = run_dag(dag)
    assert outcome.task_states == {"teams": "success", "weekly_summary[0]": "success", "weekly_summary[1]": "success"}
    assert claude_emulator.state()["batch_count"] == 2
    # Each mapped instance lands in its own folder (map_0, map_1) of the default results location.
    results = sorted(
        (airflow_home / "claude_batch_results" / "deco_mapped").glob("*/weekly_summary/map_*/results.jsonl")
    )
    assert [path.parent.name for path in results] == ["map_0", "map_1"]
    landed = sorted(row["custom_id"] for path in results for row in rows(str(path)))
    assert landed == [f"{team}-{i}" for team in ("billing", "search") for i in range(3)]


def test_the_function_is_called_again_for_a_follow_up_round(claude_emulator, tmp_path):
    from airflow.sdk import DAG, task

    claude_emulator.configure(outcomes=[{"match": "^flaky", "result": "expired", "times": 1}])
    with DAG("deco_rounds", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task.claude_batch(
            model="claude-haiku-4-5", results_uri=f"file://{tmp_path}", min_poll_interval=0.05, max_poll_interval=0.2
        )
        def requests() -> list[dict]:
            return [{"custom_id": "flaky-1", "prompt": "a"}, {"custom_id": "steady-1", "prompt": "b"}]

        requests()

    outcome = run_dag(dag)
    assert outcome.task_states == {"requests": "success"}
    assert {row["custom_id"]: row["status"] for row in rows(f"file://{tmp_path}/results.jsonl")} == {
        "flaky-1": "succeeded",
        "steady-1": "succeeded",
    }
    assert len(outcome.xcom("requests")["rounds"]) == 2


def test_a_function_that_returns_nothing_is_a_clear_error(claude_emulator, capfd):
    from airflow.sdk import DAG, task

    with DAG("deco_none", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task.claude_batch(model="claude-haiku-4-5")
        def forgot_to_return() -> None:
            pass

        forgot_to_return()

    assert run_dag(dag).task_states == {"forgot_to_return": "failed"}
    assert "forgot_to_return() must return the requests" in "".join(capfd.readouterr())
    assert claude_emulator.state()["create_calls"] == 0


def test_a_decorated_batch_past_its_rescue_point_is_finished_synchronously(claude_emulator, tmp_path):
    from airflow.sdk import DAG, task

    claude_emulator.configure(processing_seconds=60)
    early, late = ids_completing(below=0.03, count=2), ids_completing(above=0.5, count=3)
    with DAG("deco_rescue", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task.claude_batch(
            model="claude-haiku-4-5",
            results_uri=f"file://{tmp_path}",
            min_poll_interval=0.05,
            max_poll_interval=0.2,
            deadline=40,
            rescue="sync",
            rescue_lead=30,
            rescue_seconds_per_request=1,
        )
        def requests() -> list[dict]:
            return [{"custom_id": custom_id, "prompt": f"Summarise {custom_id}"} for custom_id in early + late]

        requests()

    outcome = run_dag(dag)
    assert outcome.task_states == {"requests": "success"}
    # The function ran again in the resumed task: its requests are what the rescue sent.
    routes = {row["custom_id"]: row["route"] for row in rows(f"file://{tmp_path}/results.jsonl")}
    assert routes == {**dict.fromkeys(early, "batch"), **dict.fromkeys(late, "sync")}
    assert claude_emulator.state()["messages_calls"] == len(late)


def test_a_decorated_input_too_large_for_its_rescue_is_refused_before_any_create(claude_emulator, capfd):
    from airflow.sdk import DAG, task

    with DAG("deco_rescue_refused", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:

        @task.claude_batch(
            model="claude-haiku-4-5", deadline=3600, rescue="sync", rescue_lead=60, rescue_max_concurrency=1
        )
        def requests() -> list[str]:
            return [f"Classify item {n}" for n in range(5)]

        requests()

    assert run_dag(dag).task_states == {"requests": "failed"}
    assert claude_emulator.state()["create_calls"] == 0
    text = "".join(capfd.readouterr())
    assert "5 requests, 1 at a time at about 30 seconds each, take about 2 minutes and 30 seconds" in text
