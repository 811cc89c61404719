"""``claude-batch check``: a DAG folder's every problem, offline, with a cost quote; exit 1 on any problem."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime

import pytest
from airflow_support import run_dag
from support import REPO_ROOT

from airflow_provider_claude_batch.cli import main

HEADER = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator
"""


def dag_file(folder, name, body):
    (folder / f"{name}.py").write_text(HEADER + textwrap.dedent(body))


def run_one(dag_id, tmp_path, **kwargs):
    """Run one ClaudeBatchOperator task against the emulator; its manifest."""
    from airflow.sdk import DAG

    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ClaudeBatchOperator(
            task_id="t", min_poll_interval=0.05, max_poll_interval=0.2, results_uri=f"file://{tmp_path}/out", **kwargs
        )
    return run_dag(dag).xcom("t")


def test_the_example_dags_pass(capsys):
    assert main(["check", str(REPO_ROOT / "dags_examples")]) == 0
    out = capsys.readouterr().out
    assert "No problems found." in out
    assert "nightly_test_generation.generate_tests (ClaudeBatchOperator, batch)" in out


def test_a_folder_of_broken_dags_lists_each_problem_and_exits_1(tmp_path, capsys, claude_emulator):
    dag_file(
        tmp_path,
        "bad_poll",
        """
        with DAG("bad_poll", schedule=None):
            ClaudeBatchOperator(task_id="t", requests=["x"], min_poll_interval=0)
        """,
    )
    dag_file(
        tmp_path,
        "bad_folder",
        """
        with DAG("bad_folder", schedule=None):
            ClaudeBatchOperator(task_id="t", requests=["x"], results_uri="nosuchscheme://bucket/out/")
        """,
    )
    dag_file(
        tmp_path,
        "bad_requests",
        """
        with DAG("bad_requests", schedule=None):
            ClaudeBatchOperator(
                task_id="t",
                model="claude-sonnet-4-6",
                requests=[
                    {"custom_id": "typo", "prompt": "x", "temprature": 0.2},
                    {"custom_id": "sys", "messages": [{"role": "system", "content": "Be terse."}]},
                ],
            )
        """,
    )
    dag_file(
        tmp_path,
        "decorated",
        """
        from airflow.sdk import task

        with DAG("decorated", schedule=None):
            @task.claude_batch(model="claude-sonnet-4-6", max_tokens=64)
            def later():
                return ["x"]

            later()
        """,
    )
    dag_file(
        tmp_path,
        "decorated_bad",
        """
        from airflow.sdk import task

        with DAG("decorated_bad", schedule=None):
            @task.claude_batch(model="claude-sonnet-4-6", max_poll_interval=1, min_poll_interval=5)
            def bad():
                return ["x"]

            bad()
        """,
    )
    dag_file(
        tmp_path,
        "refused",
        """
        with DAG("refused", schedule=None):
            ClaudeBatchOperator(task_id="t", requests=["x"], blocking=True)
        """,
    )
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": f"Summarise report {i}"}) for i in range(10)) + "\n")
    dag_file(
        tmp_path,
        "good",
        f"""
        with DAG("good", schedule=None):
            ClaudeBatchOperator(task_id="batch", requests="file://{jsonl}", model="claude-sonnet-4-6", max_tokens=100)
            ClaudeMessageOperator(task_id="sync", requests=["a", "b"], model="claude-haiku-4-5", max_tokens=50)
        """,
    )
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad_poll.py: ValueError: min_poll_interval must be more than 0 seconds, got 0" in out
    assert "bad_folder.py: ValueError: results_uri 'nosuchscheme://bucket/out/': no filesystem" in out
    assert "bad_requests.t: request[0] (custom_id 'typo'): temprature: unknown parameter; did you mean" in out
    assert "bad_requests.t: request[1] (custom_id 'sys'): messages[0]: a conversation starts with a user turn" in out
    assert "refused.py:" in out and "belongs on the synchronous Messages API" in out
    assert "good.batch (ClaudeBatchOperator, batch): 10 request(s) checked; cost at most $" in out
    assert "good.sync (ClaudeMessageOperator, sync): 2 request(s) checked" in out
    assert "decorated.later (_ClaudeBatchDecoratedOperator, batch): requests are returned by the decorated" in out
    assert "decorated_bad.py: ValueError: max_poll_interval (1 s) must not be less than min_poll_interval (5 s)" in out
    assert "6 problem(s):" in out
    assert claude_emulator.state()["calls"] == {}


def test_the_quote_is_an_upper_bound_of_what_a_run_costs(tmp_path, claude_conn, airflow_db):
    from airflow_provider_claude_batch.dag_check import check_path

    requests = [f"Summarise ticket {i} in one sentence." for i in range(5)]
    dag_file(
        tmp_path,
        "quoted",
        f"""
        with DAG("quoted", schedule=None):
            ClaudeBatchOperator(task_id="t", requests={requests!r}, model="claude-sonnet-4-6", max_tokens=64)
        """,
    )
    [task] = check_path(tmp_path).tasks
    manifest = run_one("quoted_run", tmp_path, requests=requests, model="claude-sonnet-4-6", max_tokens=64)
    assert 0 < manifest["cost"]["batch_usd"] <= float(task.quote_usd)
    assert manifest["usage"]["input_tokens"] <= task.input_tokens_at_most


@pytest.mark.usefixtures("airflow_db")
def test_a_model_without_a_price_warns_instead_of_a_silent_zero(claude_conn, tmp_path, capfd):
    from airflow_provider_claude_batch.hooks import claude

    claude._model_catalogs.clear()
    manifest = run_one("unpriced", tmp_path, requests=["a"], model="claude-haiku-5-5", max_tokens=32)
    assert "NOT INCLUDED: the tokens of claude-haiku-5-5" in manifest["cost"]["warning"]
    out = capfd.readouterr().out
    assert "Model claude-haiku-5-5 has no price in the price table" in out
    assert "NOT INCLUDED: the tokens of claude-haiku-5-5" in out


def test_a_batch_with_rescue_is_shown_and_quoted_at_the_sync_price(tmp_path, capsys):
    requests = [f"Summarise ticket {i} in one sentence." for i in range(5)]
    plain = "deadline=timedelta(hours=30)"
    rescued = "deadline=timedelta(hours=4), rescue='sync', rescue_lead=timedelta(minutes=30)"
    for name, deadline in (("plain", plain), ("rescued", rescued)):
        dag_file(
            tmp_path,
            name,
            f"""
            with DAG("sla_{name}", schedule=None):
                ClaudeBatchOperator(
                    task_id="t", requests={requests!r}, model="claude-sonnet-4-6", max_tokens=64, {deadline}
                )
            """,
        )
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sla_rescued.t (ClaudeBatchOperator, batch with rescue): 5 request(s) checked" in out
    assert "5 requests, 8 at a time at about 30 seconds each, take about 30 seconds, within the rescue_lead" in out

    from airflow_provider_claude_batch.dag_check import check_path

    batched, rescued_task = sorted(check_path(tmp_path).tasks, key=lambda task: task.dag_id)
    assert batched.route == "batch" and rescued_task.route == "batch with rescue"
    assert rescued_task.quote_usd == 2 * batched.quote_usd  # every request may be rescued, at the full price


def test_the_check_says_when_shared_prefix_caching_pays_and_which_caps_refuse_every_run(tmp_path, capsys):
    guide = "Check every public function for a docstring, type hints and a test. " * 70  # ~1,200 tokens
    dag_file(
        tmp_path,
        "levers",
        f"""
        GUIDE = {guide!r}
        with DAG("levers", schedule=None):
            files = [f"Review file {{i}}.py" for i in range(20)]
            common = dict(requests=files, model="claude-sonnet-4-6", system=GUIDE)
            ClaudeBatchOperator(task_id="off", **common)
            ClaudeBatchOperator(task_id="on", cache_shared_prefix=True, **common)
            ClaudeBatchOperator(task_id="short", cache_shared_prefix=True, requests=["a", "b"], system="Be brief.")
            ClaudeBatchOperator(task_id="capped", max_cost_usd=0.01, max_tokens=4096, **common)
        """,
    )
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    tokens = -(-len(guide) // 4)
    # 19 reads save (1.5 - 0.15) per million each; the one 1-hour write costs (3 - 1.5) more than input
    best = tokens * (19 * 1.35 - 1.5) / 1_000_000
    assert (
        f"cache_shared_prefix=True would cache a prefix of about {tokens:,} tokens (through system) shared by 20 "
        f"claude-sonnet-4-6 requests; it saves up to ${best:,.4f} a run at batch prices when every later request "
        "reads the cache, and pays once more than 53% do (hits in a batch are best effort)." in out
    )
    assert "cache_shared_prefix: claude-sonnet-4-6: a 1-hour cache breakpoint after system" in out
    assert "placed in 20 of 20 request(s)" in out
    assert (
        "cache_shared_prefix=True places nothing for claude-sonnet-4-6: the prefix they share (through system) is about"
        in out
    )
    assert "levers.capped: max_cost_usd=0.01 refuses every run: max_tokens alone may cost $0.6144" in out
    assert "1 problem(s):" in out
