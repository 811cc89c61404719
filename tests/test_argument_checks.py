"""Operator, sensor and trigger arguments: checked when the DAG is parsed, or right after rendering."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.sensors.batch import ClaudeBatchSensor
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger
from airflow_provider_claude_batch.validation import arguments

START = datetime(2026, 1, 1)


def batch(**kwargs):
    return ClaudeBatchOperator(task_id="t", requests=["x"], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"min_poll_interval": 0}, ValueError, "min_poll_interval must be more than 0 seconds, got 0"),
        ({"timeout": timedelta(seconds=-60)}, ValueError, "timeout must be more than 0 seconds"),
        ({"timeout": "soon"}, TypeError, "timeout must be a datetime.timedelta or a number of seconds"),
        ({"retry_rounds": -1}, ValueError, "retry_rounds must be a whole number of at least 0"),
        ({"on_input_change": "replase"}, ValueError, "did you mean 'replace'?"),
        ({"max_failed_fraction": 5}, ValueError, "max_failed_fraction must be a number from 0 to 1, got 5"),
        ({"max_tokens": "lots"}, TypeError, "render_template_as_native_obj=True"),
        ({"request_params": "{'temperature': 0}"}, TypeError, "request_params must be a dict, got the string"),
        ({"model": "claude-sonnet-4.6"}, ValueError, "did you mean 'claude-sonnet-4-6'?"),
        ({"betas": ["output-300k-2026-03"]}, ValueError, "did you mean 'output-300k-2026-03-24'?"),
        ({"results_uri": "nosuchscheme://bucket/out/"}, ValueError, "results_uri 'nosuchscheme://bucket/out/'"),
    ],
)
def test_literal_arguments_fail_in_the_constructor_naming_the_argument(kwargs, error, text):
    with pytest.raises(error, match=None) as caught:
        batch(**kwargs)
    assert text in str(caught.value)


def test_results_uri_lists_the_installed_filesystems():
    with pytest.raises(ValueError) as caught:
        batch(results_uri="nosuchscheme://bucket/out/")
    assert "no filesystem for nosuchscheme:// is installed" in str(caught.value)
    assert "Installed: " in str(caught.value) and "file" in str(caught.value)


def test_numbers_of_seconds_and_rendered_numbers_are_accepted():
    operator = batch(timeout=3600, min_round_window=0, max_tokens="64", max_failed_fraction="0.05")
    assert operator.timeout == timedelta(hours=1)
    assert operator.min_round_window == timedelta(0)
    assert (operator.max_tokens, operator.max_failed_fraction) == (64, 0.05)


def test_templated_arguments_wait_for_rendering_then_are_checked():
    from airflow.sdk import DAG

    with DAG("templated_args", schedule=None, start_date=START, params={"max_tokens": "64", "bad": "lots"}):
        good = ClaudeBatchOperator(task_id="good", requests=["x"], max_tokens="{{ params.max_tokens }}")
        bad = ClaudeBatchOperator(task_id="bad", requests=["x"], max_failed_fraction="{{ params.bad }}")
    good.render_template_fields({"params": {"max_tokens": "64"}})
    assert good.max_tokens == 64
    with pytest.raises(TypeError, match="max_failed_fraction must be a number, got the string 'lots'"):
        bad.render_template_fields({"params": {"bad": "lots"}})


def test_sensor_reads_a_rendered_list_of_batch_ids_back():
    from airflow.sdk import DAG

    with DAG("sensor_ids", schedule=None, start_date=START):
        sensor = ClaudeBatchSensor(task_id="s", batch_ids="{{ params.ids }}")
    sensor.render_template_fields({"params": {"ids": ["msgbatch_a", "msgbatch_b"]}})
    assert sensor.batch_ids == ["msgbatch_a", "msgbatch_b"]
    assert arguments.batch_ids('["msgbatch_a"]') == ["msgbatch_a"]
    assert arguments.batch_ids({"batch_ids": ["msgbatch_a"], "request_count": 2}) == ["msgbatch_a"]
    with pytest.raises(ValueError, match="is not a batch id"):
        arguments.batch_ids("msgbatch_a, msgbatch_b")


def test_trigger_checks_its_arguments():
    with pytest.raises(ValueError, match="min_poll_interval must be more than 0 seconds"):
        ClaudeBatchTrigger(batch_ids=["msgbatch_a"], min_poll_interval=-1)
    with pytest.raises(ValueError, match="end_time must be more than 0 seconds"):
        ClaudeBatchTrigger(batch_ids=["msgbatch_a"], end_time=-5)


@pytest.mark.usefixtures("airflow_db")
def test_a_templated_max_tokens_and_sensor_list_run_end_to_end(claude_conn, claude_emulator, tmp_path):
    from airflow.sdk import DAG

    with DAG("templated_run", schedule=None, start_date=START, params={"max_tokens": 64, "fraction": "0.5"}) as dag:
        submit = ClaudeBatchOperator(
            task_id="submit",
            requests=["a", "b"],
            model="claude-haiku-4-5",
            max_tokens="{{ params.max_tokens }}",
            max_failed_fraction="{{ params.fraction }}",
            wait_for_completion=False,
            results_uri=f"file://{tmp_path}/out",
        )
        wait = ClaudeBatchSensor(
            task_id="wait",
            batch_ids="{{ ti.xcom_pull(task_ids='submit', key='batch_ids') }}",
            deferrable=False,
            poke_interval=0.2,
        )
        submit >> wait
    outcome = run_dag(dag)
    assert outcome.task_states == {"submit": "success", "wait": "success"}
    assert outcome.xcom("wait")["counts"]["succeeded"] == 2
    assert claude_emulator.state()["create_calls"] == 1
