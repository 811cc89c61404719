"""Nightly test generation: batch the nightly job.

Every night, Claude writes pytest tests for the modules of a project that changed since the last
successful run (all of them on the first run). Nobody waits on this: the tests are reviewed the
next morning, so it runs on the Message Batches API at half price, and the task holds no worker
slot while the batch runs. The pre-merge review a developer waits on is the other half of this
portfolio and stays synchronous: see ``pre_merge_review.py``.

Runs offline against the emulator: ``claude-batch demo``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1 has it only in airflow.exceptions
    from airflow.exceptions import AirflowSkipException

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

PROJECT = Path(__file__).parent / "data" / "sample_project"
AIRFLOW_HOME = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
STATE_FILE = AIRFLOW_HOME / "claude_batch_state" / "nightly_test_generation.json"
GENERATED_TESTS = Asset(name="claude_generated_tests", uri="file:///claude-batch/nightly_test_generation/tests")

SYSTEM_PROMPT = (
    "You are a senior Python engineer. Write focused, deterministic pytest tests: one test per behaviour, "
    "edge cases included, no network, no sleeps. Reply with a single ```python code block."
)

with DAG(
    dag_id="nightly_test_generation",
    description="Claude writes pytest tests for changed modules, overnight, on the Message Batches API",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["claude", "batch", "nightly"],
    params={"project_dir": str(PROJECT)},
) as dag:

    @task
    def collect_changed_modules(params: dict[str, Any] | None = None) -> list[dict[str, str]]:
        """One request per module whose source changed since the last successful generation."""
        project = Path((params or {}).get("project_dir") or PROJECT)
        known = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
        requests = []
        for path in sorted(project.rglob("*.py")):
            if path.name == "__init__.py":
                continue
            source = path.read_text()
            relative = path.relative_to(project).as_posix()
            if known.get(relative) == hashlib.sha256(source.encode()).hexdigest():
                continue
            module = relative.removesuffix(".py").replace("/", ".")
            requests.append(
                {
                    "custom_id": re.sub(r"[^A-Za-z0-9_-]", "_", module)[:64],
                    "prompt": f"Write pytest tests for the module `{module}` below.\n\n```python\n{source}```\n",
                }
            )
        if not requests:
            # A quiet night is not a failure: skip the batch and the write-up, submit nothing.
            raise AirflowSkipException("No module changed since the last successful generation.")
        print(f"{len(requests)} module(s) changed since the last run")
        return requests

    generate = ClaudeBatchOperator(
        task_id="generate_tests",
        requests=collect_changed_modules(),
        model="claude-sonnet-4-6",
        max_tokens=4096,
        system=SYSTEM_PROMPT,
        request_params={"temperature": 0.0},
        # A module whose tests could not be generated tonight is retried tomorrow; a quarter of them
        # failing means something is wrong and somebody should look.
        max_failed_fraction=0.25,
        # What a night costs on a real project of ~300 modules; `claude-batch audit` prices it.
        usage_estimate={"model": "claude-sonnet-4-6", "input_tokens": 1_500_000, "output_tokens": 900_000},
    )

    # The Asset event comes once the test files are written, not when the batch lands before them.
    @task(outlets=[GENERATED_TESTS])
    def write_test_files(manifest: dict[str, Any], ds: str | None = None) -> dict[str, Any]:
        """Write each generated test module, a summary, and remember what was covered."""
        out_dir = AIRFLOW_HOME / "generated_tests" / (ds or "manual")
        out_dir.mkdir(parents=True, exist_ok=True)
        results_path = Path(manifest["results_uri"].removeprefix("file://"))
        state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
        written = []
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            if row["status"] != "succeeded" or not row["text"]:
                continue
            match = re.search(r"```python\n(.*?)```", row["text"], re.DOTALL)
            code = match.group(1) if match else row["text"]
            target = out_dir / f"test_{row['custom_id'].rsplit('_', 1)[-1]}.py"
            target.write_text(code)
            written.append(target.name)
            relative = row["custom_id"].replace("_", "/", row["custom_id"].count("_")) + ".py"
            source = PROJECT / relative
            if source.exists():
                state[relative] = hashlib.sha256(source.read_text().encode()).hexdigest()
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(state, indent=2, sort_keys=True))
        cost = manifest["cost"]
        summary = {
            "test_files": written,
            "counts": manifest["counts"],
            "batch_ids": manifest["batch_ids"],
            "cost_usd_batch": cost["batch_usd"],
            "cost_usd_if_synchronous": cost["sync_usd"],
            "saving_usd": cost["saving_usd"],
            "output_dir": str(out_dir),
        }
        (out_dir / "SUMMARY.md").write_text(
            "# Nightly test generation\n\n"
            f"- test files written: {len(written)} ({', '.join(written) or 'none'})\n"
            f"- requests: {manifest['counts']}\n"
            f"- cost at batch prices: ${cost['batch_usd']:.4f} "
            f"(synchronously ${cost['sync_usd']:.4f}; saved ${cost['saving_usd']:.4f})\n"
            f"- results: {manifest['results_uri']}\n"
        )
        print(json.dumps(summary, indent=2))
        return summary

    write_test_files(generate.output)
