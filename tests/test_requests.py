"""The request model: shorthands, defaults, validation errors, serialisation, splitting."""

from __future__ import annotations

import json

import pytest

from airflow_provider_claude_batch.requests import (
    RequestDefaults,
    RequestSourceError,
    RequestValidationError,
    encode_json,
    iter_jsonl,
    prepare_requests,
)

DEFAULTS = RequestDefaults(model="claude-sonnet-4-6", max_tokens=256)


def decoded(prepared):
    return [json.loads(encoded) for encoded in prepared.encoded]


def problems_of(items, defaults=DEFAULTS):
    with pytest.raises(RequestValidationError) as caught:
        prepare_requests(items, defaults)
    return caught.value


def test_prompt_string_becomes_a_user_message_with_the_defaults():
    [request] = decoded(prepare_requests(["Summarise the report"], DEFAULTS))
    assert request["params"] == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Summarise the report"}],
    }
    assert request["custom_id"].startswith("req-")


def test_prompt_shorthand_overrides_defaults_and_keeps_its_custom_id():
    items = [{"custom_id": "doc-1", "prompt": "Hi", "max_tokens": 10, "temperature": 0.2}]
    [request] = decoded(prepare_requests(items, DEFAULTS))
    assert request == {
        "custom_id": "doc-1",
        "params": {
            "model": "claude-sonnet-4-6",
            "max_tokens": 10,
            "temperature": 0.2,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    }


def test_multi_turn_images_tools_and_system_pass_through_untouched():
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "text", "text": "What is this?"},
            ],
        },
        {"role": "assistant", "content": "A logo."},
        {"role": "user", "content": "Which company?"},
    ]
    tools = [{"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    full = {"custom_id": "full", "params": {"messages": messages, "tools": tools, "system": system}}
    short = {"custom_id": "short", "messages": messages, "tools": tools}
    by_id = {r["custom_id"]: r["params"] for r in decoded(prepare_requests([full, short], DEFAULTS))}
    assert by_id["full"]["messages"] == messages
    assert by_id["full"]["tools"] == tools
    assert by_id["full"]["system"] == system
    assert by_id["short"]["messages"] == messages
    assert by_id["short"]["model"] == "claude-sonnet-4-6"


def test_operator_defaults_fill_only_what_a_full_request_leaves_out():
    defaults = RequestDefaults(
        model="claude-haiku-4-5", max_tokens=64, system="Be brief.", params={"temperature": 0.0, "top_k": 5}
    )
    items = [
        {
            "custom_id": "a",
            "params": {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "x"}], "temperature": 1.0},
        }
    ]
    [request] = decoded(prepare_requests(items, defaults))
    assert request["params"] == {
        "model": "claude-opus-4-8",
        "max_tokens": 64,
        "system": "Be brief.",
        "temperature": 1.0,
        "top_k": 5,
        "messages": [{"role": "user", "content": "x"}],
    }


def test_generated_custom_ids_are_deterministic_and_unique():
    items = ["same prompt", "same prompt", "other prompt"]
    first = prepare_requests(items, DEFAULTS).custom_ids
    second = prepare_requests(list(items), DEFAULTS).custom_ids
    assert first == second
    assert len(set(first)) == 3
    assert first[1] == f"{first[0]}-2"


def test_no_requests_is_an_error():
    error = problems_of([])
    assert "there are no requests; a batch needs at least one" in str(error)
    assert "nothing was sent to the API" in str(error)


@pytest.mark.parametrize(
    ("custom_id", "expected"),
    [
        ("has space", "custom_id must be 1-64 characters of letters, digits, '_' or '-'"),
        ("x" * 65, "(^[a-zA-Z0-9_-]{1,64}$)"),
        ("", "for example 'request-1'"),
        ("ünïcode", "custom_id must be 1-64 characters"),
    ],
)
def test_bad_custom_ids_are_named_with_index_and_a_suggestion(custom_id, expected):
    error = problems_of(["fine", {"custom_id": custom_id, "prompt": "x"}])
    assert f"request[1] (custom_id {custom_id!r})" in str(error)
    assert expected in str(error)
    assert error.problems[0].index == 1


def test_non_string_custom_id():
    error = problems_of([{"custom_id": 7, "prompt": "x"}])
    assert "request[0]: custom_id must be a string, got int" in str(error)


def test_duplicate_custom_ids_name_both_requests():
    error = problems_of(
        [{"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "y"}, {"custom_id": "a", "prompt": "z"}]
    )
    assert "request[2] (custom_id 'a'): duplicate custom_id, already used by request[0]" in str(error)


def test_duplicates_name_the_first_use_across_rejected_requests():
    # The first use is found from positions among accepted requests shifted by the rejected ones,
    # and a rejected request that used an id first is still named (no per-id index is kept).
    items = [
        {"custom_id": "bad id", "prompt": "x"},  # 0: rejected, takes no id
        {"custom_id": "a", "prompt": "x"},  # 1: accepted
        {"custom_id": "b", "prompt": "x", "max_tokens": 0},  # 2: rejected, but first to use "b"
        7,  # 3: rejected before it has an id
        {"custom_id": "c", "prompt": "x"},  # 4: accepted
        {"custom_id": "c", "prompt": "y"},  # 5
        {"custom_id": "a", "prompt": "y"},  # 6
        {"custom_id": "b", "prompt": "y"},  # 7
    ]
    message = str(problems_of(items))
    assert "request[5] (custom_id 'c'): duplicate custom_id, already used by request[4]" in message
    assert "request[6] (custom_id 'a'): duplicate custom_id, already used by request[1]" in message
    assert "request[7] (custom_id 'b'): duplicate custom_id, already used by request[2]" in message


def test_a_batch_that_fits_is_not_copied_by_split():
    prepared = prepare_requests(["a", "b"], DEFAULTS)
    assert prepared.split() == [prepared]
    assert prepared.split()[0] is prepared


def test_the_body_streams_in_blocks_not_one_chunk_per_request():
    from airflow_provider_claude_batch.requests import BODY_BLOCK_BYTES

    prepared = prepare_requests([f"prompt {i} " + "x" * 500 for i in range(2000)], DEFAULTS)
    chunks = list(prepared.body_chunks())
    assert 1 < len(chunks) <= prepared.body_size // BODY_BLOCK_BYTES + 1
    assert all(len(chunk) >= BODY_BLOCK_BYTES for chunk in chunks[:-1])
    assert b"".join(chunks) == b'{"requests":[' + b",".join(prepared.encoded) + b"]}"
    assert len(b"".join(chunks)) == prepared.body_size


@pytest.mark.parametrize("max_tokens", [0, -1, 1.5, "100", True])
def test_max_tokens_must_be_a_positive_integer(max_tokens):
    error = problems_of([{"custom_id": "a", "prompt": "x", "max_tokens": max_tokens}])
    assert f"'max_tokens' must be an integer of at least 1, got {max_tokens!r}" in str(error)


def test_missing_max_tokens_and_model_say_where_to_set_them():
    error = problems_of(["x"], RequestDefaults())
    text = str(error)
    assert "'model' is missing: set model= on the operator or 'model' in the request" in text
    assert "'max_tokens' is missing: set max_tokens= on the operator or in the request" in text
    assert "1 of 1 request(s)" in text


def test_messages_must_be_present_and_non_empty():
    error = problems_of([{"custom_id": "a", "params": {"messages": []}}])
    assert "request[0] (custom_id 'a'): 'messages' must be a non-empty list" in str(error)


def test_stream_is_refused_with_the_synchronous_alternative():
    error = problems_of([{"custom_id": "a", "prompt": "x", "stream": True}])
    assert "'stream' is set, but a batch hands back only finished results" in str(error)
    assert "ClaudeMessageOperator" in str(error)


def test_shapes_that_are_not_requests():
    error = problems_of(
        [
            42,
            {"custom_id": "a"},
            {"prompt": "x", "messages": []},
            {"custom_id": "b", "params": {}, "model": "m"},
            {"params": "text"},
        ]
    )
    text = str(error)
    assert "request[0]: a request must be a prompt string or a mapping, got int" in text
    assert "request[1] (custom_id 'a'): a request needs 'params' (the API's full form), 'prompt' or 'messages'" in text
    assert "request[2]: give either 'prompt' or 'messages', not both" in text
    assert "move those keys into 'params'" in text
    assert "request[4]: 'params' must be a mapping" in text
    assert len(error.problems) == 5


def test_all_problems_are_reported_at_once_and_long_lists_are_cut():
    items = [{"custom_id": f"bad id {i}", "prompt": "x"} for i in range(30)]
    error = problems_of(items)
    assert len(error.problems) == 30
    assert "30 of 30 request(s)" in str(error)
    assert "... and 10 more problem(s)" in str(error)


def test_unserialisable_params_are_reported():
    error = problems_of([{"custom_id": "a", "prompt": "x", "temperature": float("nan")}])
    assert "params are not JSON-serialisable" in str(error)


def test_encoding_matches_the_sdk_byte_for_byte():
    from anthropic._utils._json import openapi_dumps

    params = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "é ✓ \n"}]}
    prepared = prepare_requests([{"custom_id": "a", "params": params}, "b"], DEFAULTS)
    body = b"".join(prepared.body_chunks())
    assert body == openapi_dumps({"requests": decoded(prepared)})
    assert prepared.body_size == len(body)
    assert encode_json({"x": "é"}) == openapi_dumps({"x": "é"})


def test_fingerprint_changes_with_anything_billed():
    base = prepare_requests(["a", "b"], DEFAULTS).fingerprint()
    assert prepare_requests(["a", "b"], DEFAULTS).fingerprint() == base
    assert prepare_requests(["a", "c"], DEFAULTS).fingerprint() != base
    other_model = RequestDefaults(model="claude-haiku-4-5", max_tokens=256)
    assert prepare_requests(["a", "b"], other_model).fingerprint() != base


def test_split_by_count_keeps_order_and_every_request():
    prepared = prepare_requests([f"prompt {i}" for i in range(25)], DEFAULTS)
    parts = prepared.split(max_requests=10)
    assert [part.count for part in parts] == [10, 10, 5]
    assert [cid for part in parts for cid in part.custom_ids] == prepared.custom_ids


def test_split_by_size_measures_the_real_body():
    prepared = prepare_requests([f"prompt {i} " + "x" * 1000 for i in range(10)], DEFAULTS)
    limit = 3500
    parts = prepared.split(max_body_bytes=limit)
    assert len(parts) > 1
    assert all(part.body_size <= limit for part in parts)
    assert sum(part.count for part in parts) == 10


def test_a_request_larger_than_a_batch_is_an_error():
    prepared = prepare_requests(["small", "x" * 5000], DEFAULTS)
    with pytest.raises(RequestValidationError, match=r"request\[1\].*over the 4,000-byte batch limit"):
        prepared.split(max_body_bytes=4000)


def test_fast_mode_requests_are_noted_for_routing():
    prepared = prepare_requests([{"custom_id": "f", "prompt": "x", "speed": "fast"}, "y"], DEFAULTS)
    assert prepared.fast_mode_ids == ["f"]


def test_jsonl_reading_skips_blank_lines_and_names_bad_lines():
    lines = [b'"first"\n', b"\n", b'{"prompt": "second"}\n']
    assert list(iter_jsonl(lines, "s3://bucket/in.jsonl")) == ["first", {"prompt": "second"}]
    with pytest.raises(RequestSourceError, match=r"s3://bucket/in.jsonl, line 2: not valid JSON"):
        list(iter_jsonl([b'"ok"', b"{nope"], "s3://bucket/in.jsonl"))
