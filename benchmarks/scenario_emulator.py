"""Scenario 5, emulator: how fast the emulator itself accepts a batch and serves its results.

Not a contender against the others: the figure every other scenario relies on, that the emulator
is not what caps them. One client (plain ``httpx2``, the create body built before the baseline)
creates one batch of ``count`` requests, retrieves it (with ``processing_seconds=0`` that ends it),
downloads its results once (the emulator renders the file) and once more (it replays the stored
file). Before the baseline the same path runs once with a tiny batch, so the connection is open
and lazily imported modules are loaded. This was a test's wall-clock assertion until a busy
machine failed it; the test keeps the behaviour (every request accepted, every row served).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2

from benchmarks import workloads
from benchmarks.measure import measured

WARMUP_REQUESTS = 10


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    if contender != "emulator":
        raise ValueError(f"the emulator scenario has one contender, 'emulator', not {contender!r}")
    count = params["count"]
    body = workloads.create_body(workloads.full_requests(count))
    headers = {"content-type": "application/json", "x-api-key": workloads.API_KEY}
    with httpx2.Client(base_url=params["base_url"], headers=headers, timeout=600) as client:
        _create_and_download(client, workloads.create_body(workloads.full_requests(WARMUP_REQUESTS)), time.perf_counter)
        with measured() as result:
            figures = _create_and_download(client, body, result.elapsed)
    if figures["rows_rendered"] != count or figures["rows_replayed"] != count:
        raise RuntimeError(
            f"the emulator served {figures['rows_rendered']}/{figures['rows_replayed']} rows, expected {count}"
        )
    figures["render_rows_per_s"] = count / figures["render_s"] if figures["render_s"] else None
    figures["replay_rows_per_s"] = count / figures["replay_s"] if figures["replay_s"] else None
    return {**result.as_dict(), **figures, "body_bytes": len(body)}


def _create_and_download(client: httpx2.Client, body: bytes, clock: Callable[[], float]) -> dict[str, Any]:
    """Create a batch, end it and download its results twice; each phase's seconds by ``clock``."""
    marks = [clock()]
    response = client.post("/v1/messages/batches", content=body)
    response.raise_for_status()
    batch_id = response.json()["id"]
    client.get(f"/v1/messages/batches/{batch_id}").raise_for_status()  # processing_seconds=0: ends it
    marks.append(clock())
    rows = []
    for _ in ("render", "replay"):
        lines = 0
        with client.stream("GET", f"/v1/messages/batches/{batch_id}/results") as stream:
            stream.raise_for_status()
            for chunk in stream.iter_raw():
                lines += chunk.count(b"\n")
        rows.append(lines)
        marks.append(clock())
    return {
        "create_s": marks[1] - marks[0],
        "render_s": marks[2] - marks[1],
        "replay_s": marks[3] - marks[2],
        "rows_rendered": rows[0],
        "rows_replayed": rows[1],
    }
