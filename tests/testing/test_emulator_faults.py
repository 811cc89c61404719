"""Fault injection (``faults.py``): the SDK retries through injected errors, lost answers and cut streams."""

from __future__ import annotations

import time

import anthropic
import httpx2
import pytest
from emulator_helpers import client, download_is_cut, requests, results_by_id, wait_ended


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
    download_is_cut(api, batch.id)
    assert len(results_by_id(api, batch.id)) == 30
    assert claude_emulator.state()["faults_injected"] == 1
