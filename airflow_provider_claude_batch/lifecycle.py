"""The submission's lifecycle: what a batch task does next, and every change to its record.

A submission moves through rounds (0 submits the input; each later one re-runs requests that failed
transiently), and each round through its parts: intent, created (or refused by a full processing
queue, then retried after a wait), all ended, landed; then either the next round or the end.
:class:`SubmissionLifecycle` owns those transitions and answers one question, :meth:`next_step`:
the operator is the I/O shell that performs the step (a create, a deferral, a landing) and reports
back through the transition methods, saving the record after each. Because the record is saved
before every create and after every answer, a task killed at any point resumes at the right step on
its retry, and no part is ever created twice.

A task with a synchronous rescue has one more way forward. If the rescue point (the deadline minus
the rescue's lead) passes while a round has not ended, the rescue begins: the round's batches are
cancelled, given until the last moment that still leaves time to send the whole round synchronously
to end, landed, and every request without a final row worth keeping is sent through the Messages
API in passes (a later pass re-sends what failed transiently, while the deadline allows).

Pure: no I/O, no Airflow, no SDK; time comes in as arguments.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_provider_claude_batch.durations import format_duration
from airflow_provider_claude_batch.lifecycle_steps import (
    AwaitCancel,
    CreatePart,
    Finished,
    LandRound,
    PlanNextRound,
    RoundVerdict,
    SendRescue,
    StartRescue,
    Step,
    WaitForBatches,
    WaitForCapacity,
)
from airflow_provider_claude_batch.polling import parse_iso
from airflow_provider_claude_batch.rescue import RescuePlan
from airflow_provider_claude_batch.submission import (
    PartRecord,
    RescuePass,
    RescueRecord,
    RoundRecord,
    SubmissionRecord,
)

# A create refused by the processing queue is tried again after this long, doubling per refusal,
# unless the server hints a wait (never shorter than the shortest, never longer than the longest).
QUEUE_RETRY_FIRST = timedelta(seconds=60)
QUEUE_RETRY_SHORTEST = timedelta(seconds=5)
QUEUE_RETRY_LONGEST = timedelta(minutes=10)


class RescueRowsLostError(RuntimeError):
    """The results file is gone, and some of its rows came from the rescue: the API keeps no copy of them."""


class SubmissionLifecycle:
    """The one owner of a :class:`~airflow_provider_claude_batch.submission.SubmissionRecord`'s transitions.

    :param record: the record to drive (mutated in place; the caller saves it after each transition).
    """

    def __init__(self, record: SubmissionRecord) -> None:
        self.record = record

    @classmethod
    def begin(
        cls,
        fingerprint: str,
        part_sizes: list[tuple[int, int]],
        now: datetime,
        timeout: timedelta,
        rescue_lead: timedelta | None = None,
    ) -> SubmissionLifecycle:
        """A new submission of ``part_sizes`` (request count, body bytes per part), due ``timeout`` from ``now``.

        :param rescue_lead: with a synchronous rescue, how long before the deadline it begins.
        """
        parts = [PartRecord(index, count, size) for index, (count, size) in enumerate(part_sizes)]
        total = sum(count for count, _ in part_sizes)
        deadline = now + timeout
        record = SubmissionRecord(
            fingerprint=fingerprint,
            request_count=total,
            rounds=[RoundRecord(0, total, parts)],
            deadline_at=deadline.isoformat(),
            rescue_at=None if rescue_lead is None else (deadline - rescue_lead).isoformat(),
        )
        return cls(record)

    # -- the question ----------------------------------------------------------------------

    def next_step(self, now: datetime) -> Step:
        """What the task must do now: the first round not yet landed decides (rounds land in order)."""
        if self.record.rescue is not None:
            return self._rescue_step(self.record.rescue)
        for item in self.record.rounds:
            if item.landed_at:
                continue
            if item.ended_at:
                return LandRound(item.round, item.batch_ids)
            if self.rescue_due(now):
                return StartRescue(item.round, item.batch_ids)
            for part in item.parts:
                if part.batch_id:
                    continue
                if part.retry_at and parse_iso(part.retry_at) > now:
                    return WaitForCapacity(item.round, part.index, parse_iso(part.retry_at), item.batch_ids)
                return CreatePart(item.round, part.index, lost_create=part.intent_at is not None)
            return WaitForBatches(item.round, item.batch_ids)
        return Finished() if self.record.landed_at else PlanNextRound(self.record.current.round)

    def _rescue_step(self, rescue: RescueRecord) -> Step:
        item = self._round(rescue.round)
        if not item.landed_at and not rescue.abandoned_batch_ids:
            if item.ended_at:
                return LandRound(item.round, item.batch_ids)
            return AwaitCancel(item.round, item.batch_ids, parse_iso(rescue.cancel_wait_until or rescue.started_at))
        if rescue.next_pass is not None:
            return SendRescue(rescue.next_pass)
        return Finished()

    def rescue_due(self, now: datetime) -> bool:
        """The rescue point has passed and no rescue has begun (a round still open then is rescued)."""
        record = self.record
        return record.rescue_at is not None and record.rescue is None and now >= parse_iso(record.rescue_at)

    def part(self, round_number: int, index: int) -> PartRecord:
        return self._round(round_number).parts[index]

    # -- transitions -----------------------------------------------------------------------

    def intend(self, round_number: int, index: int, marker: str | None, now: datetime) -> None:
        """The create of a part is about to be sent; ``marker`` is the newest batch listed before it."""
        part = self.part(round_number, index)
        part.intent_at = now.isoformat()
        part.marker = marker

    def created(self, round_number: int, index: int, batch_id: str, id_digest: str, now: datetime) -> None:
        """The part's batch exists (created now, or adopted after a lost answer)."""
        part = self.part(round_number, index)
        part.batch_id = batch_id
        part.created_at = now.isoformat()
        part.retry_at = None
        self.record.id_digests[batch_id] = id_digest

    def refused(self, round_number: int, index: int, now: datetime, retry_after: float | None = None) -> datetime:
        """The processing queue is full: nothing was created; returns when to try again.

        Waits the server's hint when it gives one, else a minute doubling per refusal up to ten,
        and never past the task's deadline.
        """
        part = self.part(round_number, index)
        part.refusals += 1
        part.intent_at = part.marker = None
        if retry_after is not None:
            wait = max(timedelta(seconds=retry_after), QUEUE_RETRY_SHORTEST)
        else:
            wait = QUEUE_RETRY_FIRST * 2 ** (part.refusals - 1)
        until = min(now + min(wait, QUEUE_RETRY_LONGEST), self.record.batch_deadline())
        part.retry_at = until.isoformat()
        return until

    def capacity_may_have_freed(self, now: datetime) -> None:
        """One of the submission's batches ended: refused parts of the current round try again now."""
        for part in self.record.current.parts:
            if part.batch_id is None and part.retry_at:
                part.retry_at = now.isoformat()

    def ended(self, round_number: int, now: datetime) -> None:
        """Every batch of the round has ended (its results can be landed)."""
        self._round(round_number).ended_at = now.isoformat()

    def batches_ended(self, now: datetime) -> None:
        """The batches being waited on have all ended (a trigger saw it), even if the rescue point passed since."""
        item = next((item for item in self.record.rounds if not item.landed_at), None)
        if item is not None and not item.ended_at and (item.submitted or self.record.rescue is not None):
            item.ended_at = now.isoformat()

    def timed_out(self, now: datetime) -> bool:
        """A wait reached its end: True when the lifecycle carries on, False when the task has timed out.

        It carries on when the rescue point is what passed (the rescue begins), or when cancelled
        batches did not end in time (the rescue goes on without their results).
        """
        step = self.next_step(now)
        if isinstance(step, AwaitCancel):
            rescue = self.record.rescue
            assert rescue is not None  # AwaitCancel is only ever the step of a begun rescue
            rescue.abandoned_batch_ids = list(step.batch_ids)
            return True
        return isinstance(step, StartRescue)

    def landed(self, round_number: int, now: datetime) -> None:
        """The round's rows are in the results file (merged over the earlier rows for a follow-up)."""
        self._round(round_number).landed_at = now.isoformat()

    def forget(self, batch_id: str) -> None:
        """Drop a batch that turned out not to be ours, so the next attempt submits its part again."""
        for item in self.record.rounds:
            for part in item.parts:
                if part.batch_id == batch_id:
                    part.batch_id = part.intent_at = part.marker = part.created_at = None
                    item.ended_at = item.landed_at = None
        self.record.id_digests.pop(batch_id, None)

    def relanding(self) -> None:
        """The results file is gone: every round lands again, in order, at no cost (results are kept 29 days).

        The submission stays finished if it was: landing again re-decides nothing and submits nothing.
        Rows a rescue sent through the Messages API cannot be fetched again, so then it refuses.
        """
        rescue = self.record.rescue
        sent = sum(item.request_count for item in rescue.passes if item.landed_at) if rescue else 0
        if sent:
            raise RescueRowsLostError(
                f"The results file is gone, and {sent} of its rows came from the synchronous rescue, which the API "
                "keeps no copy of: landing again would lose them, and sending them again would pay for them twice. "
                "Restore the results file, or delete the submission record to submit the whole input anew."
            )
        for item in self.record.rounds:
            item.landed_at = None

    def round_verdict(
        self, transient: int, now: datetime, *, retry_rounds: int, min_round_window: timedelta
    ) -> RoundVerdict:
        """Whether ``transient`` failed requests get a follow-up round after the current one."""
        if not transient:
            return RoundVerdict(False)
        number = self.record.current.round + 1
        if number > retry_rounds:
            return RoundVerdict(
                False,
                f"{transient} request(s) failed transiently, but all {retry_rounds} follow-up round(s) are used; "
                "reporting them.",
            )
        left = self.record.batch_deadline() - now
        if left < min_round_window:
            if self.record.rescue_at is not None:
                return RoundVerdict(
                    False,
                    f"{transient} request(s) failed transiently, and only {left} is left before the rescue point "
                    f"(a round needs min_round_window={min_round_window}); sending them through the synchronous "
                    "rescue instead.",
                    rescue=True,
                )
            return RoundVerdict(
                False,
                f"{transient} request(s) failed transiently, but only {left} is left before the task's deadline "
                f"(a round needs min_round_window={min_round_window}); reporting them instead of re-running.",
            )
        return RoundVerdict(True)

    def begin_round(self, id_digest: str, part_sizes: list[tuple[int, int]]) -> RoundRecord:
        """Start the follow-up round that re-runs the requests of ``part_sizes`` (their ids digested)."""
        parts = [PartRecord(index, count, size) for index, (count, size) in enumerate(part_sizes)]
        item = RoundRecord(
            self.record.current.round + 1, sum(count for count, _ in part_sizes), parts, id_digest=id_digest
        )
        self.record.rounds.append(item)
        return item

    def finish(self, now: datetime) -> None:
        self.record.landed_at = now.isoformat()

    # -- the rescue ------------------------------------------------------------------------

    def start_rescue(self, now: datetime, plan: RescuePlan) -> None:
        """The rescue begins at the rescue point: the open round's batches were just cancelled.

        They may end until the last moment that still leaves ``plan`` time to send the whole round
        synchronously; a round with no batch created yet has nothing to wait for.
        """
        item = next(item for item in self.record.rounds if not item.landed_at)
        needed = plan.time_needed(item.request_count) or timedelta(0)
        wait_until = max(now, self.record.deadline() - needed)
        self.record.rescue = RescueRecord(
            started_at=now.isoformat(),
            reason="not_ended",
            round=item.round,
            canceled_batch_ids=list(item.batch_ids),
            cancel_wait_until=wait_until.isoformat(),
        )
        if not item.batch_ids:
            item.ended_at = now.isoformat()

    def rescue_failures(self, now: datetime) -> None:
        """The rescue begins after a landed round: its transient failures have no time for another batch round."""
        self.record.rescue = RescueRecord(
            started_at=now.isoformat(), reason="transient", round=self.record.current.round
        )

    def rescue_pass_begun(self, number: int, request_count: int, id_digest: str, now: datetime) -> RescuePass:
        """Pass ``number`` is about to send ``request_count`` requests (a retry finds the pass already begun)."""
        rescue = self._rescue()
        existing = next((item for item in rescue.passes if item.number == number), None)
        if existing is not None:
            return existing
        item = RescuePass(number, request_count, id_digest, started_at=now.isoformat())
        rescue.passes.append(item)
        return item

    def rescue_pass_landed(
        self, number: int, now: datetime, *, transient: int, unanswered: int, plan: RescuePlan, retry_rounds: int
    ) -> RoundVerdict:
        """Pass ``number``'s rows are merged into the results; whether another pass re-sends ``transient`` failures.

        Another pass runs only when every request was answered, a retry is left (``retry_rounds``
        passes after the first) and ``plan`` says the failures can still be sent before the deadline.
        """
        rescue = self._rescue()
        item = next(item for item in rescue.passes if item.number == number)
        item.landed_at = now.isoformat()
        item.unanswered = unanswered
        verdict = self._pass_verdict(
            number, now, transient=transient, unanswered=unanswered, plan=plan, retry_rounds=retry_rounds
        )
        rescue.next_pass = number + 1 if verdict.allowed else None
        if not verdict.allowed:
            self.finish(now)
        return verdict

    def _pass_verdict(
        self, number: int, now: datetime, *, transient: int, unanswered: int, plan: RescuePlan, retry_rounds: int
    ) -> RoundVerdict:
        if unanswered:
            return RoundVerdict(
                False,
                f"the deadline ({self.record.deadline_at}) cut off {unanswered} request(s) before they were answered",
            )
        if not transient:
            return RoundVerdict(False)
        if number > retry_rounds:
            return RoundVerdict(
                False, f"{transient} request(s) failed transiently, and all {retry_rounds} re-sends are used"
            )
        needed = plan.time_needed(transient) or timedelta(0)
        left = self.record.deadline() - now
        if needed > left:
            return RoundVerdict(
                False,
                f"{transient} request(s) failed transiently; sending them again takes about {format_duration(needed)}, "
                f"and {format_duration(left)} is left before the deadline",
            )
        return RoundVerdict(True)

    def _rescue(self) -> RescueRecord:
        if self.record.rescue is None:
            raise ValueError("no rescue has begun for this submission")
        return self.record.rescue

    def _round(self, number: int) -> RoundRecord:
        return next(item for item in self.record.rounds if item.round == number)
