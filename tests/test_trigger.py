"""ClaudeBatchTrigger against the emulator: serialisation, waiting through faults, timeout, kill."""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest
from support import TEST_API_KEY

from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline


@pytest.fixture
def client(claude_emulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=TEST_API_KEY, base_url=claude_emulator.url)


def submit(client: anthropic.Anthropic, n: int = 3) -> str:
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"hello {i}"}],
            },
        }
        for i in range(n)
    ]
    return client.messages.batches.create(requests=requests).id


def fast_trigger(batch_ids: list[str], **overrides) -> ClaudeBatchTrigger:
    kwargs = {"batch_ids": batch_ids, "end_time": time.time() + 30, "min_poll_interval": 0.05, "max_poll_interval": 0.2}
    kwargs.update(overrides)
    return ClaudeBatchTrigger(**kwargs)


async def first_event(trigger: ClaudeBatchTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_serialize_round_trips_through_the_encrypted_trigger_table(airflow_db):
    from airflow.models.trigger import Trigger

    trigger = ClaudeBatchTrigger(
        batch_ids=["msgbatch_a", "msgbatch_b"],
        end_time=1_800_000_000.5,
        min_poll_interval=2.0,
        max_poll_interval=90.0,
        cancel_on_kill=False,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_claude_batch.triggers.batch.ClaudeBatchTrigger"
    stored = Trigger.encrypt_kwargs(kwargs)
    restored_kwargs = Trigger._decrypt_kwargs(stored)
    assert restored_kwargs == kwargs
    assert TEST_API_KEY not in str(stored)
    restored = ClaudeBatchTrigger(**restored_kwargs)
    assert restored.serialize() == (classpath, kwargs)


def test_waits_until_every_batch_ends_and_fires_one_event(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=0.6)
    ids = [submit(client), submit(client, 2)]
    payload = wait_inline(fast_trigger(ids))
    assert payload["status"] == "ended"
    assert payload["batch_ids"] == ids
    assert [b["processing_status"] for b in payload["batches"]] == ["ended", "ended"]
    assert [b["request_counts"]["succeeded"] for b in payload["batches"]] == [3, 2]
    assert all(b["results_url"].startswith(claude_emulator.url) for b in payload["batches"])
    assert payload["polls"] >= 2


def test_one_status_call_per_batch_per_poll(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=0.5)
    ids = [submit(client) for _ in range(3)]
    before = claude_emulator.state()["calls"].get("GET /v1/messages/batches/{message_batch_id}", 0)
    payload = wait_inline(fast_trigger(ids))
    after = claude_emulator.state()["calls"].get("GET /v1/messages/batches/{message_batch_id}", 0)
    assert after - before <= payload["polls"] * len(ids)


def test_triggers_in_one_loop_share_a_few_status_call_slots(client, claude_conn, claude_emulator, monkeypatch):
    # A triggerer running many triggers keeps a bounded number of status calls in flight (and so a
    # small connection pool and a responsive event loop); every trigger still gets its event.
    from anthropic.resources.messages.batches import AsyncBatches

    from airflow_provider_claude_batch.triggers import batch as trigger_module

    monkeypatch.setattr(trigger_module, "POLLS_IN_FLIGHT", 3)
    claude_emulator.configure(processing_seconds=0.4)
    ids = [submit(client, 1) for _ in range(12)]
    in_flight = peak = 0
    retrieve = AsyncBatches.retrieve

    async def counted(self, *args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await retrieve(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(AsyncBatches, "retrieve", counted)

    async def all_events() -> list[dict]:
        return await asyncio.gather(*(first_event(fast_trigger([batch_id])) for batch_id in ids))

    payloads = asyncio.run(all_events())
    assert [payload["status"] for payload in payloads] == ["ended"] * len(ids)
    assert peak == 3


def test_keeps_waiting_through_429_500_and_529(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=0.8)
    batch_id = submit(client)
    claude_emulator.configure(
        faults=[
            {"method": "GET", "path": r"^/v1/messages/batches/[^/]+$", "status": 429, "count": 2, "retry_after": 0.1},
            {"method": "GET", "path": r"^/v1/messages/batches/[^/]+$", "status": 500, "count": 2},
            {"method": "GET", "path": r"^/v1/messages/batches/[^/]+$", "status": 529, "count": 2},
        ]
    )
    payload = wait_inline(fast_trigger([batch_id]))
    assert payload["status"] == "ended"
    assert claude_emulator.state()["faults_injected"] == 6


def test_deadline_gives_a_clean_timeout_event(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    started = time.monotonic()
    payload = wait_inline(fast_trigger([batch_id], end_time=time.time() + 0.5))
    assert time.monotonic() - started < 5
    assert payload["status"] == "timeout"
    assert batch_id in payload["message"]
    assert payload["batches"][0]["processing_status"] == "in_progress"


def test_unknown_batch_is_a_clear_error(claude_conn):
    payload = wait_inline(fast_trigger(["msgbatch_doesnotexist000000000"]))
    assert payload["status"] == "error"
    assert "was not found (404)" in payload["message"]


def test_on_kill_cancels_unfinished_batches(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    trigger = fast_trigger([batch_id])

    async def run_then_kill() -> None:
        task = asyncio.ensure_future(first_event(trigger))
        await asyncio.sleep(0.3)
        task.cancel()
        await trigger.on_kill()

    asyncio.run(run_then_kill())
    assert client.messages.batches.retrieve(batch_id).processing_status in ("canceling", "ended")


def test_on_kill_leaves_batches_alone_when_told_to(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    asyncio.run(fast_trigger([batch_id], cancel_on_kill=False).on_kill())
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"


def test_cleanup_has_no_side_effects(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    asyncio.run(fast_trigger([batch_id]).cleanup())
    assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"


def test_triggers_share_one_async_client(claude_conn):
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

    async def clients() -> set[int]:
        built = [await ClaudeHook().get_async_conn(max_retries=0) for _ in range(50)]
        return {id(client) for client in built}

    assert len(asyncio.run(clients())) == 1


def test_rejects_nonsense_arguments():
    with pytest.raises(ValueError, match="at least one batch id"):
        ClaudeBatchTrigger(batch_ids=[])
    with pytest.raises(ValueError, match=r"max_poll_interval \(1 s\) must not be less than min_poll_interval"):
        ClaudeBatchTrigger(batch_ids=["b"], min_poll_interval=10, max_poll_interval=1)
