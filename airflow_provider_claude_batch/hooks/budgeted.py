"""HTTP clients whose Message Batches API calls draw from the process's request budget.

The budget is applied in httpx event hooks, below the SDK, so every call counts: the SDK's own
retries, and the ``retrieve`` its ``results()`` makes before downloading. Calls to other APIs
(Messages, Models) have their own limits and pass untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anthropic
import httpx2

from airflow_provider_claude_batch.budget import RequestBudget, parse_retry_after

BATCHES_PATH = "/v1/messages/batches"


def _is_batch_call(request: httpx2.Request) -> bool:
    return request.url.path.startswith(BATCHES_PATH)


def _note_answer(budget: RequestBudget, response: httpx2.Response) -> None:
    if response.status_code != 429 or not _is_batch_call(response.request):
        return
    hint = parse_retry_after(response.headers.get("retry-after"), response.headers.get("retry-after-ms"))
    if hint is None:
        budget.note_rate_limited()
    else:
        budget.pause(hint)


class _ClosingHttpxClient(anthropic.DefaultHttpxClient):  # type: ignore[misc,valid-type]
    """Closes its connection pool when collected, as the SDK's own default client does."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown there is nothing left to tell
            self.close()


def budgeted_http_client(budget: RequestBudget, **kwargs: Any) -> httpx2.Client:
    """A synchronous client (the SDK's defaults) whose batch calls wait for the budget."""

    def on_request(request: httpx2.Request) -> None:
        if _is_batch_call(request):
            budget.acquire()

    def on_response(response: httpx2.Response) -> None:
        _note_answer(budget, response)

    return _ClosingHttpxClient(event_hooks={"request": [on_request], "response": [on_response]}, **kwargs)


def budgeted_async_http_client(budget: RequestBudget, **kwargs: Any) -> httpx2.AsyncClient:
    """An asynchronous client (the SDK's defaults) whose batch calls wait for the budget."""

    async def on_request(request: httpx2.Request) -> None:
        if _is_batch_call(request):
            await budget.acquire_async()

    async def on_response(response: httpx2.Response) -> None:
        _note_answer(budget, response)

    return anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [on_request], "response": [on_response]}, **kwargs)
