"""max_cost_usd: the quote refuses before any create when over the cap, passes under it, and lands in the manifest."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.cost_quote import CostQuote, ModelQuote, cap_refusal
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests

START = datetime(2026, 1, 1)
MODEL = "claude-sonnet-4-6"
CREATE = "POST /v1/messages/batches"
COUNT = "POST /v1/messages/count_tokens"
# Sonnet 4.6 at batch prices, per million tokens.
BATCH_INPUT, BATCH_OUTPUT, BATCH_WRITE_1H = Decimal("1.5"), Decimal("7.5"), Decimal(3)
PROMPTS = [f"Summarise incident report {i:03d} for the weekly review" for i in range(4)]  # one length, one shape


def make_dag(dag_id: str, **operator_kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(task_id="batch", min_poll_interval=0.05, max_poll_interval=0.2, **operator_kwargs)
    return dag


def tokens(prompt: str) -> int:
    return math.ceil(len(prompt) / 4)  # what the emulator's count_tokens answers


def rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_over_the_cap_refuses_before_any_create_and_says_by_how_much_and_what_to_change(
    claude_emulator, tmp_path, capfd
):
    dag = make_dag(
        "cap_refuses",
        requests=PROMPTS,
        model=MODEL,
        max_tokens=1024,
        results_uri=f"file://{tmp_path}",
        max_cost_usd=0.02,
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "failed"}
    calls = claude_emulator.state()["calls"]
    assert CREATE not in calls and calls[COUNT] == 1  # one shape, one count; nothing created
    quote_in = sum(tokens(p) for p in PROMPTS) * BATCH_INPUT / 1_000_000
    quote_out = 4 * 1024 * BATCH_OUTPUT / 1_000_000
    over = quote_in + quote_out - Decimal("0.02")
    fitting = math.floor(1024 * (quote_out - over) / quote_out)
    log = "".join(capfd.readouterr())
    assert f"max_cost_usd=0.02 refuses these requests: they may cost up to ${quote_in + quote_out:,.4f}" in log
    assert f"${over:,.4f} over the cap" in log
    assert f"lower max_tokens to at most {fitting:,} (from 1,024" in log
    assert "send at most about 2 of the 4 requests per run" in log
    assert "counted with count_tokens (1 request shape(s))" in log and "Nothing was submitted." in log
    assert not (tmp_path / "cost_quote.json").exists()


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_under_the_cap_submits_and_the_manifest_keeps_the_quote_beside_the_actual_cost(claude_emulator, tmp_path):
    prompts = [*PROMPTS, PROMPTS[0] + " and its follow-up actions, owners and dates"]  # one longer: scaled up
    dag = make_dag(
        "cap_passes", requests=prompts, model=MODEL, max_tokens=64, results_uri=f"file://{tmp_path}", max_cost_usd=1
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    assert claude_emulator.state()["calls"][COUNT] == 1
    manifest = outcome.xcom("batch")
    quote = manifest["cost_quote"]
    assert (quote["max_cost_usd"], quote["method"], quote["route"]) == (1, "count_tokens", "batch")
    [(model, by_model)] = quote["by_model"].items()
    landed = rows(manifest["results_uri"])
    actual_input = sum(row["usage"]["input_tokens"] for row in landed)
    assert model == MODEL and by_model["output_tokens"] == 5 * 64
    assert by_model["input_tokens"] >= actual_input  # equal-length prompts exactly, the longer one scaled up
    assert by_model["input_tokens"] - actual_input < tokens(prompts[-1]) - tokens(PROMPTS[0]) + 1
    assert manifest["cost"]["batch_usd"] <= quote["quote_usd"] <= 1
    assert json.loads((tmp_path / "manifest.json").read_text())["cost_quote"] == quote


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_with_caching_the_quote_prices_every_cache_write_as_if_nothing_hit(claude_emulator, tmp_path):
    guide = "Check each public function for a docstring and type hints. " * 80
    dag = make_dag(
        "cap_cached",
        requests=PROMPTS,
        model=MODEL,
        system=guide,
        max_tokens=64,
        results_uri=f"file://{tmp_path}",
        cache_shared_prefix=True,
        max_cost_usd=1,
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    manifest = outcome.xcom("batch")
    by_model = manifest["cost_quote"]["by_model"][MODEL]
    prefix = tokens(guide)
    assert by_model["cache_write_tokens"]["1h"] == pytest.approx(4 * prefix, abs=4)  # every request writing
    whole = sum(tokens(guide + p) for p in PROMPTS)
    assert by_model["input_tokens"] + by_model["cache_write_tokens"]["1h"] == pytest.approx(whole, abs=4)
    bound = (
        by_model["input_tokens"] * BATCH_INPUT
        + by_model["cache_write_tokens"]["1h"] * BATCH_WRITE_1H
        + 4 * 64 * BATCH_OUTPUT
    ) / 1_000_000
    assert manifest["cost_quote"]["quote_usd"] == float(bound.quantize(Decimal("0.000001")))
    assert manifest["cost"]["batch_usd"] < manifest["cost_quote"]["quote_usd"]  # hits made it cheaper


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_without_the_counting_endpoint_the_requests_bytes_bound_the_input(claude_emulator, tmp_path, capfd):
    claude_emulator.configure(faults=[{"method": "POST", "path": "/v1/messages/count_tokens", "status": 404}])
    dag = make_dag(
        "cap_bytes", requests=PROMPTS, model=MODEL, max_tokens=64, results_uri=f"file://{tmp_path}", max_cost_usd=1
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    quote = outcome.xcom("batch")["cost_quote"]
    assert quote["method"] == "byte bound" and quote["counted_shapes"] == 0
    sent = prepare_requests(PROMPTS, RequestDefaults(model=MODEL, max_tokens=64)).encoded
    assert quote["by_model"][MODEL]["input_tokens"] == sum(map(len, sent))  # a token is never shorter than a byte
    assert "count_tokens could not count a request (HTTP 404" in "".join(capfd.readouterr())


def test_the_byte_bound_and_an_unpriced_model_are_named_in_the_refusal():
    priced = ModelQuote(MODEL, 10, 50_000, {}, 10_000, Decimal("0.15"), Decimal("0.075"), Decimal(0))
    quote = CostQuote(
        "batch", (priced,), shapes=1, counted_shapes=0, requests=10, counted=0, max_tokens=frozenset({1000})
    )
    refusal = cap_refusal(quote, 0.1)
    assert "bounded by the requests' bytes" in refusal and "let count_tokens count the input" in refusal
    assert "or raise max_cost_usd to at least 0.15" in refusal
    input_heavy = ModelQuote(MODEL, 10, 90_000, {}, 100, Decimal("0.2"), Decimal("0.19"), Decimal(0))
    refusal = cap_refusal(CostQuote("batch", (input_heavy,), 1, 1, 10, 10, frozenset({10})), 0.1)
    assert "the input alone may cost $0.1900, so lowering max_tokens cannot fit" in refusal
    unpriced = ModelQuote("claude-imaginary-1", 1, 10, {}, 10, None, None, None)
    refusal = cap_refusal(CostQuote("batch", (unpriced,), 1, 1, 1, 1, frozenset({10})), 100)
    assert "cannot bound the cost of claude-imaginary-1" in refusal


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_cost_usd": 0}, ValueError, "max_cost_usd must be a positive number of US dollars"),
        ({"max_cost_usd": "ten"}, TypeError, "max_cost_usd must be a number"),
        ({"cache_shared_prefix": "yes"}, TypeError, "cache_shared_prefix must be True or False"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClaudeBatchOperator(task_id="t", requests=["a"], **kwargs)


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_the_decorator_takes_both_levers(claude_emulator, tmp_path):
    from airflow.sdk import DAG, task

    with DAG("cap_decorated", schedule=None, start_date=START, catchup=False) as dag:

        @task.claude_batch(
            model=MODEL,
            max_tokens=4096,
            results_uri=f"file://{tmp_path}",
            cache_shared_prefix=True,
            max_cost_usd=0.01,
            min_poll_interval=0.05,
        )
        def reviews() -> list[str]:
            return PROMPTS

        reviews()

    assert run_dag(dag).task_states == {"reviews": "failed"}
    assert CREATE not in claude_emulator.state()["calls"]


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_a_task_with_a_synchronous_rescue_is_quoted_at_sync_prices(claude_emulator, tmp_path, capfd):
    # The rescue may send every request synchronously: a cap the batch price fits but the sync price does not refuses.
    from datetime import timedelta

    quote_at_batch = (sum(tokens(p) for p in PROMPTS) * BATCH_INPUT + 4 * 1024 * BATCH_OUTPUT) / 1_000_000
    cap = float(quote_at_batch * Decimal("1.5"))  # over the batch quote, under the sync one (twice it)
    dag = make_dag(
        "cap_rescue",
        requests=PROMPTS,
        model=MODEL,
        max_tokens=1024,
        results_uri=f"file://{tmp_path}",
        max_cost_usd=cap,
        deadline=timedelta(hours=6),
        rescue="sync",
        rescue_lead=timedelta(hours=1),
    )
    assert run_dag(dag).task_states == {"batch": "failed"}
    assert CREATE not in claude_emulator.state()["calls"]
    log = "".join(capfd.readouterr())
    assert f"they may cost up to ${2 * quote_at_batch:,.4f}" in log and "at sync prices" in log
