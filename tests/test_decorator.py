"""``@task.claude_batch``: registered through provider info, mapped with ``.expand()``, resumable."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_support import run_dag

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
