"""ClaudeHook: one Airflow connection, both Anthropic clients, and the Message Batches calls."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Collection, Iterator
from dataclasses import replace
from functools import cached_property
from typing import Any

import anthropic
import httpx2
from airflow.sdk import BaseHook
from anthropic.types import Message
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.budget import Priority, call_priority
from airflow_provider_claude_batch.hooks.api_errors import (
    api_error_message,
    describe_api_error,
    retry_after_seconds,
    retry_delay,
)
from airflow_provider_claude_batch.hooks.budgeted import budgeted_async_http_client, budgeted_http_client
from airflow_provider_claude_batch.hooks.settings import ClientSettings, settings_from_connection
from airflow_provider_claude_batch.requests import PreparedRequests

RESULTS_CHUNK_BYTES = 256 * 1024
# A create is attempted at least this many times (more if the connection allows more retries).
CREATE_ATTEMPTS = 4
LIST_PAGE_LIMIT = 1000
# Every batch ends within 24 hours of its creation: older ones hold nothing in the processing queue.
QUEUE_HORIZON_SECONDS = 24 * 3600.0


class NotSet:
    """Type of :data:`NOT_SET`: an argument that was not passed (``None`` is a meaningful value)."""


NOT_SET = NotSet()


class BatchCreateError(RuntimeError):
    """A batch could not be created, and no batch was created on its behalf."""


class BatchQueueFullError(BatchCreateError):
    """The API kept answering 429 to a create: no batch was created; waiting lets it through.

    :param retry_after: the API's last ``retry-after`` hint in seconds, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Triggers for the same connection share one async client per event loop: a triggerer running a
# thousand batch triggers holds one connection pool, not a thousand.
_ClientsBySettings = dict[ClientSettings, anthropic.AsyncAnthropic]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientsBySettings] = weakref.WeakKeyDictionary()
# Failures after which a create may or may not have reached the API; anything else is an answer.
_UNCERTAIN_CREATE_ERRORS = (anthropic.APIConnectionError, anthropic.InternalServerError)
# A 429 on create hinting a wait this short is waited out in place; a longer one (a full processing
# queue) frees the worker: the task defers and tries again (see lifecycle.py).
IN_PLACE_RETRY_SECONDS = 10.0


class ClaudeHook(BaseHook):
    """Talk to the Anthropic API (or the local emulator) through one Airflow connection.

    The connection's password holds the API key (falling back to ``ANTHROPIC_API_KEY``), its host
    the base URL (empty for ``https://api.anthropic.com``), and its extras ``model`` (default
    model), ``timeout`` (seconds), ``max_retries``, ``workspace_id``, ``batch_requests_per_minute``
    (this process's request budget for the Message Batches API, default 50), ``max_queued_requests``
    (headroom kept in the workspace's processing queue) and ``not_found_grace_seconds`` (how long a
    404 after a batch's creation is the API's propagation delay, default 300).

    :param claude_conn_id: the Airflow connection id, ``claude_default`` unless told otherwise.
    :param timeout: overrides the connection's request timeout, in seconds.
    :param max_retries: overrides the connection's SDK retry count.
    """

    conn_name_attr = "claude_conn_id"
    default_conn_name = "claude_default"
    conn_type = "claude"
    hook_name = "Claude (Anthropic API)"

    def __init__(
        self,
        claude_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__()
        self.claude_conn_id = claude_conn_id
        self._timeout_override = timeout
        self._max_retries_override = max_retries

    def _settings_from(self, conn: Any) -> ClientSettings:
        return settings_from_connection(conn, timeout=self._timeout_override, max_retries=self._max_retries_override)

    @cached_property
    def settings(self) -> ClientSettings:
        return self._settings_from(self.get_connection(self.claude_conn_id))

    async def asettings(self) -> ClientSettings:
        """The settings, looked up without blocking the event loop (for triggers)."""
        if "settings" not in self.__dict__:
            conn = await _aget_connection(self.claude_conn_id)
            self.__dict__["settings"] = self._settings_from(conn)
        return self.settings

    @property
    def default_model(self) -> str:
        return self.settings.default_model

    def get_conn(self) -> anthropic.Anthropic:
        """The synchronous client, built once per hook."""
        return self._client

    @cached_property
    def _client(self) -> anthropic.Anthropic:
        settings = self.settings
        return anthropic.Anthropic(**settings.client_kwargs(), http_client=budgeted_http_client(settings.budget))

    async def get_async_conn(self, max_retries: int | None = None) -> anthropic.AsyncAnthropic:
        """The asynchronous client, shared by every hook with the same settings on this event loop.

        :param max_retries: overrides the SDK retry count (triggers pass 0 and back off themselves,
            because the SDK honours any ``retry-after``, however long, inside one call).
        """
        settings = await self.asettings()
        if max_retries is not None:
            settings = replace(settings, max_retries=max_retries)
        per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
        client = per_loop.get(settings)
        if client is None:
            client = per_loop[settings] = anthropic.AsyncAnthropic(
                **settings.client_kwargs(), http_client=budgeted_async_http_client(settings.budget)
            )
        return client

    def test_connection(self) -> tuple[bool, str]:
        """List one batch: free, and proves the key, the base URL and batch access in one call."""
        try:
            self.get_conn().messages.batches.list(limit=1)
        except anthropic.AuthenticationError:
            return False, "The API key was rejected (401). Check the connection's password."
        except anthropic.PermissionDeniedError:
            return False, "The API key may not use the Message Batches API (403)."
        except anthropic.APIConnectionError as error:
            where = self.settings.base_url or "https://api.anthropic.com"
            return False, f"Could not reach {where}: {type(error).__name__}."
        except anthropic.APIStatusError as error:
            return False, f"The API answered {error.status_code}: {api_error_message(error)}"
        return True, f"Connected to {self.settings.base_url or 'https://api.anthropic.com'}."

    # -- Message Batches -------------------------------------------------------------------
    # Every call below draws from the connection's request budget (see budget.py); the ones a task
    # is blocked on (create, results, cancel) go before status refreshes.

    def create_batch(
        self,
        prepared: PreparedRequests,
        known_batch_ids: Collection[str] = (),
        marker: str | NotSet | None = NOT_SET,
    ) -> MessageBatch:
        """Create one batch from already-validated requests, never creating it twice.

        The API has no idempotency key, so a create whose answer is lost (timeout, 5xx, 429) may
        still have created a batch. Instead of letting the SDK re-send blindly, each failed attempt
        is followed by a look at the batches created since the first send (listed before the
        ``marker``, the newest batch seen before sending: no clocks are compared); one with the same
        request count is adopted rather than paid for again. Landing then checks that the results
        carry exactly the custom ids submitted, so a mistaken adoption can never pass silently.

        A create the API keeps refusing with 429 raises :class:`BatchQueueFullError` (nothing was
        created): the workspace's processing queue is full, or its rate limit is spent elsewhere.

        :param prepared: the validated, serialised requests of one batch.
        :param known_batch_ids: batches this task already owns, never mistaken for the lost one.
        :param marker: the newest batch id before the first send (looked up here when not given).
        """
        if prepared.count == 0:
            raise ValueError("create_batch needs at least one request")
        with call_priority(Priority.WORK):
            return self._create_batch(prepared, known_batch_ids, marker)

    def _create_batch(
        self, prepared: PreparedRequests, known_batch_ids: Collection[str], marker: str | NotSet | None
    ) -> MessageBatch:
        client = self.get_conn().with_options(max_retries=0)
        if isinstance(marker, NotSet):
            marker = self.newest_batch_id()
        last_error: Exception | None = None
        attempts = max(CREATE_ATTEMPTS, self.settings.max_retries + 1)
        for attempt in range(attempts):
            if attempt:
                adopted = self.find_created_batch(prepared.count, after=marker, exclude=known_batch_ids)
                if adopted is not None:
                    self.log.warning(
                        "The create of a %d-request batch failed (%s), but batch %s with that many "
                        "requests was created meanwhile; using it instead of submitting again.",
                        prepared.count,
                        describe_api_error(last_error),
                        adopted.id,
                    )
                    return adopted
                delay = retry_delay(last_error, attempt)
                self.log.warning(
                    "Creating the batch failed (%s) and no batch was created; retrying in %.1fs.",
                    describe_api_error(last_error),
                    delay,
                )
                time.sleep(delay)
            try:
                return client.post(
                    "/v1/messages/batches",
                    cast_to=MessageBatch,
                    content=prepared.body_chunks(),
                    options={
                        "headers": {
                            "Content-Type": "application/json",
                            "Content-Length": str(prepared.body_size),
                        }
                    },
                )
            except anthropic.RateLimitError as error:
                _refuse_unless_short(error, prepared.count)
                last_error = error
            except _UNCERTAIN_CREATE_ERRORS as error:
                last_error = error
        if isinstance(last_error, anthropic.RateLimitError):
            raise BatchQueueFullError(
                f"The API refused the create of a {prepared.count}-request batch {attempts} times with 429 "
                f"({describe_api_error(last_error)}); no batch was created for it.",
                retry_after=retry_after_seconds(last_error),
            ) from last_error
        raise BatchCreateError(
            f"Could not create the batch after {attempts} attempts ({describe_api_error(last_error)}); "
            "no batch was created for it. Retry the task once the API is reachable."
        ) from last_error

    def newest_batch_id(self) -> str | None:
        """The most recently created batch of the workspace: the marker a create is compared against."""
        with call_priority(Priority.WORK):
            page = self.get_conn().messages.batches.list(limit=1)
        return page.data[0].id if page.data else None

    def find_created_batch(
        self, request_count: int, after: str | None, exclude: Collection[str] = ()
    ) -> MessageBatch | None:
        """The newest batch created after the ``after`` marker with ``request_count`` requests.

        The list is newest first, so everything listed before the marker was created after it.

        :param request_count: the number of requests the lost create carried.
        :param after: the newest batch id seen before the create was sent (None: there was none).
        :param exclude: batch ids that are known and therefore not the lost one.
        """
        with call_priority(Priority.WORK):
            for batch in self.get_conn().messages.batches.list(limit=100):
                if batch.id == after:
                    return None
                if batch.id not in exclude and _total_requests(batch) == request_count:
                    return batch
        return None

    def queued_requests(self, horizon_seconds: float = QUEUE_HORIZON_SECONDS) -> int:
        """Requests still waiting in the workspace's processing queue: those of its unended batches.

        Batches end within 24 hours, so listing stops at the first batch older than ``horizon_seconds``.
        """
        cutoff = time.time() - horizon_seconds
        waiting = 0
        with call_priority(Priority.WORK):
            for batch in self.get_conn().messages.batches.list(limit=LIST_PAGE_LIMIT):
                if batch.created_at.timestamp() < cutoff:
                    break
                if batch.processing_status != "ended":
                    waiting += batch.request_counts.processing
        return waiting

    def list_batches_json(self, after_id: str | None = None) -> dict[str, Any]:
        """One ``list`` page (newest first, 1,000 batches) as the API's plain JSON: no SDK model is built."""
        query: dict[str, Any] = {"limit": LIST_PAGE_LIMIT}
        if after_id is not None:
            query["after_id"] = after_id
        return self.get_conn().messages.batches.with_raw_response.list(**query).http_response.json()

    def retrieve_batch_json(self, batch_id: str) -> dict[str, Any]:
        """One batch as the API's plain JSON (a status look that builds no SDK model)."""
        return self.get_conn().messages.batches.with_raw_response.retrieve(batch_id).http_response.json()

    def retrieve_batch(self, batch_id: str) -> MessageBatch:
        return self.get_conn().messages.batches.retrieve(batch_id)

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        with call_priority(Priority.WORK):
            return self.get_conn().messages.batches.cancel(batch_id)

    def delete_batch(self, batch_id: str) -> None:
        with call_priority(Priority.WORK):
            self.get_conn().messages.batches.delete(batch_id)

    def list_batches(self, limit: int = 20) -> Iterator[MessageBatch]:
        """Batches of this workspace, newest first, fetched page by page as they are consumed."""
        return iter(self.get_conn().messages.batches.list(limit=limit))

    @contextlib.contextmanager
    def stream_results(
        self, batch_id: str, results_url: str | None = None, created_at: float | None = None
    ) -> Iterator[Iterator[bytes]]:
        """The results JSONL of an ended batch as raw byte chunks, never held whole in memory.

        A 404 within the connection's ``not_found_grace_seconds`` of the batch's creation is the API's
        propagation delay (anthropic-sdk-python#1432): the download is tried again until the window
        closes; after it, the 404 is raised.

        :param batch_id: the ended batch.
        :param results_url: its ``results_url`` when already known (from the status that showed it
            ended): the download then costs one call, not the SDK's two (it retrieves the batch first).
        :param created_at: when the batch was created (epoch seconds), for the grace window; unknown,
            a 404 is raised at once.
        """
        grace_ends = (created_at or 0.0) + self.settings.not_found_grace_seconds
        delay = 1.0
        while True:
            try:
                response = self._open_results(batch_id, results_url)
                break
            except anthropic.NotFoundError:
                if time.time() + delay > grace_ends:
                    raise
                self.log.info(
                    "The results of batch %s answer 404 moments after its creation (the API's propagation "
                    "delay); trying again in %.0fs.",
                    batch_id,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        try:
            yield response.iter_bytes(RESULTS_CHUNK_BYTES)
        finally:
            response.close()

    def _open_results(self, batch_id: str, results_url: str | None) -> Any:
        with call_priority(Priority.WORK):
            client = self.get_conn()
            if results_url is None:
                return client.messages.batches.with_raw_response.results(batch_id)
            return client.get(
                results_url, cast_to=httpx2.Response, options={"headers": {"Accept": "application/binary"}}, stream=True
            )

    async def acancel_batch(self, batch_id: str) -> MessageBatch:
        client = await self.get_async_conn()
        with call_priority(Priority.WORK):
            return await client.messages.batches.cancel(batch_id)

    # -- Messages API ----------------------------------------------------------------------

    def create_message(self, params: dict[str, Any]) -> Message:
        """One synchronous Messages API call, with the SDK's retries."""
        return self.get_conn().messages.create(**params)


def _refuse_unless_short(error: anthropic.RateLimitError, count: int) -> None:
    """Raise for a 429 not worth waiting out in the worker: a spend limit, or a long (or no) ``retry-after``."""
    if error.error_code == "enforced_spend_limit_reached":
        raise BatchCreateError(
            f"The workspace's spend limit is reached ({describe_api_error(error)}); no batch was created for the "
            f"{count} request(s). Raise the limit in the Claude Console, or wait for the next billing period."
        ) from error
    hint = retry_after_seconds(error)
    if hint is None or hint > IN_PLACE_RETRY_SECONDS:
        raise BatchQueueFullError(
            f"The API refused the create of a {count}-request batch with 429 ({describe_api_error(error)}); "
            "no batch was created for it.",
            retry_after=hint,
        ) from error


async def _aget_connection(conn_id: str) -> Any:
    aget = getattr(BaseHook, "aget_connection", None)
    if aget is not None:
        return await aget(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)  # pragma: no cover - older SDKs


def _total_requests(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
