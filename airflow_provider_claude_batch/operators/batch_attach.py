"""Which submission an execution of a batch task drives: the one an earlier attempt recorded, or a new one.

The Message Batches API has no idempotency key, so a retried task finds what its earlier attempts
submitted in the submission record and re-attaches to it when the input is the same (nothing is paid
for again); when the input changed, the stale batches are cancelled (or the task refuses) and the
new input is submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from logging import Logger
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.lifecycle import SubmissionLifecycle
from airflow_provider_claude_batch.operators.base import RESULTS_FILE
from airflow_provider_claude_batch.operators.batch_run import ClaudeBatchError
from airflow_provider_claude_batch.requests import PreparedRequests
from airflow_provider_claude_batch.submission import RecordStore, SubmissionRecord, utc_now

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


@dataclass
class Attachment:
    """How a batch task attaches to its submission.

    :param log: the task's logger.
    :param on_input_change: ``replace`` (cancel the stale batches, submit anew) or ``fail``.
    :param cancel_stale: cancels the batches of a stale submission.
    :param announce: tells downstream tasks and the UI the submission's batch ids (XCom).
    :param max_requests: requests per batch (an input over it is split into parts).
    :param timeout: how long a new submission may take in all.
    :param rescue_lead: with a synchronous rescue, how long before the deadline it begins.
    :param before_new_submission: checks a new submission's input before anything is cancelled or
        created (the cost cap); raises to refuse it.
    """

    log: Logger
    on_input_change: str
    cancel_stale: Callable[[list[str]], None]
    announce: Callable[[list[str]], None]
    max_requests: int
    timeout: timedelta
    rescue_lead: timedelta | None
    before_new_submission: Callable[[PreparedRequests], None] | None = None

    def attach_or_begin(
        self, prepared: PreparedRequests, store: RecordStore, folder: ObjectStoragePath
    ) -> SubmissionLifecycle:
        """Re-attach to what an earlier attempt submitted for this input, or begin a new submission."""
        fingerprint = prepared.fingerprint()
        record = store.load()
        if record is not None and record.fingerprint == fingerprint:
            lifecycle = SubmissionLifecycle(record)
            known = record.all_batch_ids()
            if record.rounds[0].submitted:
                self.log.info(
                    "Re-attaching to batch(es) %s submitted by an earlier attempt for the same input "
                    "(fingerprint %s): nothing is submitted or paid for again.",
                    ", ".join(known),
                    fingerprint[:12],
                )
            else:
                self.log.info("An earlier attempt submitted part of this input; completing that submission.")
            if known:
                # XCom is wiped at the start of every try: tell downstream tasks and the UI again.
                self.announce(known)
            if not (folder / RESULTS_FILE).exists():
                lifecycle.relanding()
            store.save(record)
            return lifecycle
        if self.before_new_submission is not None:
            self.before_new_submission(prepared)
        if record is not None:
            self._replace_stale(record, fingerprint)
        parts = prepared.split(max_requests=self.max_requests)
        lifecycle = SubmissionLifecycle.begin(
            fingerprint,
            [(part.count, part.body_size) for part in parts],
            utc_now(),
            self.timeout,
            rescue_lead=self.rescue_lead,
        )
        store.save(lifecycle.record)
        if len(parts) > 1:
            self.log.info(
                "%d requests (%s bytes) exceed one batch's limits; submitting them as %d batches.",
                prepared.count,
                f"{prepared.body_size:,}",
                len(parts),
            )
        return lifecycle

    def _replace_stale(self, record: SubmissionRecord, fingerprint: str) -> None:
        stale = record.all_batch_ids()
        if self.on_input_change == "fail":
            raise ClaudeBatchError(
                f"The input changed since an earlier attempt submitted batch(es) {', '.join(stale)} "
                f"(fingerprint {record.fingerprint[:12]} -> {fingerprint[:12]}), and on_input_change='fail'. "
                "Cancel them or clear the record, or set on_input_change='replace'."
            )
        self.log.warning(
            "The input changed since an earlier attempt (fingerprint %s -> %s): cancelling its batch(es) %s "
            "and submitting the new input.",
            record.fingerprint[:12],
            fingerprint[:12],
            ", ".join(stale) or "(none recorded)",
        )
        self.cancel_stale(stale)
