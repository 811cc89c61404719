"""The emulator, exercised only through the unmodified ``anthropic`` SDK over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx2
import jsonschema
import pytest
from pydantic import BaseModel, Field

from airflow_provider_claude_batch.cli import build_parser
from airflow_provider_claude_batch.testing.emulator import (
    EmulatorClient,
    EmulatorConfig,
    EmulatorServer,
    load_config,
)

MODEL = "claude-sonnet-4-6"
KEY = "test-key"


def params(text: str = "Hello there, emulator", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}


def requests(n: int, prefix: str = "req") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "params": params(f"Summarise item {i} of the list")} for i in range(n)]


def client(emu: EmulatorServer, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=emu.url, **kwargs)


def wait_ended(api: anthropic.Anthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        time.sleep(0.05)


async def async_wait_ended(api: anthropic.AsyncAnthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        await asyncio.sleep(0.05)


def results_by_id(api: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {row.custom_id: row.result for row in api.messages.batches.results(batch_id)}


# --------------------------------------------------------------------------------------------
# lifecycle


def test_create_retrieve_results_sync(claude_emulator):
    claude_emulator.configure(processing_seconds=0.6)
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(3))

    assert re.fullmatch(r"msgbatch_[0-9A-Za-z]{24}", batch.id)
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3 and batch.request_counts.succeeded == 0
    assert batch.results_url is None and batch.ended_at is None and batch.archived_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(86400, abs=0.01)

    time.sleep(0.3)  # some requests are done by now, but counts must not move before the end
    mid = api.messages.batches.retrieve(batch.id)
    assert mid.processing_status == "in_progress"
    assert mid.request_counts.processing == 3 and mid.request_counts.succeeded == 0

    ended = wait_ended(api, batch.id)
    assert ended.request_counts.processing == 0 and ended.request_counts.succeeded == 3
    assert ended.ended_at is not None
    assert ended.results_url == f"{claude_emulator.url}/v1/messages/batches/{batch.id}/results"

    results = results_by_id(api, batch.id)
    assert set(results) == {"req-0", "req-1", "req-2"}
    message = results["req-1"].message
    assert results["req-1"].type == "succeeded"
    assert message.id.startswith("msg_") and message.model == MODEL and message.role == "assistant"
    assert "Summarise item 1 of the list" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.service_tier == "batch"
    assert message.usage.input_tokens == -(-len("Summarise item 1 of the list") // 4)  # ceil(chars / 4)
    assert message.usage.output_tokens >= 1

    again = results_by_id(api, batch.id)
    assert again["req-1"].message.id == message.id  # re-downloads are identical


def test_results_are_jsonl_with_one_line_per_request(claude_emulator):
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(7))
    wait_ended(api, batch.id)
    with api.messages.batches.with_streaming_response.results(batch.id) as response:
        body = response.read()
        assert response.headers["request-id"].startswith("req_")
    lines = body.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])
    assert sorted(json.loads(line)["custom_id"] for line in lines[:-1]) == sorted(f"req-{i}" for i in range(7))


async def test_async_client_full_cycle(claude_emulator):
    claude_emulator.configure(processing_seconds=2.0, cancel_seconds=0.1)
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url)
    first = await api.messages.batches.create(requests=requests(4, "a"))
    second = await api.messages.batches.create(requests=requests(2, "b"))

    ids = [b.id async for b in api.messages.batches.list(limit=1)]
    assert ids == [second.id, first.id]  # newest first, across pages

    canceling = await api.messages.batches.cancel(first.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    ended = await async_wait_ended(api, first.id)
    counts = ended.request_counts
    assert counts.canceled + counts.succeeded == 4 and counts.canceled >= 1
    rows = [row async for row in await api.messages.batches.results(first.id)]
    assert {row.result.type for row in rows} <= {"canceled", "succeeded"} and len(rows) == 4

    with pytest.raises(anthropic.BadRequestError, match=r"[Cc]ancel"):
        await api.messages.batches.delete(second.id)
    deleted = await api.messages.batches.delete(first.id)
    assert deleted.id == first.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await api.messages.batches.retrieve(first.id)
    await api.close()


def test_cancel_then_delete_sync(claude_emulator):
    claude_emulator.configure(processing_seconds=5.0, cancel_seconds=0.1)
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(20))
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        api.messages.batches.delete(batch.id)
    assert "cancel" in excinfo.value.body["error"]["message"].lower()

    assert api.messages.batches.cancel(batch.id).processing_status == "canceling"
    ended = wait_ended(api, batch.id)
    assert ended.cancel_initiated_at is not None
    assert ended.request_counts.canceled + ended.request_counts.succeeded == 20
    assert ended.request_counts.canceled >= 15  # cancelled ~0 s into a 5 s batch

    unchanged = api.messages.batches.cancel(batch.id)  # cancel of an ended batch is a no-op
    assert unchanged.processing_status == "ended" and unchanged.ended_at == ended.ended_at

    assert api.messages.batches.delete(batch.id).type == "message_batch_deleted"
    assert claude_emulator.state()["batch_count"] == 0


def test_list_paginates_45_batches_newest_first(claude_emulator):
    api = client(claude_emulator)
    created = [api.messages.batches.create(requests=requests(1)).id for _ in range(45)]

    first_page = api.messages.batches.list(limit=20)
    assert len(first_page.data) == 20 and first_page.has_more is True
    assert first_page.first_id == created[-1] and first_page.last_id == created[-20]

    listed = [b.id for b in api.messages.batches.list(limit=20)]
    assert listed == list(reversed(created))
    assert claude_emulator.state()["calls"]["GET /v1/messages/batches"] == 1 + 3

    newer = [b.id for b in api.messages.batches.list(limit=20, before_id=created[4])]
    assert sorted(newer) == sorted(created[5:])

    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError, match="limit"):
            api.messages.batches.list(limit=bad)


def test_unknown_batch_is_404_with_envelope(claude_emulator):
    api = client(claude_emulator)
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        api.messages.batches.retrieve("msgbatch_doesnotexist")
    assert excinfo.value.body["type"] == "error"
    assert excinfo.value.body["error"]["type"] == "not_found_error"
    assert excinfo.value.request_id and excinfo.value.request_id.startswith("req_")
    assert excinfo.value.body["request_id"] == excinfo.value.request_id


def test_results_before_the_end_are_400(claude_emulator):
    claude_emulator.configure(processing_seconds=30)
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(1))
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        api.messages.batches.results(batch.id)  # the SDK refuses locally
    response = httpx2.get(f"{claude_emulator.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": KEY})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------------------------
# outcomes


def test_configured_outcomes_and_times(claude_emulator):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    claude_emulator.configure(
        outcomes=[
            {"match": "^flaky-", "result": "errored", "error_type": "overloaded_error", "times": 1},
            {"match": "^bad-", "result": "errored", "error_type": "invalid_request_error"},
            {"match": "^late-", "result": "expired"},
            {"match": "^gone-", "result": "canceled"},
            {"match": "^broken-", "result": "invalid_output"},
        ]
    )
    api = client(claude_emulator)
    reqs = [
        {"custom_id": "flaky-1", "params": params()},
        {"custom_id": "bad-1", "params": params()},
        {"custom_id": "late-1", "params": params()},
        {"custom_id": "gone-1", "params": params()},
        {"custom_id": "ok-1", "params": params()},
        {"custom_id": "wrongmodel-1", "params": {**params(), "model": "gpt-4o"}},
        {
            "custom_id": "broken-1",
            "params": params(output_config={"format": {"type": "json_schema", "schema": schema}}),
        },
    ]
    batch = api.messages.batches.create(requests=reqs)
    ended = wait_ended(api, batch.id)
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.canceled) == (2, 3, 1, 1)

    results = results_by_id(api, batch.id)
    assert results["flaky-1"].error.error.type == "overloaded_error"
    assert results["flaky-1"].error.type == "error"
    assert results["bad-1"].error.error.type == "invalid_request_error"
    assert results["wrongmodel-1"].error.error.type == "invalid_request_error"
    assert "gpt-4o" in results["wrongmodel-1"].error.error.message
    assert results["late-1"].type == "expired" and results["gone-1"].type == "canceled"
    assert results["ok-1"].type == "succeeded"
    broken = json.loads(results["broken-1"].message.content[0].text)
    assert "a" not in broken  # valid JSON, but the required field is missing

    retry = api.messages.batches.create(requests=[{"custom_id": "flaky-1", "params": params()}])
    wait_ended(api, retry.id)
    assert results_by_id(api, retry.id)["flaky-1"].type == "succeeded"  # times=1 is used up


def test_error_rate_is_deterministic(claude_emulator):
    claude_emulator.configure(error_rate=0.5, seed=7)
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(200))
    first = {cid: r.type for cid, r in results_by_id(api, wait_ended(api, batch.id).id).items()}
    errored = sum(t == "errored" for t in first.values())
    assert 60 < errored < 140

    claude_emulator.reset()
    claude_emulator.configure(error_rate=0.5, seed=7)
    batch = api.messages.batches.create(requests=requests(200))
    second = {cid: r.type for cid, r in results_by_id(api, wait_ended(api, batch.id).id).items()}
    assert second == first


def test_expiry_with_large_time_scale(claude_emulator):
    claude_emulator.configure(processing_seconds=10, time_scale=86400 / 0.3)
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(100))
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(0.3, abs=0.01)
    ended = wait_ended(api, batch.id, timeout=3)
    counts = ended.request_counts
    assert counts.expired >= 80 and counts.expired + counts.succeeded == 100
    assert {r.type for r in results_by_id(api, batch.id).values()} <= {"expired", "succeeded"}


def test_archived_results_are_404(claude_emulator):
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(2))
    wait_ended(api, batch.id)
    claude_emulator.advance(29 * 86400 + 1)
    archived = api.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None and archived.processing_status == "ended"
    with pytest.raises(anthropic.NotFoundError, match="no longer available"):
        list(api.messages.batches.results(batch.id))


def test_prompt_cache_write_then_read(claude_emulator):
    system = [{"type": "text", "text": "You are a careful assistant. " * 40, "cache_control": {"type": "ephemeral"}}]
    api = client(claude_emulator)
    reqs = [{"custom_id": f"c-{i}", "params": params(f"question {i}", system=system)} for i in range(3)]
    batch = api.messages.batches.create(requests=reqs)
    wait_ended(api, batch.id)
    usage = {cid: r.message.usage for cid, r in results_by_id(api, batch.id).items()}
    cached = len(system[0]["text"]) // 4
    assert usage["c-0"].cache_creation_input_tokens == cached and usage["c-0"].cache_read_input_tokens == 0
    assert usage["c-1"].cache_read_input_tokens == cached and usage["c-1"].cache_creation_input_tokens == 0
    assert usage["c-2"].cache_read_input_tokens == cached


# --------------------------------------------------------------------------------------------
# create-time validation, auth, size limits


def _with(**change: Any) -> list[dict[str, Any]]:
    request = {"custom_id": "ok", "params": params()}
    for key, value in change.items():
        if key == "custom_id":
            request["custom_id"] = value
        elif value is None:
            request["params"].pop(key)
        else:
            request["params"][key] = value
    return [request]


@pytest.mark.parametrize(
    ("reqs", "message"),
    [
        ([], "requests: List should have at least 1 item after validation, not 0"),
        (_with(custom_id="has space"), "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
        (_with(custom_id="x" * 65), "requests.0.custom_id: String should have at most 64 characters"),
        (_with(custom_id=""), "requests.0.custom_id: String should have at least 1 character"),
        ([*_with(), *_with()], "requests.1.custom_id: Duplicate custom_id 'ok'"),
        (_with(model=None), "requests.0.params.model: Field required"),
        (_with(model=3), "requests.0.params.model: Input should be a valid string"),
        (_with(max_tokens=0), "requests.0.params.max_tokens: Input should be greater than or equal to 1"),
        (_with(max_tokens="9"), "requests.0.params.max_tokens: Input should be a valid integer"),
        (_with(messages=[]), "requests.0.params.messages: List should have at least 1 item"),
        (_with(messages=None), "requests.0.params.messages: Field required"),
        (_with(stream=True), "requests.0.params.stream: streaming is not supported"),
        ([{"custom_id": "x"}], "requests.0.params: Field required"),
    ],
)
def test_create_validation_errors(claude_emulator, reqs, message):
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        api.messages.batches.create(requests=reqs)
    err = excinfo.value
    assert err.status_code == 400
    assert err.body["type"] == "error" and err.body["error"]["type"] == "invalid_request_error"
    assert err.body["error"]["message"].startswith(message)
    assert err.request_id.startswith("req_")
    assert claude_emulator.state()["batch_count"] == 0


def test_too_many_requests_and_too_large_body(claude_emulator):
    claude_emulator.configure(max_requests_per_batch=3, max_body_bytes=2000)
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="at most 3 items"):
        api.messages.batches.create(requests=requests(4))
    big = [{"custom_id": "big", "params": params("x" * 5000)}]
    with pytest.raises(anthropic.APIStatusError) as excinfo:
        api.messages.batches.create(requests=big)
    assert excinfo.value.status_code == 413
    assert excinfo.value.body["error"]["type"] == "request_too_large"
    assert api.messages.batches.create(requests=requests(2)).request_counts.processing == 2


def test_auth_header_styles(claude_emulator, claude_emulator_factory):
    url = f"{claude_emulator.url}/v1/messages/batches"
    assert httpx2.get(url, headers={"x-api-key": "anything"}).status_code == 200
    assert httpx2.get(url, headers={"authorization": "Bearer anything"}).status_code == 200
    missing = httpx2.get(url, headers={"anthropic-version": "2023-06-01"})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["request-id"] == missing.json()["request_id"]

    locked = claude_emulator_factory(api_key="secret")
    assert anthropic.Anthropic(api_key="secret", base_url=locked.url).messages.batches.list().data == []
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="wrong", base_url=locked.url).messages.batches.list()
    wrong = httpx2.get(f"{locked.url}/v1/messages/batches", headers={"x-api-key": "wrong"})
    assert wrong.status_code == 401


# --------------------------------------------------------------------------------------------
# fault injection


def test_sdk_retries_through_429_with_retry_after(claude_emulator):
    claude_emulator.configure(
        faults=[{"method": "POST", "path": "/v1/messages/batches", "status": 429, "count": 2, "retry_after": 0.2}]
    )
    api = client(claude_emulator, max_retries=2)
    started = time.monotonic()
    batch = api.messages.batches.create(requests=requests(2))
    assert time.monotonic() - started >= 0.4  # honoured retry-after twice
    state = claude_emulator.state()
    assert state["create_calls"] == 3 and state["faults_injected"] == 2 and state["batch_count"] == 1
    assert api.messages.batches.retrieve(batch.id).id == batch.id  # GETs are not affected


def test_sdk_retries_through_500_and_529(claude_emulator):
    claude_emulator.configure(
        faults=[
            {"method": "POST", "path": "/v1/messages/batches", "status": 500, "count": 1, "retry_after": 0.01},
            {"method": "POST", "path": "/v1/messages/batches", "status": 529, "count": 1, "retry_after": 0.01},
        ]
    )
    client(claude_emulator, max_retries=2).messages.batches.create(requests=requests(1))
    assert claude_emulator.state()["create_calls"] == 3

    claude_emulator.reset()
    claude_emulator.configure(faults=[{"path": "/v1/messages/batches", "status": 529, "count": 1}])
    with pytest.raises(anthropic.OverloadedError) as excinfo:
        client(claude_emulator, max_retries=0).messages.batches.list()
    assert excinfo.value.body["error"]["type"] == "overloaded_error"
    assert claude_emulator.state()["calls"]["GET /v1/messages/batches"] == 1


def test_store_fault_keeps_the_batch_but_loses_the_answer(claude_emulator):
    claude_emulator.configure(
        faults=[{"method": "POST", "path": "/v1/messages/batches", "status": 500, "count": 1, "store": True}]
    )
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        api.messages.batches.create(requests=requests(3))
    state = claude_emulator.state()
    assert state["batch_count"] == 1 and state["create_calls"] == 1
    assert state["batches"][0]["request_count"] == 3
    assert state["batches"][0]["custom_ids_sample"] == ["req-0", "req-1", "req-2"]
    assert [b.id for b in api.messages.batches.list()] == [state["batches"][0]["id"]]


def test_results_cut_mid_stream_raises(claude_emulator):
    claude_emulator.configure(faults=[{"path": r"/v1/messages/batches/[^/]+/results", "cut_after_rows": 5}])
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(50))
    wait_ended(api, batch.id)
    seen = []
    with pytest.raises((httpx2.HTTPError, anthropic.APIError)):
        for row in api.messages.batches.results(batch.id):
            seen.append(row.custom_id)
    assert 1 <= len(seen) <= 5  # the SDK re-chunks by 64 bytes, so the tail of row 5 may be lost
    received = b""
    with (
        api.messages.batches.with_streaming_response.results(batch.id) as response,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        for chunk in response.iter_bytes():
            received += chunk
    assert received.count(b"\n") == 5 and received.endswith(b"\n")
    claude_emulator.configure(faults=[])
    assert len(results_by_id(api, batch.id)) == 50


def test_results_cut_once_then_complete(claude_emulator):
    claude_emulator.configure(faults=[{"path": r"/v1/messages/batches/[^/]+/results", "cut_after_rows": 3, "count": 1}])
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(30))
    wait_ended(api, batch.id)
    with (
        api.messages.batches.with_streaming_response.results(batch.id) as response,
        pytest.raises(httpx2.HTTPError),
    ):
        response.read()
    assert len(results_by_id(api, batch.id)) == 30
    assert claude_emulator.state()["faults_injected"] == 1


def test_a_full_download_is_replayed_byte_for_byte_and_a_cut_one_is_not_kept(claude_emulator):
    claude_emulator.configure(
        error_rate=0.3,
        seed=3,
        faults=[{"path": r"/v1/messages/batches/[^/]+/results", "cut_after_rows": 3, "count": 1}],
    )
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(40))
    wait_ended(api, batch.id)
    with (
        api.messages.batches.with_streaming_response.results(batch.id) as response,
        pytest.raises(httpx2.HTTPError),
    ):
        response.read()
    stored = claude_emulator.emulator_state.batches[batch.id]
    assert stored.rendered is None  # the cut download rendered 3 rows only: nothing kept

    def download() -> bytes:
        with api.messages.batches.with_streaming_response.results(batch.id) as response:
            return response.read()

    first = download()
    assert stored.rendered is not None
    assert download() == first
    assert len(first.splitlines()) == 40


# --------------------------------------------------------------------------------------------
# responses


class Priority(str, Enum):
    low = "low"
    high = "high"


class Item(BaseModel):
    name: str = Field(min_length=3)
    quantity: int = Field(ge=1, le=5)
    price: float = Field(gt=0, lt=10)


class Order(BaseModel):
    summary: str
    priority: Priority
    items: list[Item] = Field(min_length=2)
    note: str | None = None
    urgent: bool
    kind: Literal["order"]


def test_structured_output_validates_against_the_pydantic_schema(claude_emulator):
    schema = Order.model_json_schema()
    output_config = {"format": {"type": "json_schema", "schema": schema}}
    api = client(claude_emulator)
    message = api.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=[{"role": "user", "content": "Order three red apples for the kitchen"}],
        extra_body={"output_config": output_config},
    )
    order = Order.model_validate_json(message.content[0].text)
    jsonschema.validate(json.loads(message.content[0].text), schema)
    assert order.kind == "order" and len(order.items) >= 2
    words = set(["Order", "three", "red", "apples", "for", "the", "kitchen"])
    assert set(order.summary.split()) <= words  # derived from the prompt

    batch = api.messages.batches.create(
        requests=[{"custom_id": "o1", "params": params("Ship paper", output_config=output_config)}]
    )
    wait_ended(api, batch.id)
    Order.model_validate_json(results_by_id(api, batch.id)["o1"].message.content[0].text)


def test_forced_tool_use(claude_emulator):
    tool = {
        "name": "record_weather",
        "description": "Record a weather report",
        "input_schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "celsius": {"type": "number", "minimum": -30, "maximum": 45},
                "conditions": {"type": "array", "items": {"enum": ["sun", "rain", "snow"]}, "minItems": 1},
            },
            "required": ["city", "celsius", "conditions"],
            "additionalProperties": False,
        },
    }
    message = client(claude_emulator).messages.create(
        model=MODEL,
        max_tokens=512,
        messages=[{"role": "user", "content": "Weather in Lisbon today"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "record_weather"},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "record_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, tool["input_schema"])


def test_pytest_prompt_yields_compilable_tests(claude_emulator):
    source = (
        "def add(a, b):\n    return a + b\n\n\ndef _private():\n    pass\n\n\ndef slugify(text):\n    return text\n"
    )
    prompt = f"Write pytest tests for this module:\n\n```python\n{source}```\n"
    message = client(claude_emulator).messages.create(
        model=MODEL, max_tokens=4096, messages=[{"role": "user", "content": prompt}]
    )
    code = re.search(r"```python\n(.*?)```", message.content[0].text, re.DOTALL).group(1)
    compile(code, "test_generated.py", "exec")
    assert "def test_add():" in code and "def test_slugify():" in code and "test__private" not in code
    namespace: dict[str, Any] = {}
    exec(compile(code, "test_generated.py", "exec"), namespace)
    namespace["test_add"]()
    namespace["test_slugify"]()


def test_max_tokens_truncates_and_stop_sequences(claude_emulator):
    api = client(claude_emulator)
    short = api.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hello " * 30}])
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    assert len(short.content[0].text) <= 8
    stopped = api.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "abc"}], stop_sequences=["answer"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "answer"
    assert stopped.usage.service_tier == "standard"


def test_messages_validation_is_immediate(claude_emulator):
    api = client(claude_emulator, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        api.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="model"):
        api.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert claude_emulator.state()["messages_calls"] == 2


def test_streaming_messages(claude_emulator):
    api = client(claude_emulator)
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Tell me a long story about streaming servers and clients"}],
    }
    with api.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    plain = api.messages.create(**kwargs)
    assert text == plain.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_async_streaming_messages(claude_emulator):
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url)
    async with api.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "async hello"}]
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
    assert "async hello" in text
    await api.close()


def test_hundred_thousand_requests(claude_emulator):
    claude_emulator.configure(processing_seconds=0)
    api = client(claude_emulator, timeout=60)
    started = time.monotonic()
    batch = api.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params(f"row {i}")} for i in range(100_000)]
    )
    assert batch.request_counts.processing == 100_000
    wait_ended(api, batch.id)
    streamed = time.monotonic()
    count = 0
    with api.messages.batches.with_streaming_response.results(batch.id) as response:
        for chunk in response.iter_bytes():
            count += chunk.count(b"\n")
    assert count == 100_000
    assert time.monotonic() - streamed < 4
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------------------------
# config, admin, runners


def test_config_sources(tmp_path):
    path = tmp_path / "emu.json"
    path.write_text(json.dumps({"processing_seconds": 9, "outcomes": [{"match": "x", "result": "expired"}]}))
    env = {"CLAUDE_EMULATOR_PROCESSING_SECONDS": "3", "CLAUDE_EMULATOR_API_KEY": "k", "CLAUDE_EMULATOR_SEED": "4"}
    config = load_config(path, environ=env, time_scale=2.0, api_key=None)
    assert config.processing_seconds == 3 and config.api_key == "k" and config.seed == 4
    assert config.time_scale == 2.0 and config.outcomes[0].result == "expired"
    assert EmulatorConfig.from_file(path).processing_seconds == 9
    with pytest.raises(ValueError):
        EmulatorConfig(faults=[{"path": "/v1/x"}])  # neither status nor cut_after_rows
    with pytest.raises(ValueError):
        EmulatorConfig(outcomes=[{"match": "(", "result": "errored"}])
    with pytest.raises(ValueError):
        EmulatorConfig(procesing_seconds=1)


def test_admin_endpoints_over_http(claude_emulator):
    admin = EmulatorClient(claude_emulator.url)
    assert admin.health()["status"] == "ok"
    assert admin.configure(processing_seconds=0.05)["processing_seconds"] == 0.05
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(2))
    state = admin.state()
    assert state["create_calls"] == 1 and state["batches"][0]["id"] == batch.id
    assert state["calls"] == {"POST /v1/messages/batches": 1}
    assert admin.advance(60)["clock_offset"] == 60
    assert api.messages.batches.retrieve(batch.id).processing_status == "ended"
    admin.reset()
    assert admin.state()["batch_count"] == 0 and admin.state()["config"]["processing_seconds"] == 0.05
    admin.reset(config=True)
    assert admin.state()["config"]["processing_seconds"] == 2.0
    bad = httpx2.post(f"{claude_emulator.url}/_emulator/config", json={"error_rate": 3})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_server_context_manager_binds_a_free_port():
    with EmulatorServer({"processing_seconds": 0}) as emu:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emu.url) and emu.port > 0
        assert client(emu).messages.batches.list().data == []
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{emu.url}/_emulator/health")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_starts_answers_and_stops_on_sigterm():
    assert build_parser().parse_args(["emulator", "--port", "1"]).port == 1
    port = _free_port()
    script = shutil.which("claude-batch", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "airflow_provider_claude_batch.cli"]
    process = subprocess.Popen(
        [*command, "emulator", "--port", str(port), "--processing-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert process.stdout is not None
        assert url in process.stdout.readline()
        EmulatorClient(url).wait_until_ready(timeout=10)
        assert EmulatorClient(url).state()["config"]["processing_seconds"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
