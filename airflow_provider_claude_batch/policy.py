"""The routing policy: refuse ``ClaudeBatchOperator`` tasks whose work somebody waits on.

Airflow loads this module through the ``airflow.policy`` entry point (name
``claude_batch_routing``) and calls :func:`task_policy` for every task of every DAG it parses. For a
``ClaudeBatchOperator`` task the policy builds the task's :class:`~.routing.Workload` from what the
DAG file says, asks :func:`~.routing.decide_route`, and when the answer is "sync" raises
``AirflowClusterPolicyViolation``: the DAG is not loaded and the refusal shows as an import error
(UI, ``airflow dags list-import-errors``) naming the task, the reasons, where they came from and the
fix. Other DAGs of the same file still load.

Where the workload comes from (every source is read; see :func:`workload_for_task`):

* the operator's own declaration: ``workload=Workload(...)``, ``blocking=True``, ``deadline=...``;
* the DAG tag ``blocking``;
* ``execution_timeout``: a hard limit on the wait, so a deadline;
* every ``DeadlineAlert`` on the DAG with a ``timedelta`` interval (a ``VariableInterval`` is
  resolved only when a run is created, so it is unknown here and ignored);
* the DAG's schedule period, read as ``refresh_every``, unless the task declares
  ``workload=Workload(waiting="nobody", ...)`` (an explicit declaration wins over this inference
  and over nothing else);
* request parameters only the Messages API honours (``stream``, ``speed: "fast"``) in
  ``request_params`` or in literal ``requests`` (requests from an XCom or a file are unknown until
  the task runs; ``ClaudeBatchOperator.execute`` checks them then);
* a declared synchronous rescue (``rescue="sync"``, ``rescue_lead``, ``rescue_max_concurrency``,
  ``rescue_seconds_per_request``) with the number of literal requests (counted at run time otherwise).

When several sources set the same thing the strictest wins: the shortest deadline, the shortest
refresh, and somebody waiting over nobody. ``ClaudeBatchOperator.execute`` repeats the same check
(:func:`batch_route_refusal`) before anything is submitted, so a deployment without the policy is
still safe. ``[claude_batch] enforce_routing = False`` (``AIRFLOW__CLAUDE_BATCH__ENFORCE_ROUTING``)
switches both off. ``ClaudeMessageOperator`` is never refused: sync work is never harmed by the
rule, and the ``claude-batch audit`` command points out sync tasks that could be batched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pluggy

from airflow_provider_claude_batch.requests import RequestDefaults, normalize_request
from airflow_provider_claude_batch.rescue import DEFAULT_RESCUE_CONCURRENCY, DEFAULT_SECONDS_PER_REQUEST, RescuePlan
from airflow_provider_claude_batch.routing import (
    BATCH_WINDOW,
    DecidedBy,
    RoutingDecision,
    Workload,
    decide_route,
    format_duration,
)
from airflow_provider_claude_batch.schedule import schedule_period
from airflow_provider_claude_batch.task_reading import (
    declared_argument,
    declared_values,
    is_batch_task,
    literal_request_count,
    literal_requests,
    operator_class,
)

if TYPE_CHECKING:
    from airflow_provider_claude_batch.requests import PreparedRequests

__all__ = [
    "BLOCKING_TAG",
    "CONFIG_OPTION",
    "CONFIG_SECTION",
    "batch_route_refusal",
    "declared_argument",
    "operator_class",
    "refusal_message",
    "rescue_plan",
    "routing_enforced",
    "task_policy",
    "workload_for_task",
]

# The marker airflow.policies exports (pluggy.HookimplMarker("airflow.policy")), built here rather
# than imported: importing Airflow from this module would let Airflow's settings.initialize() load
# this very module through the entry point while it is half imported, and register it with no hook.
hookimpl = pluggy.HookimplMarker("airflow.policy")

CONFIG_SECTION = "claude_batch"
CONFIG_OPTION = "enforce_routing"
BLOCKING_TAG = "blocking"
# DeadlineReference classes (airflow.sdk.definitions.deadline), as a person would name them.
_DEADLINE_REFERENCES = {
    "DagRunQueuedAtDeadline": "the run is queued",
    "DagRunLogicalDateDeadline": "the run's logical date",
    "FixedDatetimeDeadline": "a fixed date",
    "AverageRuntimeDeadline": "the average runtime",
}
# How many custom ids a source description quotes before it says "and N more".
_IDS_SHOWN = 3


@dataclass(frozen=True)
class Source:
    """One thing in the DAG file that went into the workload.

    :param text: what it is, for people: "the operator argument blocking=True".
    :param questions: the rule's questions this source pushes towards sync (empty when it only
        informs, e.g. a weekly schedule); the refusal quotes the sources behind its deciding question.
    :param marks_blocking: a ``blocking=True`` argument or ``blocking`` tag.
    """

    text: str
    questions: frozenset[DecidedBy] = frozenset()
    marks_blocking: bool = False

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def routing_enforced() -> bool:
    """Whether ``[claude_batch] enforce_routing`` is on (the default)."""
    # Imported when asked, not at module import: Airflow loads this module while it initialises
    # its settings, before the SDK's configuration should be touched.
    try:
        from airflow.sdk import conf
    except ImportError:  # Airflow 3.1: the SDK has no conf yet
        from airflow.configuration import conf

    return conf.getboolean(CONFIG_SECTION, CONFIG_OPTION, fallback=True)


# --------------------------------------------------------------------------------------------------
# The inference
# --------------------------------------------------------------------------------------------------


def workload_for_task(task: Any) -> tuple[Workload, list[str]]:
    """The workload a task's DAG file describes, and a description of each source used.

    :param task: an operator or a mapped operator, attached to its DAG (as a policy receives it).
    """
    workload, sources = _infer(task)
    return workload, [source.text for source in sources]


def batch_route_refusal(task: Any, prepared: PreparedRequests | None = None) -> RoutingDecision | None:
    """The decision that refuses running ``task`` on the batch route, or ``None`` when batch is right.

    :param task: the task, as the policy or ``execute()`` sees it.
    :param prepared: the task's validated requests, once known (requests from an XCom or a file
        are read only at run time); any asking for the fast speed mode needs the Messages API.
    """
    workload, _ = _infer(task, prepared)
    decision = decide_route(workload)
    return decision if decision.route == "sync" else None


def refusal_message(task: Any, decision: RoutingDecision, prepared: PreparedRequests | None = None) -> str:
    """The text of a refusal: the task, every reason, the sources behind them, and the fix."""
    _, sources = _infer(task, prepared)
    behind = [source.text for source in sources if decision.decided_by in source.questions]
    dag = getattr(task, "dag", None)
    where = f"Task {task.task_id!r} in DAG {dag.dag_id!r}" if dag is not None else f"Task {task.task_id!r}"
    reasons = decision.reasons
    why = reasons[0] if len(reasons) == 1 else " ".join(f"({n}) {reason};" for n, reason in enumerate(reasons, 1))
    fix = decision.fix_hint or ""
    marks = [source.text for source in sources if source.marks_blocking]
    if decision.decided_by == "waiting" and marks:
        # A blocking mark outranks a declared Workload(waiting="nobody"), so say what to remove.
        fix += f" A blocking mark ({'; '.join(marks)}) says something waits: remove it if nothing does."
    return (
        f"{where} uses ClaudeBatchOperator, but this work belongs on the synchronous Messages API. "
        f"Why: {why.rstrip(';')}. "
        f"Found in: {'; '.join(behind) or 'the declared workload'}. "
        f"Fix: {fix} "
        # No square brackets: the Airflow CLI prints import errors through rich, which reads "[section]" as
        # markup and drops it.
        f"(To switch this check off, set {CONFIG_OPTION} = False in the {CONFIG_SECTION} section of the "
        f"Airflow configuration, e.g. AIRFLOW__{CONFIG_SECTION.upper()}__{CONFIG_OPTION.upper()}=False.)"
    )


def rescue_plan(task: Any, request_count: int | None) -> RescuePlan | None:
    """The synchronous rescue ``task`` declares (``rescue="sync"``), for ``request_count`` requests; else None."""
    if declared_argument(task, "rescue") is None:
        return None
    from airflow_provider_claude_batch.validation import arguments

    concurrency = declared_argument(task, "rescue_max_concurrency")
    seconds = declared_argument(task, "rescue_seconds_per_request")
    return RescuePlan(
        lead=arguments.duration("rescue_lead", declared_argument(task, "rescue_lead")),
        max_concurrency=DEFAULT_RESCUE_CONCURRENCY if concurrency is None else concurrency,
        seconds_per_request=DEFAULT_SECONDS_PER_REQUEST
        if seconds is None
        else arguments.seconds("rescue_seconds_per_request", seconds),
        request_count=request_count,
    )


def _infer(task: Any, prepared: PreparedRequests | None = None) -> tuple[Workload, list[Source]]:
    builder = _WorkloadBuilder(declared_argument(task, "workload"))
    builder.blocking(task)
    builder.deadlines(task)
    builder.schedule(task)
    builder.capabilities(task, prepared)
    builder.rescue(task, prepared)
    return builder.workload, builder.sources


class _WorkloadBuilder:
    """Folds every source into one Workload; the strictest value wins where two sources overlap."""

    def __init__(self, declared: Any) -> None:
        self.sources: list[Source] = []
        if declared is None:
            self.workload = Workload()
            self.declared_nobody = False
            return
        if not isinstance(declared, Workload):
            raise TypeError(
                "workload= must be an airflow_provider_claude_batch.routing.Workload, "
                f"got {type(declared).__name__} {declared!r}"
            )
        self.workload = declared
        self.declared_nobody = declared.waiting == "nobody"
        self.sources.append(
            Source(f"the operator argument workload={_describe_workload(declared)}", _questions(declared))
        )

    def _set(self, **changes: Any) -> None:
        self.workload = dataclasses.replace(self.workload, **changes)

    def blocking(self, task: Any) -> None:
        found = []
        if declared_argument(task, "blocking"):
            found.append("the operator argument blocking=True")
        dag = getattr(task, "dag", None)
        if dag is not None and BLOCKING_TAG in (dag.tags or ()):
            found.append(f"the DAG tag {BLOCKING_TAG!r}")
        if not found:
            return
        # "Blocking" says something is held up without saying who; a declared "person" is more precise.
        if self.workload.waiting == "nobody":
            self._set(waiting="pipeline")
        self.sources.extend(Source(text, frozenset({"waiting"}), marks_blocking=True) for text in found)

    def deadlines(self, task: Any) -> None:
        declared = declared_argument(task, "deadline")
        if declared is not None:
            if not isinstance(declared, timedelta):
                raise TypeError(f"deadline= must be a datetime.timedelta, got {type(declared).__name__} {declared!r}")
            self._deadline(declared, f"the operator argument deadline={format_duration(declared)}")
        timeout = getattr(task, "execution_timeout", None)
        if isinstance(timeout, timedelta):
            self._deadline(timeout, f"execution_timeout={format_duration(timeout)} (a hard limit on the wait)")
        dag = getattr(task, "dag", None)
        for alert in getattr(dag, "deadline", None) or ():
            interval = getattr(alert, "interval", None)
            # VariableInterval is resolved when a run is created: unknown at parse time, so ignored.
            if isinstance(interval, timedelta):
                name = f" {alert.name!r}" if getattr(alert, "name", None) else ""
                kind = type(getattr(alert, "reference", None)).__name__
                reference = _DEADLINE_REFERENCES.get(kind, kind)
                self._deadline(
                    interval, f"the DAG's DeadlineAlert{name} of {format_duration(interval)} after {reference}"
                )

    def _deadline(self, value: timedelta, text: str) -> None:
        if value <= timedelta(0):
            return  # not a usable deadline (e.g. an alert before its reference); Workload rejects it
        current = self.workload.deadline
        if current is None or value < current:
            self._set(deadline=value)
        self.sources.append(Source(text, frozenset({"time", "rescue"}) if value < BATCH_WINDOW else frozenset()))

    def schedule(self, task: Any) -> None:
        if self.declared_nobody:
            return  # the task says nobody waits on fresh results: the explicit declaration wins
        dag = getattr(task, "dag", None)
        period = schedule_period(getattr(dag, "timetable", None)) if dag is not None else None
        if period is None:
            return
        current = self.workload.refresh_every
        if current is None or period.shortest < current:
            self._set(refresh_every=period.shortest)
        self.sources.append(
            Source(
                f"the DAG's schedule {period.text!r} (a run every {format_duration(period.shortest)}), "
                "read as refresh_every",
                frozenset({"time"}) if period.shortest < BATCH_WINDOW else frozenset(),
            )
        )

    def capabilities(self, task: Any, prepared: PreparedRequests | None) -> None:
        streaming: list[str] = []
        fast: list[str] = []
        for params in declared_values(task, "request_params"):
            if isinstance(params, Mapping):
                if params.get("stream"):
                    streaming.append("request_params sets stream=True")
                if params.get("speed") == "fast":
                    fast.append("request_params sets speed='fast'")
        defaults = RequestDefaults()  # operator defaults are already covered above
        ids_streaming: list[str] = []
        ids_fast: list[str] = []
        # Once prepared, the requests as they will be sent answer for themselves: a batch refuses
        # stream at validation, and fast_mode_ids lists fast mode; no second pass over every request.
        literal = literal_requests(task) if prepared is None else iter(())
        for index, item in literal:
            try:
                custom_id, params = normalize_request(item, defaults)
            except ValueError:
                continue  # malformed: execute() reports it with every other problem
            label = custom_id if isinstance(custom_id, str) else f"#{index}"
            if params.get("stream"):
                ids_streaming.append(label)
            if params.get("speed") == "fast":
                ids_fast.append(label)
        if ids_streaming:
            streaming.append(f"{_requests_text(ids_streaming)} set stream=True")
        if prepared is not None:
            # The requests as they will be sent, wherever they came from (a file, an XCom, the DAG).
            ids_fast = list(prepared.fast_mode_ids)
        if ids_fast:
            fast.append(f"{_requests_text(ids_fast)} set speed='fast'")
        if streaming:
            self._set(needs_streaming=True)
        if fast:
            self._set(needs_fast_mode=True)
        self.sources.extend(Source(text, frozenset({"capability"})) for text in [*streaming, *fast])

    def rescue(self, task: Any, prepared: PreparedRequests | None) -> None:
        """A declared rescue, with the request count: the DAG file's literal requests, or the run's."""
        plan = rescue_plan(task, prepared.count if prepared is not None else literal_request_count(task))
        if plan is None:
            return
        self._set(rescue=plan)
        counted = "" if plan.request_count is None else f" for {plan.request_count:,} request(s)"
        self.sources.append(
            Source(
                f"the operator arguments rescue='sync', rescue_lead={format_duration(plan.lead)}, "
                f"rescue_max_concurrency={plan.max_concurrency}, "
                f"rescue_seconds_per_request={plan.seconds_per_request:g}{counted}",
                frozenset({"rescue"}),
            )
        )


def _requests_text(ids: list[str]) -> str:
    shown = ", ".join(repr(custom_id) for custom_id in ids[:_IDS_SHOWN])
    more = f" and {len(ids) - _IDS_SHOWN} more" if len(ids) > _IDS_SHOWN else ""
    noun = "request" if len(ids) == 1 else "requests"
    return f"{noun} {shown}{more}"


def _questions(workload: Workload) -> frozenset[DecidedBy]:
    questions: set[DecidedBy] = set()
    if workload.needs_streaming or workload.needs_fast_mode or workload.interactive_loop:
        questions.add("capability")
    if workload.waiting != "nobody":
        questions.add("waiting")
    if any(value is not None and value < BATCH_WINDOW for value in (workload.deadline, workload.refresh_every)):
        questions.add("time")
    if workload.rescue is not None:
        questions.add("rescue")
    return frozenset(questions)


def _describe_workload(workload: Workload) -> str:
    """``Workload(waiting='person', deadline=2 hours)``: only what differs from the defaults."""
    parts = []
    for field in dataclasses.fields(workload):
        value = getattr(workload, field.name)
        if field.name == "waiting" or value != field.default:
            shown = format_duration(value) if isinstance(value, timedelta) else repr(value)
            parts.append(f"{field.name}={shown}")
    return f"Workload({', '.join(parts)})"


# --------------------------------------------------------------------------------------------------
# The hook Airflow calls
# --------------------------------------------------------------------------------------------------


@hookimpl
def task_policy(task: Any) -> None:
    """Refuse a ``ClaudeBatchOperator`` task whose work belongs on the synchronous route.

    :param task: every task of every DAG Airflow parses (the argument name is the hookspec's).
    """
    if not is_batch_task(task) or not routing_enforced():
        return
    decision = batch_route_refusal(task)
    if decision is not None:
        from airflow.exceptions import AirflowClusterPolicyViolation

        raise AirflowClusterPolicyViolation(refusal_message(task, decision))
