"""ClaudeBatchOperator: submit latency-tolerant Claude work as Message Batches and land the results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

import anthropic
import httpx2

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1 keeps it in airflow.exceptions
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

from airflow_provider_claude_batch.landing import land_results, merge_round
from airflow_provider_claude_batch.links import ClaudeBatchLink
from airflow_provider_claude_batch.operators.base import RESULTS_FILE, ClaudeRequestsOperator, ClaudeTaskError
from airflow_provider_claude_batch.policy import batch_route_refusal, refusal_message, routing_enforced
from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_claude_batch.results import ResultRow, ResultTally, is_transient
from airflow_provider_claude_batch.routing import Workload
from airflow_provider_claude_batch.submission import (
    RECORD_FILE,
    PartRecord,
    RecordStore,
    RoundRecord,
    SubmissionRecord,
    now_iso,
)
from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger, wait_inline
from airflow_provider_claude_batch.validation import arguments

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.requests import PreparedRequests

# The defer timeout exceeds the trigger's own deadline so the trigger's clean "timeout" event wins.
DEFER_TIMEOUT_MARGIN = timedelta(minutes=5)
# After cancelling on timeout, how long to wait for the batches to end so their completed requests land.
CANCEL_GRACE = timedelta(minutes=10)
# A results stream cut mid-way surfaces as one of these; landing fetches it again.
RESULT_STREAM_ERRORS = (anthropic.APIConnectionError, anthropic.InternalServerError, httpx2.TransportError)


@dataclass
class _RoundLanding:
    tally: ResultTally
    custom_ids: set[str]  # requests that failed transiently: candidates for a follow-up round
    landed: int


class ClaudeBatchError(ClaudeTaskError):
    """A batch task failed; the message says why and where its results are."""


class ClaudeRoutingError(ClaudeBatchError, AirflowFailException):
    """The work of a batch task belongs on the synchronous route; nothing was submitted.

    An ``AirflowFailException`` too: the answer cannot change on a retry, so none is attempted.
    """


class ClaudeBatchOperator(ClaudeRequestsOperator):
    """Submit Claude requests as Message Batches (half price, results within 24 hours).

    For work nobody waits on: nightly reports, audits, test generation, evaluations. The task
    validates every request before any network call, submits, pushes the batch id to XCom at
    once, then defers (holding no worker slot) until the batch ends, and lands one JSONL row per
    request in ``results_uri``. XCom receives only a small manifest: batch ids, where the
    results are, counts per status, token usage and cost.

    Takes every parameter of
    :class:`~airflow_provider_claude_batch.operators.base.ClaudeRequestsOperator` (``requests``,
    ``model``, ``max_tokens``, ``system``, ``request_params``, ``claude_conn_id``, ``results_uri``,
    ``max_failed_fraction``), and:

    :param wait_for_completion: when False, return right after submission.
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.
    :param min_poll_interval: seconds between the first status checks of a young batch.
    :param max_poll_interval: the longest wait between two status checks (polling is adaptive).
    :param timeout: how long, from the first submission, the task may take in all (every round
        included) before its batches are cancelled, what completed is landed, and the task fails.
    :param cancel_on_kill: cancel in-flight batches when the task is killed or times out.
    :param retry_rounds: follow-up rounds for requests that came back ``expired`` or ``errored``
        for a transient reason (overloaded, api_error, rate limit); 0 disables. Requests that errored
        for a permanent reason (invalid request) are reported, never re-run.
    :param min_round_window: a follow-up round is submitted only while at least this much time is
        left before the task's deadline (``timeout`` after the first submission).
    :param on_input_change: what a retry does when the input differs from what an earlier attempt
        submitted: ``replace`` (cancel the stale batches, submit the new input) or ``fail``.
    :param blocking: declare that something is held up until this task's results arrive; a
        blocking task belongs on the synchronous route (``ClaudeMessageOperator``), so the routing
        policy refuses it. The DAG tag ``blocking`` says the same for every task of a DAG.
    :param deadline: a hard deadline (SLA, contract) measured from submission. Under 24 hours it
        cannot be met by a batch, so the routing policy refuses the task.
    :param workload: the full declaration of who waits and what the work needs
        (:class:`~airflow_provider_claude_batch.routing.Workload`). ``Workload(waiting="nobody")``
        also overrides reading a sub-daily schedule as a refresh deadline (and nothing else).

    Before submitting anything the task checks its route with the same rule as the routing policy
    (see ``docs/routing.md``) and fails with :class:`ClaudeRoutingError` if the work belongs on the
    synchronous route, unless ``[claude_batch] enforce_routing`` is False.
    """

    ui_color = "#e8d6c6"
    operator_extra_links = (ClaudeBatchLink(),)

    def __init__(
        self,
        *,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        min_poll_interval: float = DEFAULT_MIN_POLL_SECONDS,
        max_poll_interval: float = DEFAULT_MAX_POLL_SECONDS,
        timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        cancel_on_kill: bool = True,
        blocking: bool = False,
        deadline: timedelta | float | None = None,
        workload: Workload | None = None,
        retry_rounds: int = 2,
        min_round_window: timedelta | float = timedelta(hours=1),
        on_input_change: Literal["replace", "fail"] = "replace",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.retry_rounds = arguments.whole_number("retry_rounds", retry_rounds)
        self.min_round_window = arguments.duration("min_round_window", min_round_window, allow_zero=True)
        self.on_input_change = arguments.one_of("on_input_change", on_input_change, ("replace", "fail"))
        self.blocking = blocking
        self.deadline = deadline if deadline is None else arguments.duration("deadline", deadline)
        self.workload = workload
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.min_poll_interval, self.max_poll_interval = arguments.poll_intervals(min_poll_interval, max_poll_interval)
        self.timeout = arguments.duration("timeout", timeout)
        self.cancel_on_kill = cancel_on_kill
        self._submitted: list[str] = []

    def execute(self, context: Context) -> dict[str, Any]:
        # Checked before and after reading the requests: what the DAG says needs no network, and
        # requests from an XCom or a file may ask for fast mode. Either way before any create.
        self._check_route()
        prepared = self.prepare()
        self._check_route(prepared)
        folder = self.results_folder(context)
        store = self._record_store(context, folder)
        record = self._attach_or_submit(prepared, store, context)
        if not self.wait_for_completion:
            return {"batch_ids": record.batch_ids, "batch_id": record.batch_ids[0], "request_count": prepared.count}
        return self._wait(context, record.batch_ids, record)

    # -- submission: never pay twice ------------------------------------------------------

    def _record_store(self, context: Context, folder: ObjectStoragePath) -> RecordStore:
        # Airflow 3.3+ keeps task state across retries; the file beside the results serves older
        # versions and humans, and survives a cleared task whose state store was wiped.
        return RecordStore(context.get("task_state_store"), folder / RECORD_FILE)

    def _attach_or_submit(self, prepared: PreparedRequests, store: RecordStore, context: Context) -> SubmissionRecord:
        """Re-attach to what an earlier attempt submitted for this input, or submit it now."""
        fingerprint = prepared.fingerprint()
        parts = prepared.split()
        record = store.load()
        if record is not None and record.fingerprint == fingerprint:
            known = record.batch_ids
            if record.complete:
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
                self._push_ids(context, known)
        else:
            if record is not None:
                self._replace_stale(record, fingerprint)
            record = SubmissionRecord(
                fingerprint=fingerprint,
                request_count=prepared.count,
                parts=[PartRecord(i, part.count, part.body_size) for i, part in enumerate(parts)],
                deadline_at=(datetime.now(timezone.utc) + self.timeout).isoformat(),
            )
            store.save(record)
            if len(parts) > 1:
                self.log.info(
                    "%d requests (%s bytes) exceed one batch's limits; submitting them as %d batches.",
                    prepared.count,
                    f"{prepared.body_size:,}",
                    len(parts),
                )
        self._submit_missing_parts(parts, record, store, context)
        return record

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
        self._cancel(stale, reason="its input changed", force=True)

    def _submit_missing_parts(
        self, parts: list[PreparedRequests], record: SubmissionRecord, store: RecordStore, context: Context
    ) -> None:
        for part_record, part in zip(record.parts, parts, strict=True):
            if part_record.batch_id:
                continue
            batch_id = self._create_once(part, part_record, record, store)
            # Kept current so a kill during a multi-part submission cancels what already exists.
            self._submitted = list(record.batch_ids)
            self._announce(context, record.batch_ids, batch_id, part.count)
        self._submitted = list(record.batch_ids)

    def _create_once(
        self,
        part: PreparedRequests,
        part_record: PartRecord | RoundRecord,
        record: SubmissionRecord,
        store: RecordStore,
    ) -> str:
        """Create one batch, recording the intent first so no later attempt can pay for it twice."""
        hook = self.hook
        known = record.all_batch_ids()
        if part_record.intent_at:
            adopted = hook.find_created_batch(part.count, after=part_record.marker, exclude=known)
            if adopted is not None:
                self.log.warning(
                    "An earlier attempt sent the create for %d request(s) at %s without recording its answer; "
                    "batch %s, created since with that many requests, is that create: adopting it instead of "
                    "submitting again (its results are checked against these requests when they land).",
                    part.count,
                    part_record.intent_at,
                    adopted.id,
                )
                return self._record_created(record, part_record, part, adopted.id, store)
            self.log.info(
                "An earlier attempt sent a create at %s but no batch with %d request(s) was created since; "
                "submitting it now.",
                part_record.intent_at,
                part.count,
            )
        part_record.intent_at = now_iso()
        part_record.marker = hook.newest_batch_id()
        store.save(record)
        batch = hook.create_batch(part, known_batch_ids=known, marker=part_record.marker)
        return self._record_created(record, part_record, part, batch.id, store)

    @staticmethod
    def _record_created(
        record: SubmissionRecord,
        part_record: PartRecord | RoundRecord,
        part: PreparedRequests,
        batch_id: str,
        store: RecordStore,
    ) -> str:
        part_record.record_batch(batch_id)
        record.id_digests[batch_id] = part.id_digest()
        store.save(record)
        return batch_id

    def _announce(self, context: Context, batch_ids: list[str], batch_id: str, count: int) -> None:
        # Pushed before anything else can fail, so a lost task never loses track of its batch.
        self._push_ids(context, batch_ids)
        self.log.info("Submitted Claude batch %s with %d request(s).", batch_id, count)

    def _push_ids(self, context: Context, batch_ids: list[str]) -> None:
        context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
        context["ti"].xcom_push(key="batch_ids", value=list(batch_ids))
        # Airflow stores extra links only when a task ends; pushed now, the button works while deferred.
        link = ClaudeBatchLink()
        context["ti"].xcom_push(key=link.xcom_key, value=link.get_link(self, ti_key=context["ti"]))

    def _wait(self, context: Context, batch_ids: list[str], record: SubmissionRecord) -> dict[str, Any]:
        """Wait for ``batch_ids`` (deferred by default), then resume in :meth:`execute_complete`."""
        trigger = ClaudeBatchTrigger(
            batch_ids=list(batch_ids),
            claude_conn_id=self.claude_conn_id,
            end_time=record.deadline().timestamp(),
            min_poll_interval=self.min_poll_interval,
            max_poll_interval=self.max_poll_interval,
            cancel_on_kill=self.cancel_on_kill,
        )
        if self.deferrable:
            remaining = max(record.deadline() - datetime.now(timezone.utc), timedelta(0))
            self.defer(trigger=trigger, method_name="execute_complete", timeout=remaining + DEFER_TIMEOUT_MARGIN)
        return self.execute_complete(context, wait_inline(trigger))

    def _check_route(self, prepared: PreparedRequests | None = None) -> None:
        """Refuse to submit work that somebody waits on: the routing policy's rule, at run time."""
        if not routing_enforced():
            return
        decision = batch_route_refusal(self, prepared)
        if decision is not None:
            raise ClaudeRoutingError(f"{refusal_message(self, decision, prepared)} Nothing was submitted.")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after a wait: land that round's results, then re-run transient failures or finish."""
        if not event or "status" not in event:
            raise ClaudeBatchError(f"The batch wait ended without a usable event: {event!r}")
        batch_ids: list[str] = list(event.get("batch_ids") or [])
        self._submitted = batch_ids
        if event["status"] == "error":
            raise ClaudeBatchError(f"{event.get('message')} Batch ids: {', '.join(batch_ids)}.")
        folder = self.results_folder(context)
        store = self._record_store(context, folder)
        record = store.load()
        if record is None:
            raise ClaudeBatchError(
                f"No submission record for batch(es) {', '.join(batch_ids)} in {store.describe()}; "
                "it is written before any batch is created, so it was deleted. Re-run the task."
            )
        round_number = record.round_of(batch_ids)
        timed_out = event["status"] == "timeout"
        if timed_out:
            if not self.cancel_on_kill:
                raise ClaudeBatchError(
                    f"{event.get('message')} They were left running (cancel_on_kill=False); their results were "
                    "not landed."
                )
            self._cancel(batch_ids, reason="it did not end before the task's timeout")
            self._await_end(batch_ids)
        retry = self._land_round(folder, batch_ids, round_number, record, store)
        if timed_out:
            raise ClaudeBatchError(
                f"{event.get('message')} They were cancelled; the {retry.landed} result(s) of requests that "
                f"completed, and the canceled ones, are in {folder / RESULTS_FILE}."
            )
        next_round = record.round(round_number + 1)
        if next_round is not None and next_round.batch_ids:
            self.log.info("Re-attaching to follow-up round %d: batch(es) %s.", next_round.round, next_round.batch_ids)
            return self._wait(context, next_round.batch_ids, record)
        if retry.custom_ids and self._round_allowed(record, round_number + 1, len(retry.custom_ids)):
            batch_ids = self._submit_round(record, store, round_number + 1, retry.custom_ids, context)
            return self._wait(context, batch_ids, record)
        return self._finish_submission(folder, record, store, retry.tally)

    def _check_ids(
        self, record: SubmissionRecord, store: RecordStore, landed: dict[str, str], where: ObjectStoragePath
    ) -> None:
        """Each batch's results must carry exactly the custom ids that were submitted in it."""
        for batch_id, digest in landed.items():
            expected = record.id_digests.get(batch_id)
            if expected is not None and expected != digest:
                record.forget(batch_id)
                store.save(record)
                raise ClaudeBatchError(
                    f"The results of batch {batch_id} do not carry the custom ids submitted in it. It was adopted "
                    "after a create whose answer was lost, and another job of this workspace must have submitted "
                    f"a batch of the same size at that moment. Its rows are in {where}; do not use them. Re-run "
                    "the task: the record will submit the requests again."
                )

    def _land_round(
        self,
        folder: ObjectStoragePath,
        batch_ids: list[str],
        round_number: int,
        record: SubmissionRecord,
        store: RecordStore,
    ) -> _RoundLanding:
        """Land one round: the first into the results file, a follow-up merged over the rows it re-ran."""
        validate = self.row_transform()
        retry: set[str] = set()

        def inspect(row: ResultRow) -> ResultRow:
            if validate is not None:
                row = validate(row)
            if is_transient(row):
                retry.add(row.custom_id)
            return row

        results_path = folder / RESULTS_FILE
        target = results_path if round_number == 0 else folder / f"results.round{round_number}.jsonl"
        report = land_results(
            batch_ids,
            self.hook.stream_results,
            target,
            transient_errors=RESULT_STREAM_ERRORS,
            unavailable_errors=(anthropic.NotFoundError,),
            transform=inspect,
        )
        landed = report.tally.total
        self._check_ids(record, store, report.id_digest_by_batch, target)
        if report.stream_retries:
            self.log.warning(
                "The results stream broke %d time(s); no row was lost or written twice.", report.stream_retries
            )
        tally = report.tally if round_number == 0 else merge_round(results_path, target)
        return _RoundLanding(tally=tally, custom_ids=retry, landed=landed)

    def _round_allowed(self, record: SubmissionRecord, round_number: int, count: int) -> bool:
        if round_number > self.retry_rounds:
            self.log.info(
                "%d request(s) failed transiently, but all %d follow-up round(s) are used; reporting them.",
                count,
                self.retry_rounds,
            )
            return False
        left = record.deadline() - datetime.now(timezone.utc)
        if left < self.min_round_window:
            self.log.info(
                "%d request(s) failed transiently, but only %s is left before the task's deadline (a round needs "
                "min_round_window=%s); reporting them instead of re-running.",
                count,
                left,
                self.min_round_window,
            )
            return False
        return True

    def _submit_round(
        self, record: SubmissionRecord, store: RecordStore, round_number: int, custom_ids: set[str], context: Context
    ) -> list[str]:
        """Re-submit the requests that failed transiently (expired, overloaded, ...) in a follow-up batch."""
        subset = self.prepare().subset(custom_ids)
        if subset.count != len(custom_ids):
            raise ClaudeBatchError(
                f"{len(custom_ids) - subset.count} request(s) to re-run are no longer in the input; the input "
                "must not change between rounds."
            )
        self.log.info(
            "Round %d: re-running %d request(s) that expired or failed transiently in a follow-up batch.",
            round_number,
            subset.count,
        )
        round_record = RoundRecord(round=round_number, custom_ids_count=subset.count)
        record.rounds.append(round_record)
        store.save(record)
        for part in subset.split():
            self._create_once(part, round_record, record, store)
            self._submitted = list(round_record.batch_ids)
        context["ti"].xcom_push(key="batch_ids", value=record.all_batch_ids())
        return list(round_record.batch_ids)

    def _finish_submission(
        self, folder: ObjectStoragePath, record: SubmissionRecord, store: RecordStore, tally: ResultTally
    ) -> dict[str, Any]:
        record.landed_at = now_iso()
        store.save(record)
        extra = {
            "batch_id": record.batch_ids[0] if record.batch_ids else None,
            "batch_ids": record.all_batch_ids(),
            "fingerprint": record.fingerprint,
            "rounds": [
                {"round": 0, "batch_ids": record.batch_ids, "requests": record.request_count},
                *(
                    {"round": item.round, "batch_ids": item.batch_ids, "requests": item.custom_ids_count}
                    for item in record.rounds
                ),
            ],
        }
        return self.finish(folder, tally, route="batch", extra=extra)

    def _await_end(self, batch_ids: list[str]) -> None:
        """After a cancel, wait (bounded) for the batches to end so completed requests can land."""
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

    def on_kill(self) -> None:
        """Cancel in-flight batches when a running (non-deferred) task is killed."""
        self._cancel(self._submitted, reason="the task was killed")

    def _cancel(self, batch_ids: list[str], reason: str, force: bool = False) -> None:
        if not batch_ids:
            return
        if not (self.cancel_on_kill or force):
            self.log.info("Leaving batches %s running although %s (cancel_on_kill=False).", batch_ids, reason)
            return
        hook = self.hook
        for batch_id in batch_ids:
            try:
                hook.cancel_batch(batch_id)
                self.log.info("Cancelled Claude batch %s because %s.", batch_id, reason)
            except anthropic.APIError as error:
                self.log.warning("Could not cancel Claude batch %s: %s", batch_id, type(error).__name__)
