"""Pre-merge review: keep the pre-merge check synchronous.

A developer triggers this DAG from CI (REST API, with the changed files in ``conf``) and waits for
the review before merging: somebody is held idle until Claude answers, so the work goes to the
synchronous Messages API, whatever the price. Batching it would save half the cost and could hold
the merge for up to 24 hours. The nightly test generation in ``nightly_test_generation.py`` is the
other half of the same portfolio: nobody waits on it, so it is batched.

The routing policy would refuse this task on ``ClaudeBatchOperator`` (a person waits on it);
``claude-batch audit`` reports it as OK on the synchronous route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator
from airflow_provider_claude_batch.routing import Workload

SAMPLE_PROJECT = Path(__file__).parent / "data" / "sample_project"

with DAG(
    dag_id="pre_merge_review",
    description="Review the files of a pull request while the developer waits (synchronous Messages API)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["claude", "sync", "blocking"],
    params={
        "pull_request": Param(0, type="integer", description="Pull request number"),
        "files": Param(
            ["inventory/pricing.py"],
            type="array",
            description="Paths of the changed files, relative to the project root",
        ),
    },
) as dag:

    @task
    def changed_files(params: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """One review request per changed file."""
        requests = []
        for relative in (params or {}).get("files", []):
            source = (SAMPLE_PROJECT / relative).read_text()
            requests.append(
                {
                    "custom_id": relative.replace("/", "_").replace(".", "_")[:64],
                    "prompt": f"Review this change for bugs and risky edge cases.\n\n```python\n{source}```",
                }
            )
        return requests

    ClaudeMessageOperator(
        task_id="review",
        requests=changed_files(),
        model="claude-sonnet-4-6",
        max_tokens=1500,
        system="You are a careful reviewer. Be specific: name the line and the failure.",
        # A developer waits on this before merging: the routing rule's reason, and the audit's verdict.
        workload=Workload(waiting="person", triggered_by="api", description="this pre-merge review"),
        max_concurrency=4,
        usage_estimate={"model": "claude-sonnet-4-6", "input_tokens": 20_000, "output_tokens": 3_000},
    )
