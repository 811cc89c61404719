"""The routing refusal's fix hint, as ``airflow dags list-import-errors`` prints it in every format.

The CLI prints tables through rich, which reads ``[word]`` as markup and drops it: a hint naming the
config section in square brackets lost it ("To switch this check off:  enforce_routing"). The real
CLI parses a DAG folder holding a refused DAG (``--local``) and prints it as table, plain, JSON and
YAML; the whole hint must be there, word for word, in each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BLOCKING_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

with DAG("ci_gate", schedule=None, start_date=pendulum.datetime(2026, 1, 1), tags=["blocking"]):
    ClaudeBatchOperator(task_id="gate", requests=["x"], model="claude-haiku-4-5")
"""
HINT = (
    "(To switch this check off, set enforce_routing = False in the claude_batch section of the Airflow "
    "configuration, e.g. AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING=False.)"
)
FIX = "Fix: Use ClaudeMessageOperator so a pipeline step gets the answer in seconds"


def words(text: str) -> str:
    return " ".join(text.split())


def list_import_errors(folder: Path, output: str) -> str:
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING": "True"}
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow), "dags", "list-import-errors", "--local", "--output", output],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-2000:]  # the command fails when any file did not import
    return result.stdout


@pytest.fixture(scope="module")
def dag_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("refused")
    (folder / "ci_gate.py").write_text(BLOCKING_DAG)
    return folder


@pytest.mark.usefixtures("airflow_db")
def test_the_hint_survives_the_table_renderer(dag_folder):
    out = list_import_errors(dag_folder, "table")
    # rich wraps the error cell over several lines: read the last column back, line by line.
    cell = " ".join(line.rsplit(" | ", 1)[1] for line in out.splitlines() if " | " in line)
    assert words(HINT) in words(cell), cell
    assert FIX in words(cell)


@pytest.mark.usefixtures("airflow_db")
def test_the_hint_survives_the_plain_json_and_yaml_renderers(dag_folder):
    assert words(HINT) in words(list_import_errors(dag_folder, "plain"))
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        text = list_import_errors(dag_folder, output)
        lines = text.splitlines()
        # The document starts after Airflow's own log lines (a warning or two on stdout).
        start = next(i for i, line in enumerate(lines) if line.startswith(("[{", "- ")))
        [entry] = load("\n".join(lines[start:]))
        assert words(HINT) in words(entry["error"]), (output, entry["error"])
        assert re.search(r"Task 'gate' in DAG 'ci_gate' uses ClaudeBatchOperator", entry["error"])
