"""Answers are functions of the request: the same request, the same bytes, in any batch, at any time, in any process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx2
from emulator_helpers import KEY, MODEL, client, wait_ended

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "id": {"type": "string", "format": "uuid"},
    },
    "required": ["summary", "quantity", "tags", "id"],
}
TOOL = {
    "name": "record_order",
    "input_schema": ORDER_SCHEMA,
}


def structured(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": text}],
        "output_config": {"format": {"type": "json_schema", "schema": ORDER_SCHEMA}},
    }


def tool_call(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": text}],
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "record_order"},
    }


def _post(url: str, body: str) -> bytes:
    """POST a raw JSON body to ``/v1/messages`` and return the answer's bytes."""
    headers = {"x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    response = httpx2.post(f"{url}/v1/messages", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def test_the_same_request_gets_the_same_bytes_on_the_messages_api(claude_emulator):
    for make in (structured, tool_call):
        first = _post(claude_emulator.url, json.dumps(make("Order forty blue pens for the office")))
        again = _post(claude_emulator.url, json.dumps(make("Order forty blue pens for the office")))
        assert first == again
        reordered = json.dumps(dict(reversed(list(make("Order forty blue pens for the office").items()))))
        assert _post(claude_emulator.url, reordered) == first  # key order is not part of the request
        other = _post(claude_emulator.url, json.dumps(make("Order two green chairs")))
        assert json.loads(other)["content"] != json.loads(first)["content"]  # yet it depends on the prompt


def test_a_request_answers_the_same_in_every_batch_and_on_the_messages_api(claude_emulator):
    api = client(claude_emulator)
    requests = [
        {"custom_id": "json-1", "params": structured("Order forty blue pens for the office")},
        {"custom_id": "tool-1", "params": tool_call("Order forty blue pens for the office")},
        {"custom_id": "bad-model", "params": {**structured("x"), "model": "claude-sonnet-4.6"}},
    ]
    downloads = []
    for _ in range(2):
        batch = wait_ended(api, api.messages.batches.create(requests=requests).id)
        downloads.append(httpx2.get(batch.results_url, headers={"x-api-key": KEY}).content)
    assert downloads[0] == downloads[1]  # two batches, other ids and times: the same file
    rows = {row["custom_id"]: row["result"] for row in map(json.loads, downloads[0].splitlines())}
    assert rows["bad-model"]["type"] == "errored"

    sync_json = api.messages.create(**structured("Order forty blue pens for the office"))
    assert rows["json-1"]["message"]["content"][0]["text"] == sync_json.content[0].text
    sync_tool = api.messages.create(**tool_call("Order forty blue pens for the office"))
    assert rows["tool-1"]["message"]["content"][0]["input"] == sync_tool.content[0].input


_OTHER_PROCESS = """
import sys
import httpx2
from airflow_provider_claude_batch.testing.emulator import EmulatorServer

with EmulatorServer() as emu:
    response = httpx2.post(
        emu.url + "/v1/messages",
        content=sys.stdin.read(),
        headers={"x-api-key": "k", "content-type": "application/json"},
    )
    sys.stdout.write(response.text)
"""


def test_the_same_request_gets_the_same_bytes_in_another_process(claude_emulator):
    for body in (json.dumps(structured("Order forty blue pens")), json.dumps(tool_call("Order forty blue pens"))):
        here = _post(claude_emulator.url, body)
        there = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS],
            input=body,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": "12345"},  # another hash seed than this process's
        ).stdout
        assert there.encode() == here
