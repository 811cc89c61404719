"""Create-time validation, auth and size limits (``emulator/validation.py``, ``http_io.py``, ``store.py``)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest
from emulator_helpers import client, params, requests


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
