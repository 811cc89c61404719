"""cache_shared_prefix: where the breakpoint goes (and does not), and what a cached batch costs, to the token."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from airflow_support import run_dag

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests
from airflow_provider_claude_batch.shared_prefix import break_even_hit_rate, place_breakpoints

MODEL = "claude-sonnet-4-6"  # caches prefixes of 1,024 tokens or more
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}
GUIDE = "Check every public function for a docstring, type hints and a test; report what is missing. " * 60
REFERENCE = "Reference: the payments module's API, function by function, with examples of use. " * 60
REFERENCE_BLOCK = {"type": "text", "text": REFERENCE}
GUIDE_BLOCK = {"type": "text", "text": GUIDE}
TOOLS = [
    {"name": "lookup", "description": "Find a symbol in the code base. " * 30, "input_schema": {"type": "object"}},
    {"name": "open_file", "description": "Read one file.", "input_schema": {"type": "object"}},
]


def prepared(requests, *, system=None, **params):
    defaults = RequestDefaults(model=MODEL, max_tokens=256, system=system, params=params)
    return prepare_requests(requests, defaults)


def decoded(prepared_requests) -> list[dict]:
    return [json.loads(encoded)["params"] for encoded in prepared_requests.encoded]


def test_the_breakpoint_ends_a_shared_system_prompt():
    batch = prepared([f"Review file {i}.py" for i in range(4)], system=GUIDE)
    plan = place_breakpoints(batch)
    for params in decoded(batch):
        assert params["system"] == [{"type": "text", "text": GUIDE, "cache_control": ONE_HOUR}]
        assert params["messages"] == [{"role": "user", "content": params["messages"][0]["content"]}]
        assert isinstance(params["messages"][0]["content"], str)  # the varying part is untouched
    [group] = plan.groups.values()
    assert (group.where, group.placed, group.requests) == ("system", 4, 4)
    assert group.tokens == -(-len(GUIDE) // 4)


def test_the_breakpoint_ends_the_last_shared_unit_in_cache_order_tools_system_messages():
    requests = [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": REFERENCE}, {"type": "text", "text": q}]}]}
        for q in ("What does charge() return?", "Which errors can refund() raise?", "Is capture() idempotent?")
    ]
    batch = prepared(requests, system="You answer questions about the code.", tools=TOOLS)
    plan = place_breakpoints(batch)
    for params in decoded(batch):
        first, question = params["messages"][0]["content"]
        assert first == {"type": "text", "text": REFERENCE, "cache_control": ONE_HOUR}
        assert "cache_control" not in question
        assert params["system"] == "You answer questions about the code."  # before the breakpoint: unchanged
        assert all("cache_control" not in tool for tool in params["tools"])
    assert plan.groups[MODEL].where == "messages[0].content[0]"


def test_a_shared_tool_set_alone_gets_the_breakpoint_on_its_last_tool():
    toolbox = [
        {
            "name": f"tool_{n}",
            "description": "Find a symbol in the code base. " * 30,
            "input_schema": {"type": "object"},
        }
        for n in range(8)
    ]
    batch = prepared([{"prompt": f"Task {i}", "system": f"You are agent {i}."} for i in range(3)], tools=toolbox)
    plan = place_breakpoints(batch)
    assert plan.groups[MODEL].where == "tools[7]"
    for params in decoded(batch):
        assert params["tools"][7]["cache_control"] == ONE_HOUR
        assert sum("cache_control" in tool for tool in params["tools"]) == 1


@pytest.mark.parametrize(
    ("requests", "system", "reason"),
    [
        (["a", "b"], "Be brief.", "is about 3 tokens, under claude-sonnet-4-6's minimum cacheable length of 1,024"),
        ([{"prompt": "a", "system": GUIDE}, {"prompt": "b", "system": REFERENCE}], None, "share no leading"),
        (["only one"], GUIDE, "only one request uses claude-sonnet-4-6"),
    ],
    ids=["too-short", "nothing-shared", "one-request"],
)
def test_no_breakpoint_when_the_prefix_is_too_short_or_not_shared(requests, system, reason):
    batch = prepared(requests, system=system)
    before = list(batch.encoded)
    plan = place_breakpoints(batch)
    assert batch.encoded == before
    assert reason in plan.groups[MODEL].reason and plan.placed == 0


def test_haikus_higher_minimum_is_respected():
    batch = prepare_requests(["a", "b"], RequestDefaults(model="claude-haiku-4-5", max_tokens=64, system=GUIDE))
    plan = place_breakpoints(batch)  # about 1,400 tokens: enough for Sonnet 4.6, not for Haiku 4.5's 4,096
    assert "minimum cacheable length of 4,096" in plan.groups["claude-haiku-4-5"].reason


def test_a_users_own_breakpoints_are_kept_and_never_a_fifth_or_a_misordered_one():
    own = {"type": "ephemeral"}  # 5 minutes
    marked_guide = [{"type": "text", "text": GUIDE, "cache_control": own}]
    requests = [
        {"custom_id": "own-at-the-end", "prompt": "x", "system": marked_guide},
        {
            "custom_id": "four-already",
            "system": GUIDE,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": f"part {i}", "cache_control": own} for i in range(4)],
                }
            ],
        },
        {"custom_id": "free", "prompt": "y", "system": GUIDE},
    ]
    batch = prepared(requests)
    plan = place_breakpoints(batch)
    by_id = {json.loads(e)["custom_id"]: json.loads(e)["params"] for e in batch.encoded}
    assert by_id["own-at-the-end"]["system"] == marked_guide  # the user's 5-minute breakpoint, not moved or changed
    assert by_id["four-already"]["system"] == GUIDE  # would be a fifth
    assert by_id["free"]["system"][0]["cache_control"] == ONE_HOUR
    group = plan.groups[MODEL]
    assert (group.placed, group.already_marked) == (1, 1)
    assert group.skipped == {"already has four breakpoints": 1}

    # A 5-minute breakpoint before the shared prefix's end: a 1-hour one after it would be refused.
    requests = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{**REFERENCE_BLOCK, "cache_control": own}, GUIDE_BLOCK, {"type": "text", "text": q}],
                }
            ]
        }
        for q in ("a", "b")
    ]
    plan = place_breakpoints(prepared(requests))
    assert plan.groups[MODEL].where == "messages[0].content[1]"
    assert plan.groups[MODEL].skipped == {"has a 5-minute breakpoint before it (1-hour breakpoints must come first)": 2}


def test_different_tool_choice_stops_the_shared_prefix_before_the_messages():
    requests = [
        {"messages": [{"role": "user", "content": [REFERENCE_BLOCK, {"type": "text", "text": q}]}], "tool_choice": c}
        for q, c in (("a", {"type": "auto"}), ("b", {"type": "any"}))
    ]
    plan = place_breakpoints(prepared(requests, system=GUIDE, tools=TOOLS))
    assert plan.groups[MODEL].where == "system"


def test_marking_is_deterministic_and_part_of_the_fingerprint():
    def marked():
        batch = prepared([f"Review file {i}.py" for i in range(3)], system=GUIDE)
        place_breakpoints(batch)
        return batch

    plain = prepared([f"Review file {i}.py" for i in range(3)], system=GUIDE)
    assert marked().fingerprint() == marked().fingerprint() != plain.fingerprint()
    assert marked().custom_ids == plain.custom_ids
    assert marked().models[MODEL].input_bytes == sum(map(len, marked().encoded))


def test_caching_pays_once_more_than_about_half_the_requests_hit():
    # A miss writes at 2x the input price, a hit reads at 0.1x: (2 - 1) / (2 - 0.1)
    assert break_even_hit_rate(MODEL) == Decimal(1) / Decimal("1.9")
    assert break_even_hit_rate("claude-opus-5-5") == Decimal(4) / Decimal("7.8")  # reads at 0.05x
    assert break_even_hit_rate("claude-imaginary-1") is None


# -- through Airflow and the emulator -----------------------------------------------------------

START = datetime(2026, 1, 1)
# Batch prices of Sonnet 4.6 per million tokens: half of $3 input and $15 output; a 1-hour cache
# write is 2x the input price, a read 0.1x.
BATCH_INPUT, BATCH_OUTPUT = Decimal("1.5"), Decimal("7.5")
BATCH_WRITE_1H, BATCH_READ = 2 * BATCH_INPUT, BATCH_INPUT / 10


def make_dag(dag_id: str, **operator_kwargs):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        ClaudeBatchOperator(task_id="batch", min_poll_interval=0.05, max_poll_interval=0.2, **operator_kwargs)
    return dag


def read_rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_a_cached_batch_is_priced_from_its_rows_usage_to_the_token(claude_emulator, tmp_path, capfd):
    dag = make_dag(
        "cache_shared_prefix",
        requests=[f"Review file {i}.py" for i in range(6)],
        model=MODEL,
        system=GUIDE,
        max_tokens=128,
        results_uri=f"file://{tmp_path}/out",
        cache_shared_prefix=True,
    )
    outcome = run_dag(dag)
    assert outcome.task_states == {"batch": "success"}
    manifest = outcome.xcom("batch")
    rows = read_rows(manifest["results_uri"])
    prefix = -(-len(GUIDE) // 4)  # the emulator's count of the system prompt
    writes = [row for row in rows if row["usage"]["cache_creation_input_tokens"]]
    reads = [row for row in rows if row["usage"]["cache_read_input_tokens"]]
    assert len(writes) == 1 and len(reads) == 5  # the first request writes, the others read
    assert writes[0]["usage"]["cache_creation_1h_input_tokens"] == prefix
    assert all(row["usage"]["cache_read_input_tokens"] == prefix for row in reads)

    def cost(usage: dict) -> Decimal:
        five_minute = usage["cache_creation_input_tokens"] - usage["cache_creation_1h_input_tokens"]
        assert five_minute == 0
        return (
            usage["input_tokens"] * BATCH_INPUT
            + usage["output_tokens"] * BATCH_OUTPUT
            + usage["cache_creation_1h_input_tokens"] * BATCH_WRITE_1H
            + usage["cache_read_input_tokens"] * BATCH_READ
        ) / 1_000_000

    expected = sum(cost(row["usage"]) for row in rows)
    assert manifest["cost"]["batch_usd"] == float(expected.quantize(Decimal("0.000001")))
    cached = 6 * prefix
    saved = (cached * BATCH_INPUT - prefix * BATCH_WRITE_1H - 5 * prefix * BATCH_READ) / 1_000_000
    assert manifest["caching"] == {
        "cache_shared_prefix": True,
        "cache_write_input_tokens": prefix,
        "cache_write_1h_input_tokens": prefix,
        "cache_read_input_tokens": 5 * prefix,
        "read_share": round(5 / 6, 4),
        "saving_usd": float(saved.quantize(Decimal("0.000001"))),
    }
    log = "".join(capfd.readouterr())
    assert "a 1-hour cache breakpoint after system" in log and "placed in 6 of 6 request(s)" in log
    assert f"the prompt cache saved ${saved:.4f}" in log


@pytest.mark.usefixtures("airflow_db", "claude_conn")
def test_a_prefix_too_short_to_cache_is_sent_unmarked_and_says_why(claude_emulator, tmp_path, capfd):
    dag = make_dag(
        "cache_too_short",
        requests=["a", "b"],
        model=MODEL,
        system="Be brief.",
        results_uri=f"file://{tmp_path}/out",
        cache_shared_prefix=True,
    )
    outcome = run_dag(dag)
    manifest = outcome.xcom("batch")
    assert manifest["caching"]["cache_write_input_tokens"] == manifest["caching"]["cache_read_input_tokens"] == 0
    assert "under claude-sonnet-4-6's minimum cacheable length of 1,024" in "".join(capfd.readouterr())
