"""ClaudeHook: connection settings, test_connection, batch calls, never creating a batch twice."""

from __future__ import annotations

import json

import pytest
from support import TEST_API_KEY, claude_connection_uri

from airflow_provider_claude_batch.hooks.claude import BatchCreateError, ClaudeHook
from airflow_provider_claude_batch.requests import RequestDefaults, prepare_requests

DEFAULTS = RequestDefaults(model="claude-haiku-4-5", max_tokens=32)


def test_settings_come_from_the_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_DEFAULT",
        claude_connection_uri("http://127.0.0.1:1", model="claude-opus-4-8", timeout=12, max_retries=5),
    )
    settings = ClaudeHook().settings
    assert settings.base_url == "http://127.0.0.1:1"
    assert settings.default_model == "claude-opus-4-8"
    assert (settings.timeout, settings.max_retries) == (12.0, 5)
    assert TEST_API_KEY not in repr(settings)
    client = ClaudeHook().get_conn()
    assert str(client.base_url).startswith("http://127.0.0.1:1")


def test_api_key_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", json.dumps({"conn_type": "claude"}))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    settings = ClaudeHook().settings
    assert settings.api_key == "sk-ant-from-env"
    assert settings.base_url is None
    assert settings.default_model == "claude-sonnet-4-6"


def test_connection_test_succeeds_against_the_emulator(claude_conn):
    ok, message = ClaudeHook().test_connection()
    assert ok, message
    assert "Connected to http://127.0.0.1" in message


def test_connection_test_reports_a_rejected_key_without_echoing_it(claude_emulator, monkeypatch):
    claude_emulator.configure(api_key="the-only-valid-key")
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url))
    ok, message = ClaudeHook().test_connection()
    assert not ok
    assert message.startswith(
        f"Claude connection 'claude_default' ({claude_emulator.url}): the API key was rejected (401"
    )
    assert "Put a valid key in the connection's Password field (or ANTHROPIC_API_KEY)" in message
    assert TEST_API_KEY not in message


def test_connection_test_reports_an_unreachable_host(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri("http://127.0.0.1:9", max_retries=0))
    ok, message = ClaudeHook().test_connection()
    assert not ok
    assert message.startswith("Claude connection 'claude_default' (http://127.0.0.1:9): could not reach the host (")
    assert "Check the connection's Host" in message


def test_api_errors_never_carry_the_key(claude_emulator, monkeypatch):
    import anthropic

    claude_emulator.configure(api_key="the-only-valid-key")
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url))
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ClaudeHook().retrieve_batch("msgbatch_x")
    assert TEST_API_KEY not in str(caught.value)
    assert TEST_API_KEY not in repr(caught.value.body)


def test_batch_calls_round_trip(claude_conn, claude_emulator):
    hook = ClaudeHook()
    batch = hook.create_batch(prepare_requests(["a", "b"], DEFAULTS))
    assert batch.request_counts.processing == 2
    assert hook.retrieve_batch(batch.id).id == batch.id
    assert batch.id in [b.id for b in hook.list_batches(limit=5)]
    assert hook.cancel_batch(batch.id).processing_status in ("canceling", "ended")


def test_results_stream_as_chunks(claude_conn, claude_emulator):
    claude_emulator.configure(processing_seconds=0.01)
    hook = ClaudeHook()
    batch = hook.create_batch(prepare_requests([f"p{i}" for i in range(50)], DEFAULTS))
    import time

    while hook.retrieve_batch(batch.id).processing_status != "ended":
        time.sleep(0.05)
    with hook.stream_results(batch.id) as chunks:
        body = b"".join(chunks)
    assert body.count(b"\n") == 50


def test_a_lost_create_answer_is_adopted_not_resubmitted(claude_conn, claude_emulator):
    """The server stores the batch but the answer is an error: one batch, not two."""
    claude_emulator.configure(
        faults=[{"method": "POST", "path": r"^/v1/messages/batches$", "status": 500, "count": 1, "store": True}]
    )
    batch = ClaudeHook().create_batch(prepare_requests(["a", "b", "c"], DEFAULTS))
    state = claude_emulator.state()
    assert state["create_calls"] == 1
    assert state["batch_count"] == 1
    assert state["batches"][0]["id"] == batch.id


def test_a_failed_create_that_stored_nothing_is_sent_again(claude_conn, claude_emulator):
    claude_emulator.configure(faults=[{"method": "POST", "path": r"^/v1/messages/batches$", "status": 529, "count": 2}])
    batch = ClaudeHook().create_batch(prepare_requests(["a"], DEFAULTS))
    state = claude_emulator.state()
    assert state["create_calls"] == 3
    assert [b["id"] for b in state["batches"]] == [batch.id]


def test_a_sibling_of_the_same_size_is_not_adopted_after_a_refusal(claude_conn, claude_emulator):
    # A 529 refused the create: nothing can have been created, so another job's batch of the same size,
    # created in the meantime, is not taken for it (a fleet's batches are often all one size).
    hook = ClaudeHook()
    marker = hook.newest_batch_id()
    sibling = hook.create_batch(prepare_requests(["sibling"], DEFAULTS))
    claude_emulator.configure(faults=[{"method": "POST", "path": r"^/v1/messages/batches$", "status": 529, "count": 1}])
    ours = hook.create_batch(prepare_requests(["ours"], DEFAULTS), marker=marker)
    assert ours.id != sibling.id
    calls = claude_emulator.state()["calls"]
    assert claude_emulator.state()["batch_count"] == 2
    assert calls["GET /v1/messages/batches"] == 2  # the two markers: no look for a lost create


def test_known_batches_are_never_adopted(claude_conn, claude_emulator):
    hook = ClaudeHook()
    first = hook.create_batch(prepare_requests(["a"], DEFAULTS))
    claude_emulator.configure(faults=[{"method": "POST", "path": r"^/v1/messages/batches$", "status": 500, "count": 1}])
    second = hook.create_batch(prepare_requests(["b"], DEFAULTS), known_batch_ids=[first.id])
    assert second.id != first.id
    assert claude_emulator.state()["batch_count"] == 2


def test_create_gives_up_with_a_clear_error(claude_conn, claude_emulator):
    claude_emulator.configure(
        faults=[{"method": "POST", "path": r"^/v1/messages/batches$", "status": 503, "count": 10, "retry_after": 0}]
    )
    with pytest.raises(BatchCreateError, match="no batch was created for it"):
        ClaudeHook().create_batch(prepare_requests(["a"], DEFAULTS))
    assert claude_emulator.state()["batch_count"] == 0
