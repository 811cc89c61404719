"""Requests checked against the SDK's own types and the API's documented rules, before any network call.

The operator tests go through ``ClaudeBatchOperator.prepare`` (what ``execute`` runs before
anything is created) against the emulator, and count what reached it.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

import pytest

from airflow_provider_claude_batch.requests import (
    RequestDefaults,
    RequestValidationError,
    encode_json,
    prepare_requests,
)
from airflow_provider_claude_batch.validation import checker as checker_module
from airflow_provider_claude_batch.validation.checker import RequestChecker
from airflow_provider_claude_batch.validation.schema import message_params_view

DEFAULTS = RequestDefaults(model="claude-sonnet-4-6", max_tokens=256)


def problems(items, defaults=DEFAULTS, **kwargs) -> str:
    with pytest.raises(RequestValidationError) as caught:
        prepare_requests(items, defaults, **kwargs)
    return str(caught.value)


def user(content="hi"):
    return {"role": "user", "content": content}


def test_the_view_is_compiled_from_the_installed_sdk_types():
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    view = message_params_view(allow_stream=False)
    assert set(MessageCreateParamsNonStreaming.__annotations__) <= set(view.fields)
    required = {key for key, (needed, _) in view.fields.items() if needed}
    assert required == {"model", "max_tokens", "messages"}


def test_a_params_typo_gets_a_did_you_mean_and_nothing_is_sent():
    text = problems([{"custom_id": "a", "prompt": "x", "temprature": 0.2}])
    assert "request[0] (custom_id 'a'): temprature: unknown parameter; did you mean 'temperature'?" in text
    assert "nothing was sent to the API" in text


def test_unknown_parameters_without_a_near_name_say_which_sdk_was_asked():
    import anthropic

    text = problems([{"custom_id": "a", "prompt": "x", "frobnicate": 1}])
    assert f"the Messages API of anthropic {anthropic.__version__} has no such parameter" in text


def test_a_leading_system_message_points_to_the_system_parameter():
    text = problems([{"custom_id": "s", "messages": [{"role": "system", "content": "Be terse."}, user()]}])
    assert "messages[0]: a conversation starts with a user turn, not a system message" in text
    assert "system= on the operator" in text


def test_mid_conversation_system_messages_need_a_model_that_takes_them():
    messages = [user(), {"role": "system", "content": "Now in French."}]
    text = problems([{"custom_id": "m", "messages": messages}])
    assert "claude-sonnet-4-6 does not accept mid-conversation system messages" in text
    prepared = prepare_requests([{"custom_id": "m", "messages": messages, "model": "claude-opus-4-8"}], DEFAULTS)
    assert prepared.count == 1


def test_content_blocks_are_told_apart_by_type_with_their_own_keys():
    content = [
        {"type": "iamge", "source": {}},
        {"type": "text", "txt": "x"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpg", "data": "iVBOR"}},
        {"type": "text", "text": "   "},
    ]
    text = problems([{"custom_id": "c", "messages": [user(content)]}])
    assert "messages[0].content[0].type: 'iamge' is not a known type; did you mean 'image'?" in text
    assert "messages[0].content[1].txt: unknown key in a text block; did you mean 'text'?" in text
    assert (
        "'image/jpg' is not one of 'image/jpeg', 'image/png', 'image/gif', 'image/webp'; did you mean 'image/jpeg'?"
        in text
    )
    assert "messages[0].content[3].text: text blocks must contain non-whitespace text" in text


def test_tools_need_an_object_schema_and_tool_choice_a_defined_tool():
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}, {"name": "broken"}]
    text = problems(
        [{"custom_id": "t", "prompt": "x", "tools": tools, "tool_choice": {"type": "tool", "name": "lokup"}}]
    )
    assert "tools[1].input_schema: is required in a tool" in text
    assert (
        "tool_choice.name: 'lokup' is not one of the request's tools ['lookup', 'broken']; did you mean 'lookup'?"
        in text
    )
    text = problems([{"custom_id": "t", "prompt": "x", "tools": [{"name": "n", "input_schema": {"type": "string"}}]}])
    assert "tools[0].input_schema: must be a JSON schema of an object" in text


def test_tool_results_answer_the_tool_uses_right_before_them():
    messages = [
        user("weather?"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "here"}, {"type": "tool_result", "tool_use_id": "toolu_2"}],
        },
    ]
    text = problems([{"custom_id": "r", "messages": messages}])
    assert "'toolu_2' answers no tool_use block of the assistant turn right before it" in text
    assert "tool_result blocks must come first in the turn" in text
    assert "missing ['toolu_1']" in text


def test_thinking_budget_and_sampling_ranges():
    thinking = {"type": "enabled", "budget_tokens": 4096}
    text = problems([{"custom_id": "k", "prompt": "x", "max_tokens": 2048, "thinking": thinking, "temperature": 0.3}])
    assert "thinking.budget_tokens: 4,096 must be less than max_tokens (2,048)" in text
    assert "temperature: thinking needs the default temperature (1)" in text
    text = problems([{"custom_id": "p", "prompt": "x", "temperature": 1.5, "top_p": -0.1}])
    assert "temperature: must be from 0 to 1, got 1.5" in text
    assert "top_p: must be from 0 to 1, got -0.1" in text


def test_max_tokens_within_the_model_limit_and_the_300k_batch_beta():
    text = problems([{"custom_id": "big", "prompt": "x", "max_tokens": 200_000}])
    assert "max_tokens: 200,000 is over claude-sonnet-4-6's output limit of 128,000" in text
    assert "betas=['output-300k-2026-03-24'] (up to 300,000)" in text
    beta = RequestChecker(batch=True, betas=frozenset({"output-300k-2026-03-24"}))
    assert (
        prepare_requests([{"custom_id": "big", "prompt": "x", "max_tokens": 200_000}], DEFAULTS, checker=beta).count
        == 1
    )
    text = problems([{"custom_id": "big", "prompt": "x", "max_tokens": 200_000}], allow_stream=True)
    assert "use ClaudeMessageOperator" not in text and "use ClaudeBatchOperator with betas=" in text
    text = problems(
        [{"custom_id": "h", "prompt": "x", "model": "claude-haiku-4-5", "max_tokens": 100_000}], checker=beta
    )
    assert "over claude-haiku-4-5's output limit of 64,000; lower it" in text


def test_batch_only_limits_stream_and_cache_prewarming():
    text = problems([{"custom_id": "z", "prompt": "x", "max_tokens": 0}])
    assert "max_tokens=0 pre-warms the prompt cache, which a batch cannot" in text
    assert (
        prepare_requests([{"custom_id": "z", "prompt": "x", "max_tokens": 0}], DEFAULTS, allow_stream=True).count == 1
    )


def test_a_model_id_with_a_dot_for_a_dash_is_caught_offline():
    text = problems([{"custom_id": "d", "prompt": "x", "model": "claude-sonnet-4.6"}])
    assert "model: model 'claude-sonnet-4.6' is not a known model id; did you mean 'claude-sonnet-4-6'?" in text


def test_every_problem_of_every_request_at_once_by_index_and_custom_id():
    items = ["fine", {"custom_id": "a", "prompt": "x", "temprature": 1}, {"custom_id": "b", "prompt": "x", "top_p": 2}]
    with pytest.raises(RequestValidationError) as caught:
        prepare_requests(items, DEFAULTS)
    assert [(p.index, p.custom_id) for p in caught.value.problems] == [(1, "a"), (2, "b")]


def test_one_verdict_per_shape_not_per_request(monkeypatch):
    judged = []
    original = RequestChecker._judge

    def counting(self, params, *, native):
        judged.append(params)
        return original(self, params, native=native)

    monkeypatch.setattr(RequestChecker, "_judge", counting)
    checker = RequestChecker()
    prepared = prepare_requests([f"Summarise ticket {i}." for i in range(500)], DEFAULTS, checker=checker)
    assert prepared.count == 500
    assert len(judged) == 1
    # Blank text and trailing whitespace are shapes of their own: the rules look at them.
    with pytest.raises(RequestValidationError):
        prepare_requests(["ok", {"custom_id": "blank", "messages": [user("  ")]}], DEFAULTS, checker=checker)
    assert len(judged) == 2


def test_msgspec_writes_the_sdks_bytes_and_other_values_fall_back(monkeypatch):
    from anthropic._utils._json import openapi_dumps

    items = [
        {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [user("é \u2028 \x00 \x7f ✓ \n")]}},
        {"custom_id": "b", "prompt": "x", "temperature": 1e-5, "top_k": 2**70},
        {"custom_id": "c", "prompt": "x", "stop_sequences": ("END",)},
    ]
    prepared = prepare_requests(items, DEFAULTS)
    for encoded in prepared.encoded:
        assert encoded == openapi_dumps(json.loads(encoded))
    assert prepared.encoded[1] == encode_json(json.loads(prepared.encoded[1]))
    assert b'"temperature":1e-05' in prepared.encoded[1]
    with pytest.raises(RequestValidationError, match="not JSON-serialisable"):
        prepare_requests([{"custom_id": "n", "prompt": "x", "temperature": math.nan}], DEFAULTS)
    assert checker_module.MAX_SHAPES > 0


# -- through the operator, against the emulator ------------------------------------------------


@pytest.fixture
def operator(claude_conn, tmp_path):
    from airflow.sdk import DAG

    from airflow_provider_claude_batch.hooks import claude

    claude._model_catalogs.clear()  # the Models API is asked once per process: ask this test's emulator

    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

    def make(**kwargs):
        with DAG(f"checks_{len(kwargs)}", schedule=None, start_date=datetime(2026, 1, 1)):
            return ClaudeBatchOperator(task_id="t", results_uri=f"file://{tmp_path}/out", **kwargs)

    return make


def test_request_mistakes_reach_nothing_but_the_error(operator, claude_emulator):
    requests = [
        {"custom_id": "typo", "prompt": "x", "temprature": 0.5},
        {"custom_id": "sys", "messages": [{"role": "system", "content": "Be terse."}, user()]},
    ]
    with pytest.raises(RequestValidationError) as caught:
        operator(requests=requests, model="claude-sonnet-4-6").prepare()
    assert "did you mean 'temperature'" in str(caught.value)
    assert "not a system message" in str(caught.value)
    assert claude_emulator.state()["calls"] == {}


def test_a_model_the_models_api_does_not_list_costs_one_call_and_no_create(operator, claude_emulator):
    with pytest.raises(RequestValidationError) as caught:
        operator(requests=["a", "b"], model="claude-sonet-4-6").prepare()
    text = str(caught.value)
    assert "model 'claude-sonet-4-6' is not offered to this API key" in text
    assert "did you mean 'claude-sonnet-4-6'?" in text
    assert "(2 requests use 'claude-sonet-4-6')" in text
    assert claude_emulator.state()["calls"] == {"GET /v1/models": 1}


def test_the_models_api_is_asked_once_per_connection(operator, claude_emulator):
    operator(requests=["a"], model="claude-haiku-4-5").prepare()
    operator(requests=["b"], model="claude-haiku-4-5").prepare()
    assert claude_emulator.state()["calls"] == {"GET /v1/models": 1}


def test_a_forbidden_models_api_warns_and_goes_on(operator, claude_emulator, capfd):
    claude_emulator.configure(faults=[{"method": "GET", "path": "/v1/models", "status": 403, "count": 1}])
    prepared = operator(requests=["a"], model="claude-haiku-4-5").prepare()
    assert prepared.count == 1
    assert "could not list the models (HTTP 403 PermissionDeniedError)" in capfd.readouterr().out


def test_the_models_api_list_takes_aliases_of_dated_ids_and_its_own_limits():
    from airflow_provider_claude_batch.validation.models import (
        ModelCatalog,
        RuleContext,
        output_limit_problem,
        unknown_model_problem,
    )

    catalog = ModelCatalog.from_api(
        [{"id": "claude-sonnet-4-5-20250929", "max_tokens": 64000}, {"id": "claude-next-9", "max_tokens": 1000}]
    )
    assert unknown_model_problem("claude-sonnet-4-5", catalog) is None
    assert "did you mean 'claude-next-9'?" in unknown_model_problem("claude-nxt-9", catalog)
    problem = output_limit_problem("claude-next-9", 2000, RuleContext(catalog=catalog))
    assert problem == "2,000 is over claude-next-9's output limit of 1,000; lower it"


def test_values_msgspec_does_not_write_fall_back_to_the_sdk_encoder():
    from anthropic._utils._json import openapi_dumps

    schema = {"type": "object", "properties": {True: {"type": "string"}}}
    tools = [{"name": "t", "input_schema": schema}]
    [encoded] = prepare_requests([{"custom_id": "k", "prompt": "x", "tools": tools}], DEFAULTS).encoded
    assert b'"properties":{"true":' in encoded
    assert encoded == openapi_dumps(json.loads(encoded))


def test_the_300k_beta_is_checked_sent_and_honoured(operator, claude_emulator):
    import time

    task = operator(requests=["long"], model="claude-sonnet-4-6", max_tokens=200_000, betas=["output-300k-2026-03-24"])
    prepared = task.prepare()
    batch = task.hook.create_batch(prepared)
    while task.hook.retrieve_batch(batch.id).processing_status != "ended":
        time.sleep(0.1)
    with task.hook.stream_results(batch.id) as chunks:
        [row] = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert row["result"]["type"] == "succeeded"
    with pytest.raises(RequestValidationError, match="over claude-sonnet-4-6's output limit of 128,000"):
        operator(requests=["long"], model="claude-sonnet-4-6", max_tokens=200_000).prepare()


def test_cache_breakpoints_are_checked_against_the_apis_limit_and_order():
    ephemeral = {"type": "ephemeral"}
    five = [{"type": "text", "text": f"part {i}", "cache_control": ephemeral} for i in range(5)]
    text = problems([{"custom_id": "five", "messages": [user(five)]}])
    assert "at most 4 cache_control breakpoints (the top-level cache_control counts as one); this one has 5" in text
    four_and_automatic = {"custom_id": "auto", "messages": [user([*five[:4], {"type": "text", "text": "q"}])]}
    assert "this one has 5" in problems([{**four_and_automatic, "cache_control": ephemeral}])
    misordered = [
        {"type": "text", "text": "short", "cache_control": ephemeral},
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    assert "with ttl '1h' comes after one with ttl '5m'" in problems(
        [{"custom_id": "o", "prompt": "q", "system": misordered}]
    )
    fine = [{**misordered[1]}, {**misordered[0]}]  # 1 hour first, then 5 minutes: accepted
    assert prepare_requests([{"prompt": "q", "system": fine}], DEFAULTS).count == 1
