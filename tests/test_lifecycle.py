"""The submission lifecycle alone: every step a batch task takes, and the record each transition leaves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_provider_claude_batch.lifecycle import (
    CreatePart,
    Finished,
    LandRound,
    PlanNextRound,
    SubmissionLifecycle,
    WaitForBatches,
    WaitForCapacity,
)
from airflow_provider_claude_batch.submission import SubmissionRecord

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def three_parts() -> SubmissionLifecycle:
    return SubmissionLifecycle.begin("f" * 64, [(100_000, 10), (100_000, 10), (50_000, 5)], T0, timedelta(hours=25))


def reloaded(lifecycle: SubmissionLifecycle) -> SubmissionLifecycle:
    """What a retry finds: the record after a round trip through its JSON."""
    return SubmissionLifecycle(SubmissionRecord.from_json(lifecycle.record.to_json()))


def test_a_multi_part_submission_creates_each_part_once_then_waits_lands_and_finishes():
    life = three_parts()
    created = []
    while isinstance(step := life.next_step(T0), CreatePart):
        assert not step.lost_create
        life.intend(step.round, step.part, marker="msgbatch_before", now=T0)
        life.created(step.round, step.part, f"b{step.part}", id_digest=f"d{step.part}", now=T0)
        created.append(step.part)
    assert created == [0, 1, 2]
    assert life.next_step(T0) == WaitForBatches(0, ["b0", "b1", "b2"])
    life.ended(0, T0)
    assert life.next_step(T0) == LandRound(0, ["b0", "b1", "b2"])
    life.landed(0, T0)
    assert life.next_step(T0) == PlanNextRound(0)
    life.finish(T0)
    assert life.next_step(T0) == Finished()
    assert life.record.all_batch_ids() == ["b0", "b1", "b2"]
    assert life.record.id_digests == {"b0": "d0", "b1": "d1", "b2": "d2"}


def test_an_intent_without_an_answer_makes_the_retry_look_for_the_lost_create_first():
    life = three_parts()
    life.intend(0, 0, marker="msgbatch_before", now=T0)
    retry = reloaded(life)
    assert retry.next_step(T0) == CreatePart(0, 0, lost_create=True)
    assert retry.part(0, 0).marker == "msgbatch_before"


def test_a_full_queue_waits_for_capacity_and_never_recreates_the_parts_already_made():
    life = three_parts()
    life.created(0, 0, "b0", "d0", T0)
    life.intend(0, 1, marker="b0", now=T0)
    until = life.refused(0, 1, T0, retry_after=None)
    assert until == T0 + timedelta(seconds=60)
    retry = reloaded(life)
    assert retry.next_step(T0 + timedelta(seconds=10)) == WaitForCapacity(0, 1, until, ["b0"])
    # The refused create created nothing: no lost create to look for when it is tried again.
    assert retry.next_step(until) == CreatePart(0, 1, lost_create=False)
    # Refused again: the wait doubles.
    assert retry.refused(0, 1, until) == until + timedelta(seconds=120)


def test_a_batch_ending_lets_the_refused_part_try_at_once():
    life = three_parts()
    life.created(0, 0, "b0", "d0", T0)
    life.refused(0, 1, T0)
    life.capacity_may_have_freed(T0 + timedelta(seconds=5))
    assert life.next_step(T0 + timedelta(seconds=5)) == CreatePart(0, 1, lost_create=False)


def test_the_server_hint_is_honoured_but_never_past_the_deadline():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, timedelta(minutes=3))
    assert life.refused(0, 0, T0, retry_after=120) == T0 + timedelta(seconds=120)
    assert life.refused(0, 0, T0 + timedelta(minutes=2), retry_after=600) == T0 + timedelta(minutes=3)


def test_follow_up_rounds_are_allowed_by_count_and_time_left():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, timedelta(hours=25))
    window = timedelta(hours=1)
    assert not life.round_verdict(0, T0, retry_rounds=2, min_round_window=window).allowed
    assert life.round_verdict(3, T0, retry_rounds=2, min_round_window=window).allowed
    late = life.round_verdict(3, T0 + timedelta(hours=24, minutes=30), retry_rounds=2, min_round_window=window)
    assert not late.allowed and "min_round_window" in late.reason
    assert "follow-up round(s) are used" in life.round_verdict(3, T0, retry_rounds=0, min_round_window=window).reason


def test_a_follow_up_round_runs_after_the_first_and_lands_in_order():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, timedelta(hours=25))
    life.created(0, 0, "b0", "d0", T0)
    life.ended(0, T0)
    life.landed(0, T0)
    item = life.begin_round("digest-of-3", [(3, 1)])
    assert (item.round, item.request_count, item.id_digest) == (1, 3, "digest-of-3")
    assert life.next_step(T0) == CreatePart(1, 0, lost_create=False)
    life.created(1, 0, "r1", "d1", T0)
    assert life.next_step(T0) == WaitForBatches(1, ["r1"])
    assert life.record.round_of("r1").round == 1 and life.record.batch_ids == ["b0"]


def test_relanding_lands_every_round_again_in_order_without_submitting():
    life = SubmissionLifecycle.begin("f" * 64, [(10, 1)], T0, timedelta(hours=25))
    life.created(0, 0, "b0", "d0", T0)
    life.ended(0, T0)
    life.landed(0, T0)
    life.begin_round("x", [(3, 1)])
    life.created(1, 0, "r1", "d1", T0)
    life.ended(1, T0)
    life.landed(1, T0)
    life.finish(T0)
    life.relanding()
    assert life.next_step(T0) == LandRound(0, ["b0"])
    life.landed(0, T0)
    assert life.next_step(T0) == LandRound(1, ["r1"])
    life.landed(1, T0)
    assert life.next_step(T0) == Finished()


def test_forgetting_a_wrongly_adopted_batch_resubmits_its_part():
    life = three_parts()
    for index in range(3):
        life.created(0, index, f"b{index}", f"d{index}", T0)
    life.ended(0, T0)
    life.forget("b1")
    assert life.next_step(T0) == CreatePart(0, 1, lost_create=False)
    assert "b1" not in life.record.id_digests


def test_a_record_of_the_first_release_is_read():
    old = {
        "fingerprint": "f" * 64,
        "request_count": 5,
        "parts": [{"index": 0, "request_count": 5, "body_bytes": 100, "batch_id": "b0"}],
        "rounds": [{"round": 1, "custom_ids_count": 2, "batch_ids": ["r1"]}],
        "deadline_at": (T0 + timedelta(hours=25)).isoformat(),
        "id_digests": {"b0": "d0"},
        "version": 1,
    }
    life = SubmissionLifecycle(SubmissionRecord.from_json(old))
    assert life.record.all_batch_ids() == ["b0", "r1"]
    assert life.next_step(T0) == WaitForBatches(1, ["r1"])
