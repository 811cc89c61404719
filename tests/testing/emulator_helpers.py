"""Helpers shared by the emulator's tests: request builders, an SDK client, waiting for a batch to end."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import httpx2
import pytest

from airflow_provider_claude_batch.testing.emulator import EmulatorServer

MODEL = "claude-sonnet-4-6"
KEY = "test-key"


def params(text: str = "Hello there, emulator", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}


def requests(n: int, prefix: str = "req") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "params": params(f"Summarise item {i} of the list")} for i in range(n)]


def client(emu: EmulatorServer, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=emu.url, **kwargs)


def wait_ended(api: anthropic.Anthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        time.sleep(0.05)


async def async_wait_ended(api: anthropic.AsyncAnthropic, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = await api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        await asyncio.sleep(0.05)


def results_by_id(api: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {row.custom_id: row.result for row in api.messages.batches.results(batch_id)}


def download_is_cut(api: anthropic.Anthropic, batch_id: str) -> None:
    """Download the batch's results and check that the emulator cut the stream (the SDK raises)."""
    with (
        api.messages.batches.with_streaming_response.results(batch_id) as response,
        pytest.raises(httpx2.HTTPError),
    ):
        response.read()
