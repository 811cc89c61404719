"""Decide whether Claude work belongs on the Messages API ("sync") or the Message Batches API ("batch").

The rule is *route by who is waiting, not by price*. A batch is half the price, but it promises only
that results arrive within 24 hours, hands back finished results only, and has no faster tier. So
the questions asked, in order, are:

1. Capability: does the work need something a batch cannot do (streaming, fast mode, a loop that
   reads a result and continues)? Then sync, whoever waits.
2. Who is waiting: is a person or a pipeline step held idle until Claude answers? Then sync.
3. Time: is there a hard deadline, or an expected refresh, shorter than the 24-hour batch window,
   and no synchronous rescue declared to keep it? Then sync.
4. Rescue: a declared rescue keeps a deadline under 24 hours only if it can plausibly finish the
   whole input inside its lead (see :mod:`~airflow_provider_claude_batch.rescue`). If it cannot,
   sync; if it can, "batch with rescue".
5. Otherwise batch.

Cost is deliberately not an input: the discount is the reward for tolerating latency, never a reason
to impose latency on somebody. Who *triggered* the work is recorded but never decides, because a
person can start a job without waiting on it ("email me the report when it is ready").

This module imports nothing from Airflow so it can be used and tested as plain Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, get_args

from airflow_provider_claude_batch.durations import format_duration, join_parts
from airflow_provider_claude_batch.rescue import RescuePlan

__all__ = [
    "BATCH_WINDOW",
    "BATCH_WITH_RESCUE",
    "DecidedBy",
    "RescuePlan",
    "Route",
    "RoutingDecision",
    "Trigger",
    "Waiting",
    "Workload",
    "decide_route",
    "format_duration",
]

Waiting = Literal["nobody", "person", "pipeline"]
Trigger = Literal["schedule", "person", "api"]
Route = Literal["sync", "batch", "batch with rescue"]
# Which question settled the route; fix_hint tailors its advice to it.
DecidedBy = Literal["capability", "waiting", "time", "rescue", "latency_tolerant"]
BATCH_WITH_RESCUE: Route = "batch with rescue"
"""A batch whose deadline under 24 hours is kept by a synchronous rescue."""

# The only latency promise the Message Batches API makes: results "within 24 hours". There is no
# faster batch tier and no setting in between, so anything that needs an answer sooner is sync.
BATCH_WINDOW = timedelta(hours=24)
# Anthropic states the window in hours ("within 24 hours"), so the reasons quote it that way rather
# than as format_duration's "1 day".
_WINDOW_TEXT = f"{BATCH_WINDOW // timedelta(hours=1)} hours"

_WAITING_VALUES: tuple[str, ...] = get_args(Waiting)
_TRIGGER_VALUES: tuple[str, ...] = get_args(Trigger)
_ROUTE_VALUES: tuple[str, ...] = get_args(Route)
_DECIDED_BY_VALUES: tuple[str, ...] = get_args(DecidedBy)

# Words that already make a description read as a noun phrase ("the nightly digest"), so we do not
# prepend "this" to them.
_DETERMINERS = frozenset(
    {"this", "that", "these", "those", "the", "a", "an", "each", "every", "our", "my", "your", "their"}
)


# --------------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------------


def _check_choice(name: str, value: object, allowed: tuple[str, ...], meaning: str) -> None:
    allowed_text = ", ".join(repr(choice) for choice in allowed)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed_text} ({meaning}); got {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed_text} ({meaning}); got {value!r}")


def _check_positive_duration(name: str, value: object, meaning: str) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta):
        raise TypeError(
            f"{name} must be a datetime.timedelta or None ({meaning}), e.g. timedelta(hours=2); "
            f"got {type(value).__name__} {value!r}"
        )
    if value <= timedelta(0):
        raise ValueError(
            f"{name} must be a positive duration ({meaning}); got {value!r}. "
            f"Leave it as None if there is no {name.replace('_', ' ')}."
        )


def _check_flag(name: str, value: object) -> None:
    # bool only: a truthy string such as "no" silently meaning True would route work wrongly.
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Workload:
    """What the work needs and who depends on it: the only facts the route is decided from.

    Cost is deliberately absent: the batch discount never justifies making someone wait.
    """

    waiting: Waiting = "nobody"
    """Who is held idle until Claude answers: "nobody", a "person", or a "pipeline" step."""
    deadline: timedelta | None = None
    """A HARD deadline (SLA, contract) measured from submission; None if there is none."""
    refresh_every: timedelta | None = None
    """How often consumers expect fresh results; a refresh interval is a deadline too."""
    needs_streaming: bool = False
    """The output is rendered token by token as it is produced."""
    needs_fast_mode: bool = False
    """The request uses the low-latency fast speed mode."""
    interactive_loop: bool = False
    """The caller must read a result and continue (a tool or agent loop)."""
    triggered_by: Trigger | None = None
    """Who started the work. Recorded for the explanation only; it never decides the route."""
    description: str | None = None
    """What this work is, e.g. "pre-merge review"; used to phrase the reasons."""
    rescue: RescuePlan | None = None
    """A synchronous rescue that keeps ``deadline``: the batch is cancelled ``rescue.lead`` before it if not ended."""

    def __post_init__(self) -> None:
        _check_choice("waiting", self.waiting, _WAITING_VALUES, "who is held idle until Claude answers")
        _check_positive_duration("deadline", self.deadline, "a hard deadline measured from submission")
        _check_positive_duration("refresh_every", self.refresh_every, "how often consumers expect fresh results")
        _check_flag("needs_streaming", self.needs_streaming)
        _check_flag("needs_fast_mode", self.needs_fast_mode)
        _check_flag("interactive_loop", self.interactive_loop)
        if self.triggered_by is not None:
            _check_choice("triggered_by", self.triggered_by, _TRIGGER_VALUES, "who started the work, or None")
        if self.description is not None and (not isinstance(self.description, str) or not self.description.strip()):
            raise TypeError(
                f"description must be a non-empty string or None; got {type(self.description).__name__} "
                f"{self.description!r}"
            )
        if self.rescue is not None and not isinstance(self.rescue, RescuePlan):
            raise TypeError(f"rescue must be a RescuePlan or None; got {type(self.rescue).__name__} {self.rescue!r}")

    @property
    def subject(self) -> str:
        """How the reasons refer to this work: "this" or, given a description, "this pre-merge review"."""
        if self.description is None:
            return "this"
        text = self.description.strip()
        first_word = text.split(maxsplit=1)[0].lower()
        return text if first_word in _DETERMINERS else f"this {text}"


# --------------------------------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingDecision:
    """The route, and the explanation an architect would give for it."""

    route: Route
    reasons: tuple[str, ...]
    workload: Workload
    decided_by: DecidedBy
    """Which question settled the route; lets fix_hint give advice that matches the reason."""

    def __post_init__(self) -> None:
        _check_choice("route", self.route, _ROUTE_VALUES, "which API runs the work")
        _check_choice("decided_by", self.decided_by, _DECIDED_BY_VALUES, "which question settled it")
        if not isinstance(self.reasons, tuple):
            raise TypeError(f"reasons must be a tuple of strings; got {type(self.reasons).__name__}")
        if not self.reasons or not all(isinstance(reason, str) and reason for reason in self.reasons):
            raise ValueError("a RoutingDecision needs at least one non-empty reason")
        if not isinstance(self.workload, Workload):
            raise TypeError(f"workload must be a Workload; got {type(self.workload).__name__}")

    @property
    def summary(self) -> str:
        """One line for logs and error messages: the route and the main reason."""
        return f"{self.route}: {self.reasons[0]}"

    @property
    def fix_hint(self) -> str | None:
        """What to do when this work was put on a batch task but belongs on sync; None for batch."""
        if self.route != "sync":
            return None
        if self.decided_by == "capability":
            return _capability_hint(self.workload)
        if self.decided_by == "waiting":
            return _waiting_hint(self.workload)
        if self.decided_by == "rescue":
            return _rescue_hint(self.workload)
        return _time_hint(self.workload)


def _capability_hint(workload: Workload) -> str:
    needs = [
        need
        for need, wanted in (
            ("streaming", workload.needs_streaming),
            ("fast mode", workload.needs_fast_mode),
            ("an interactive loop", workload.interactive_loop),
        )
        if wanted
    ]
    return (
        f"This work needs {join_parts(needs)}, which a batch cannot provide: use ClaudeMessageOperator "
        "(the Messages API). Declaring who waits does not help, because the work itself needs it."
    )


def _waiting_hint(workload: Workload) -> str:
    who = "a person" if workload.waiting == "person" else "a pipeline step"
    return (
        f"Use ClaudeMessageOperator so {who} gets the answer in seconds; if nobody actually waits on the "
        "result, declare it with Workload(waiting='nobody') and keep the batch."
    )


def _time_hint(workload: Workload) -> str:
    hints = ["Use ClaudeMessageOperator"]
    if workload.deadline is not None and workload.deadline < BATCH_WINDOW:
        hints.append(f"drop the deadline or relax it to {_WINDOW_TEXT} or more")
        hints.append(
            "keep the batch and let a synchronous rescue keep the deadline (rescue='sync' with a rescue_lead long "
            "enough to finish the input on the Messages API; see docs/routing.md)"
        )
    if workload.refresh_every is not None and workload.refresh_every < BATCH_WINDOW:
        hints.append(
            "schedule it at most daily (refresh_every of "
            f"{_WINDOW_TEXT} or more), or, if consumers can live with day-old results, "
            "declare Workload(waiting='nobody') without refresh_every"
        )
    return ", or ".join(hints) + "."


def _rescue_hint(workload: Workload) -> str:
    plan, deadline = workload.rescue, workload.deadline
    assert plan is not None and deadline is not None  # decided_by "rescue" is only ever given with both
    if plan.lead >= deadline:
        remedies = [f"shorten rescue_lead well below the deadline of {format_duration(deadline)}"]
    else:
        remedies = plan.remedies()
    return f"Give the rescue room: {', or '.join(remedies)}. Otherwise use ClaudeMessageOperator for the whole input."


# --------------------------------------------------------------------------------------------------
# The questions. Each returns every reason that applies; an empty tuple means "not this one".
# --------------------------------------------------------------------------------------------------


def _capability_reasons(workload: Workload) -> tuple[str, ...]:
    # A batch entry is one Messages call whose result is delivered only once it is finished, and the
    # whole batch may take up to 24 hours: none of these needs can be met, whoever waits.
    reasons: list[str] = []
    if workload.needs_streaming:
        reasons.append("the output must stream token by token; a batch hands back only finished results")
    if workload.needs_fast_mode:
        reasons.append(
            f"it needs fast mode, the low-latency speed; a batch can take up to {_WINDOW_TEXT}, "
            "so the speed would be wasted"
        )
    if workload.interactive_loop:
        reasons.append(
            "it must read each result and continue (a tool or agent loop); a batch request is a single "
            f"shot, and each turn could wait up to {_WINDOW_TEXT}"
        )
    return tuple(reasons)


def _waiting_reasons(workload: Workload) -> tuple[str, ...]:
    if workload.waiting == "person":
        return (f"a person waits on {workload.subject}: batch could hold it up to {_WINDOW_TEXT}",)
    if workload.waiting == "pipeline":
        return (
            f"a pipeline step sits idle until {workload.subject} is answered: batch could hold it up to {_WINDOW_TEXT}",
        )
    return ()


def _rescued(workload: Workload) -> bool:
    """A synchronous rescue is declared for a deadline the batch window alone cannot keep."""
    return workload.rescue is not None and workload.deadline is not None and workload.deadline < BATCH_WINDOW


def _refresh_kept_by_rescue(workload: Workload) -> bool:
    # Each run's results land by its deadline; a deadline no longer than the refresh interval keeps it.
    refresh, deadline = workload.refresh_every, workload.deadline
    return _rescued(workload) and refresh is not None and deadline is not None and deadline <= refresh


def _time_reasons(workload: Workload) -> tuple[str, ...]:
    # The batch window is "within 24 hours", so exactly 24 hours still fits; only shorter is sync.
    reasons: list[str] = []
    if workload.deadline is not None and workload.deadline < BATCH_WINDOW and workload.rescue is None:
        reasons.append(
            f"a hard deadline of {format_duration(workload.deadline)} is shorter than the batch window "
            f"of {_WINDOW_TEXT}; batch has no faster tier"
        )
    refresh = workload.refresh_every
    if refresh is not None and refresh < BATCH_WINDOW and not _refresh_kept_by_rescue(workload):
        reasons.append(f"results must refresh every {format_duration(refresh)}; a batch can take up to {_WINDOW_TEXT}")
    return tuple(reasons)


def _rescue_reasons(workload: Workload) -> tuple[str, ...]:
    if not _rescued(workload):
        return ()
    plan, deadline = workload.rescue, workload.deadline
    assert plan is not None and deadline is not None
    too_short = f"a hard deadline of {format_duration(deadline)} is shorter than the batch window of {_WINDOW_TEXT}"
    if plan.lead >= deadline:
        return (
            f"{too_short}, and the rescue_lead of {format_duration(plan.lead)} is not shorter than it: the rescue "
            "would begin before the batch had any time",
        )
    if plan.fits() is False:
        return (
            f"{too_short}, and the declared synchronous rescue cannot plausibly finish the whole input inside its "
            f"lead: {plan.shortfall()}",
        )
    return ()


def _rescued_batch_reasons(workload: Workload) -> tuple[str, ...]:
    plan, deadline = workload.rescue, workload.deadline
    assert plan is not None and deadline is not None
    reasons = [
        f"a hard deadline of {format_duration(deadline)} is shorter than the batch window of {_WINDOW_TEXT}, but the "
        f"declared synchronous rescue keeps it: if the batch has not ended {format_duration(plan.lead)} before the "
        "deadline, it is cancelled, what it completed is kept, and the rest runs on the Messages API",
        plan.fit_text(),
    ]
    if _refresh_kept_by_rescue(workload) and workload.refresh_every is not None:
        reasons.append(
            f"results refresh every {format_duration(workload.refresh_every)}, and the deadline of "
            f"{format_duration(deadline)}, kept by the rescue, is within it"
        )
    return tuple(reasons)


def _batch_reasons(workload: Workload) -> tuple[str, ...]:
    reasons = [f"nobody waits on {workload.subject} and no deadline under {_WINDOW_TEXT}: latency-tolerant, batch it"]
    if workload.deadline is not None:
        reasons.append(
            f"the deadline of {format_duration(workload.deadline)} is no shorter than the batch window "
            f"of {_WINDOW_TEXT}"
        )
    if workload.refresh_every is not None:
        reasons.append(
            f"results refresh every {format_duration(workload.refresh_every)}, "
            f"no more often than the batch window of {_WINDOW_TEXT}"
        )
    if workload.triggered_by == "person":
        reasons.append("a person triggered it but does not wait on it, so it is still batchable")
    return tuple(reasons)


# Asked in this order; the first one with an answer decides. Capability beats latency because no
# declaration about who waits can make a batch stream or loop; a rescue keeps a deadline, never a
# person or a pipeline step waiting.
_SYNC_QUESTIONS: tuple[tuple[DecidedBy, Callable[[Workload], tuple[str, ...]]], ...] = (
    ("capability", _capability_reasons),
    ("waiting", _waiting_reasons),
    ("time", _time_reasons),
    ("rescue", _rescue_reasons),
)


def decide_route(workload: Workload) -> RoutingDecision:
    """Route work to "sync", "batch" or "batch with rescue" from who waits on it and what it needs.

    Cost is never an input.

    The first question that answers "sync" decides; every reason that question found is reported.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"decide_route expects a Workload; got {type(workload).__name__}")

    for decided_by, ask in _SYNC_QUESTIONS:
        reasons = ask(workload)
        if reasons:
            return RoutingDecision(route="sync", reasons=reasons, workload=workload, decided_by=decided_by)
    if _rescued(workload):
        return RoutingDecision(
            route=BATCH_WITH_RESCUE, reasons=_rescued_batch_reasons(workload), workload=workload, decided_by="rescue"
        )
    return RoutingDecision(
        route="batch", reasons=_batch_reasons(workload), workload=workload, decided_by="latency_tolerant"
    )
