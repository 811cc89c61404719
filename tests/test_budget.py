"""The request budget alone (a fake clock), then plugged into the real SDK against the emulator."""

from __future__ import annotations

import json
import threading

import anthropic
import pytest
from support import TEST_API_KEY, claude_connection_uri

from airflow_provider_claude_batch.budget import Priority, RequestBudget, call_priority
from airflow_provider_claude_batch.hooks.budgeted import budgeted_http_client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_never_more_than_the_budget_in_any_rolling_window():
    clock = FakeClock()
    budget = RequestBudget(per_minute=5, window_seconds=60, clock=clock)
    granted_at = []
    for _ in range(17):
        budget.acquire(Priority.STATUS, sleep=clock.sleep)
        granted_at.append(clock.now)
    for i, moment in enumerate(granted_at):
        in_window = [t for t in granted_at[i:] if t < moment + 60]
        assert len(in_window) <= 5
    # The first five go at once; each later one waits for the oldest to leave the window.
    assert granted_at[:5] == [1000.0] * 5
    assert granted_at[5] == pytest.approx(1060.0)
    assert budget.stats.granted == 17


def test_work_goes_before_status_refreshes():
    clock = FakeClock()
    budget = RequestBudget(per_minute=1, window_seconds=60, clock=clock)
    assert budget.try_acquire(Priority.STATUS) == 0.0
    with budget._waiting(Priority.WORK):  # a create is waiting for the next slot
        clock.now += 60
        assert budget.try_acquire(Priority.STATUS) > 0  # the status refresh yields
        assert budget.try_acquire(Priority.WORK) == 0.0


def test_a_429_pauses_every_caller_once():
    clock = FakeClock()
    budget = RequestBudget(per_minute=100, window_seconds=60, clock=clock)
    budget.pause(7.5)
    assert budget.try_acquire(Priority.WORK) == pytest.approx(7.5)
    assert budget.try_acquire(Priority.STATUS) == pytest.approx(7.5)
    clock.now += 7.5
    assert budget.try_acquire(Priority.STATUS) == 0.0
    assert budget.stats.rate_limited == 1


def test_the_budget_is_shared_safely_by_threads():
    budget = RequestBudget(per_minute=40, window_seconds=60)
    granted: list[int] = []

    def take() -> None:
        granted.append(sum(budget.try_acquire(Priority.STATUS) == 0.0 for _ in range(10)))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == budget.stats.granted == 40  # 80 asked, exactly the budget granted


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "50"])
def test_a_nonsense_budget_is_refused(bad):
    with pytest.raises(ValueError, match="batch_requests_per_minute"):
        RequestBudget(per_minute=bad)


def test_every_batch_call_of_the_sdk_draws_from_the_budget_and_others_do_not(claude_emulator):
    budget = RequestBudget(per_minute=1000)
    client = anthropic.Anthropic(
        api_key=TEST_API_KEY, base_url=claude_emulator.url, http_client=budgeted_http_client(budget)
    )
    message = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    request = {"custom_id": "a", "params": message}
    batch = client.messages.batches.create(requests=[request])
    client.messages.batches.retrieve(batch.id)
    client.messages.batches.list(limit=1)
    client.messages.create(**message)
    assert budget.stats.granted == 3


def test_a_429_from_the_api_pauses_the_budget_for_its_retry_after(claude_emulator):
    claude_emulator.configure(faults=[{"method": "GET", "status": 429, "count": 1, "retry_after": 2}])
    budget = RequestBudget(per_minute=1000)
    client = anthropic.Anthropic(
        api_key=TEST_API_KEY, base_url=claude_emulator.url, http_client=budgeted_http_client(budget), max_retries=0
    )
    with pytest.raises(anthropic.RateLimitError):
        client.messages.batches.list(limit=1)
    assert budget.stats.rate_limited == 1
    assert budget.try_acquire(Priority.STATUS) > 1.0
    with call_priority(Priority.WORK):
        client.messages.batches.list(limit=1)  # waits out the pause instead of meeting another 429
    assert budget.stats.rate_limited == 1
    assert budget.stats.waited_seconds > 1.0


def test_connections_to_one_workspace_share_one_budget(claude_emulator, monkeypatch):
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_A", claude_connection_uri(claude_emulator.url, batch_requests_per_minute=30)
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_B", claude_connection_uri(claude_emulator.url, batch_requests_per_minute=20)
    )
    other_key = {"conn_type": "claude", "password": "sk-other-key", "host": claude_emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_C", json.dumps(other_key))
    a, b, c = (ClaudeHook(name).settings.budget for name in ("claude_a", "claude_b", "claude_c"))
    assert a is b and a.per_minute == 20  # the lower setting wins for the shared workspace
    assert c is not a and c.per_minute == 50  # another key: another workspace, the default budget


def test_a_connection_extra_that_is_not_a_number_says_which_and_why(claude_emulator, monkeypatch):
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BAD", claude_connection_uri(claude_emulator.url, batch_requests_per_minute="fifty")
    )
    with pytest.raises(ValueError, match=r"extra 'batch_requests_per_minute' must be a whole number, got 'fifty'"):
        ClaudeHook("claude_bad").settings  # noqa: B018
