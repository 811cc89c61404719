"""Fleet limits (``limits.py``): the rolling rate limit, the processing-queue cap and the propagation delay.

Through the unmodified SDK over real HTTP, sync and async. The emulator's clock is moved with
``advance`` instead of sleeping, so the windows are exact and the tests do not wait for them.
"""

from __future__ import annotations

import anthropic
import httpx2
import pytest
from emulator_helpers import KEY, async_wait_ended, client, requests, results_by_id, wait_ended

from airflow_provider_claude_batch.testing.emulator import EmulatorConfig, load_config
from airflow_provider_claude_batch.testing.limits import queue_refusal


def _rate_limited(excinfo: pytest.ExceptionInfo[anthropic.RateLimitError]) -> tuple[int, str]:
    """(retry-after, message) of a 429 answered with the API's ``rate_limit_error`` envelope."""
    error = excinfo.value
    assert error.status_code == 429 and error.body["error"]["type"] == "rate_limit_error"
    return int(error.response.headers["retry-after"]), error.body["error"]["message"]


def test_limits_are_off_by_default_and_reported_as_zero(claude_emulator):
    config = EmulatorConfig()
    assert config.rate_limit_rpm is None and config.max_queued_requests is None
    assert config.rate_limit_window_seconds == 60 and config.propagation_delay_seconds == 0
    api = client(claude_emulator, max_retries=0)
    batch = api.messages.batches.create(requests=requests(2))
    for _ in range(30):
        api.messages.batches.retrieve(batch.id)
    state = claude_emulator.state()
    assert state["rate_limited"] == 0 and state["queue_refused"] == 0
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}"] == 30


def test_one_rolling_window_across_every_batch_endpoint(claude_emulator):
    claude_emulator.configure(rate_limit_rpm=5, processing_seconds=0)
    api = client(claude_emulator, max_retries=0)
    batch = api.messages.batches.create(requests=requests(2))  # call 1
    claude_emulator.advance(30.2)
    api.messages.batches.retrieve(batch.id)  # 2
    api.messages.batches.list(limit=5)  # 3
    assert len(results_by_id(api, batch.id)) == 2  # 4 and 5: the SDK's retrieve, then the download
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        api.messages.batches.retrieve(batch.id)
    retry_after, message = _rate_limited(excinfo)
    assert retry_after == 30  # until the create, the oldest call, leaves the window: 29.8 s, rounded up
    assert "5 requests per 60 s" in message and "create, retrieve, list, results, cancel and delete" in message
    download = httpx2.get(f"{claude_emulator.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": KEY})
    assert download.status_code == 429 and download.headers["retry-after"] == "30"
    for call in (
        lambda: api.messages.batches.list(),
        lambda: api.messages.batches.cancel(batch.id),
        lambda: api.messages.batches.delete(batch.id),
        lambda: api.messages.batches.create(requests=requests(1)),
    ):
        with pytest.raises(anthropic.RateLimitError):
            call()
    # The Messages and Models APIs have their own limits: they do not draw from this one.
    api.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert api.models.list().data

    state = claude_emulator.state()
    assert state["rate_limited"] == 6
    assert state["create_calls"] == 1  # the refused create is not a create
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}"] == 2
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}/results"] == 1
    assert "DELETE /v1/messages/batches/{message_batch_id}" not in state["calls"]
    assert state["batch_count"] == 1

    claude_emulator.advance(29.9)  # the create leaves the window: exactly one slot frees
    api.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.RateLimitError):
        api.messages.batches.retrieve(batch.id)


def test_sdk_waits_out_the_limit_by_itself(claude_emulator):
    claude_emulator.configure(rate_limit_rpm=1, rate_limit_window_seconds=0.5)
    api = client(claude_emulator)  # the SDK's default: 2 retries, honouring retry-after
    batch = api.messages.batches.create(requests=requests(1))
    assert api.messages.batches.retrieve(batch.id).id == batch.id
    state = claude_emulator.state()
    assert state["rate_limited"] == 1  # the retrieve was refused once, then let in
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}"] == 1


async def test_async_client_meets_the_limit(claude_emulator):
    claude_emulator.configure(rate_limit_rpm=2)
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url, max_retries=0)
    batch = await api.messages.batches.create(requests=requests(1))
    await api.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        await api.messages.batches.retrieve(batch.id)
    assert 59 <= _rate_limited(excinfo)[0] <= 60
    claude_emulator.advance(60)
    assert (await async_wait_ended(api, batch.id)).request_counts.succeeded == 1


def test_auth_comes_before_the_limit_and_refused_calls_spend_no_fault(claude_emulator_factory):
    emu = claude_emulator_factory(
        api_key=KEY,
        rate_limit_rpm=1,
        faults=[{"method": "GET", "path": "/v1/messages/batches", "status": 529, "count": 1}],
    )
    api = client(emu, max_retries=0)
    batch = api.messages.batches.create(requests=requests(1))
    stranger = anthropic.Anthropic(api_key="wrong-key", base_url=emu.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.batches.retrieve(batch.id)  # 401 although the window is full
    with pytest.raises(anthropic.RateLimitError):
        api.messages.batches.list()  # refused at the door: the fault is not spent on it
    assert emu.state()["faults_injected"] == 0
    emu.advance(60)
    with pytest.raises(anthropic.OverloadedError):
        api.messages.batches.list()  # let in, so it meets the fault
    state = emu.state()
    assert state["faults_injected"] == 1 and state["rate_limited"] == 1
    assert state["calls"]["GET /v1/messages/batches/{message_batch_id}"] == 1  # the 401 is counted


def test_full_processing_queue_refuses_a_create(claude_emulator):
    claude_emulator.configure(max_queued_requests=5, processing_seconds=30)
    api = client(claude_emulator, max_retries=0)
    first = api.messages.batches.create(requests=requests(3, "a"))
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        api.messages.batches.create(requests=requests(3, "b"))
    retry_after, message = _rate_limited(excinfo)
    assert "processing queue is full" in message and "3 requests are queued" in message
    assert "would add 3" in message and "limit of 5" in message
    assert retry_after == 30  # when the first batch ends and its 3 requests leave the queue
    second = api.messages.batches.create(requests=requests(2, "c"))  # 3 + 2 fits exactly
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        api.messages.batches.create(requests=requests(6, "d"))
    assert "This batch alone is above the limit" in _rate_limited(excinfo)[1]

    state = claude_emulator.state()
    assert state["queue_refused"] == 2 and state["rate_limited"] == 0
    assert state["create_calls"] == 2 and state["batch_count"] == 2

    claude_emulator.advance(30)  # both batches end: the queue is empty again
    assert wait_ended(api, first.id).request_counts.succeeded == 3
    assert wait_ended(api, second.id).request_counts.succeeded == 2
    api.messages.batches.create(requests=requests(5, "e"))


async def test_queue_refusal_through_the_async_client_takes_no_rate_limit_slot(claude_emulator):
    claude_emulator.configure(max_queued_requests=1, rate_limit_rpm=3, processing_seconds=30)
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url, max_retries=0)
    await api.messages.batches.create(requests=requests(1, "a"))  # slot 1
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        await api.messages.batches.create(requests=requests(1, "b"))  # refused: gives its slot back
    assert "processing queue is full" in excinfo.value.body["error"]["message"]
    await api.messages.batches.list()  # slot 2
    await api.messages.batches.list()  # slot 3
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        await api.messages.batches.list()
    assert "rate limit of 3 requests" in excinfo.value.body["error"]["message"]
    state = claude_emulator.state()
    assert state["queue_refused"] == 1 and state["rate_limited"] == 1 and state["create_calls"] == 1


def test_queue_waits_for_the_batches_that_free_enough_room():
    # Three unended batches: 4 requests end at t=10, 4 at t=20, 4 at t=40; the cap is 12.
    processing = [(40.0, 4), (10.0, 4), (20.0, 4)]
    assert queue_refusal(0, processing, 12, now=0.0) is None
    assert queue_refusal(5, processing, 12, now=0.0).retry_after == 20  # 5 fit once 8 have left
    assert queue_refusal(4, processing, 12, now=2.5).retry_after == 8  # 4 fit once the first batch ends
    refusal = queue_refusal(13, processing, 12, now=0.0)
    assert refusal.retry_after == 40 and "split it into batches of at most 12 requests" in refusal.message


def test_new_batch_is_listed_at_once_but_answers_404_while_it_propagates(claude_emulator):
    claude_emulator.configure(propagation_delay_seconds=4, processing_seconds=0)
    api = client(claude_emulator, max_retries=0)
    batch = api.messages.batches.create(requests=requests(2))
    assert [b.id for b in api.messages.batches.list()] == [batch.id]
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        api.messages.batches.retrieve(batch.id)
    assert excinfo.value.body["error"]["type"] == "not_found_error"
    assert batch.id in excinfo.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        api.messages.batches.results(batch.id)  # the SDK's retrieve before the download
    ended = api.messages.batches.list().data[0]
    assert ended.processing_status == "ended" and ended.results_url
    download = httpx2.get(ended.results_url, headers={"x-api-key": KEY})
    assert download.status_code == 404 and download.json()["error"]["type"] == "not_found_error"

    claude_emulator.advance(4)
    assert api.messages.batches.retrieve(batch.id).processing_status == "ended"
    assert len(results_by_id(api, batch.id)) == 2


async def test_async_client_sees_the_propagation_delay(claude_emulator):
    claude_emulator.configure(propagation_delay_seconds=60)
    api = anthropic.AsyncAnthropic(api_key=KEY, base_url=claude_emulator.url, max_retries=0)
    batch = await api.messages.batches.create(requests=requests(1))
    with pytest.raises(anthropic.NotFoundError):
        await api.messages.batches.retrieve(batch.id)
    claude_emulator.configure(propagation_delay_seconds=0)  # a batch keeps the config it was created under
    with pytest.raises(anthropic.NotFoundError):
        await api.messages.batches.retrieve(batch.id)
    claude_emulator.advance(60)
    assert (await api.messages.batches.retrieve(batch.id)).id == batch.id


def test_fault_rule_can_match_the_query_string(claude_emulator):
    claude_emulator.configure(
        faults=[{"method": "GET", "path": "/v1/messages/batches", "query": "limit=1000", "status": 500}]
    )
    api = client(claude_emulator, max_retries=0)
    api.messages.batches.create(requests=requests(1))
    assert len(api.messages.batches.list(limit=1).data) == 1  # the marker call before a create
    with pytest.raises(anthropic.InternalServerError):
        api.messages.batches.list(limit=1000)  # the status poller's page
    assert claude_emulator.state()["faults_injected"] == 1
    with pytest.raises(ValueError, match="invalid regular expression"):
        claude_emulator.configure(faults=[{"query": "limit=(", "status": 500}])


def test_limits_come_from_env_and_reset_clears_their_counters(claude_emulator):
    environ = {
        "CLAUDE_EMULATOR_RATE_LIMIT_RPM": "60",
        "CLAUDE_EMULATOR_RATE_LIMIT_WINDOW_SECONDS": "1.5",
        "CLAUDE_EMULATOR_MAX_QUEUED_REQUESTS": "100000",
        "CLAUDE_EMULATOR_PROPAGATION_DELAY_SECONDS": "4",
    }
    config = load_config(environ=environ)
    assert (config.rate_limit_rpm, config.rate_limit_window_seconds) == (60, 1.5)
    assert (config.max_queued_requests, config.propagation_delay_seconds) == (100_000, 4)
    assert load_config(environ=environ, rate_limit_rpm=5).rate_limit_rpm == 5  # a flag wins over the env
    with pytest.raises(ValueError, match="rate_limit_rpm"):
        EmulatorConfig(rate_limit_rpm=0)

    claude_emulator.configure(rate_limit_rpm=1)
    api = client(claude_emulator, max_retries=0)
    api.messages.batches.list()
    with pytest.raises(anthropic.RateLimitError):
        api.messages.batches.list()
    claude_emulator.reset()
    assert claude_emulator.state()["rate_limited"] == 0
    api.messages.batches.list()  # reset emptied the window too
