"""ClaudeBatchTrigger: wait for Message Batches in the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anthropic
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_claude_batch.connection_errors import ConnectionTarget, explain
from airflow_provider_claude_batch.hooks.claude import ClaudeHook, api_error_summary, retry_after_seconds
from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    BatchSnapshot,
    backoff_delay,
    elapsed_since,
    format_seconds,
    next_poll_delay,
    seconds_until,
)
from airflow_provider_claude_batch.validation import arguments

# Answers that say "not now" rather than "never": keep waiting through them.
TRANSIENT_API_ERRORS = (
    anthropic.APIConnectionError,
    anthropic.RateLimitError,
    anthropic.InternalServerError,
    anthropic.RequestTimeoutError,
    anthropic.ConflictError,
)
DEFAULT_PROGRESS_LOG_SECONDS = 600.0
# A batch not yet seen is treated as brand new, so it is polled at the shortest interval.
_NO_AGE = timedelta(0)
# Status calls in flight at once per event loop (all triggers of a triggerer share them). Without a
# bound, a thousand triggers polling together open a thousand connections, and the HTTP pool scans
# every one of them for every request: measured in benchmarks/, that stalled the triggerer's event
# loop for ~200 ms at 200 triggers. A few slots keep the pool small and the loop responsive.
# The connection lookup that starts each trigger takes a slot too: a triggerer (re)starting with a
# thousand triggers would otherwise run a thousand lookups in one turn of the loop.
POLLS_IN_FLIGHT = 16
_poll_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _slot() -> asyncio.Semaphore:
    """This event loop's status-call slots (a semaphore belongs to one loop)."""
    loop = asyncio.get_running_loop()
    slots = _poll_slots.get(loop)
    if slots is None:
        slots = _poll_slots[loop] = asyncio.Semaphore(POLLS_IN_FLIGHT)
    return slots


async def _retrieve(client: anthropic.AsyncAnthropic, batch_id: str) -> Any:
    """One status call, in a free slot of this event loop."""
    async with _slot():
        return await client.messages.batches.retrieve(batch_id)


class ClaudeBatchTrigger(BaseTrigger):
    """Poll one or more Message Batches until all have ended, then fire exactly one event.

    The trigger never submits anything, keeps only plain values (it may be re-instantiated on
    another triggerer at any time, and ``end_time`` is absolute so the deadline survives that),
    and uses the asynchronous client natively: no thread per poll, one client per connection
    shared by every trigger in the triggerer.

    The event payload carries everything the task needs to resume: ``status`` (``ended``,
    ``timeout`` or ``error``), ``batch_ids``, one snapshot per batch under ``batches``, a
    human ``message``, and ``polls``.

    :param batch_ids: the batches to wait for.
    :param claude_conn_id: the Airflow connection to use.
    :param end_time: POSIX timestamp after which a ``timeout`` event is fired.
    :param min_poll_interval: seconds between the first looks at a young batch.
    :param max_poll_interval: the longest wait between two looks.
    :param cancel_on_kill: cancel the unfinished batches when a user kills the deferred task
        (Airflow 3.3+ calls :meth:`on_kill` on mark-failed, mark-success and clear).
    :param progress_log_interval: seconds between the quieter "still waiting" log lines.
    """

    def __init__(
        self,
        batch_ids: list[str],
        claude_conn_id: str = ClaudeHook.default_conn_name,
        end_time: float | None = None,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        cancel_on_kill: bool = True,
        progress_log_interval: float = DEFAULT_PROGRESS_LOG_SECONDS,
    ) -> None:
        super().__init__()
        self.batch_ids = arguments.batch_ids(batch_ids)
        self.claude_conn_id = claude_conn_id
        self.end_time = end_time if end_time is None else arguments.seconds("end_time", end_time)
        self.min_poll_interval, self.max_poll_interval = arguments.poll_intervals(min_poll_interval, max_poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.progress_log_interval = arguments.seconds("progress_log_interval", progress_log_interval)
        self._unfinished: list[str] = list(self.batch_ids)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "claude_conn_id": self.claude_conn_id,
                "end_time": self.end_time,
                "min_poll_interval": self.min_poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "progress_log_interval": self.progress_log_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with _slot():
            client = await ClaudeHook(self.claude_conn_id).get_async_conn(max_retries=0)
        snapshots: dict[str, BatchSnapshot] = {}
        logged: dict[str, tuple[Any, ...]] = {}
        delay = self.min_poll_interval
        polls = 0
        started = time.monotonic()
        last_periodic_log = started
        while True:
            polls += 1
            answers = await asyncio.gather(
                *(_retrieve(client, batch_id) for batch_id in self._unfinished),
                return_exceptions=True,
            )
            transient: Exception | None = None
            for batch_id, answer in zip(self._unfinished, answers, strict=True):
                if isinstance(answer, TRANSIENT_API_ERRORS):
                    transient = answer
                    continue
                if isinstance(answer, BaseException):
                    target = ConnectionTarget(self.claude_conn_id, str(client.base_url).rstrip("/"))
                    yield self._event("error", snapshots, polls, _permanent_error_message(batch_id, answer, target))
                    return
                snapshot = BatchSnapshot.from_batch(answer)
                snapshots[batch_id] = snapshot
                if logged.get(batch_id) != snapshot.progress_key():
                    logged[batch_id] = snapshot.progress_key()
                    self.log.info("Claude %s", snapshot.describe())
            self._unfinished = [b for b in self.batch_ids if b not in snapshots or not snapshots[b].ended]
            if not self._unfinished:
                yield self._event("ended", snapshots, polls, f"All {len(self.batch_ids)} batch(es) ended.")
                return
            now = time.time()
            if self.end_time is not None and now >= self.end_time:
                yield self._event(
                    "timeout",
                    snapshots,
                    polls,
                    f"Gave up waiting: {len(self._unfinished)} batch(es) still running at the task's "
                    f"deadline ({', '.join(self._unfinished)}).",
                )
                return
            if transient is not None:
                hint = retry_after_seconds(transient)
                delay = backoff_delay(delay, self.min_poll_interval, self.max_poll_interval, hint)
                self.log.warning(
                    "Polling Claude batches failed transiently (%s); still waiting, next look in %s.",
                    api_error_summary(transient),
                    format_seconds(delay),
                )
            else:
                delay = self._adaptive_delay(snapshots)
            if time.monotonic() - last_periodic_log >= self.progress_log_interval:
                last_periodic_log = time.monotonic()
                self.log.info("%s", self._waiting_line(snapshots, time.monotonic() - started))
            if self.end_time is not None:
                delay = min(delay, max(self.end_time - now, 0.0))
            await asyncio.sleep(delay)

    def _adaptive_delay(self, snapshots: dict[str, BatchSnapshot]) -> float:
        """Poll as often as the youngest unfinished batch deserves."""
        now = datetime.now(timezone.utc)
        elapsed = min(
            elapsed_since(snapshots[b].created_at if b in snapshots else None, now, _NO_AGE) for b in self._unfinished
        )
        return next_poll_delay(elapsed, self.min_poll_interval, self.max_poll_interval)

    def _waiting_line(self, snapshots: dict[str, BatchSnapshot], waited: float) -> str:
        now = datetime.now(timezone.utc)
        expiries = [seconds_until(snapshots[b].expires_at, now) for b in self._unfinished if b in snapshots]
        known = [seconds for seconds in expiries if seconds is not None]
        left = f"; {format_seconds(min(known))} left before the 24-hour expiry" if known else ""
        return (
            f"Still waiting on {len(self._unfinished)} of {len(self.batch_ids)} Claude batch(es) after "
            f"{format_seconds(waited)}{left}. The API reports per-request outcomes only once a batch ends."
        )

    def _event(self, status: str, snapshots: dict[str, BatchSnapshot], polls: int, message: str) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "batch_ids": list(self.batch_ids),
                "batches": [snapshots[b].as_dict() for b in self.batch_ids if b in snapshots],
                "message": message,
                "polls": polls,
            }
        )

    async def on_kill(self) -> None:
        """Cancel what is still running when a user kills the deferred task (Airflow 3.3+)."""
        if not self.cancel_on_kill:
            self.log.info("Task killed; leaving batches %s running (cancel_on_kill=False).", self._unfinished)
            return
        client = await ClaudeHook(self.claude_conn_id).get_async_conn()
        for batch_id in self._unfinished:
            try:
                await client.messages.batches.cancel(batch_id)
                self.log.info("Task killed; cancelled Claude batch %s.", batch_id)
            except anthropic.APIError as error:
                reason = api_error_summary(error)
                self.log.warning("Task killed; could not cancel Claude batch %s: %s", batch_id, reason)


def _permanent_error_message(batch_id: str, error: BaseException, target: ConnectionTarget) -> str:
    explained = explain(error, target)
    if explained is not None:
        return f"{explained} (While waiting for batch {batch_id}.)"
    if isinstance(error, anthropic.NotFoundError):
        return (
            f"Batch {batch_id} was not found (404): it was deleted, or {target} points at another "
            "workspace or base URL than the one that created it."
        )
    return f"Waiting for batch {batch_id} failed: {api_error_summary(error)}: {error}"


def wait_inline(trigger: ClaudeBatchTrigger) -> dict[str, Any]:
    """Run ``trigger`` to its single event in this process (the non-deferrable path).

    Waiting in a worker and waiting in the triggerer are then one implementation, not two.
    """

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise RuntimeError("ClaudeBatchTrigger ended without an event")

    return asyncio.run(first_event())
