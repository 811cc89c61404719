"""The routing policy, as Airflow runs it: real DAG files parsed by Airflow's DagBag with the
``airflow.policy`` plugin the package installs, Airflow's own CLI, and the same check in ``execute()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch import policy
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.routing import Workload

PLUGIN_NAME = "claude_batch_routing"
ENFORCE_ENV = "AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING"

HEADER = """\
from datetime import datetime, timedelta

from airflow.sdk import DAG
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator
from airflow_provider_claude_batch.routing import Workload

START = datetime(2026, 1, 1)
"""


def dag_file(dag_id: str, task: str, schedule: str = "None", dag_args: str = "") -> str:
    """One DAG holding one Claude task; ``task`` is the operator call, indented under the DAG."""
    return (
        f"\nwith DAG({dag_id!r}, schedule={schedule}, start_date=START, catchup=False{dag_args}):\n"
        + textwrap.indent(textwrap.dedent(task).strip(), "    ")
        + "\n"
    )


def batch(task_id: str = "summarise", extra: str = "") -> str:
    return f'ClaudeBatchOperator(task_id={task_id!r}, requests=["Summarise the day"]{extra})'


# One file per refusal source: (file, dag_id, task_id, what the reason says, what the source says).
REFUSALS = {
    "operator_blocking": (
        dag_file("review_blocking", batch("review", ", blocking=True")),
        "review",
        "a pipeline step sits idle until this is answered: batch could hold it up to 24 hours",
        "the operator argument blocking=True",
    ),
    "operator_deadline": (
        dag_file("contract_deadline", batch("bulk", ", deadline=timedelta(hours=2)")),
        "bulk",
        "a hard deadline of 2 hours is shorter than the batch window of 24 hours",
        "the operator argument deadline=2 hours",
    ),
    "operator_workload": (
        dag_file(
            "support_agent",
            batch("reply", ", workload=Workload(waiting='person', description='support reply')"),
        ),
        "reply",
        "a person waits on this support reply: batch could hold it up to 24 hours",
        "the operator argument workload=Workload(waiting='person', description='support reply')",
    ),
    "dag_tag": (
        dag_file("ci_gate", batch("gate"), dag_args=", tags=['ci', 'blocking']"),
        "gate",
        "a pipeline step sits idle until this is answered",
        "the DAG tag 'blocking'",
    ),
    "execution_timeout": (
        dag_file("two_hour_timeout", batch("bulk", ", execution_timeout=timedelta(hours=2)")),
        "bulk",
        "a hard deadline of 2 hours is shorter than the batch window of 24 hours",
        "execution_timeout=2 hours (a hard limit on the wait)",
    ),
    "deadline_alert": (
        dag_file(
            "alerted",
            batch("bulk"),
            dag_args=(
                ", deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, "
                "interval=timedelta(hours=1), callback=AsyncCallback('airflow_provider_claude_batch.on_missed'))"
            ),
        ),
        "bulk",
        "a hard deadline of 1 hour is shorter than the batch window of 24 hours",
        "the DAG's DeadlineAlert of 1 hour after the run is queued",
    ),
    "schedule": (
        dag_file("dashboard", batch("refresh"), schedule="'*/5 * * * *'"),
        "refresh",
        "results must refresh every 5 minutes; a batch can take up to 24 hours",
        "the DAG's schedule '*/5 * * * *' (a run every 5 minutes), read as refresh_every",
    ),
    "request_params_stream": (
        dag_file("chat", batch("answer", ", request_params={'stream': True}")),
        "answer",
        "the output must stream token by token",
        "request_params sets stream=True",
    ),
    "request_params_fast": (
        dag_file("fast_params", batch("answer", ", request_params={'speed': 'fast'}")),
        "answer",
        "it needs fast mode",
        "request_params sets speed='fast'",
    ),
    "literal_requests_fast": (
        dag_file(
            "fast_requests",
            'ClaudeBatchOperator(task_id="triage", requests=["slow is fine", '
            '{"custom_id": "urgent", "prompt": "now", "speed": "fast"}])',
        ),
        "triage",
        "it needs fast mode",
        "request 'urgent' set speed='fast'",
    ),
    "literal_requests_stream": (
        dag_file(
            "stream_requests",
            'ClaudeBatchOperator(task_id="live", requests=[{"custom_id": "c1", "params": '
            '{"messages": [{"role": "user", "content": "hi"}], "stream": True}}])',
        ),
        "live",
        "the output must stream token by token",
        "request 'c1' set stream=True",
    ),
    "mapped_blocking": (
        dag_file(
            "mapped_review",
            'ClaudeBatchOperator.partial(task_id="review", blocking=True).expand(requests=[["a"], ["b"]])',
        ),
        "review",
        "a pipeline step sits idle until this is answered",
        "the operator argument blocking=True",
    ),
    "mapped_expand_fast": (
        dag_file(
            "mapped_fast",
            'ClaudeBatchOperator.partial(task_id="score", requests=["x"])'
            '.expand(request_params=[{"temperature": 0}, {"speed": "fast"}])',
        ),
        "score",
        "it needs fast mode",
        "request_params sets speed='fast'",
    ),
    "nobody_does_not_override_a_timeout": (
        dag_file(
            "nobody_but_timeout",
            batch("bulk", ", workload=Workload(waiting='nobody'), execution_timeout=timedelta(hours=3)"),
            schedule="'@hourly'",
        ),
        "bulk",
        "a hard deadline of 3 hours is shorter than the batch window of 24 hours",
        "execution_timeout=3 hours",
    ),
    "rescue_cannot_finish_in_its_lead": (
        dag_file(
            "rescue_too_short",
            "ClaudeBatchOperator(task_id='bulk', requests=[f'item {n}' for n in range(30)], "
            "deadline=timedelta(hours=6), rescue='sync', rescue_lead=timedelta(minutes=1), "
            "rescue_max_concurrency=2, rescue_seconds_per_request=10)",
        ),
        "bulk",
        "cannot plausibly finish the whole input inside its lead: 30 requests, 2 at a time at about 10 seconds "
        "each, take about 2 minutes and 30 seconds, more than the rescue_lead of 1 minute",
        "the operator argument deadline=6 hours",
    ),
    "nobody_does_not_override_the_tag": (
        dag_file(
            "nobody_but_tagged", batch("bulk", ", workload=Workload(waiting='nobody')"), dag_args=", tags=['blocking']"
        ),
        "bulk",
        "a pipeline step sits idle until this is answered",
        "the DAG tag 'blocking'",
    ),
}

# Files that must load without an error.
ACCEPTED = {
    "nightly_batch": dag_file(
        "nightly_summaries",
        batch("summarise", ", execution_timeout=timedelta(hours=30), workload=Workload(triggered_by='schedule')"),
        schedule="'0 2 * * *'",
        dag_args=", tags=['nightly']",
    ),
    "weekly_batch": dag_file("weekly_audit", batch("audit"), schedule="'@weekly'"),
    "message_operator_blocking": dag_file(
        "pre_merge_review",
        'ClaudeMessageOperator(task_id="review", requests=["Review this diff"], blocking=True, '
        "request_params={'stream': True}, execution_timeout=timedelta(minutes=10))",
        schedule="'*/5 * * * *'",
        dag_args=", tags=['blocking']",
    ),
    "nobody_overrides_the_schedule": dag_file(
        "hourly_but_nobody_waits",
        batch("digest", ", workload=Workload(waiting='nobody', description='hourly digest')"),
        schedule="'@hourly'",
    ),
    "variable_interval_is_unknown": (
        "from airflow.sdk.definitions.deadline import VariableInterval\n"
        + dag_file(
            "variable_deadline",
            batch("bulk"),
            dag_args=(
                ", deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, "
                "interval=VariableInterval('bulk_sla'), callback=AsyncCallback('airflow_provider_claude_batch.x'))"
            ),
        )
    ),
    "requests_from_xcom_are_unknown": (
        "from airflow.sdk import task\n"
        + dag_file(
            "xcom_requests",
            """
            @task
            def build():
                return [{"prompt": "x", "speed": "fast"}]

            ClaudeBatchOperator(task_id="from_xcom", requests=build())
            """,
        )
    ),
    "rescued_deadline": dag_file(
        "rescued_deadline",
        batch("bulk", ", deadline=timedelta(hours=6), rescue='sync', rescue_lead=timedelta(hours=1)"),
        schedule="'0 */6 * * *'",
    ),
    "mapped_nightly": dag_file(
        "mapped_nightly",
        'ClaudeBatchOperator.partial(task_id="score", model="claude-haiku-4-5").expand(requests=[["a"], ["b"]])',
        schedule="'@daily'",
    ),
}

# A file with a good DAG and a refused one: the good one still loads.
MIXED = dag_file("mixed_ok", batch("nightly"), schedule="'@daily'") + dag_file(
    "mixed_blocking", batch("review"), dag_args=", tags=['blocking']"
)


def write_dags(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / f"{name}.py").write_text(HEADER + body)
    return folder


def parse(folder: Path):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        bag = DagBag(dag_folder=str(folder), include_examples=False)
        bag.import_errors = {Path(path).name: error for path, error in bag.import_errors.items()}
        return bag
    return DagBag(dag_folder=folder, bundle_path=folder)


def policy_manager():
    """Airflow's pluggy manager for cluster policies (a function in 3.3, a module global in 3.1)."""
    from airflow import settings

    getter = getattr(settings, "get_policy_plugin_manager", None)
    return getter() if getter is not None else settings.POLICY_PLUGIN_MANAGER


@pytest.fixture(scope="module")
def dag_folder(tmp_path_factory) -> Path:
    files = {name: spec[0] for name, spec in REFUSALS.items()}
    files.update(ACCEPTED)
    files["mixed"] = MIXED
    return write_dags(tmp_path_factory.mktemp("dags"), files)


@pytest.fixture(scope="module")
def dagbag(dag_folder: Path):
    assert os.environ.get(ENFORCE_ENV) is None
    return parse(dag_folder)


def test_the_policy_is_installed_through_its_entry_point():
    from airflow.policies import hookimpl

    [entry] = [ep for ep in entry_points(group="airflow.policy") if ep.name == PLUGIN_NAME]
    assert entry.value == "airflow_provider_claude_batch.policy"
    manager = policy_manager()
    assert manager.get_plugin(PLUGIN_NAME) is policy
    # Registered with its hook (this test module imported the policy before Airflow was imported).
    assert [impl.plugin_name for impl in manager.hook.task_policy.get_hookimpls()] == [PLUGIN_NAME]
    assert policy.hookimpl.project_name == hookimpl.project_name == "airflow.policy"


@pytest.mark.parametrize("source", sorted(REFUSALS))
def test_each_source_refuses_the_batch_task_with_an_import_error(dagbag, source):
    body, task_id, reason, found_in = REFUSALS[source]
    dag_id = body.split("DAG(", 1)[1].split(",", 1)[0].strip("'\"")
    error = dagbag.import_errors[f"{source}.py"]
    assert error.startswith("AirflowClusterPolicyViolation: ")
    assert f"Task {task_id!r} in DAG {dag_id!r} uses ClaudeBatchOperator" in error
    assert reason in error
    assert f"Found in: {found_in}" in error or f"; {found_in}" in error
    assert "ClaudeMessageOperator" in error.split("Fix: ", 1)[1]
    assert "AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING=False" in error
    assert dag_id not in dagbag.dags


def _has_variable_interval() -> bool:
    try:
        from airflow.sdk.definitions.deadline import VariableInterval  # noqa: F401
    except ImportError:  # Airflow < 3.3
        return False
    return True


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.latest_airflow_only) if name == "variable_interval_is_unknown" else name
        for name in sorted(ACCEPTED)
    ],
)
def test_well_formed_dags_load_without_error(dagbag, name):
    assert f"{name}.py" not in dagbag.import_errors, dagbag.import_errors.get(f"{name}.py")


def test_every_accepted_dag_is_in_the_bag(dagbag):
    expected = {"nightly_summaries", "weekly_audit", "pre_merge_review", "hourly_but_nobody_waits"}
    expected |= {"xcom_requests", "mapped_nightly", "mixed_ok", "rescued_deadline"}
    if _has_variable_interval():
        expected.add("variable_deadline")
    assert expected <= set(dagbag.dags)


def test_other_dags_in_the_same_file_keep_loading(dagbag):
    assert "mixed_ok" in dagbag.dags
    assert "mixed_blocking" not in dagbag.dags
    assert "Task 'review' in DAG 'mixed_blocking'" in dagbag.import_errors["mixed.py"]


def test_the_refusal_quotes_every_reason_and_only_the_sources_behind_them(dagbag):
    error = dagbag.import_errors["nobody_does_not_override_the_tag.py"]
    # The declared "nobody" does not hide the tag; the fix says what to remove.
    assert "A blocking mark (the DAG tag 'blocking') says something waits: remove it if nothing does." in error
    error = dagbag.import_errors["nobody_does_not_override_a_timeout.py"]
    assert "schedule" not in error  # the hourly schedule was overridden by Workload(waiting='nobody')


def test_switching_enforcement_off_loads_every_dag(tmp_path, monkeypatch):
    monkeypatch.setenv(ENFORCE_ENV, "False")
    bag = parse(write_dags(tmp_path, {name: spec[0] for name, spec in REFUSALS.items()}))
    assert bag.import_errors == {}
    assert len(bag.dags) == len(REFUSALS)


def test_airflow_cli_lists_the_refusal(airflow_db, tmp_path):
    folder = write_dags(tmp_path / "dags", {"ci_gate": REFUSALS["dag_tag"][0], "nightly": ACCEPTED["nightly_batch"]})
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "list-import-errors", "--local", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)},
    )
    # The command exits 1 when there is any import error (reference airflow3.md §3.1).
    assert result.returncode == 1, result.stderr[-2000:]
    # stdout also carries Airflow's log lines; the JSON document is the line that starts with "[{".
    [document] = [line for line in result.stdout.splitlines() if line.startswith("[{")]
    [entry] = json.loads(document)
    assert entry["filepath"].endswith("ci_gate.py")
    assert "AirflowClusterPolicyViolation: Task 'gate' in DAG 'ci_gate' uses ClaudeBatchOperator" in entry["error"]


# --------------------------------------------------------------------------------------------------
# The same check at run time
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def without_the_policy() -> Iterator[None]:
    """A deployment where the policy plugin is not installed (or was bypassed at parse time)."""
    manager = policy_manager()
    plugin = manager.unregister(name=PLUGIN_NAME)
    try:
        yield
    finally:
        manager.register(plugin, name=PLUGIN_NAME)


def make_dag(dag_id: str, *, tags: tuple[str, ...] = (), **operator_kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=list(tags)) as dag:
        ClaudeBatchOperator(
            task_id="batch", model="claude-haiku-4-5", min_poll_interval=0.05, max_poll_interval=0.2, **operator_kwargs
        )
    return dag


@pytest.mark.usefixtures("airflow_db", "claude_conn", "without_the_policy")
def test_execute_refuses_before_any_create_when_the_policy_did_not_run(claude_emulator, tmp_path, capfd):
    dag = make_dag("runtime_blocking", requests=["a"], blocking=True, results_uri=f"file://{tmp_path}/out")
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    text = "".join(capfd.readouterr())
    assert "ClaudeRoutingError" in text
    assert "Task 'batch' in DAG 'runtime_blocking' uses ClaudeBatchOperator" in text
    assert "Nothing was submitted." in text
    assert claude_emulator.state()["create_calls"] == 0


@pytest.mark.usefixtures("airflow_db", "claude_conn", "without_the_policy")
def test_execute_refuses_fast_mode_requests_that_only_the_run_reveals(claude_emulator, tmp_path, capfd):
    source = tmp_path / "requests.jsonl"
    lines = [{"custom_id": "ok", "prompt": "x"}, {"custom_id": "hurry", "prompt": "y", "speed": "fast"}]
    source.write_text("\n".join(json.dumps(line) for line in lines))
    # A file URI says nothing at parse time; the requests read by prepare() do.
    dag = make_dag("runtime_fast", requests=f"file://{source}", results_uri=f"file://{tmp_path}/out")
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    text = "".join(capfd.readouterr())
    assert "it needs fast mode" in text
    assert "Found in: request 'hurry' set speed='fast'." in text
    assert claude_emulator.state()["create_calls"] == 0


@pytest.mark.usefixtures("airflow_db", "claude_conn", "without_the_policy")
def test_execute_submits_when_enforcement_is_off(claude_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv(ENFORCE_ENV, "False")
    dag = make_dag("runtime_off", requests=["a"], tags=("blocking",), results_uri=f"file://{tmp_path}/out")
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    assert claude_emulator.state()["create_calls"] == 1


# --------------------------------------------------------------------------------------------------
# The inference as a plain function
# --------------------------------------------------------------------------------------------------


def test_workload_for_task_combines_sources_strictest_first():
    from airflow.sdk import DAG

    with DAG("combined", schedule="@hourly", start_date=datetime(2026, 1, 1), tags=["blocking"]):
        op = ClaudeBatchOperator(
            task_id="t",
            requests=["x"],
            deadline=timedelta(hours=5),
            execution_timeout=timedelta(hours=3),
            workload=Workload(waiting="person", deadline=timedelta(hours=8)),
        )
    workload, sources = policy.workload_for_task(op)
    assert workload.waiting == "person"  # more precise than "blocking"
    assert workload.deadline == timedelta(hours=3)  # the shortest wins
    assert workload.refresh_every == timedelta(hours=1)
    assert sources == [
        "the operator argument workload=Workload(waiting='person', deadline=8 hours)",
        "the DAG tag 'blocking'",
        "the operator argument deadline=5 hours",
        "execution_timeout=3 hours (a hard limit on the wait)",
        "the DAG's schedule '0 * * * *' (a run every 1 hour), read as refresh_every",
    ]
    decision = policy.batch_route_refusal(op)
    assert decision is not None and decision.decided_by == "waiting"


def test_a_weekly_task_is_batch_and_the_schedule_only_informs():
    from airflow.sdk import DAG

    with DAG("weekly", schedule="@weekly", start_date=datetime(2026, 1, 1)):
        op = ClaudeBatchOperator(task_id="t", requests=["x"])
    workload, sources = policy.workload_for_task(op)
    assert workload.refresh_every == timedelta(days=7)
    assert sources == ["the DAG's schedule '0 0 * * 0' (a run every 7 days), read as refresh_every"]
    assert policy.batch_route_refusal(op) is None


def test_a_wrong_workload_type_is_a_clear_error():
    op = ClaudeBatchOperator(task_id="t", requests=["x"], workload={"waiting": "person"})
    with pytest.raises(TypeError, match=r"workload= must be an airflow_provider_claude_batch\.routing\.Workload"):
        policy.workload_for_task(op)


def test_a_refused_rescue_says_how_to_give_it_room(dagbag):
    error = dagbag.import_errors["rescue_cannot_finish_in_its_lead.py"]
    assert "the operator arguments rescue='sync', rescue_lead=1 minute, rescue_max_concurrency=2" in error
    assert "Fix: Give the rescue room: raise rescue_lead to at least 2 minutes and 30 seconds" in error
    assert "raise rescue_max_concurrency to at least 5" in error


def test_workload_for_task_reads_the_rescue_and_counts_literal_requests():
    from airflow.sdk import DAG

    with DAG("rescue_reading", schedule=None, start_date=datetime(2026, 1, 1)):
        task = ClaudeBatchOperator(
            task_id="bulk",
            requests=["a", "b", "c"],
            deadline=timedelta(hours=6),
            rescue="sync",
            rescue_lead=timedelta(hours=1),
            rescue_max_concurrency=4,
        )
    workload, sources = policy.workload_for_task(task)
    assert workload.rescue == policy.rescue_plan(task, 3)
    assert (workload.rescue.lead, workload.rescue.max_concurrency, workload.rescue.request_count) == (
        timedelta(hours=1),
        4,
        3,
    )
    assert sources[-1].endswith("rescue_seconds_per_request=30 for 3 request(s)")
    assert policy.batch_route_refusal(task) is None
