"""One execution of a batch task: the calls each lifecycle step stands for (create, land, plan a round).

:class:`BatchRun` is the I/O shell around
:class:`~airflow_provider_claude_batch.lifecycle.SubmissionLifecycle`: each method performs one step
with the hook and the results folder, reports the outcome through the lifecycle's transitions and
saves the record. ``ClaudeBatchOperator`` decides nothing here beyond which step runs; waiting
(deferral) stays with the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from logging import Logger
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2

from airflow_provider_claude_batch.hooks.claude import BatchQueueFullError, ClaudeHook
from airflow_provider_claude_batch.landing import land_results, merge_round, tally_results, transient_custom_ids
from airflow_provider_claude_batch.lifecycle import CreatePart, LandRound, SubmissionLifecycle
from airflow_provider_claude_batch.operators.base import RESULTS_FILE, ClaudeTaskError
from airflow_provider_claude_batch.polling import parse_iso
from airflow_provider_claude_batch.requests import MAX_REQUESTS_PER_BATCH, PreparedRequests
from airflow_provider_claude_batch.results import ResultRow, ResultTally, is_transient
from airflow_provider_claude_batch.structured import OutputValidator
from airflow_provider_claude_batch.submission import RecordStore, SubmissionRecord, utc_now

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# A results stream cut mid-way surfaces as one of these; landing fetches it again.
RESULT_STREAM_ERRORS = (anthropic.APIConnectionError, anthropic.InternalServerError, httpx2.TransportError)


class ClaudeBatchError(ClaudeTaskError):
    """A batch task failed; the message says why and where its results are."""


@dataclass
class BatchRun:
    """The input, the results folder, the record's owner and the hook of one execution of a batch task.

    :param read_input: reads and validates the input (only when a step needs the requests: a
        resumed task that only lands never reads it again); its fingerprint must equal the record's.
    :param folder: where the results, the manifest and the record file are.
    :param store: where the record is saved after every transition.
    :param lifecycle: the record's owner.
    :param hook: the connection.
    :param log: the task's logger.
    :param row_transform: applied to each landed row (output-schema validation).
    :param announce: told every batch id of the submission right after each create (XCom, UI link).
    """

    read_input: Callable[[], PreparedRequests]
    folder: ObjectStoragePath
    store: RecordStore
    lifecycle: SubmissionLifecycle
    hook: ClaudeHook
    log: Logger
    row_transform: OutputValidator | None
    announce: Callable[[list[str]], None]
    results_urls: dict[str, str] = field(default_factory=dict)
    tally: ResultTally | None = None
    # Requests that failed transiently in the round landed by this execution (else read back from the file).
    transient: set[str] | None = None
    _prepared: PreparedRequests | None = None

    @property
    def prepared(self) -> PreparedRequests:
        """The input, read once per execution, and checked to be what the record submitted."""
        if self._prepared is None:
            prepared = self.read_input()
            if prepared.fingerprint() != self.record.fingerprint:
                raise ClaudeBatchError(
                    "The input changed while its submission was in progress (fingerprint "
                    f"{self.record.fingerprint[:12]} -> {prepared.fingerprint()[:12]}); the requests must not "
                    "change until the task ends. Re-run the task to replace the submission."
                )
            self._prepared = prepared
        return self._prepared

    @property
    def record(self) -> SubmissionRecord:
        return self.lifecycle.record

    def save(self) -> None:
        self.store.save(self.lifecycle.record)

    def part_limit(self) -> int:
        return part_limit(self.hook)

    # -- submitting ------------------------------------------------------------------------

    def round_parts(self, round_number: int) -> list[PreparedRequests]:
        """The requests of each part of a round, rebuilt from the input (follow-up rounds: from the results)."""
        if round_number == 0:
            return self.prepared.split(max_requests=self.part_limit())
        item = next(r for r in self.record.rounds if r.round == round_number)
        subset = self.prepared.subset(transient_custom_ids(self.folder / RESULTS_FILE))
        if subset.id_digest() != item.id_digest:
            raise ClaudeBatchError(
                f"The requests of follow-up round {round_number} can no longer be rebuilt from {self.folder}: the "
                "results file changed since the round began. Restore it, or re-run the task with a new results folder."
            )
        return subset.split(max_requests=self.part_limit())

    def create_part(self, step: CreatePart) -> None:
        """Create one part's batch, recording the intent first so no later attempt can pay for it twice."""
        lifecycle, hook = self.lifecycle, self.hook
        part = self.round_parts(step.round)[step.part]
        known = self.record.all_batch_ids()
        if step.lost_create:
            intent = lifecycle.part(step.round, step.part)
            adopted = hook.find_created_batch(part.count, after=intent.marker, exclude=known)
            if adopted is not None:
                self.log.warning(
                    "An earlier attempt sent the create for %d request(s) at %s without recording its answer; "
                    "batch %s, created since with that many requests, is that create: adopting it instead of "
                    "submitting again (its results are checked against these requests when they land).",
                    part.count,
                    intent.intent_at,
                    adopted.id,
                )
                self._created(step, part, adopted.id)
                return
            self.log.info(
                "An earlier attempt sent a create at %s but no batch with %d request(s) was created since; "
                "submitting it now.",
                intent.intent_at,
                part.count,
            )
        if not self._queue_has_room(step, part.count):
            return
        marker = hook.newest_batch_id()
        lifecycle.intend(step.round, step.part, marker, utc_now())
        self.save()
        try:
            batch = hook.create_batch(part, known_batch_ids=known, marker=marker)
        except BatchQueueFullError as refusal:
            until = lifecycle.refused(step.round, step.part, utc_now(), refusal.retry_after)
            self.save()
            self.log.warning(
                "%s The workspace's processing queue is full (or its rate limit is spent elsewhere): waiting "
                "until %s, or until one of this task's batches ends, before trying part %d of round %d again.",
                refusal,
                until.isoformat(timespec="seconds"),
                step.part + 1,
                step.round,
            )
            return
        self._created(step, part, batch.id)

    def _queue_has_room(self, step: CreatePart, count: int) -> bool:
        """With ``max_queued_requests`` on the connection, keep the workspace's queue under it."""
        ceiling = self.hook.settings.max_queued_requests
        if ceiling is None:
            return True
        queued = self.hook.queued_requests()
        if queued + count <= ceiling:
            return True
        until = self.lifecycle.refused(step.round, step.part, utc_now())
        self.save()
        self.log.info(
            "%d request(s) are waiting in the workspace's processing queue; %d more would pass the connection's "
            "max_queued_requests=%d. Waiting until %s before submitting part %d of round %d.",
            queued,
            count,
            ceiling,
            until.isoformat(timespec="seconds"),
            step.part + 1,
            step.round,
        )
        return False

    def _created(self, step: CreatePart, part: PreparedRequests, batch_id: str) -> None:
        self.lifecycle.created(step.round, step.part, batch_id, part.id_digest(), utc_now())
        self.save()
        # Told before anything else can fail, so a lost task never loses track of its batch.
        self.announce(self.record.all_batch_ids())
        self.log.info("Submitted Claude batch %s with %d request(s).", batch_id, part.count)

    def plan_next_round(self, *, retry_rounds: int, min_round_window: Any) -> None:
        """Re-run what failed transiently in a follow-up round, when retries and time allow; else finish.

        With a synchronous rescue, failures that no batch round has time for before the rescue point
        go to the rescue instead.
        """
        custom_ids = self.transient if self.transient is not None else transient_custom_ids(self.folder / RESULTS_FILE)
        verdict = self.lifecycle.round_verdict(
            len(custom_ids), utc_now(), retry_rounds=retry_rounds, min_round_window=min_round_window
        )
        if not verdict.allowed:
            if verdict.reason:
                self.log.info("%s", verdict.reason)
            if verdict.rescue:
                self.lifecycle.rescue_failures(utc_now())
            else:
                self.lifecycle.finish(utc_now())
            self.save()
            return
        subset = self.prepared.subset(custom_ids)
        if subset.count != len(custom_ids):
            raise ClaudeBatchError(
                f"{len(custom_ids) - subset.count} request(s) to re-run are no longer in the input; the input "
                "must not change between rounds."
            )
        parts = subset.split(max_requests=self.part_limit())
        item = self.lifecycle.begin_round(subset.id_digest(), [(part.count, part.body_size) for part in parts])
        self.save()
        self.log.info(
            "Round %d: re-running %d request(s) that expired or failed transiently in a follow-up batch.",
            item.round,
            subset.count,
        )

    # -- landing ---------------------------------------------------------------------------

    def land_round(self, step: LandRound, record: bool = True) -> ResultTally:
        """Land one round: the first into the results file, a follow-up merged over the rows it re-ran.

        :param step: the round and its batches.
        :param record: whether the round now counts as landed (not when some of its parts were never created).
        """
        results_path = self.folder / RESULTS_FILE
        target = results_path if step.round == 0 else self.folder / f"results.round{step.round}.jsonl"
        transient: set[str] = set()
        validate = self.row_transform

        def inspect(row: ResultRow) -> ResultRow:
            if validate is not None:
                row = validate(row)
            if is_transient(row):
                transient.add(row.custom_id)
            return row

        report = land_results(
            step.batch_ids,
            self._open_results,
            target,
            transient_errors=RESULT_STREAM_ERRORS,
            unavailable_errors=(anthropic.NotFoundError,),
            transform=inspect,
        )
        self.transient = transient
        self._check_ids(report.id_digest_by_batch, target)
        if report.stream_retries:
            self.log.warning(
                "The results stream broke %d time(s); no row was lost or written twice.", report.stream_retries
            )
        self.tally = report.tally if step.round == 0 else merge_round(results_path, target)
        if record:
            self.lifecycle.landed(step.round, utc_now())
            self.save()
        return self.tally

    def _open_results(self, batch_id: str) -> AbstractContextManager[Iterator[bytes]]:
        return self.hook.stream_results(
            batch_id, self.results_urls.get(batch_id), created_at=created_at_of(self.record, batch_id)
        )

    def _check_ids(self, landed: dict[str, str], where: ObjectStoragePath) -> None:
        """Each batch's results must carry exactly the custom ids that were submitted in it."""
        for batch_id, digest in landed.items():
            expected = self.record.id_digests.get(batch_id)
            if expected is not None and expected != digest:
                self.lifecycle.forget(batch_id)
                self.save()
                raise ClaudeBatchError(
                    f"The results of batch {batch_id} do not carry the custom ids submitted in it. It was adopted "
                    "after a create whose answer was lost, and another job of this workspace must have submitted "
                    f"a batch of the same size at that moment. Its rows are in {where}; do not use them. Re-run "
                    "the task: the record will submit the requests again."
                )

    def final_tally(self) -> ResultTally:
        """Counts and usage of the results file (from the last landing, or read back after a resume)."""
        return self.tally if self.tally is not None else tally_results(self.folder / RESULTS_FILE)

    def manifest_extra(self) -> dict[str, Any]:
        record = self.record
        sent = [part.intent_at or part.created_at for item in record.rounds for part in item.parts]
        rescue = record.rescue_report()
        return {
            **({"rescue": rescue} if rescue else {}),
            "batch_id": record.batch_ids[0] if record.batch_ids else None,
            "batch_ids": record.all_batch_ids(),
            "fingerprint": record.fingerprint,
            # When the first create was sent: with landed_at, how long the batch route took end to end.
            "submitted_at": min((moment for moment in sent if moment), default=None),
            "rounds": [
                {"round": item.round, "batch_ids": item.batch_ids, "requests": item.request_count}
                for item in record.rounds
            ],
        }


def part_limit(hook: ClaudeHook) -> int:
    """Requests per batch: the API's limit, or less when the connection keeps queue headroom."""
    return min(MAX_REQUESTS_PER_BATCH, hook.settings.max_queued_requests or MAX_REQUESTS_PER_BATCH)


def created_at_of(record: SubmissionRecord, batch_id: str) -> float | None:
    """When our create of ``batch_id`` was answered (epoch seconds), if recorded."""
    for item in record.rounds:
        for part in item.parts:
            if part.batch_id == batch_id and part.created_at:
                return parse_iso(part.created_at).timestamp()
    return None


def first_created(record: SubmissionRecord, batch_ids: list[str]) -> float | None:
    """When the earliest of ``batch_ids`` was created (for the 404 grace window), if recorded."""
    moments = [moment for batch_id in batch_ids if (moment := created_at_of(record, batch_id)) is not None]
    return min(moments) if moments else None


def results_urls(event: dict[str, Any]) -> dict[str, str]:
    """``batch_id -> results_url`` of the batches a trigger event showed ended."""
    return {b["batch_id"]: b["results_url"] for b in event.get("batches") or [] if b.get("results_url")}
