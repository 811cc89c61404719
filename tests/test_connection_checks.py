"""Connection problems in one wording (which connection, which base URL, the fix), never the key."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import anthropic
import pytest
from support import TEST_API_KEY, claude_connection_uri

from airflow_provider_claude_batch.connection_errors import ClaudeConnectionError
from airflow_provider_claude_batch.hooks import claude
from airflow_provider_claude_batch.hooks.claude import ClaudeHook


@pytest.fixture(autouse=True)
def fresh_model_cache():
    claude._model_catalogs.clear()
    yield
    claude._model_catalogs.clear()


def batch_operator(tmp_path):
    from airflow.sdk import DAG

    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

    with DAG("connection_checks", schedule=None, start_date=datetime(2026, 1, 1)):
        return ClaudeBatchOperator(
            task_id="t", requests=["x"], model="claude-haiku-4-5", results_uri=f"file://{tmp_path}/out"
        )


def test_no_key_says_where_to_put_one_and_sends_nothing(claude_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", json.dumps({"conn_type": "claude", "host": claude_emulator.url}))
    with pytest.raises(ClaudeConnectionError) as caught:
        batch_operator(tmp_path).prepare()
    assert str(caught.value) == (
        f"Claude connection 'claude_default' ({claude_emulator.url}): no API key. Put the key in the connection's "
        "Password field, or set ANTHROPIC_API_KEY in the environment of the workers and the triggerer."
    )
    assert claude_emulator.state()["calls"] == {}


def test_a_rejected_key_is_found_by_the_first_call_only(claude_emulator, monkeypatch, tmp_path):
    claude_emulator.configure(api_key="the-only-valid-key")
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url))
    with pytest.raises(anthropic.AuthenticationError) as caught:
        batch_operator(tmp_path).prepare()
    text = str(caught.value)
    assert text.startswith(f"Claude connection 'claude_default' ({claude_emulator.url}): the API key was rejected (401")
    assert "Put a valid key in the connection's Password field" in text
    assert TEST_API_KEY not in text
    assert claude_emulator.state()["calls"] == {"GET /v1/models": 1}


def test_an_unreachable_host_names_the_connection_and_the_url(claude_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri("http://127.0.0.1:9", max_retries=0))
    with pytest.raises(anthropic.APIConnectionError) as caught:
        batch_operator(tmp_path).prepare()
    assert str(caught.value).startswith(
        "Claude connection 'claude_default' (http://127.0.0.1:9): could not reach the host ("
    )
    assert "Check the connection's Host (empty for https://api.anthropic.com)" in str(caught.value)
    assert claude_emulator.state()["calls"] == {}


def test_a_base_url_ending_in_v1_is_refused_before_any_call(claude_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(f"{claude_emulator.url}/v1"))
    ok, message = ClaudeHook().test_connection()
    assert not ok
    assert "the base URL ends in /v1, but the client adds /v1 itself; drop it" in message
    assert claude_emulator.state()["calls"] == {}


@pytest.fixture
def not_anthropic():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>no such page</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_server_that_is_not_an_anthropic_api_is_named_so(not_anthropic, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(not_anthropic, max_retries=0))
    ok, message = ClaudeHook().test_connection()
    assert not ok
    assert message == (
        f"Claude connection 'claude_default' ({not_anthropic}): what answers there is not an Anthropic API "
        "(HTTP 404, text/html); set the connection's Host to the API's base URL (leave it empty for "
        "https://api.anthropic.com)."
    )
    with pytest.raises(anthropic.NotFoundError, match="is not an Anthropic API"):
        ClaudeHook().retrieve_batch("msgbatch_x")


def test_the_trigger_and_the_ui_use_the_same_wording(claude_emulator, monkeypatch):
    from airflow_provider_claude_batch.plugins.monitor import BatchStatusCache
    from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger

    claude_emulator.configure(api_key="the-only-valid-key")
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_DEFAULT", claude_connection_uri(claude_emulator.url))
    trigger = ClaudeBatchTrigger(batch_ids=["msgbatch_x"], min_poll_interval=0.05, max_poll_interval=0.1)

    async def first():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first())
    where = f"Claude connection 'claude_default' ({claude_emulator.url}): the API key was rejected (401"
    assert payload["status"] == "error"
    assert payload["message"].startswith(where)
    assert payload["message"].endswith("(While waiting for batches.)")
    row = BatchStatusCache().lookup_many([("claude_default", "msgbatch_x")])[("claude_default", "msgbatch_x")]
    assert where in row.error
    assert TEST_API_KEY not in payload["message"] + row.error
