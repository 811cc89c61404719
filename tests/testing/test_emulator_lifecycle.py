"""The batch lifecycle and outcomes (``emulator/lifecycle.py``, ``store.py``), through the SDK over real HTTP."""

from __future__ import annotations

import json
import re
import time

import anthropic
import httpx2
import pytest
from emulator_helpers import KEY, MODEL, async_wait_ended, client, params, requests, results_by_id, wait_ended


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
    assert results["wrongmodel-1"].error.error.type == "not_found_error"  # as the Messages API answers it
    assert results["wrongmodel-1"].error.error.message == "model: gpt-4o"
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
