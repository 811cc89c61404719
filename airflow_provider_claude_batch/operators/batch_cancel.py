"""Cancelling a batch task's batches: when it times out, is killed, changes its input, or reaches the rescue point.

A cancelled batch still hands back what it completed, once it has ended: :class:`BatchCanceller`
cancels, waits (bounded) for the end, and on a timeout lands what completed before the task fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from logging import Logger
from typing import NoReturn

import anthropic

from airflow_provider_claude_batch.hooks.claude import ClaudeHook
from airflow_provider_claude_batch.lifecycle import LandRound, WaitForBatches, WaitForCapacity
from airflow_provider_claude_batch.operators.base import RESULTS_FILE
from airflow_provider_claude_batch.operators.batch_run import BatchRun, ClaudeBatchError, results_urls
from airflow_provider_claude_batch.submission import utc_now
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline

# After cancelling on timeout, how long to wait for the batches to end so their completed requests land.
CANCEL_GRACE = timedelta(minutes=10)


@dataclass
class BatchCanceller:
    """Cancels batches and waits for them to end, for one execution of a batch task.

    :param hook: the connection.
    :param log: the task's logger.
    :param claude_conn_id: the connection id, for the wait's trigger.
    :param min_poll_interval: the task's shortest poll interval (capped at 2 s while waiting for a cancel).
    :param max_poll_interval: the task's longest poll interval (capped at 30 s while waiting for a cancel).
    :param results_urls: where the ended batches' results are, updated when they end.
    """

    hook: ClaudeHook
    log: Logger
    claude_conn_id: str
    min_poll_interval: float
    max_poll_interval: float
    results_urls: dict[str, str]

    def cancel(self, batch_ids: list[str], reason: str) -> None:
        """Cancel each batch; one that cannot be cancelled (already ended, unreachable) is logged, not fatal."""
        for batch_id in batch_ids:
            try:
                self.hook.cancel_batch(batch_id)
                self.log.info("Cancelled Claude batch %s because %s.", batch_id, reason)
            except anthropic.APIError as error:
                self.log.warning("Could not cancel Claude batch %s: %s", batch_id, type(error).__name__)

    def await_end(self, batch_ids: list[str]) -> None:
        """After a cancel, wait (bounded by ``CANCEL_GRACE``) for the batches to end so completed requests land."""
        event = wait_inline(
            ClaudeBatchTrigger(
                batch_ids=batch_ids,
                claude_conn_id=self.claude_conn_id,
                end_time=time.time() + CANCEL_GRACE.total_seconds(),
                min_poll_interval=min(self.min_poll_interval, 2.0),
                max_poll_interval=min(self.max_poll_interval, 30.0),
                cancel_on_kill=False,
            )
        )
        if event["status"] != "ended":
            raise ClaudeBatchError(
                f"Batch(es) {', '.join(batch_ids)} were cancelled but had not ended {CANCEL_GRACE} later "
                f"({event.get('message')}); their results can be landed by re-running the task."
            )
        self.results_urls.update(results_urls(event))

    def time_out(self, run: BatchRun, batch_ids: list[str], message: str, *, cancel_on_kill: bool) -> NoReturn:
        """Past the deadline: cancel what runs, land what completed, and fail."""
        if batch_ids and not cancel_on_kill:
            raise ClaudeBatchError(
                f"{message} They were left running (cancel_on_kill=False); their results were not landed."
            )
        landed = 0
        step = run.lifecycle.next_step(utc_now())
        if batch_ids:
            self.cancel(batch_ids, reason="it did not end before the task's timeout")
            self.await_end(batch_ids)
            if isinstance(step, WaitForBatches):  # every part was created: the round ends here, cancelled
                run.lifecycle.ended(step.round, utc_now())
                landed = run.land_round(LandRound(step.round, batch_ids)).total
            else:  # parts were never created: what completed lands to be seen, but the round stays open
                round_number = step.round if isinstance(step, WaitForCapacity) else 0
                landed = run.land_round(LandRound(round_number, batch_ids), record=False).total
        raise ClaudeBatchError(
            f"{message} They were cancelled; the {landed} result(s) of requests that completed, and the "
            f"canceled ones, are in {run.folder / RESULTS_FILE}."
        )
