"""ClaudeMessageOperator: send Claude requests through the synchronous Messages API, for work somebody waits on.

Same inputs, defaults, results file and manifest as ``ClaudeBatchOperator``: moving a task between
the routes is swapping the class. Each request becomes one row built from the batch-result line the
Messages API answer is equivalent to, so both routes land byte-compatible rows (``batch_id`` is the
empty string here: there is no batch) and downstream code never knows which route ran.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import anthropic
import msgspec
from anthropic.resources.messages import AsyncMessages
from anthropic.types import Message

from airflow_provider_claude_batch.landing import publish_rows
from airflow_provider_claude_batch.operators.base import RESULTS_FILE, ClaudeRequestsOperator
from airflow_provider_claude_batch.policy import workload_for_task
from airflow_provider_claude_batch.requests import PreparedRequests, encode_json
from airflow_provider_claude_batch.results import ResultRow, parse_result_line
from airflow_provider_claude_batch.routing import Workload, decide_route
from airflow_provider_claude_batch.submission import now_iso
from airflow_provider_claude_batch.validation import arguments

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

__all__ = ["DEFAULT_MAX_CONCURRENCY", "SYNC_BATCH_ID", "ClaudeMessageOperator", "send_all", "send_messages"]

DEFAULT_MAX_CONCURRENCY = 8
SYNC_BATCH_ID = ""
"""The ``batch_id`` of rows landed by the synchronous route: there is no batch."""
# Keyword arguments of the SDK's create/stream methods that are client options, not API fields: a
# request param of that name is sent in the body (as a batch would send it), never taken as one.
_CLIENT_OPTIONS = frozenset({"self", "extra_headers", "extra_query", "extra_body", "timeout", "stream"})

SendMessage = Callable[[dict[str, Any]], Awaitable[Message]]


class ClaudeMessageOperator(ClaudeRequestsOperator):
    """Send Claude requests through the synchronous Messages API (full price, answers in seconds).

    For work somebody waits on: a pre-merge review, a support reply, a step the pipeline cannot
    continue without, a dashboard refreshed every few minutes, streaming or fast-mode requests. The
    requests are validated before any call, sent with at most ``max_concurrency`` in flight and the
    SDK's retries (the connection's ``max_retries``), and land one JSONL row per request in
    ``results_uri``, in the order they are answered, exactly as ``ClaudeBatchOperator`` lands them;
    XCom receives the same manifest, with ``route`` ``"sync"``. A request the API refuses (after the
    retries) becomes an ``errored`` row with the API's error type and message, and
    ``max_failed_fraction`` decides whether the task fails.

    Takes every parameter of
    :class:`~airflow_provider_claude_batch.operators.base.ClaudeRequestsOperator` (``requests``,
    ``model``, ``max_tokens``, ``system``, ``request_params``, ``claude_conn_id``, ``results_uri``,
    ``max_failed_fraction``, ``usage_estimate``); requests may also set ``stream`` (the answer is
    streamed and its final message landed). And:

    :param max_concurrency: the most requests in flight at once (default 8); keep it within the
        organisation's rate limits, which every concurrent task shares.
    :param blocking: as on ``ClaudeBatchOperator``; accepted so a task can swap classes unchanged,
        and read by ``claude-batch audit``.
    :param deadline: as on ``ClaudeBatchOperator`` (a hard deadline measured from submission).
    :param workload: as on ``ClaudeBatchOperator``; a declared ``Workload`` lets the audit judge
        whether this task could be batched. This operator is never refused by the routing policy.
    """

    ui_color = "#c6dbe8"
    allows_streaming = True

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        blocking: bool = False,
        deadline: timedelta | None = None,
        workload: Workload | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_concurrency = arguments.whole_number("max_concurrency", max_concurrency, minimum=1)
        self.blocking = blocking
        self.deadline = deadline if deadline is None else arguments.duration("deadline", deadline)
        self.workload = workload

    def execute(self, context: Context) -> dict[str, Any]:
        prepared = self.prepare()
        self._mention_batch_route()
        hook = self.hook
        # Resolve the connection here, synchronously, so the event loop below finds the settings
        # cached and never needs the async connection lookup.
        hook.settings  # noqa: B018
        folder = self.results_folder(context)
        started, submitted_at = time.monotonic(), now_iso()
        transform = self.row_transform()
        with publish_rows(folder / RESULTS_FILE) as sink:
            on_row = sink.add if transform is None else (lambda row: sink.add(transform(row)))
            asyncio.run(send_all(hook, prepared, on_row, self.max_concurrency))
        self.log.info(
            "Sent %d request(s) through the Messages API in %.1fs (at most %d at once).",
            prepared.count,
            time.monotonic() - started,
            self.max_concurrency,
        )
        # batch_id/batch_ids are kept (empty) so both routes write manifests with the same keys.
        extra = {
            "batch_id": None,
            "batch_ids": [],
            "fingerprint": prepared.fingerprint(),
            "submitted_at": submitted_at,
            "rounds": [],
            "max_concurrency": self.max_concurrency,
        }
        return self.finish(folder, sink.tally, route="sync", extra=extra)

    def _mention_batch_route(self) -> None:
        """Log, never refuse, when the rule would batch this work: the saving the audit reports."""
        workload, _ = workload_for_task(self)
        decision = decide_route(workload)
        if decision.route == "batch":
            self.log.info(
                "This task could run as ClaudeBatchOperator at half the price (%s). Swap the class if "
                "nobody waits on it; `claude-batch audit` lists every such task.",
                decision.reasons[0],
            )


async def send_all(
    hook: ClaudeHook,
    prepared: PreparedRequests,
    on_row: Callable[[ResultRow], None],
    max_concurrency: int,
    *,
    timeout: float | None = None,
) -> bool:
    """Send every prepared request through the Messages API with the connection's client and retries.

    :param hook: the connection.
    :param prepared: the validated requests.
    :param on_row: receives each row as its answer arrives.
    :param max_concurrency: the most requests in flight.
    :param timeout: seconds after which the requests still unanswered are abandoned (the rows that
        arrived were handed to ``on_row``); None waits for every answer.
    :returns: whether every request was answered.
    """
    # The async client inside one asyncio.run, rather than a thread pool around the sync client:
    # requests in flight cost coroutines sharing one connection pool, not threads, so raising
    # max_concurrency stays cheap; the SDK's retries (with its backoff and retry-after handling)
    # run inside each coroutine exactly as they would in the sync client.
    client = await hook.get_async_conn()
    try:
        sending = send_messages(prepared, lambda params: _create(client, params), on_row, max_concurrency)
        await asyncio.wait_for(sending, timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return False
    finally:
        await client.close()
    return True


async def send_messages(
    prepared: PreparedRequests,
    send: SendMessage,
    on_row: Callable[[ResultRow], None],
    max_concurrency: int,
) -> None:
    """Send every prepared request through ``send``, at most ``max_concurrency`` at once.

    Each answer (or API error) becomes one row, handed to ``on_row`` as soon as it arrives. The
    semaphore is taken before each request's task is created, so at most ``max_concurrency`` tasks
    (and decoded requests) exist at any time, whatever the number of requests.

    :param prepared: the validated requests.
    :param send: sends one request's params and returns the answer (the SDK call, or a fake in tests).
    :param on_row: receives each row, on the event loop thread.
    :param max_concurrency: the most requests in flight.
    """
    semaphore = asyncio.Semaphore(max_concurrency)
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def one(custom_id: str, encoded: bytes) -> None:
        try:
            params = msgspec.json.decode(encoded)["params"]
            on_row(parse_result_line(await _result_line(custom_id, params, send), SYNC_BATCH_ID, route="sync"))
        except BaseException as error:  # anything but an API answer is a bug or a kill: stop sending
            failures.append(error)
            raise
        finally:
            semaphore.release()

    try:
        for custom_id, encoded in zip(prepared.custom_ids, prepared.encoded, strict=True):
            await semaphore.acquire()
            if failures:
                break
            task = asyncio.create_task(one(custom_id, encoded))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
    if failures:
        raise failures[0]


async def _result_line(custom_id: str, params: dict[str, Any], send: SendMessage) -> bytes:
    """The batch-result JSON line equivalent to one Messages API answer, so there is one row format."""
    try:
        message = await send(params)
    except anthropic.APIStatusError as error:
        result = {"type": "errored", "error": _error_envelope(error)}
    except anthropic.APIConnectionError as error:  # the SDK's retries are spent
        kind = "timeout_error" if isinstance(error, anthropic.APITimeoutError) else "api_error"
        result = {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": str(error)}}}
    else:
        result = {"type": "succeeded", "message": message.model_dump(mode="json")}
    return encode_json({"custom_id": custom_id, "result": result})


def _error_envelope(error: anthropic.APIStatusError) -> dict[str, Any]:
    # An errored batch result carries the same {"type": "error", "error": {type, message}} body the
    # Messages API answers with, so the API's own body is passed through when it has that shape.
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("type"):
        return {"type": "error", "error": {"type": body["error"]["type"], "message": body["error"].get("message", "")}}
    return {"type": "error", "error": {"type": "api_error", "message": f"HTTP {error.status_code}: {error.message}"}}


async def _create(client: anthropic.AsyncAnthropic, params: dict[str, Any]) -> Message:
    """One Messages API call; a ``stream`` request is streamed and its final message returned."""
    if params.get("stream"):
        kwargs, extra_body = _split(params, "stream")
        async with client.messages.stream(**kwargs, extra_body=extra_body or None) as stream:
            return await stream.get_final_message()
    kwargs, extra_body = _split(params, "create")
    return await client.messages.create(**kwargs, extra_body=extra_body or None)


def _split(params: dict[str, Any], method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params the SDK method names as arguments, and the rest for ``extra_body``.

    Requests are written for the API, not for one SDK release: a field the installed SDK does not
    name (a newer parameter, ``temperature`` on a release without it) still reaches the API, as it
    would in a batch.
    """
    known = _sdk_arguments(method)
    kwargs = {key: value for key, value in params.items() if key in known}
    extra = {key: value for key, value in params.items() if key not in known and key != "stream"}
    return kwargs, extra


@cache
def _sdk_arguments(method: str) -> frozenset[str]:
    return frozenset(inspect.signature(getattr(AsyncMessages, method)).parameters) - _CLIENT_OPTIONS
