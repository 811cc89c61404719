"""ClaudeHook: one Airflow connection, both Anthropic clients, and the Message Batches calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import anthropic
from airflow.sdk import BaseHook
from anthropic.types import Message
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.connection_errors import (
    ClaudeConnectionError,
    ConnectionTarget,
    api_message,
    explain,
    explain_in_place,
    settings_problem,
    stops_every_call,
)
from airflow_provider_claude_batch.requests import PreparedRequests
from airflow_provider_claude_batch.validation.models import ModelCatalog

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_MAX_RETRIES = 2
RESULTS_CHUNK_BYTES = 256 * 1024
# A create is attempted at least this many times (more if the connection allows more retries).
CREATE_ATTEMPTS = 4


def _mask(secret: str) -> None:
    """Register ``secret`` with Airflow's log masker (so it never reaches a log line)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow < 3.1 layouts
        return
    mask_secret(secret)


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to build an Anthropic client; ``api_key`` never leaves this object."""

    api_key: str | None
    base_url: str | None
    timeout: float
    max_retries: int
    default_model: str
    workspace_id: str | None = None
    betas: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the key, even in a debugger or a traceback
        return (
            f"ClientSettings(base_url={self.base_url!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, default_model={self.default_model!r}, api_key=***)"
        )

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout, "max_retries": self.max_retries}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.base_url:
            kwargs["base_url"] = self.base_url
        headers = {}
        if self.workspace_id:
            headers["anthropic-workspace-id"] = self.workspace_id
        if self.betas:
            headers["anthropic-beta"] = ",".join(self.betas)
        if headers:
            kwargs["default_headers"] = headers
        return kwargs


class NotSet:
    """Type of :data:`NOT_SET`: an argument that was not passed (``None`` is a meaningful value)."""


NOT_SET = NotSet()


class BatchCreateError(RuntimeError):
    """A batch could not be created, and no batch was created on its behalf."""


# Triggers for the same connection share one async client per event loop: a triggerer running a
# thousand batch triggers holds one connection pool, not a thousand.
_ClientsBySettings = dict[ClientSettings, anthropic.AsyncAnthropic]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientsBySettings] = weakref.WeakKeyDictionary()
# Failures after which a create may or may not have reached the API; anything else is an answer.
_UNCERTAIN_CREATE_ERRORS = (
    anthropic.APIConnectionError,
    anthropic.RateLimitError,
    anthropic.InternalServerError,
)
# The Models API's answer per connection and base URL, fetched once per process (None: it could not tell).
_model_catalogs: dict[tuple[str, str | None], ModelCatalog | None] = {}


class ClaudeHook(BaseHook):
    """Talk to the Anthropic API (or the local emulator) through one Airflow connection.

    The connection's password holds the API key (falling back to ``ANTHROPIC_API_KEY``), its host
    the base URL (empty for ``https://api.anthropic.com``), and its extras ``model`` (default
    model), ``timeout`` (seconds), ``max_retries`` and ``workspace_id``.

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
        extras = conn.extra_dejson
        api_key = conn.password or os.environ.get("ANTHROPIC_API_KEY") or None
        if api_key:
            _mask(api_key)
        timeout = self._timeout_override or float(extras.get("timeout") or DEFAULT_TIMEOUT_SECONDS)
        max_retries = self._max_retries_override
        if max_retries is None:
            max_retries = int(extras.get("max_retries", DEFAULT_MAX_RETRIES))
        base_url = conn.host or None
        if base_url and "://" not in base_url:
            base_url = f"{conn.schema or 'https'}://{base_url}" + (f":{conn.port}" if conn.port else "")
        return ClientSettings(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_model=extras.get("model") or DEFAULT_MODEL,
            workspace_id=extras.get("workspace_id") or None,
            betas=self._betas,
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

    def get_conn(self) -> anthropic.Anthropic:
        """The synchronous client, built once per hook."""
        return self._client

    @cached_property
    def _client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(**self._usable(self.settings).client_kwargs())

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
            client = per_loop[settings] = anthropic.AsyncAnthropic(**settings.client_kwargs())
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

        :param prepared: the validated, serialised requests of one batch.
        :param known_batch_ids: batches this task already owns, never mistaken for the lost one.
        :param marker: the newest batch id before the first send (looked up here when not given).
        """
        if prepared.count == 0:
            raise ValueError("create_batch needs at least one request")
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
                        _describe(last_error),
                        adopted.id,
                    )
                    return adopted
                delay = _retry_delay(last_error, attempt)
                self.log.warning(
                    "Creating the batch failed (%s) and no batch was created; retrying in %.1fs.",
                    _describe(last_error),
                    delay,
                )
                time.sleep(delay)
            try:
                with self.explained_errors():
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
            except _UNCERTAIN_CREATE_ERRORS as error:
                last_error = error
        raise BatchCreateError(
            f"Could not create the batch after {attempts} attempts ({_describe(last_error)}); "
            "no batch was created for it. Retry the task once the API is reachable."
        ) from last_error

    def newest_batch_id(self) -> str | None:
        """The most recently created batch of the workspace: the marker a create is compared against."""
        with self.explained_errors():
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
        with self.explained_errors():
            for batch in self.get_conn().messages.batches.list(limit=100):
                if batch.id == after:
                    return None
                if batch.id not in exclude and _total_requests(batch) == request_count:
                    return batch
        return None

    def retrieve_batch(self, batch_id: str) -> MessageBatch:
        with self.explained_errors():
            return self.get_conn().messages.batches.retrieve(batch_id)

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        with self.explained_errors():
            return self.get_conn().messages.batches.cancel(batch_id)

    def delete_batch(self, batch_id: str) -> None:
        with self.explained_errors():
            self.get_conn().messages.batches.delete(batch_id)

    def list_batches(self, limit: int = 20) -> Iterator[MessageBatch]:
        """Batches of this workspace, newest first, fetched page by page as they are consumed."""
        return iter(self.get_conn().messages.batches.list(limit=limit))

    @contextlib.contextmanager
    def stream_results(self, batch_id: str) -> Iterator[Iterator[bytes]]:
        """The results JSONL of an ended batch as raw byte chunks, never held whole in memory."""
        with (
            self.explained_errors(),
            self.get_conn().messages.batches.with_streaming_response.results(batch_id) as response,
        ):
            yield response.iter_bytes(RESULTS_CHUNK_BYTES)

    async def aretrieve_batch(self, batch_id: str) -> MessageBatch:
        client = await self.get_async_conn()
        return await client.messages.batches.retrieve(batch_id)

    async def acancel_batch(self, batch_id: str) -> MessageBatch:
        client = await self.get_async_conn()
        return await client.messages.batches.cancel(batch_id)

    # -- Messages API ----------------------------------------------------------------------

    def create_message(self, params: dict[str, Any]) -> Message:
        """One synchronous Messages API call, with the SDK's retries."""
        return self.get_conn().messages.create(**params)


async def _aget_connection(conn_id: str) -> Any:
    aget = getattr(BaseHook, "aget_connection", None)
    if aget is not None:
        return await aget(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)  # pragma: no cover - older SDKs


def _total_requests(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def _describe(error: Exception | None) -> str:
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code}: {api_message(error)}"
    return type(error).__name__ if error is not None else "unknown error"


def api_error_summary(error: BaseException) -> str:
    """``HTTP 529 OverloadedError`` or the exception's name: short, and never carrying request data.

    A connection problem already put in the shared wording (:mod:`~.connection_errors`) is that wording.
    """
    if isinstance(error, ClaudeConnectionError) or getattr(error, "connection_problem", False):
        return str(error)
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code} {type(error).__name__}"
    return type(error).__name__


def retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's ``retry-after`` hint of an API error, in seconds, when it gives a usable one."""
    if isinstance(error, anthropic.APIStatusError):
        header = error.response.headers.get("retry-after")
        if header:
            with contextlib.suppress(ValueError):
                return float(header)
    return None


def _retry_delay(error: Exception | None, attempt: int) -> float:
    """The server's ``retry-after`` when it gives one (bounded), else exponential backoff."""
    hint = retry_after_seconds(error)
    if hint is not None:
        return min(max(hint, 0.0), 60.0)
    return min(0.5 * 2 ** (attempt - 1), 8.0)
