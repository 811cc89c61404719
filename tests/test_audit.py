"""``claude-batch audit``: the console command on a folder of real DAG files, both output formats.

Expected figures are computed here from the price table, independently of the audit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_provider_claude_batch.pricing import BATCH_DISCOUNT, price_for

CLI = str(Path(sys.executable).parent / "claude-batch")

DAGS = {
    # Nobody waits, runs nightly: batch is right. Priced from two past runs' manifests.
    "nightly.py": """
        with DAG("nightly_summaries", schedule="0 2 * * *", start_date=START, catchup=False):
            ClaudeBatchOperator(
                task_id="summarise",
                requests=["Summarise yesterday"],
                usage_estimate={"model": "claude-haiku-4-5", "input_tokens": 1, "output_tokens": 1},
            )
    """,
    # A developer waits on it: batching it is a violation (the policy would refuse it when enforced).
    "pre_merge.py": """
        with DAG("pre_merge_review", schedule=None, start_date=START, catchup=False):
            ClaudeBatchOperator(
                task_id="review",
                requests=["Review this diff"],
                workload=Workload(waiting="person", description="pre-merge review"),
                usage_estimate={"model": "claude-sonnet-4-6", "input_tokens": 100_000, "output_tokens": 20_000},
            )
    """,
    # Nobody waits on a weekly audit: on sync it leaves the batch discount on the table.
    "weekly.py": """
        with DAG("weekly_audit", schedule="@weekly", start_date=START, catchup=False):
            ClaudeMessageOperator(
                task_id="audit",
                requests=["Audit the week"],
                usage_estimate={"model": "claude-sonnet-4-6", "input_tokens": 1_000_000, "output_tokens": 1_000_000},
            )
    """,
    # Refreshed every 5 minutes: sync is right.
    "dashboard.py": """
        with DAG("dashboard", schedule="*/5 * * * *", start_date=START, catchup=False):
            ClaudeMessageOperator(
                task_id="refresh",
                requests=["Describe the last five minutes"],
                model="claude-haiku-4-5",
                usage_estimate={"input_tokens": 10_000, "output_tokens": 2_000},
            )
            EmptyOperator(task_id="not_claude")
    """,
}
HEADER = """\
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator
from airflow_provider_claude_batch.routing import Workload

START = datetime(2026, 1, 1)
"""
# Two past runs of the nightly task: 1M in / 100k out and 3M in / 300k out, so 2M / 200k per run.
MEASURED_RUNS = {"scheduled__2026-01-01": (1_000_000, 100_000), "scheduled__2026-01-02": (3_000_000, 300_000)}


def per_run(model: str, input_tokens: int, output_tokens: int) -> tuple[Decimal, Decimal]:
    """(sync, batch) USD for one run, straight from the price table."""
    price = price_for(model)
    sync = (input_tokens * price.input + output_tokens * price.output) / 1_000_000
    return sync, sync * BATCH_DISCOUNT


@pytest.fixture(scope="module")
def audit_inputs(tmp_path_factory) -> tuple[Path, Path]:
    import textwrap

    root = tmp_path_factory.mktemp("audit")
    dags = root / "dags"
    dags.mkdir()
    for name, body in DAGS.items():
        (dags / name).write_text(HEADER + textwrap.dedent(body))
    home = root / "home"
    for run_id, (input_tokens, output_tokens) in MEASURED_RUNS.items():
        folder = home / "claude_batch_results" / "nightly_summaries" / run_id / "summarise"
        folder.mkdir(parents=True)
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        (folder / "manifest.json").write_text(json.dumps({"usage_by_model": {"claude-haiku-4-5": usage}}))
    return dags, home


def run_audit(dags: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "audit", "--dags-folder", str(dags), "--airflow-home", str(home), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
    )


@pytest.fixture(scope="module")
def report(audit_inputs) -> dict:
    result = run_audit(*audit_inputs, "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def table(audit_inputs) -> str:
    result = run_audit(*audit_inputs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def by_task(report: dict) -> dict[str, dict]:
    return {f"{task['dag_id']}.{task['task_id']}": task for task in report["tasks"]}


def test_json_lists_every_claude_task_with_its_verdict(report):
    tasks = by_task(report)
    assert sorted(tasks) == [
        "dashboard.refresh",
        "nightly_summaries.summarise",
        "pre_merge_review.review",
        "weekly_audit.audit",
    ]
    verdicts = {name: (t["route"], t["rule_route"], t["verdict"]) for name, t in tasks.items()}
    assert verdicts == {
        "nightly_summaries.summarise": ("batch", "batch", "OK"),
        "pre_merge_review.review": ("batch", "sync", "VIOLATION"),
        "weekly_audit.audit": ("sync", "batch", "SAVING"),
        "dashboard.refresh": ("sync", "sync", "OK"),
    }
    review = tasks["pre_merge_review.review"]
    assert review["reasons"] == ["a person waits on this pre-merge review: batch could hold it up to 24 hours"]
    assert review["sources"] == [
        "the operator argument workload=Workload(waiting='person', description='pre-merge review')"
    ]
    assert "results must refresh every 5 minutes" in tasks["dashboard.refresh"]["reasons"][0]
    assert "nobody waits on this" in tasks["weekly_audit.audit"]["reasons"][0]
    assert report["import_errors"] == {}  # the violating DAG parsed: the audit does not enforce


def test_json_figures_match_the_price_table(report):
    tasks = by_task(report)
    weekly = tasks["weekly_audit.audit"]
    sync, batch = per_run("claude-sonnet-4-6", 1_000_000, 1_000_000)
    assert (sync, batch) == (Decimal(18), Decimal(9))
    assert weekly["schedule"] == "0 0 * * 0"
    assert weekly["runs_per_month"] == pytest.approx(30 / 7)
    assert weekly["usage_source"] == "declared"
    assert weekly["per_run"]["sync_usd"] == pytest.approx(18) and weekly["per_run"]["batch_usd"] == pytest.approx(9)
    assert weekly["monthly"]["sync_usd"] == pytest.approx(18 * 30 / 7)
    assert weekly["monthly"]["batch_usd"] == pytest.approx(9 * 30 / 7)

    dashboard = tasks["dashboard.refresh"]
    sync, batch = per_run("claude-haiku-4-5", 10_000, 2_000)  # the task's model= prices the estimate
    assert dashboard["runs_per_month"] == pytest.approx(30 * 24 * 12)
    assert dashboard["usage_per_run"] == {
        "claude-haiku-4-5": {
            "input_tokens": 10_000,
            "output_tokens": 2_000,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_1h_input_tokens": 0,
        }
    }
    assert dashboard["monthly"]["sync_usd"] == pytest.approx(float(sync) * 8640)

    nightly = tasks["nightly_summaries.summarise"]  # measured wins over the declared estimate
    assert nightly["usage_source"] == "measured (2 runs)"
    assert nightly["usage_per_run"]["claude-haiku-4-5"]["input_tokens"] == 2_000_000
    assert nightly["usage_per_run"]["claude-haiku-4-5"]["output_tokens"] == 200_000
    _, n_batch = per_run("claude-haiku-4-5", 2_000_000, 200_000)
    assert nightly["runs_per_month"] == pytest.approx(30)
    assert nightly["monthly"]["batch_usd"] == pytest.approx(float(n_batch) * 30)

    review = tasks["pre_merge_review.review"]  # manual: priced per run, no monthly figure
    r_sync, r_batch = per_run("claude-sonnet-4-6", 100_000, 20_000)
    assert review["per_run"]["batch_usd"] == pytest.approx(float(r_batch))
    assert review["schedule"] == "manual" and review["runs_per_month"] is None and review["monthly"] is None
    assert review["per_run"]["sync_usd"] == pytest.approx(float(r_sync))

    totals = report["totals"]
    assert totals["verdicts"] == {"OK": 2, "VIOLATION": 1, "SAVING": 1}
    assert totals["manual"] == 1 and totals["priced_monthly"] == 3
    d_sync = float(sync) * 8640
    assert totals["saving_left_on_the_table_usd_per_month"] == pytest.approx(9 * 30 / 7)
    assert totals["monthly_usd_as_routed"] == pytest.approx(float(n_batch) * 30 + 18 * 30 / 7 + d_sync)
    assert totals["monthly_usd_routed_by_rule"] == pytest.approx(float(n_batch) * 30 + 9 * 30 / 7 + d_sync)
    assert totals["cost_of_fixing_violations_usd_per_month"] == 0  # the only violation is manual


def test_table_prints_the_same_split_and_figures(table):
    lines = table.splitlines()

    def row(dag_id: str) -> list[str]:
        [line] = [line for line in lines if line.startswith(dag_id + " ")]
        return line.split()

    assert row("weekly_audit")[:9] == [
        "weekly_audit",
        "audit",
        "sync",
        "batch",
        "SAVING",
        "0",  # the schedule "0 0 * * 0" splits into five cells
        "0",
        "*",
        "*",
    ]
    assert "4.29" in row("weekly_audit") and "$77.14/month" in row("weekly_audit")
    assert "$38.57/month" in row("weekly_audit")
    assert row("pre_merge_review")[2:7] == ["batch", "sync", "VIOLATION", "manual", "manual"]
    sync, batch = per_run("claude-sonnet-4-6", 100_000, 20_000)
    assert f"${sync:,.2f}/run" in row("pre_merge_review") and f"${batch:,.2f}/run" in row("pre_merge_review")
    assert row("dashboard")[2:5] == ["sync", "sync", "OK"] and "8640.00" in row("dashboard")
    assert row("nightly_summaries")[2:5] == ["batch", "batch", "OK"]
    assert "    why: a person waits on this pre-merge review: batch could hold it up to 24 hours" in lines
    assert "Totals: 4 task(s): 2 OK, 1 VIOLATION, 1 SAVING." in table
    assert "  saving left on the table (SAVING):   $38.57/month" in lines
    assert "not_claude" not in table


def test_fail_on_violation_sets_the_exit_status(audit_inputs):
    result = run_audit(*audit_inputs, "--format", "json", "--fail-on-violation")
    assert result.returncode == 1
    assert json.loads(result.stdout)["totals"]["verdicts"]["VIOLATION"] == 1


def test_a_deadline_kept_by_a_rescue_is_batch_with_rescue_and_one_that_cannot_be_is_a_violation(tmp_path):
    import textwrap

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sla.py").write_text(
        HEADER
        + textwrap.dedent(
            """
            from datetime import timedelta

            ESTIMATE = {"model": "claude-haiku-4-5", "input_tokens": 1_000_000, "output_tokens": 0}

            with DAG("sla_summaries", schedule="@daily", start_date=START, catchup=False):
                for task_id, lead in (("kept", timedelta(hours=1)), ("too_tight", timedelta(minutes=1))):
                    ClaudeBatchOperator(
                        task_id=task_id,
                        requests=[f"Summarise account {n}" for n in range(40)],
                        deadline=timedelta(hours=6),
                        rescue="sync",
                        rescue_lead=lead,
                        usage_estimate=ESTIMATE,
                    )
            """
        )
    )
    result = run_audit(dags, tmp_path / "home", "--format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    tasks = by_task(json.loads(result.stdout))
    kept, tight = tasks["sla_summaries.kept"], tasks["sla_summaries.too_tight"]
    assert (kept["route"], kept["rule_route"], kept["verdict"]) == ("batch with rescue", "batch with rescue", "OK")
    assert "the declared synchronous rescue keeps it" in kept["reasons"][0]
    assert (
        "40 requests, 8 at a time at about 30 seconds each, take about 2 minutes and 30 seconds" in kept["reasons"][1]
    )
    # Priced as a batch: only a rescued run pays the sync price, for what it rescued.
    assert kept["monthly"]["batch_usd"] == pytest.approx(0.5 * 30)
    assert (tight["route"], tight["rule_route"], tight["verdict"]) == ("batch with rescue", "sync", "VIOLATION")
    assert "more than the rescue_lead of 1 minute" in tight["reasons"][0]

    table = run_audit(dags, tmp_path / "home").stdout
    [line] = [line for line in table.splitlines() if line.startswith("sla_summaries  kept")]
    assert "batch with rescue  batch with rescue  OK" in line


def test_caching_savings_are_shown_from_the_manifests_usage(tmp_path, airflow_db):
    import textwrap

    from airflow_provider_claude_batch.audit import audit_folder, render_table

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cached.py").write_text(
        HEADER
        + textwrap.dedent(
            """
            with DAG("cached_reviews", schedule="0 3 * * *", start_date=START, catchup=False):
                ClaudeBatchOperator(
                    task_id="review", requests=["x"], model="claude-sonnet-4-6", cache_shared_prefix=True
                )
            """
        )
    )
    folder = tmp_path / "home" / "claude_batch_results" / "cached_reviews" / "scheduled__2026-01-01" / "review"
    folder.mkdir(parents=True)
    # One 1-hour write of a 10,000-token prefix, read by 99 more requests, in the manifest's own field names.
    usage = {
        "input_tokens": 5_000,
        "output_tokens": 1_000,
        "cache_creation_input_tokens": 10_000,
        "cache_creation_1h_input_tokens": 10_000,
        "cache_read_input_tokens": 990_000,
    }
    (folder / "manifest.json").write_text(json.dumps({"usage_by_model": {"claude-sonnet-4-6": usage}}))
    report = audit_folder(dags, tmp_path / "home")
    [task] = report.tasks
    price = price_for("claude-sonnet-4-6")
    cached = 1_000_000 * price.input - 10_000 * price.cache_write_1h - 990_000 * price.cache_read
    saved_per_run = cached * BATCH_DISCOUNT / 1_000_000
    assert task.per_run.cache_saving_batch_usd == saved_per_run
    assert report.totals()["cache_saving_usd_per_month"] == pytest.approx(float(saved_per_run * 30))
    table = render_table(report)
    assert f"    caching: the prompt cache saves ${saved_per_run * 30:,.2f}/month" in table.splitlines()
    assert f"  saved by the prompt cache:           ${saved_per_run * 30:,.2f}/month" in table.splitlines()
