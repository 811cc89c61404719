"""ClaudeBatchTrigger against the emulator: serialisation, waiting through faults, timeout, kill."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import anthropic
import pytest
from support import TEST_API_KEY, claude_connection_uri

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


LIST = "GET /v1/messages/batches"
RETRIEVE = "GET /v1/messages/batches/{message_batch_id}"


def status_calls(emulator) -> int:
    calls = emulator.state()["calls"]
    return calls.get(LIST, 0) + calls.get(RETRIEVE, 0)


def test_status_calls_per_cycle_do_not_grow_with_the_number_of_batches(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=0.5)
    ids = [submit(client) for _ in range(3)]
    before = status_calls(claude_emulator)
    payload = wait_inline(fast_trigger(ids))
    assert payload["status"] == "ended"
    # One list page a cycle covers all three batches: no retrieve at all.
    assert status_calls(claude_emulator) - before == payload["polls"]
    assert claude_emulator.state()["calls"].get(RETRIEVE, 0) == 0


def test_triggers_in_one_loop_share_one_poller(client, claude_conn, claude_emulator):
    # Thirty deferred tasks in one triggerer: about one call a cycle for all of them, not thirty.
    claude_emulator.configure(processing_seconds=0.6)
    ids = [submit(client, 1) for _ in range(30)]
    before = status_calls(claude_emulator)

    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.hooks.poller import shared_poller

    async def all_events() -> tuple[list[dict], int]:
        payloads = await asyncio.gather(*(first_event(fast_trigger([batch_id])) for batch_id in ids))
        return payloads, (await shared_poller(ClaudeHook())).book.cycles

    payloads, cycles = asyncio.run(all_events())
    assert [payload["status"] for payload in payloads] == ["ended"] * len(ids)
    assert status_calls(claude_emulator) - before == cycles  # one list page a cycle, for all thirty
    assert claude_emulator.state()["calls"].get(RETRIEVE, 0) == 0


def test_a_cycle_that_ends_many_batches_wakes_their_triggers_a_slice_per_loop_turn(
    client, claude_conn, claude_emulator
):
    # One refresh sees every batch ended at once; a triggerer must not run all their reactions in one
    # turn of its event loop (every other trigger, and the triggerer itself, would wait for them).
    from airflow_provider_claude_batch.hooks.poller import WAKE_SLICE

    claude_emulator.configure(processing_seconds=0.1)
    ids = [submit(client, 1) for _ in range(3 * WAKE_SLICE)]
    time.sleep(0.2)  # all ended before the first look
    turn = 0

    async def count_turns() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    async def fired(batch_id: str) -> tuple[str, int]:
        payload = await first_event(fast_trigger([batch_id]))
        return payload["status"], turn

    async def scenario() -> list[tuple[str, int]]:
        counter = asyncio.ensure_future(count_turns())
        try:
            return await asyncio.gather(*(fired(batch_id) for batch_id in ids))
        finally:
            counter.cancel()

    outcomes = asyncio.run(scenario())
    assert {status for status, _ in outcomes} == {"ended"}
    per_turn = Counter(turn for _, turn in outcomes)
    assert max(per_turn.values()) <= WAKE_SLICE
    assert len(per_turn) >= 3


def test_a_trigger_cancelled_mid_wait_leaves_the_poller_consistent(client, claude_conn, claude_emulator):
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.hooks.poller import shared_poller

    claude_emulator.configure(processing_seconds=1.0)
    kept, dropped = submit(client, 1), submit(client, 1)

    async def scenario() -> tuple[dict, set[str]]:
        doomed = asyncio.ensure_future(first_event(fast_trigger([dropped])))
        survivor = asyncio.ensure_future(first_event(fast_trigger([kept])))
        await asyncio.sleep(0.3)
        doomed.cancel()
        payload = await survivor
        poller = await shared_poller(ClaudeHook())
        return payload, set(poller.book.tracked)

    payload, still_tracked = asyncio.run(scenario())
    assert payload["status"] == "ended"
    assert still_tracked == set()


def test_a_trigger_reinstantiated_on_another_event_loop_still_ends(client, claude_conn, claude_emulator):
    # A triggerer dies mid-wait; another one rebuilds the trigger from its serialised kwargs.
    claude_emulator.configure(processing_seconds=1.5)
    batch_id = submit(client)
    trigger = fast_trigger([batch_id])

    async def wait_briefly() -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(first_event(trigger), 0.4)

    asyncio.run(wait_briefly())  # the first triggerer's loop is gone
    _, kwargs = trigger.serialize()
    payload = asyncio.run(first_event(ClaudeBatchTrigger(**kwargs)))
    assert payload["status"] == "ended"
    assert payload["batches"][0]["request_counts"]["succeeded"] == 3


def test_keeps_waiting_through_429_500_and_529(client, claude_conn, claude_emulator, capfd):
    claude_emulator.configure(processing_seconds=0.8)
    batch_id = submit(client)
    claude_emulator.configure(
        faults=[
            {"method": "GET", "path": r"^/v1/messages/batches$", "status": 429, "count": 2, "retry_after": 0.1},
            {"method": "GET", "path": r"^/v1/messages/batches$", "status": 500, "count": 2},
            {"method": "GET", "path": r"^/v1/messages/batches$", "status": 529, "count": 2},
        ]
    )
    payload = wait_inline(fast_trigger([batch_id]))
    assert payload["status"] == "ended"
    assert claude_emulator.state()["faults_injected"] == 6
    logs = "".join(capfd.readouterr())
    # Each failing refresh is said once in the task's log, with how long the failures have lasted.
    assert "failed transiently (HTTP 429 RateLimitError; 1 cycle(s) in a row)" in logs
    assert "failed transiently (HTTP 500 InternalServerError; 3 cycle(s) in a row)" in logs
    assert "failed transiently (HTTP 529 OverloadedError; 6 cycle(s) in a row)" in logs


def test_a_404_right_after_creation_is_waited_through(client, claude_emulator, monkeypatch):
    # The list is not served here (a gateway), and retrieve answers 404 for a while: the API's
    # propagation delay. Inside the grace window the trigger keeps waiting, and the batch ends.
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url, not_found_grace_seconds=60)
    )
    claude_emulator.configure(processing_seconds=0.8)
    batch_id = submit(client)
    claude_emulator.configure(
        faults=[
            {"method": "GET", "path": r"^/v1/messages/batches$", "status": 404},
            {"method": "GET", "path": r"^/v1/messages/batches/[^/]+$", "status": 404, "count": 3},
        ]
    )
    payload = wait_inline(fast_trigger([batch_id], submitted_at=time.time()))
    assert payload["status"] == "ended"
    assert claude_emulator.state()["faults_injected"] >= 3


def test_deadline_gives_a_clean_timeout_event(client, claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    started = time.monotonic()
    payload = wait_inline(fast_trigger([batch_id], end_time=time.time() + 0.5))
    assert time.monotonic() - started < 5
    assert payload["status"] == "timeout"
    assert batch_id in payload["message"]
    assert payload["batches"][0]["processing_status"] == "in_progress"


def test_unknown_batch_is_a_clear_error_once_the_grace_window_is_over(claude_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url, not_found_grace_seconds=0.5)
    )
    payload = wait_inline(fast_trigger(["msgbatch_doesnotexist000000000"]))
    assert payload["status"] == "error"
    assert "msgbatch_doesnotexist000000000 was not found (404) for more than" in payload["message"]
    assert "another workspace or base URL" in payload["message"]


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


class _TriggererComms:
    """The triggerer's channel to its supervisor: answers how many task instances are deferred.

    Other messages (the connection lookup registers the key for masking) get no answer, as a
    supervisor gives none to them.
    """

    def __init__(self, deferred: int, delay: float = 0.0) -> None:
        self.deferred = deferred
        self.delay = delay
        self.asked: list = []

    async def asend(self, message):
        from airflow.sdk.execution_time.comms import GetTICount, TICount

        if not isinstance(message, GetTICount):
            return None
        self.asked.append(message)
        await asyncio.sleep(self.delay)  # the supervisor answers on its own loop's next turn
        return TICount(count=self.deferred)


@pytest.mark.latest_airflow_only
@pytest.mark.parametrize(("deferred", "cancelled"), [(1, False), (0, True)])
def test_on_kill_cancels_only_when_the_task_left_its_deferral(
    client, claude_conn, claude_emulator, monkeypatch, deferred, cancelled
):
    """A trigger handed to another triggerer is still deferred there: Airflow calls on_kill, we keep the batch."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    comms = _TriggererComms(deferred)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    trigger = fast_trigger([batch_id])
    trigger.task_instance = SimpleNamespace(dag_id="nightly", run_id="night_01", task_id="generate", map_index=3)
    asyncio.run(trigger.on_kill())
    status = client.messages.batches.retrieve(batch_id).processing_status
    assert (status != "in_progress") is cancelled
    (asked,) = comms.asked
    assert (asked.dag_id, asked.run_ids, asked.task_ids, asked.map_index) == ("nightly", ["night_01"], ["generate"], 3)
    assert asked.states == ["deferred"]


@pytest.mark.latest_airflow_only
def test_on_kill_finishes_its_cancel_although_airflow_cancels_it_again(
    client, claude_conn, claude_emulator, monkeypatch
):
    """Airflow 3.3 re-sends the cancellation about every second until the trigger exits: the cancel still happens."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time import task_runner

    claude_emulator.configure(processing_seconds=60)
    batch_id = submit(client)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", _TriggererComms(deferred=0, delay=0.5), raising=False)
    trigger = fast_trigger([batch_id])
    trigger.task_instance = SimpleNamespace(dag_id="nightly", run_id="night_01", task_id="generate", map_index=-1)

    async def kill_then_cancel_the_kill_again() -> None:
        killing = asyncio.ensure_future(trigger.on_kill())
        await asyncio.sleep(0.1)
        killing.cancel()  # while on_kill still waits for the supervisor's answer
        with pytest.raises(asyncio.CancelledError):
            await killing
        for _ in range(50):
            if client.messages.batches.retrieve(batch_id).processing_status != "in_progress":
                return
            await asyncio.sleep(0.1)

    asyncio.run(kill_then_cancel_the_kill_again())
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
