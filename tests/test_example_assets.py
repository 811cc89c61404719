"""The example DAGs' Asset events: one per run, from the task that wrote what a downstream DAG reads.

``compliance_audit`` batches one document set per mapped task; its event must not come once per
mapped batch before the report exists, but once, from ``write_report``, after the report is on disk
(its ``extra`` says where). ``nightly_test_generation`` likewise emits after the test files exist.
Real ``dag.test()`` runs against the emulator; the events are read from the metadata DB.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from airflow_support import run_dag

EXAMPLES = Path(__file__).resolve().parent.parent / "dags_examples"
pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")


def example(name: str, results: Path):
    """The example DAG as it ships, polling fast, its results under ``results``.

    (Results left in the shared home would change what ``claude-batch audit`` measures in other tests.)
    """
    from airflow.models.dagbag import DagBag

    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
    from airflow_provider_claude_batch.policy import operator_class

    dag = DagBag(dag_folder=str(EXAMPLES / f"{name}.py")).dags[name]
    fast = {"min_poll_interval": 0.05, "max_poll_interval": 0.2}  # poll the emulator's short batches quickly
    for task in dag.tasks:
        cls = operator_class(task)
        if cls is None or not issubclass(cls, ClaudeBatchOperator):
            continue
        folder = f"file://{results}/{task.task_id}"
        if getattr(task, "is_mapped", False):
            task.partial_kwargs.update(fast, results_uri=folder + "/{{ ti.map_index }}")
        else:
            for key, value in {**fast, "results_uri": folder}.items():
                setattr(task, key, value)
    return dag


def asset_events(asset_name: str, since: datetime) -> list:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset_name, AssetEvent.timestamp >= since)
        )
        events = session.scalars(query).all()
        return [(e.source_task_id, e.source_map_index, e.timestamp, dict(e.extra or {})) for e in events]


def test_compliance_audit_emits_one_event_after_the_report_exists(claude_emulator, tmp_path):
    claude_emulator.configure(processing_seconds=0.2)
    started = datetime.now(timezone.utc)
    outcome = run_dag(example("compliance_audit", tmp_path))
    assert outcome.task_states["write_report"] == "success"
    assert {state for label, state in outcome.task_states.items() if label.startswith("audit_documents[")} == {
        "success"
    }
    events = asset_events("claude_compliance_findings", started)
    assert len(events) == 1, events  # not one per mapped batch
    [(task_id, map_index, emitted_at, extra)] = events
    assert (task_id, map_index) == ("write_report", -1)
    report = Path(extra["report_markdown"])
    assert report.is_file() and Path(extra["report_html"]).is_file()
    written = datetime.fromtimestamp(report.stat().st_mtime, timezone.utc)
    assert written <= emitted_at  # the report a downstream DAG reads existed when the event came

    # The findings read as an audit of each document: a sentence it contains, the item it is about.
    checklist = (EXAMPLES / "data" / "compliance" / "checklist.md").read_text()
    corpus = {
        f"{folder.name}-{doc.stem}": " ".join(doc.read_text().split())
        for folder in (EXAMPLES / "data" / "compliance" / "corpus").iterdir()
        for doc in folder.glob("*.md")
    }
    rows = [
        json.loads(line) for path in sorted(tmp_path.rglob("results.jsonl")) for line in path.read_text().splitlines()
    ]
    assert {row["custom_id"] for row in rows} == set(corpus)
    findings = 0
    for row in rows:
        verdict = row["output"]
        assert verdict["compliant"] is (verdict["findings"] == [])
        for finding in verdict["findings"]:
            findings += 1
            assert finding["evidence"] in corpus[row["custom_id"]]
            item = finding["checklist_item"]
            assert f"- {item} " in checklist and item in finding["recommendation"]
    assert findings > 0
    markdown = report.read_text()
    assert "## Findings" in markdown and "DH-" in markdown.split("## Findings", 1)[1]


def test_nightly_generation_emits_after_the_test_files_exist(claude_emulator, airflow_home, tmp_path):
    # A first night: every module is new (a run before this one may have covered them).
    (airflow_home / "claude_batch_state" / "nightly_test_generation.json").unlink(missing_ok=True)
    claude_emulator.configure(processing_seconds=0.2)
    started = datetime.now(timezone.utc)
    outcome = run_dag(example("nightly_test_generation", tmp_path))
    assert outcome.task_states["write_test_files"] == "success"
    [(task_id, _, emitted_at, _)] = asset_events("claude_generated_tests", started)
    assert task_id == "write_test_files"
    summary = Path(outcome.xcom("write_test_files", "output_dir")) / "SUMMARY.md"
    assert datetime.fromtimestamp(summary.stat().st_mtime, timezone.utc) <= emitted_at
