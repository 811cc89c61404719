"""The synchronous rescue as lifecycle steps alone: when it begins, what it waits for, each pass, and the record."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_claude_batch.lifecycle import (
    AwaitCancel,
    CreatePart,
    Finished,
    LandRound,
    PlanNextRound,
    RescueRowsLostError,
    SendRescue,
    StartRescue,
    SubmissionLifecycle,
    WaitForBatches,
    WaitForCapacity,
)
from airflow_provider_claude_batch.rescue import RescuePlan, needs_rescue
from airflow_provider_claude_batch.results import ResultRow, RowError
from airflow_provider_claude_batch.submission import SubmissionRecord

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
DEADLINE = timedelta(hours=6)
LEAD = timedelta(hours=1)
RESCUE_AT = T0 + DEADLINE - LEAD
# 100 requests, 10 at a time at 60 s each: 10 minutes of the hour's lead.
PLAN = RescuePlan(lead=LEAD, max_concurrency=10, seconds_per_request=60, request_count=100)


def submitted(part_sizes: list[tuple[int, int]] | None = None) -> SubmissionLifecycle:
    life = SubmissionLifecycle.begin("f" * 64, part_sizes or [(100, 10)], T0, DEADLINE, rescue_lead=LEAD)
    life.created(0, 0, "b0", "d0", T0)
    return life


def reloaded(lifecycle: SubmissionLifecycle) -> SubmissionLifecycle:
    """What a retry finds: the record after a round trip through its JSON."""
    return SubmissionLifecycle(SubmissionRecord.from_json(lifecycle.record.to_json()))


def test_a_batch_that_ends_before_the_rescue_point_is_never_rescued():
    life = submitted()
    assert life.record.batch_deadline() == RESCUE_AT  # the wait for the batch ends at the rescue point
    assert life.next_step(RESCUE_AT - timedelta(seconds=1)) == WaitForBatches(0, ["b0"])
    life.batches_ended(RESCUE_AT - timedelta(seconds=1))
    # Landing after the rescue point is still landing: the batch ended in time.
    assert life.next_step(RESCUE_AT + timedelta(minutes=1)) == LandRound(0, ["b0"])
    life.landed(0, RESCUE_AT)
    assert life.next_step(RESCUE_AT) == PlanNextRound(0)
    life.finish(RESCUE_AT)
    assert life.next_step(RESCUE_AT) == Finished()
    assert life.record.rescue is None


def test_past_the_rescue_point_the_open_round_is_cancelled_landed_and_the_rest_sent_synchronously():
    life = submitted()
    assert life.next_step(RESCUE_AT) == StartRescue(0, ["b0"])
    life.start_rescue(RESCUE_AT, PLAN)
    # The cancelled batch may take until the whole round's synchronous send (10 minutes) would no longer fit.
    until = T0 + DEADLINE - timedelta(minutes=10)
    retry = reloaded(life)
    assert retry.next_step(RESCUE_AT) == AwaitCancel(0, ["b0"], until)
    assert retry.record.rescue.canceled_batch_ids == ["b0"]
    retry.batches_ended(RESCUE_AT + timedelta(seconds=5))
    assert retry.next_step(RESCUE_AT) == LandRound(0, ["b0"])
    retry.landed(0, RESCUE_AT)
    assert retry.next_step(RESCUE_AT) == SendRescue(1)
    retry.rescue_pass_begun(1, 70, "digest-70", RESCUE_AT)
    verdict = retry.rescue_pass_landed(1, RESCUE_AT, transient=0, unanswered=0, plan=PLAN.counted(70), retry_rounds=2)
    assert not verdict.allowed and not verdict.reason
    assert retry.next_step(RESCUE_AT) == Finished()
    assert retry.record.landed_at == RESCUE_AT.isoformat()


def test_a_cancel_that_does_not_end_in_time_is_given_up_and_every_unlanded_request_is_sent():
    life = submitted()
    life.start_rescue(RESCUE_AT, PLAN)
    step = life.next_step(RESCUE_AT)
    assert isinstance(step, AwaitCancel)
    assert life.timed_out(step.until)  # the lifecycle carries on: the deadline is kept by the rescue
    assert life.record.rescue.abandoned_batch_ids == ["b0"]
    assert life.next_step(step.until) == SendRescue(1)  # nothing of b0 lands: its outcome is unknown


def test_without_a_rescue_a_wait_that_reaches_its_end_is_the_task_timing_out():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, DEADLINE)
    life.created(0, 0, "b0", "d0", T0)
    assert life.record.batch_deadline() == T0 + DEADLINE
    assert not life.timed_out(T0 + DEADLINE)


def test_with_a_rescue_a_wait_that_reaches_the_rescue_point_starts_it():
    life = submitted()
    assert not life.timed_out(RESCUE_AT - timedelta(seconds=1))  # early: not due yet
    assert life.timed_out(RESCUE_AT)
    assert life.next_step(RESCUE_AT) == StartRescue(0, ["b0"])


def test_batches_seen_ended_after_the_rescue_point_land_instead_of_being_rescued():
    life = submitted()
    life.batches_ended(RESCUE_AT + timedelta(seconds=3))  # the trigger saw them end; the worker resumed late
    assert life.next_step(RESCUE_AT + timedelta(seconds=4)) == LandRound(0, ["b0"])


def test_parts_waiting_for_queue_room_wait_no_later_than_the_rescue_point_and_are_rescued_uncreated():
    life = SubmissionLifecycle.begin("f" * 64, [(60, 6), (40, 4)], T0, DEADLINE, rescue_lead=LEAD)
    life.created(0, 0, "b0", "d0", T0)
    until = life.refused(0, 1, RESCUE_AT - timedelta(seconds=30))
    assert until == RESCUE_AT  # never past the rescue point, though the first wait is a minute
    assert life.next_step(RESCUE_AT - timedelta(seconds=1)) == WaitForCapacity(0, 1, until, ["b0"])
    assert life.next_step(RESCUE_AT) == StartRescue(0, ["b0"])
    life.start_rescue(RESCUE_AT, PLAN)
    assert isinstance(life.next_step(RESCUE_AT), AwaitCancel)


def test_a_round_with_no_batch_created_has_nothing_to_cancel_or_wait_for():
    life = SubmissionLifecycle.begin("f" * 64, [(100, 10)], T0, DEADLINE, rescue_lead=LEAD)
    life.refused(0, 0, T0)
    assert life.next_step(RESCUE_AT) == StartRescue(0, [])
    life.start_rescue(RESCUE_AT, PLAN)
    assert life.next_step(RESCUE_AT) == LandRound(0, [])  # an empty landing: the rescue sends every request
    assert life.record.rescue.canceled_batch_ids == []


def test_a_follow_up_round_still_running_at_the_rescue_point_is_the_one_rescued():
    life = submitted()
    life.batches_ended(T0 + timedelta(hours=1))
    life.landed(0, T0 + timedelta(hours=1))
    life.begin_round("digest-of-5", [(5, 1)])
    life.created(1, 0, "r1", "d1", T0 + timedelta(hours=1))
    assert life.next_step(RESCUE_AT) == StartRescue(1, ["r1"])
    life.start_rescue(RESCUE_AT, PLAN)
    # Five requests take one wave of 60 s: the cancel may take until a minute before the deadline.
    assert life.next_step(RESCUE_AT) == AwaitCancel(1, ["r1"], T0 + DEADLINE - timedelta(seconds=60))


def test_failures_with_no_time_for_a_batch_round_before_the_rescue_point_go_to_the_rescue():
    life = submitted()
    late = RESCUE_AT - timedelta(minutes=20)
    life.batches_ended(late)
    life.landed(0, late)
    verdict = life.round_verdict(3, late, retry_rounds=2, min_round_window=timedelta(hours=1))
    assert not verdict.allowed and verdict.rescue and "synchronous rescue" in verdict.reason
    life.rescue_failures(late)
    assert life.next_step(late) == SendRescue(1)
    assert life.record.rescue.reason == "transient" and life.record.rescue.canceled_batch_ids == []


def test_without_a_rescue_such_failures_are_reported():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, DEADLINE)
    verdict = life.round_verdict(3, T0 + DEADLINE - timedelta(minutes=20), retry_rounds=2, min_round_window=LEAD)
    assert not verdict.allowed and not verdict.rescue and "reporting them" in verdict.reason


def rescued_to_first_pass() -> SubmissionLifecycle:
    life = submitted()
    life.start_rescue(RESCUE_AT, PLAN)
    life.batches_ended(RESCUE_AT)
    life.landed(0, RESCUE_AT)
    life.rescue_pass_begun(1, 70, "digest-70", RESCUE_AT)
    return life


def test_transient_failures_of_a_pass_are_sent_again_while_the_deadline_allows():
    life = rescued_to_first_pass()
    verdict = life.rescue_pass_landed(1, RESCUE_AT, transient=3, unanswered=0, plan=PLAN, retry_rounds=2)
    assert verdict.allowed
    assert life.next_step(RESCUE_AT) == SendRescue(2)
    life.rescue_pass_begun(2, 3, "digest-3", RESCUE_AT)
    again = life.rescue_pass_landed(2, RESCUE_AT, transient=1, unanswered=0, plan=PLAN, retry_rounds=2)
    assert again.allowed  # two re-sends are allowed after the first pass
    life.rescue_pass_begun(3, 1, "digest-1", RESCUE_AT)
    spent = life.rescue_pass_landed(3, RESCUE_AT, transient=1, unanswered=0, plan=PLAN, retry_rounds=2)
    assert not spent.allowed and "all 2 re-sends are used" in spent.reason
    assert life.next_step(RESCUE_AT) == Finished()


def test_no_pass_is_sent_again_when_it_no_longer_fits_before_the_deadline():
    life = rescued_to_first_pass()
    almost = T0 + DEADLINE - timedelta(seconds=30)  # one wave takes 60 s
    verdict = life.rescue_pass_landed(1, almost, transient=3, unanswered=0, plan=PLAN, retry_rounds=2)
    assert not verdict.allowed
    assert "takes about 1 minute, and 30 seconds is left before the deadline" in verdict.reason
    assert life.next_step(almost) == Finished()


def test_a_pass_the_deadline_cut_off_ends_the_rescue_and_says_how_many_went_unanswered():
    life = rescued_to_first_pass()
    verdict = life.rescue_pass_landed(1, T0 + DEADLINE, transient=0, unanswered=4, plan=PLAN, retry_rounds=2)
    assert not verdict.allowed and "cut off 4 request(s)" in verdict.reason
    assert life.record.rescue.passes[0].unanswered == 4
    assert life.next_step(T0 + DEADLINE) == Finished()


def test_a_retry_of_a_pass_that_was_begun_finds_it_instead_of_adding_one():
    retry = reloaded(rescued_to_first_pass())
    assert retry.next_step(RESCUE_AT) == SendRescue(1)
    again = retry.rescue_pass_begun(1, 70, "digest-70", RESCUE_AT + timedelta(minutes=1))
    assert again.started_at == RESCUE_AT.isoformat() and len(retry.record.rescue.passes) == 1


def test_a_lost_results_file_relands_the_batch_rows_but_refuses_to_lose_rescued_ones():
    before_pass = submitted()
    before_pass.start_rescue(RESCUE_AT, PLAN)
    before_pass.batches_ended(RESCUE_AT)
    before_pass.landed(0, RESCUE_AT)
    before_pass.relanding()  # nothing came from the rescue yet: the batch lands again at no cost
    assert before_pass.next_step(RESCUE_AT) == LandRound(0, ["b0"])

    life = rescued_to_first_pass()
    life.rescue_pass_landed(1, RESCUE_AT, transient=0, unanswered=0, plan=PLAN, retry_rounds=2)
    with pytest.raises(RescueRowsLostError, match="70 of its rows came from the synchronous rescue"):
        life.relanding()


def test_a_record_without_a_rescue_still_reads_and_runs_as_before():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, DEADLINE)
    data = life.record.to_json()
    assert data["rescue_at"] is None and data["rescue"] is None
    for key in ("rescue_at", "rescue"):
        del data[key]  # as written before the rescue existed
    old = SubmissionLifecycle(SubmissionRecord.from_json(data))
    assert old.next_step(T0 + DEADLINE) == CreatePart(0, 0, lost_create=False)


def row(status: str, error_type: str | None = None) -> ResultRow:
    error = RowError(error_type, "") if error_type else None
    return ResultRow(custom_id="a", batch_id="b0", status=status, error=error)


@pytest.mark.parametrize(
    ("landed", "rescued"),
    [
        (row("succeeded"), False),  # never paid for twice
        (row("invalid_output"), False),  # a model answer that missed its schema
        (row("errored", "invalid_request_error"), False),  # would fail the same way again
        (row("canceled"), True),
        (row("expired"), True),
        (row("errored", "overloaded_error"), True),
        (row("errored", "api_error"), True),
    ],
)
def test_only_rows_without_a_final_answer_worth_keeping_are_rescued(landed: ResultRow, rescued: bool):
    assert needs_rescue(landed) is rescued
