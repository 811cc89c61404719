"""Results files (``emulator/results.py``): one JSONL line per request, replayed once whole, at volume."""

from __future__ import annotations

import json

from emulator_helpers import client, download_is_cut, params, requests, wait_ended


def test_results_are_jsonl_with_one_line_per_request(claude_emulator):
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(7))
    wait_ended(api, batch.id)
    with api.messages.batches.with_streaming_response.results(batch.id) as response:
        body = response.read()
        assert response.headers["request-id"].startswith("req_")
    lines = body.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])
    assert sorted(json.loads(line)["custom_id"] for line in lines[:-1]) == sorted(f"req-{i}" for i in range(7))


def test_a_full_download_is_replayed_byte_for_byte_and_a_cut_one_is_not_kept(claude_emulator):
    claude_emulator.configure(
        error_rate=0.3,
        seed=3,
        faults=[{"path": r"/v1/messages/batches/[^/]+/results", "cut_after_rows": 3, "count": 1}],
    )
    api = client(claude_emulator)
    batch = api.messages.batches.create(requests=requests(40))
    wait_ended(api, batch.id)
    download_is_cut(api, batch.id)
    stored = claude_emulator.emulator_state.batches[batch.id]
    assert stored.rendered is None  # the cut download rendered 3 rows only: nothing kept

    def download() -> bytes:
        with api.messages.batches.with_streaming_response.results(batch.id) as response:
            return response.read()

    first = download()
    assert stored.rendered is not None
    assert download() == first
    assert len(first.splitlines()) == 40


def test_hundred_thousand_requests(claude_emulator):
    claude_emulator.configure(processing_seconds=0)
    api = client(claude_emulator, timeout=60)
    batch = api.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": params(f"row {i}")} for i in range(100_000)]
    )
    assert batch.request_counts.processing == 100_000
    assert wait_ended(api, batch.id).request_counts.succeeded == 100_000
    count = 0
    with api.messages.batches.with_streaming_response.results(batch.id) as response:
        for chunk in response.iter_bytes():
            count += chunk.count(b"\n")
    assert count == 100_000
