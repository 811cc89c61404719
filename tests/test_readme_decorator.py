"""The README's ``@task.claude_batch`` example, as written: it parses under the routing policy and runs.

The code block under "TaskFlow: ``@task.claude_batch``" is taken from README.md, written to a DAG
file, parsed by a ``DagBag`` (the cluster policy installed) and run with ``dag.test()`` against the
emulator: two mapped batch tasks, one per team, and a report summing their cost.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from airflow_support import run_dag

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = pytest.mark.usefixtures("airflow_db", "claude_conn")


def readme_example() -> str:
    text = README.read_text()
    section = text.split("### TaskFlow: `@task.claude_batch`", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return code


def test_the_readme_decorator_example_parses_and_runs(claude_emulator, tmp_path):
    from airflow.models.dagbag import DagBag

    code = readme_example()
    assert "@task.claude_batch(" in code and ".expand(" in code
    (tmp_path / "weekly_team_digests.py").write_text(code)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    dag = bag.dags["weekly_team_digests"]
    claude_emulator.configure(processing_seconds=0.2)
    digest = dag.get_task("digest")
    digest.partial_kwargs.update(min_poll_interval=0.05, max_poll_interval=0.2)

    outcome = run_dag(dag)
    assert outcome.task_states == {
        "teams": "success",
        "digest[0]": "success",
        "digest[1]": "success",
        "report": "success",
    }
    assert claude_emulator.state()["create_calls"] == 2  # one batch per team
    assert outcome.xcom("report") > 0
