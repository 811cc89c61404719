"""Creating batches without ever paying twice: the part of :class:`~.claude.ClaudeHook` that submits.

The API has no idempotency key, so a create whose answer is lost may still have created a batch;
these methods never re-send blindly (see :meth:`BatchCreation.create_batch`). A create the API
refuses with 429 for longer than is worth waiting in a worker raises :class:`BatchQueueFullError`,
and the task defers instead (``lifecycle.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

import anthropic
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, retry_after_seconds, retry_delay

if TYPE_CHECKING:
    from logging import Logger

    from airflow_provider_claude_batch.hooks.settings import ClientSettings
    from airflow_provider_claude_batch.requests import PreparedRequests

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


# Failures after which a create may or may not have reached the API; anything else is an answer.
_UNCERTAIN_CREATE_ERRORS = (anthropic.APIConnectionError, anthropic.InternalServerError)
# A 429 on create hinting a wait this short is waited out in place; a longer one (a full processing
# queue) frees the worker: the task defers and tries again (see lifecycle.py).
IN_PLACE_RETRY_SECONDS = 10.0


class BatchCreation:
    """Create, find and count batches; mixed into the hook, which provides the client and the budget."""

    log: Logger
    settings: ClientSettings

    def get_conn(self) -> anthropic.Anthropic:
        raise NotImplementedError

    def _work(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

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
        with self._work():
            return self._create_batch(prepared, known_batch_ids, marker)

    def _create_batch(
        self, prepared: PreparedRequests, known_batch_ids: Collection[str], marker: str | NotSet | None
    ) -> MessageBatch:
        client = self.get_conn().with_options(max_retries=0)
        if isinstance(marker, NotSet):
            marker = self.newest_batch_id()
        last_error: Exception | None = None
        # Whether an attempt may have created a batch unanswered: only then is one looked for. A 429 or
        # a 529 (overloaded) refused the request, and in a fleet of same-size batches a look would
        # adopt a sibling's batch (caught at landing, but a try lost).
        maybe_created = False
        attempts = max(CREATE_ATTEMPTS, self.settings.max_retries + 1)
        for attempt in range(attempts):
            if attempt:
                adopted = None
                if maybe_created:
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
                maybe_created = maybe_created or not isinstance(error, anthropic.OverloadedError)
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
        with self._work():
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
        with self._work():
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
        with self._work():
            for batch in self.get_conn().messages.batches.list(limit=LIST_PAGE_LIMIT):
                if batch.created_at.timestamp() < cutoff:
                    break
                if batch.processing_status != "ended":
                    waiting += batch.request_counts.processing
        return waiting


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


def _total_requests(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
