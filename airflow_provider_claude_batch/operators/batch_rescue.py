"""The synchronous rescue's I/O: cancel at the rescue point, then send the rest through the Messages API.

:class:`RescueRun` performs the rescue steps of
:class:`~airflow_provider_claude_batch.lifecycle.SubmissionLifecycle` (``StartRescue``, ``SendRescue``)
with the hook and the results folder, and reports back through its transitions; waiting for the
cancelled batches and landing them are the batch task's usual steps. A pass sends every request
without a final row worth keeping (:func:`~airflow_provider_claude_batch.rescue.needs_rescue`) with
``ClaudeMessageOperator``'s engine, bounded by the deadline, and merges its rows into the results file,
each saying it came from the synchronous route: a request that landed successfully is never sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.durations import format_duration
from airflow_provider_claude_batch.landing import iter_rows, merge_round, publish_rows
from airflow_provider_claude_batch.lifecycle import SendRescue, StartRescue
from airflow_provider_claude_batch.operators.base import RESULTS_FILE
from airflow_provider_claude_batch.operators.batch_run import BatchRun, ClaudeBatchError
from airflow_provider_claude_batch.operators.message import SYNC_BATCH_ID, send_all
from airflow_provider_claude_batch.requests import PreparedRequests
from airflow_provider_claude_batch.rescue import RescuePlan, needs_rescue
from airflow_provider_claude_batch.results import ResultRow
from airflow_provider_claude_batch.submission import utc_now

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


@dataclass
class RescueRun:
    """The rescue steps of one execution of a batch task.

    :param run: the execution's input, folder, record and hook.
    :param plan: the declared rescue (lead, concurrency, time per request).
    :param retry_rounds: how many passes may re-send what failed transiently after the first.
    :param cancel: cancels batches, giving the reason.
    """

    run: BatchRun
    plan: RescuePlan
    retry_rounds: int
    cancel: Callable[[list[str], str], None]

    def start(self, step: StartRescue) -> None:
        """Cancel the open round's batches (before recording it: a retry cancels again, which is harmless)."""
        run = self.run
        if step.batch_ids:
            self.cancel(step.batch_ids, "the rescue point passed before it ended: the rest runs synchronously")
        run.lifecycle.start_rescue(utc_now(), self.plan)
        run.save()
        rescue = run.record.rescue
        run.log.warning(
            "The rescue point (%s, %s before the deadline %s) passed before round %d ended: cancelled %s; what "
            "completed by %s lands, and every request without a final row is sent through the Messages API.",
            run.record.rescue_at,
            format_duration(self.plan.lead),
            run.record.deadline_at,
            step.round,
            ", ".join(step.batch_ids) or "nothing (no batch was created yet)",
            rescue.cancel_wait_until if rescue else None,
        )

    def send(self, step: SendRescue) -> None:
        """Send pass ``step.number``: every request whose row is missing, canceled, expired or transiently errored."""
        run = self.run
        results = run.folder / RESULTS_FILE
        rest, unlanded = self._rest(results)
        begun = run.lifecycle.rescue_pass_begun(step.number, rest.count, rest.id_digest(), utc_now())
        if begun.id_digest != rest.id_digest():
            raise ClaudeBatchError(
                f"The requests of rescue pass {step.number} can no longer be rebuilt from {results}: the results file "
                "changed since the pass began. Restore it, or re-run the task with a new results folder."
            )
        run.save()
        target = run.folder / f"results.rescue{step.number}.jsonl"
        answered, transient = self._send_pass(rest, unlanded, target)
        run.tally = merge_round(results, target)
        verdict = run.lifecycle.rescue_pass_landed(
            step.number,
            utc_now(),
            transient=transient,
            unanswered=rest.count - answered,
            plan=self.plan,
            retry_rounds=self.retry_rounds,
        )
        run.save()
        if rest.count - answered:
            run.log.error(
                "The rescue ran out of time: %s. They keep the rows the batch left them (canceled where it left none).",
                verdict.reason,
            )
        elif verdict.reason:
            run.log.warning("%s; reporting them.", verdict.reason)

    def _rest(self, results: ObjectStoragePath) -> tuple[PreparedRequests, set[str]]:
        """The requests the pass sends, and those of them with no row at all in the results file yet."""
        prepared = self.run.prepared
        landed: set[str] = set()
        keep: set[str] = set()
        if results.exists():
            for row in iter_rows(results):
                landed.add(row.custom_id)
                if not needs_rescue(row):
                    keep.add(row.custom_id)
        rest = prepared.subset(set(prepared.custom_ids) - keep)
        return rest, set(rest.custom_ids) - landed

    def _send_pass(self, rest: PreparedRequests, unlanded: set[str], target: ObjectStoragePath) -> tuple[int, int]:
        """Send ``rest`` before the deadline into ``target``; returns how many were answered, and failed transiently."""
        run, transform = self.run, self.run.row_transform
        answered: set[str] = set()
        transient = 0
        run.hook.settings  # noqa: B018  (resolved here, so the event loop finds the connection cached)
        left = (run.record.deadline() - utc_now()).total_seconds()
        started = time.monotonic()
        with publish_rows(target) as sink:

            def on_row(row: ResultRow) -> None:
                nonlocal transient
                row = transform(row) if transform is not None else row
                answered.add(row.custom_id)
                transient += needs_rescue(row)
                sink.add(row)

            if rest.count:
                asyncio.run(send_all(run.hook, rest, on_row, self.plan.max_concurrency, timeout=max(left, 0.0)))
            # Every request keeps exactly one row: one the deadline cut off before any row landed says so.
            for custom_id in sorted(unlanded - answered):
                sink.add(ResultRow(custom_id=custom_id, batch_id=SYNC_BATCH_ID, status="canceled", route="sync"))
        run.log.info(
            "Rescue: sent %d request(s) through the Messages API (at most %d at once) in %.1fs; %d answered, "
            "%d failed transiently.",
            rest.count,
            self.plan.max_concurrency,
            time.monotonic() - started,
            len(answered),
            transient,
        )
        return len(answered), transient
