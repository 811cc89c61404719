"""ClaudeHook: one Airflow connection, both Anthropic clients, and the Message Batches calls."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any

import anthropic
import httpx2
from airflow.sdk import BaseHook
from anthropic.types import Message
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.budget import Priority, call_priority
from airflow_provider_claude_batch.connection_errors import (
    ClaudeConnectionError,
    ConnectionTarget,
    explain,
    explain_in_place,
    settings_problem,
    stops_every_call,
)
from airflow_provider_claude_batch.hooks.api_errors import api_error_summary
from airflow_provider_claude_batch.hooks.budgeted import budgeted_async_http_client, budgeted_http_client
from airflow_provider_claude_batch.hooks.creating import (
    LIST_PAGE_LIMIT,
    BatchCreateError,
    BatchCreation,
    BatchQueueFullError,
)
from airflow_provider_claude_batch.hooks.settings import DEFAULT_MODEL, ClientSettings, settings_from_connection
from airflow_provider_claude_batch.validation.models import ModelCatalog

__all__ = ["DEFAULT_MODEL", "BatchCreateError", "BatchQueueFullError", "ClaudeHook", "ClientSettings"]

RESULTS_CHUNK_BYTES = 256 * 1024


# Triggers for the same connection share one async client per event loop: a triggerer running a
# thousand batch triggers holds one connection pool, not a thousand.
_ClientsBySettings = dict[ClientSettings, anthropic.AsyncAnthropic]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientsBySettings] = weakref.WeakKeyDictionary()
# The Models API's answer per connection and base URL, fetched once per process (None: it could not tell).
_model_catalogs: dict[tuple[str, str | None], ModelCatalog | None] = {}


class ClaudeHook(BatchCreation, BaseHook):
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
    :param betas: ``anthropic-beta`` values sent with every call (e.g. ``output-300k-2026-03-24``).
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
        betas: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.claude_conn_id = claude_conn_id
        self._timeout_override = timeout
        self._max_retries_override = max_retries
        self._betas = tuple(betas)

    def _settings_from(self, conn: Any) -> ClientSettings:
        return settings_from_connection(
            conn, timeout=self._timeout_override, max_retries=self._max_retries_override, betas=self._betas
        )

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

    @property
    def target(self) -> ConnectionTarget:
        """The connection and base URL, as every connection error names them."""
        return ConnectionTarget(self.claude_conn_id, self.settings.base_url)

    def _usable(self, settings: ClientSettings) -> ClientSettings:
        """``settings``, or the connection error saying what to fix before any call is made."""
        has_key = bool(settings.api_key or os.environ.get("ANTHROPIC_AUTH_TOKEN"))
        problem = settings_problem(ConnectionTarget(self.claude_conn_id, settings.base_url), has_key=has_key)
        if problem:
            raise ClaudeConnectionError(problem)
        return settings

    @contextlib.contextmanager
    def explained_errors(self) -> Iterator[None]:
        """Re-raise connection-level API errors (key, permission, host) in the shared wording."""
        try:
            yield
        except anthropic.APIError as error:
            explain_in_place(error, self.target)
            raise

    @contextlib.contextmanager
    def _work(self) -> Iterator[None]:
        """A call a task is blocked on (create, results, cancel): first in the budget, errors explained."""
        with call_priority(Priority.WORK), self.explained_errors():
            yield

    def get_conn(self) -> anthropic.Anthropic:
        """The synchronous client, built once per hook."""
        return self._client

    @cached_property
    def _client(self) -> anthropic.Anthropic:
        settings = self._usable(self.settings)
        return anthropic.Anthropic(**settings.client_kwargs(), http_client=budgeted_http_client(settings.budget))

    async def get_async_conn(self, max_retries: int | None = None) -> anthropic.AsyncAnthropic:
        """The asynchronous client, shared by every hook with the same settings on this event loop.

        :param max_retries: overrides the SDK retry count (triggers pass 0 and back off themselves,
            because the SDK honours any ``retry-after``, however long, inside one call).
        """
        settings = self._usable(await self.asettings())
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
        except (anthropic.APIError, ClaudeConnectionError) as error:
            explained = explain(error, self.target)
            if explained is not None:
                return False, explained
            return False, f"{self.target}: the API answered {api_error_summary(error)}: {error}"
        return True, f"Connected to {self.target.url}."

    def available_models(self) -> ModelCatalog | None:
        """The models this API key can use (``GET /v1/models``), asked once per connection per process.

        ``None`` when the Models API cannot tell (forbidden, missing, slow, failing): the caller warns
        and goes on. A rejected key or an unreachable host raises, in the shared wording.
        """
        key = (self.claude_conn_id, self.settings.base_url)
        if key not in _model_catalogs:
            try:
                _model_catalogs[key] = ModelCatalog.from_api(self.get_conn().models.list(limit=1000))
            except anthropic.APIError as error:
                if stops_every_call(error):
                    explain_in_place(error, self.target)
                    raise
                self.log.warning(
                    "The Models API of %s could not list the models (%s); model ids are not checked before submitting.",
                    self.target,
                    api_error_summary(error),
                )
                _model_catalogs[key] = None
        return _model_catalogs[key]

    # -- Message Batches -------------------------------------------------------------------
    # Every call below draws from the connection's request budget (see budget.py); the ones a task
    # is blocked on (create, results, cancel) go before status refreshes. Creating lives in
    # hooks/creating.py (BatchCreation): retry-safe, never paying twice.

    def list_batches_json(self, after_id: str | None = None) -> dict[str, Any]:
        """One ``list`` page (newest first, 1,000 batches) as the API's plain JSON: no SDK model is built."""
        query: dict[str, Any] = {"limit": LIST_PAGE_LIMIT}
        if after_id is not None:
            query["after_id"] = after_id
        with self.explained_errors():
            return self.get_conn().messages.batches.with_raw_response.list(**query).http_response.json()

    def retrieve_batch_json(self, batch_id: str) -> dict[str, Any]:
        """One batch as the API's plain JSON (a status look that builds no SDK model)."""
        with self.explained_errors():
            return self.get_conn().messages.batches.with_raw_response.retrieve(batch_id).http_response.json()

    def retrieve_batch(self, batch_id: str) -> MessageBatch:
        with self.explained_errors():
            return self.get_conn().messages.batches.retrieve(batch_id)

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        with self._work():
            return self.get_conn().messages.batches.cancel(batch_id)

    def delete_batch(self, batch_id: str) -> None:
        with self._work():
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
        with self._work():
            client = self.get_conn()
            if results_url is None:
                return client.messages.batches.with_raw_response.results(batch_id)
            return client.get(
                results_url, cast_to=httpx2.Response, options={"headers": {"Accept": "application/binary"}}, stream=True
            )

    async def acancel_batch(self, batch_id: str) -> MessageBatch:
        client = await self.get_async_conn()
        with self._work():
            return await client.messages.batches.cancel(batch_id)

    # -- Messages API ----------------------------------------------------------------------

    def create_message(self, params: dict[str, Any]) -> Message:
        """One synchronous Messages API call, with the SDK's retries."""
        return self.get_conn().messages.create(**params)

    def count_input_tokens(self, params: dict[str, Any]) -> int:
        """The input tokens of one request's params (``POST /v1/messages/count_tokens``, free of charge).

        A Messages API call, not a Message Batches one: it has its own rate limit and does not draw
        from the batch request budget. Only the params the endpoint takes are sent (not ``max_tokens``,
        sampling settings, ...).
        """
        kwargs = {key: value for key, value in params.items() if key in _count_tokens_arguments()}
        with self.explained_errors():
            return self.get_conn().messages.count_tokens(**kwargs).input_tokens


@functools.cache
def _count_tokens_arguments() -> frozenset[str]:
    from anthropic.resources.messages import Messages

    options = {"extra_headers", "extra_query", "extra_body", "timeout", "self"}
    return frozenset(inspect.signature(Messages.count_tokens).parameters) - options


async def _aget_connection(conn_id: str) -> Any:
    aget = getattr(BaseHook, "aget_connection", None)
    if aget is not None:
        return await aget(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)  # pragma: no cover - older SDKs
