"""Routing is decided by who waits and what the work needs, never by price."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_claude_batch import routing
from airflow_provider_claude_batch.routing import (
    BATCH_WINDOW,
    RoutingDecision,
    Workload,
    decide_route,
    format_duration,
)


def _reasons(decision: RoutingDecision) -> str:
    return " | ".join(decision.reasons)


# --------------------------------------------------------------------------------------------------
# Someone or something waits: sync
# --------------------------------------------------------------------------------------------------


def test_interactive_chat_is_sync_because_it_streams() -> None:
    decision = decide_route(Workload(waiting="person", needs_streaming=True, description="chat reply"))

    assert decision.route == "sync"
    assert decision.decided_by == "capability"
    assert "stream token by token" in decision.reasons[0]
    assert "only finished results" in decision.reasons[0]


def test_pre_merge_review_a_developer_waits_on_is_sync() -> None:
    decision = decide_route(Workload(waiting="person", description="pre-merge review"))

    assert decision.route == "sync"
    assert decision.decided_by == "waiting"
    assert decision.reasons == ("a person waits on this pre-merge review: batch could hold it up to 24 hours",)


def test_support_agent_holding_a_customer_is_sync_for_the_loop() -> None:
    decision = decide_route(Workload(waiting="person", interactive_loop=True, description="support conversation"))

    assert decision.route == "sync"
    assert decision.decided_by == "capability"
    assert "read each result and continue" in _reasons(decision)
    assert "single shot" in _reasons(decision)


def test_build_step_waiting_on_a_generated_test_is_sync() -> None:
    decision = decide_route(Workload(waiting="pipeline", description="generated unit test"))

    assert decision.route == "sync"
    assert decision.decided_by == "waiting"
    assert "pipeline step sits idle until this generated unit test is answered" in decision.reasons[0]
    assert "up to 24 hours" in decision.reasons[0]


def test_dashboard_refreshing_every_few_minutes_is_sync() -> None:
    decision = decide_route(Workload(refresh_every=timedelta(minutes=5), triggered_by="schedule"))

    assert decision.route == "sync"
    assert decision.decided_by == "time"
    assert decision.reasons == ("results must refresh every 5 minutes; a batch can take up to 24 hours",)


def test_bulk_job_with_two_hour_contractual_deadline_is_sync() -> None:
    decision = decide_route(Workload(deadline=timedelta(hours=2), description="contract extraction"))

    assert decision.route == "sync"
    assert decision.decided_by == "time"
    assert decision.reasons == (
        "a hard deadline of 2 hours is shorter than the batch window of 24 hours; batch has no faster tier",
    )


def test_deadline_and_refresh_both_reported() -> None:
    decision = decide_route(Workload(deadline=timedelta(hours=1), refresh_every=timedelta(minutes=15)))

    assert decision.route == "sync"
    assert len(decision.reasons) == 2
    assert "hard deadline of 1 hour" in decision.reasons[0]
    assert "refresh every 15 minutes" in decision.reasons[1]


# --------------------------------------------------------------------------------------------------
# Capabilities a batch cannot provide: sync even when nobody waits
# --------------------------------------------------------------------------------------------------


def test_tool_loop_with_nobody_waiting_is_sync() -> None:
    decision = decide_route(Workload(waiting="nobody", interactive_loop=True))

    assert decision.route == "sync"
    assert decision.decided_by == "capability"
    assert "tool or agent loop" in decision.reasons[0]


def test_streaming_with_nobody_waiting_is_sync() -> None:
    decision = decide_route(Workload(waiting="nobody", needs_streaming=True))

    assert decision.route == "sync"
    assert "stream token by token" in decision.reasons[0]


def test_fast_mode_is_sync() -> None:
    decision = decide_route(Workload(needs_fast_mode=True))

    assert decision.route == "sync"
    assert decision.decided_by == "capability"
    assert "fast mode" in decision.reasons[0]
    assert "up to 24 hours" in decision.reasons[0]


def test_capability_wins_over_everything() -> None:
    decision = decide_route(
        Workload(
            waiting="nobody",
            deadline=None,
            refresh_every=timedelta(days=7),
            needs_streaming=True,
            triggered_by="schedule",
        )
    )

    assert decision.route == "sync"
    assert decision.decided_by == "capability"
    assert "stream" in decision.reasons[0]


def test_every_applicable_capability_is_listed_and_only_the_decisive_question_speaks() -> None:
    decision = decide_route(
        Workload(
            waiting="person",
            deadline=timedelta(minutes=10),
            needs_streaming=True,
            needs_fast_mode=True,
            interactive_loop=True,
        )
    )

    assert decision.route == "sync"
    assert len(decision.reasons) == 3
    text = _reasons(decision)
    assert "stream" in text
    assert "fast mode" in text
    assert "loop" in text
    # The waiting and deadline questions were never reached.
    assert "person waits" not in text
    assert "deadline" not in text


# --------------------------------------------------------------------------------------------------
# Latency-tolerant work: batch
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param(
            Workload(triggered_by="schedule", refresh_every=timedelta(days=1), description="nightly summaries"),
            id="nightly-summaries",
        ),
        pytest.param(
            Workload(triggered_by="schedule", refresh_every=timedelta(weeks=1), description="weekly audit"),
            id="weekly-audit",
        ),
        pytest.param(
            Workload(deadline=timedelta(hours=36), description="overnight regeneration"),
            id="overnight-regeneration",
        ),
        pytest.param(Workload(triggered_by="api", description="evaluation sweep"), id="evaluation-sweep"),
    ],
)
def test_latency_tolerant_work_is_batch(workload: Workload) -> None:
    decision = decide_route(workload)

    assert decision.route == "batch"
    assert decision.decided_by == "latency_tolerant"
    assert f"nobody waits on this {workload.description}" in decision.reasons[0]
    assert "latency-tolerant, batch it" in decision.reasons[0]


def test_default_workload_is_batch() -> None:
    decision = decide_route(Workload())

    assert decision.route == "batch"
    assert decision.reasons == ("nobody waits on this and no deadline under 24 hours: latency-tolerant, batch it",)


def test_a_generous_deadline_is_explained() -> None:
    decision = decide_route(Workload(deadline=timedelta(days=2)))

    assert decision.route == "batch"
    assert "the deadline of 2 days is no shorter than the batch window of 24 hours" in decision.reasons


def test_user_triggered_emailed_report_is_batch() -> None:
    decision = decide_route(Workload(waiting="nobody", triggered_by="person", description="emailed analysis report"))

    assert decision.route == "batch"
    assert "latency-tolerant" in decision.reasons[0]
    assert decision.reasons[-1] == "a person triggered it but does not wait on it, so it is still batchable"


@pytest.mark.parametrize("triggered_by", [None, "schedule", "person", "api"])
@pytest.mark.parametrize(
    ("workload", "route"),
    [
        (Workload(), "batch"),
        (Workload(waiting="person"), "sync"),
        (Workload(waiting="pipeline"), "sync"),
        (Workload(deadline=timedelta(hours=3)), "sync"),
        (Workload(refresh_every=timedelta(hours=1)), "sync"),
        (Workload(needs_streaming=True), "sync"),
        (Workload(deadline=timedelta(hours=24)), "batch"),
    ],
)
def test_triggered_by_never_changes_the_route(workload: Workload, route: str, triggered_by: str | None) -> None:
    decision = decide_route(dataclasses.replace(workload, triggered_by=triggered_by))

    assert decision.route == route
    assert decision.route == decide_route(workload).route


# --------------------------------------------------------------------------------------------------
# The 24-hour boundary: the window is "within 24 hours", so exactly 24 hours fits
# --------------------------------------------------------------------------------------------------


def test_batch_window_is_24_hours() -> None:
    assert timedelta(hours=24) == BATCH_WINDOW


@pytest.mark.parametrize(
    ("deadline", "route"),
    [
        (timedelta(hours=24), "batch"),
        (timedelta(hours=23, minutes=59), "sync"),
        (timedelta(hours=24) - timedelta(microseconds=1), "sync"),
        (timedelta(hours=24, seconds=1), "batch"),
    ],
)
def test_deadline_boundary(deadline: timedelta, route: str) -> None:
    assert decide_route(Workload(deadline=deadline)).route == route


def test_deadline_just_under_the_window_names_the_duration() -> None:
    decision = decide_route(Workload(deadline=timedelta(hours=23, minutes=59)))

    assert "a hard deadline of 23 hours and 59 minutes is shorter" in decision.reasons[0]


@pytest.mark.parametrize(
    ("refresh_every", "route"),
    [
        (timedelta(hours=24), "batch"),
        (timedelta(hours=12), "sync"),
    ],
)
def test_refresh_boundary(refresh_every: timedelta, route: str) -> None:
    assert decide_route(Workload(refresh_every=refresh_every)).route == route


# --------------------------------------------------------------------------------------------------
# Cost is not an input
# --------------------------------------------------------------------------------------------------


def test_decide_route_takes_exactly_one_parameter() -> None:
    assert list(inspect.signature(decide_route).parameters) == ["workload"]


def test_workload_has_no_cost_field() -> None:
    names = {field.name for field in dataclasses.fields(Workload)}

    assert not {name for name in names if re.search("cost|price|budget|usd|discount", name)}


def test_decide_route_rejects_anything_but_a_workload() -> None:
    with pytest.raises(TypeError, match="expects a Workload"):
        decide_route({"waiting": "nobody"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_bad_waiting_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"waiting must be one of 'nobody', 'person', 'pipeline'.*'human'"):
        Workload(waiting="human")  # type: ignore[arg-type]


def test_waiting_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"waiting must be one of 'nobody', 'person', 'pipeline'.*NoneType"):
        Workload(waiting=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["deadline", "refresh_every"])
@pytest.mark.parametrize("value", [timedelta(0), timedelta(hours=-1)])
def test_zero_or_negative_durations_are_rejected(field: str, value: timedelta) -> None:
    with pytest.raises(ValueError, match=rf"{field} must be a positive duration"):
        Workload(**{field: value})


@pytest.mark.parametrize("field", ["deadline", "refresh_every"])
@pytest.mark.parametrize("value", [3600, "2h", 1.5])
def test_durations_must_be_timedeltas(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"{field} must be a datetime\.timedelta or None.*timedelta\(hours=2\)"):
        Workload(**{field: value})


@pytest.mark.parametrize("field", ["needs_streaming", "needs_fast_mode", "interactive_loop"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_must_be_booleans(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"{field} must be True or False"):
        Workload(**{field: value})


def test_bad_triggered_by_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"triggered_by must be one of 'schedule', 'person', 'api'"):
        Workload(triggered_by="cron")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "   ", 42])
def test_description_must_be_a_non_empty_string(value: object) -> None:
    with pytest.raises(TypeError, match="description must be a non-empty string or None"):
        Workload(description=value)  # type: ignore[arg-type]


def test_workload_is_frozen() -> None:
    workload = Workload()

    with pytest.raises(dataclasses.FrozenInstanceError):
        workload.waiting = "person"  # type: ignore[misc]


def test_decision_requires_reasons() -> None:
    with pytest.raises(ValueError, match="at least one non-empty reason"):
        RoutingDecision(route="batch", reasons=(), workload=Workload(), decided_by="latency_tolerant")


# --------------------------------------------------------------------------------------------------
# Phrasing helpers: summary, fix_hint, subject, format_duration
# --------------------------------------------------------------------------------------------------


def test_summary_is_route_and_first_reason_on_one_line() -> None:
    decision = decide_route(Workload(waiting="person"))

    assert decision.summary == "sync: a person waits on this: batch could hold it up to 24 hours"
    assert "\n" not in decision.summary


def test_batch_decision_has_no_fix_hint() -> None:
    assert decide_route(Workload()).fix_hint is None


def test_fix_hint_for_capability_points_to_the_messages_operator() -> None:
    hint = decide_route(Workload(needs_streaming=True, interactive_loop=True)).fix_hint

    assert hint is not None
    assert "streaming and an interactive loop" in hint
    assert "ClaudeMessageOperator" in hint
    assert "waiting='nobody'" not in hint


def test_fix_hint_for_waiting_offers_declaring_nobody_waits() -> None:
    hint = decide_route(Workload(waiting="person")).fix_hint

    assert hint is not None
    assert "ClaudeMessageOperator" in hint
    assert "Workload(waiting='nobody')" in hint


def test_fix_hint_for_deadline_offers_relaxing_it() -> None:
    hint = decide_route(Workload(deadline=timedelta(hours=2))).fix_hint

    assert hint is not None
    assert "ClaudeMessageOperator" in hint
    assert "drop the deadline or relax it to 24 hours or more" in hint
    assert "daily" not in hint


def test_fix_hint_for_refresh_offers_a_daily_schedule_or_day_old_results() -> None:
    hint = decide_route(Workload(refresh_every=timedelta(minutes=5))).fix_hint

    assert hint is not None
    assert "ClaudeMessageOperator" in hint
    assert "at most daily" in hint
    assert "day-old results" in hint
    assert "waiting='nobody'" in hint
    assert "deadline" not in hint


@pytest.mark.parametrize(
    ("description", "subject"),
    [
        (None, "this"),
        ("pre-merge review", "this pre-merge review"),
        ("the nightly digest", "the nightly digest"),
        ("  This weekly audit ", "This weekly audit"),
    ],
)
def test_subject_phrases_the_description(description: str | None, subject: str) -> None:
    assert Workload(description=description).subject == subject


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=2), "2 hours"),
        (timedelta(minutes=5), "5 minutes"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(days=2, hours=3, minutes=1), "2 days, 3 hours and 1 minute"),
        (timedelta(seconds=30), "30 seconds"),
        (timedelta(milliseconds=1500), "1.5 seconds"),
        (timedelta(0), "0 seconds"),
        (timedelta(hours=-2), "minus 2 hours"),
    ],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


def test_format_duration_rejects_non_timedeltas() -> None:
    with pytest.raises(TypeError, match=r"expects a datetime\.timedelta"):
        format_duration(7200)  # type: ignore[arg-type]


def test_reasons_never_show_raw_timedelta_reprs() -> None:
    workloads = [
        Workload(deadline=timedelta(hours=2)),
        Workload(refresh_every=timedelta(minutes=5)),
        Workload(deadline=timedelta(days=3), refresh_every=timedelta(days=1)),
    ]
    for workload in workloads:
        decision = decide_route(workload)
        assert not re.search(r"\d:\d\d:\d\d|timedelta", _reasons(decision)), decision.reasons


def test_module_imports_nothing_from_airflow() -> None:
    # Pure logic: importable and testable without an Airflow installation or configuration.
    tree = ast.parse(Path(routing.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert not {name for name in imported if name == "airflow" or name.startswith("airflow.")}


# --------------------------------------------------------------------------------------------------
# A deadline under 24 hours kept by a synchronous rescue
# --------------------------------------------------------------------------------------------------

# 400 requests, 16 at a time at 20 s each: 25 waves, 8 minutes and 20 seconds.
FITTING = routing.RescuePlan(lead=timedelta(hours=1), max_concurrency=16, seconds_per_request=20, request_count=400)


def test_a_short_deadline_with_a_rescue_that_fits_is_batch_with_rescue() -> None:
    decision = decide_route(Workload(deadline=timedelta(hours=6), rescue=FITTING))

    assert decision.route == routing.BATCH_WITH_RESCUE == "batch with rescue"
    assert decision.decided_by == "rescue"
    assert decision.fix_hint is None
    assert decision.reasons[0] == (
        "a hard deadline of 6 hours is shorter than the batch window of 24 hours, but the declared synchronous "
        "rescue keeps it: if the batch has not ended 1 hour before the deadline, it is cancelled, what it "
        "completed is kept, and the rest runs on the Messages API"
    )
    assert (
        "400 requests, 16 at a time at about 20 seconds each, take about 8 minutes and 20 seconds"
        in (decision.reasons[1])
    )


def test_a_rescue_that_cannot_finish_the_input_inside_its_lead_stays_sync_with_the_numbers() -> None:
    plan = dataclasses.replace(FITTING, request_count=5_000)
    decision = decide_route(Workload(deadline=timedelta(hours=6), rescue=plan))

    assert decision.route == "sync" and decision.decided_by == "rescue"
    assert decision.reasons == (
        "a hard deadline of 6 hours is shorter than the batch window of 24 hours, and the declared synchronous "
        "rescue cannot plausibly finish the whole input inside its lead: 5,000 requests, 16 at a time at about "
        "20 seconds each, take about 1 hour, 44 minutes and 20 seconds, more than the rescue_lead of 1 hour",
    )
    hint = decision.fix_hint
    assert hint is not None
    assert "raise rescue_lead to at least 1 hour, 44 minutes and 20 seconds" in hint
    # 180 waves fit the hour: 5,000 requests need 28 at a time; 16 at a time send 2,880.
    assert "rescue_max_concurrency to at least 28" in hint and "at most 2,880 requests per task" in hint
    assert "ClaudeMessageOperator" in hint


def test_an_uncounted_input_is_accepted_and_counted_when_the_task_runs() -> None:
    decision = decide_route(
        Workload(deadline=timedelta(hours=6), rescue=dataclasses.replace(FITTING, request_count=None))
    )

    assert decision.route == "batch with rescue"
    assert "counted when the task runs" in decision.reasons[1] and "up to 2,880 requests" in decision.reasons[1]


def test_a_rescue_whose_single_request_outlasts_the_lead_never_fits() -> None:
    plan = routing.RescuePlan(lead=timedelta(seconds=20), seconds_per_request=30)
    decision = decide_route(Workload(deadline=timedelta(hours=6), rescue=plan))

    assert decision.route == "sync"
    assert "one request takes about 30 seconds, longer than the rescue_lead of 20 seconds" in decision.reasons[0]


def test_a_lead_as_long_as_the_deadline_leaves_the_batch_no_time() -> None:
    decision = decide_route(Workload(deadline=timedelta(hours=1), rescue=FITTING))

    assert decision.route == "sync"
    assert "the batch had any time" in decision.reasons[0]
    assert "shorten rescue_lead well below the deadline of 1 hour" in (decision.fix_hint or "")


@pytest.mark.parametrize(
    "workload",
    [
        Workload(waiting="person", deadline=timedelta(hours=6), rescue=FITTING),
        Workload(needs_streaming=True, deadline=timedelta(hours=6), rescue=FITTING),
    ],
)
def test_a_rescue_keeps_a_deadline_never_someone_waiting_or_a_capability(workload: Workload) -> None:
    assert decide_route(workload).route == "sync"


def test_a_refresh_is_kept_by_a_rescued_deadline_no_longer_than_it() -> None:
    kept = decide_route(Workload(deadline=timedelta(hours=6), refresh_every=timedelta(hours=6), rescue=FITTING))
    assert kept.route == "batch with rescue"
    assert "results refresh every 6 hours, and the deadline of 6 hours, kept by the rescue, is within it" in (
        kept.reasons
    )
    too_often = decide_route(Workload(deadline=timedelta(hours=6), refresh_every=timedelta(hours=1), rescue=FITTING))
    assert too_often.route == "sync" and too_often.decided_by == "time"


def test_a_rescue_without_a_short_deadline_is_a_plain_batch() -> None:
    assert decide_route(Workload(deadline=timedelta(hours=30), rescue=FITTING)).route == "batch"
    assert decide_route(Workload(rescue=FITTING)).route == "batch"


def test_the_deadline_hint_offers_the_rescue() -> None:
    assert "rescue='sync'" in (decide_route(Workload(deadline=timedelta(hours=2))).fix_hint or "")


def test_a_rescue_plan_is_about_time_and_checks_its_numbers() -> None:
    # Only time enters the plan: the rule still takes no price.
    assert not {
        field.name for field in dataclasses.fields(routing.RescuePlan) if re.search("cost|price|usd", field.name)
    }
    with pytest.raises(ValueError, match="max_concurrency must be a whole number of at least 1"):
        routing.RescuePlan(lead=timedelta(hours=1), max_concurrency=0)
    with pytest.raises(ValueError, match="seconds_per_request must be a positive number"):
        routing.RescuePlan(lead=timedelta(hours=1), seconds_per_request=0)
    with pytest.raises(ValueError, match="lead must be a positive timedelta"):
        routing.RescuePlan(lead=3600)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rescue must be a RescuePlan"):
        Workload(rescue="sync")  # type: ignore[arg-type]
