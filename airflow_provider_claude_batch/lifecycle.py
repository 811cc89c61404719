"""The submission's lifecycle: what a batch task does next, and every change to its record.

A submission moves through rounds (0 submits the input; each later one re-runs requests that failed
transiently), and each round through its parts: intent, created (or refused by a full processing
queue, then retried after a wait), all ended, landed; then either the next round or the end.
:class:`SubmissionLifecycle` owns those transitions and answers one question, :meth:`next_step`:
the operator is the I/O shell that performs the step (a create, a deferral, a landing) and reports
back through the transition methods, saving the record after each. Because the record is saved
before every create and after every answer, a task killed at any point resumes at the right step on
its retry, and no part is ever created twice.

Pure: no I/O, no Airflow, no SDK; time comes in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_provider_claude_batch.polling import parse_iso
from airflow_provider_claude_batch.submission import PartRecord, RoundRecord, SubmissionRecord

# A create refused by the processing queue is tried again after this long, doubling per refusal,
# unless the server hints a wait (never shorter than the shortest, never longer than the longest).
QUEUE_RETRY_FIRST = timedelta(seconds=60)
QUEUE_RETRY_SHORTEST = timedelta(seconds=5)
QUEUE_RETRY_LONGEST = timedelta(minutes=10)


@dataclass(frozen=True)
class CreatePart:
    """Create this part's batch. ``lost_create``: an earlier attempt sent it unanswered; look first."""

    round: int
    part: int
    lost_create: bool


@dataclass(frozen=True)
class WaitForCapacity:
    """The processing queue refused a part: wait until ``until`` (or until one of ``watching`` ends)."""

    round: int
    part: int
    until: datetime
    watching: list[str]


@dataclass(frozen=True)
class WaitForBatches:
    """Every part of the round is created: wait for its batches to end."""

    round: int
    batch_ids: list[str]


@dataclass(frozen=True)
class LandRound:
    """The round's batches ended: land their results (a follow-up round is merged over the earlier rows)."""

    round: int
    batch_ids: list[str]


@dataclass(frozen=True)
class PlanNextRound:
    """The round landed: find the requests that failed transiently and decide whether to re-run them."""

    after_round: int


@dataclass(frozen=True)
class Finished:
    """Everything landed; the manifest can be written."""


Step = CreatePart | WaitForCapacity | WaitForBatches | LandRound | PlanNextRound | Finished


@dataclass(frozen=True)
class RoundVerdict:
    """Whether a follow-up round may run, and why not when it may not."""

    allowed: bool
    reason: str = ""


class SubmissionLifecycle:
    """The one owner of a :class:`~airflow_provider_claude_batch.submission.SubmissionRecord`'s transitions.

    :param record: the record to drive (mutated in place; the caller saves it after each transition).
    """

    def __init__(self, record: SubmissionRecord) -> None:
        self.record = record

    @classmethod
    def begin(
        cls, fingerprint: str, part_sizes: list[tuple[int, int]], now: datetime, timeout: timedelta
    ) -> SubmissionLifecycle:
        """A new submission of ``part_sizes`` (request count, body bytes per part), due ``timeout`` from ``now``."""
        parts = [PartRecord(index, count, size) for index, (count, size) in enumerate(part_sizes)]
        total = sum(count for count, _ in part_sizes)
        record = SubmissionRecord(
            fingerprint=fingerprint,
            request_count=total,
            rounds=[RoundRecord(0, total, parts)],
            deadline_at=(now + timeout).isoformat(),
        )
        return cls(record)

    # -- the question ----------------------------------------------------------------------

    def next_step(self, now: datetime) -> Step:
        """What the task must do now: the first round not yet landed decides (rounds land in order)."""
        for item in self.record.rounds:
            if item.landed_at:
                continue
            if item.ended_at:
                return LandRound(item.round, item.batch_ids)
            for part in item.parts:
                if part.batch_id:
                    continue
                if part.retry_at and parse_iso(part.retry_at) > now:
                    return WaitForCapacity(item.round, part.index, parse_iso(part.retry_at), item.batch_ids)
                return CreatePart(item.round, part.index, lost_create=part.intent_at is not None)
            return WaitForBatches(item.round, item.batch_ids)
        return Finished() if self.record.landed_at else PlanNextRound(self.record.current.round)

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
        until = min(now + min(wait, QUEUE_RETRY_LONGEST), self.record.deadline())
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
        """
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
        left = self.record.deadline() - now
        if left < min_round_window:
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

    def _round(self, number: int) -> RoundRecord:
        return next(item for item in self.record.rounds if item.round == number)
