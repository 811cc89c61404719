"""ClaudeBatchTrigger: wait for Message Batches in the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import anthropic
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_claude_batch.hooks.api_errors import api_error_summary
from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.hooks.poller import Watch
from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    BatchSnapshot,
    format_seconds,
    seconds_until,
)
from airflow_provider_claude_batch.triggers.killing import finish_in_background, still_deferred
from airflow_provider_claude_batch.triggers.watching import BatchWatchingTrigger
from airflow_provider_claude_batch.validation import arguments

DEFAULT_PROGRESS_LOG_SECONDS = 600.0


class ClaudeBatchTrigger(BatchWatchingTrigger):
    """Wait for one or more Message Batches until all have ended, then fire exactly one event.

    The trigger never submits anything and keeps only plain values (it may be re-instantiated on
    another triggerer at any time, and ``end_time`` is absolute so the deadline survives that). It
    does not poll on its own: it registers its batches with the status poller its connection shares
    with every other trigger of the event loop (:mod:`~airflow_provider_claude_batch.hooks.poller`),
    which refreshes them all with a call or two a cycle, within the connection's request budget.

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
    :param submitted_at: POSIX timestamp of the batches' creation, when the submitter knows it: a 404
        within the connection's ``not_found_grace_seconds`` of it is the API's propagation delay.
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
        submitted_at: float | None = None,
    ) -> None:
        super().__init__()
        self.batch_ids = arguments.batch_ids(batch_ids)
        self.claude_conn_id = claude_conn_id
        self.end_time = end_time if end_time is None else arguments.seconds("end_time", end_time)
        self.min_poll_interval, self.max_poll_interval = arguments.poll_intervals(min_poll_interval, max_poll_interval)
        self.cancel_on_kill = cancel_on_kill
        self.progress_log_interval = arguments.seconds("progress_log_interval", progress_log_interval)
        self.submitted_at = submitted_at if submitted_at is None else arguments.seconds("submitted_at", submitted_at)
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
                "submitted_at": self.submitted_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self.watching() as watch:
            event = await self._wait(watch)
        yield event

    async def _wait(self, watch: Watch) -> TriggerEvent:
        """Follow ``watch`` until its batches end, one fails, or the deadline passes."""
        logged: dict[str, tuple[Any, ...]] = {}
        not_visible_logged: set[str] = set()
        logged_problem: tuple[str, int] | None = None
        started = time.monotonic()
        last_periodic_log = started
        while True:
            snapshots = watch.snapshots()
            for batch_id, snapshot in snapshots.items():
                if logged.get(batch_id) != snapshot.progress_key():
                    logged[batch_id] = snapshot.progress_key()
                    self.log.info("Claude %s", snapshot.describe())
            problem = watch.transient_problem()
            if problem is not None and problem != logged_problem:
                logged_problem = problem
                self.log.warning(
                    "Refreshing the status of Claude batches failed transiently (%s; %d cycle(s) in a row); "
                    "still waiting, with backoff.",
                    *problem,
                )
            for batch_id in set(watch.not_visible_yet()) - not_visible_logged:
                not_visible_logged.add(batch_id)
                self.log.info(
                    "Claude batch %s answers 404 moments after its creation: the API's propagation delay "
                    "(it becomes visible shortly); still waiting.",
                    batch_id,
                )
            self._unfinished = watch.unfinished()
            error = watch.error()
            if error is not None:
                return self._event("error", snapshots, watch.cycles, error)
            if not self._unfinished:
                return self._event("ended", snapshots, watch.cycles, f"All {len(self.batch_ids)} batch(es) ended.")
            now = time.time()
            # Past the deadline, one look is still owed: a trigger resumed late may find everything ended.
            looked = watch.cycles > 0 or now >= (self.end_time or now) + self.max_poll_interval
            if self.end_time is not None and now >= self.end_time and looked:
                return self._event(
                    "timeout",
                    snapshots,
                    watch.cycles,
                    f"Gave up waiting: {len(self._unfinished)} batch(es) still running at the task's "
                    f"deadline ({', '.join(self._unfinished)}).",
                )
            if time.monotonic() - last_periodic_log >= self.progress_log_interval:
                last_periodic_log = time.monotonic()
                self.log.info("%s", self._waiting_line(snapshots, time.monotonic() - started))
            timeout = self.progress_log_interval - (time.monotonic() - last_periodic_log)
            if self.end_time is not None:
                left = self.end_time - now
                timeout = min(timeout, left if left > 0 else self.min_poll_interval)
            await watch.changed(timeout)

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
        """Cancel what is still running when a user kills the deferred task (Airflow 3.3+).

        Not when the task is still deferred (Airflow 3.3 also calls this on a triggerer that lost
        the trigger to another one), and to the end even if Airflow cancels this call again (see
        :mod:`~airflow_provider_claude_batch.triggers.killing`).
        """
        if not self.cancel_on_kill:
            self.log.info("Task killed; leaving batches %s running (cancel_on_kill=False).", self._unfinished)
            return
        await finish_in_background(self._cancel_unless_moved(list(self._unfinished)))

    async def _cancel_unless_moved(self, batch_ids: list[str]) -> None:
        if await still_deferred(self):
            self.log.warning(
                "Stopped here although the task is still deferred: the trigger moved to another triggerer "
                "(this one's heartbeat was late), no user killed it. Leaving batches %s running.",
                ", ".join(batch_ids),
            )
            return
        hook = ClaudeHook(self.claude_conn_id)
        for batch_id in batch_ids:
            try:
                await hook.acancel_batch(batch_id)
                self.log.info("Task killed; cancelled Claude batch %s.", batch_id)
            except anthropic.APIError as error:
                reason = api_error_summary(error)
                self.log.warning("Task killed; could not cancel Claude batch %s: %s", batch_id, reason)


def wait_inline(trigger: BaseTrigger) -> dict[str, Any]:
    """Run ``trigger`` to its single event in this process (the non-deferrable path).

    Waiting in a worker and waiting in the triggerer are then one implementation, not two.
    """

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise RuntimeError(f"{type(trigger).__name__} ended without an event")

    return asyncio.run(first_event())
