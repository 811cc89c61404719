"""``claude-batch check PATH``: every problem of a DAG folder's Claude tasks, found without the API.

The DAG files are parsed as Airflow parses them (a ``DagBag``, with the routing policy as configured),
so a bad argument or a refused route shows as the import error Airflow would show. Then every
``ClaudeBatchOperator`` and ``ClaudeMessageOperator`` task whose requests can be read offline (a
literal list in the DAG file, a local JSONL file) has them prepared exactly as the task would,
and each problem is listed by DAG, task, request index and custom id. For those tasks a cost
quote is given: an upper bound, from the requests' bytes (a token is never shorter than a byte),
their ``max_tokens`` and cache writes at the write price, at the route's prices
(:mod:`~.cost_quote`; at run time ``max_cost_usd`` counts the input with the API, a tighter bound);
a "batch with rescue" task is quoted at the sync price (the rescue may send every request), with
what its rescue needs of its lead. A ``max_cost_usd`` that ``max_tokens`` alone exceeds is a problem:
every run would be refused. For batch tasks, the check says whether a shared prefix would be cached
(``cache_shared_prefix``), and when that pays. Requests that exist only at run time (an XCom, a
template, a ``@task.claude_batch`` function) are listed as not checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_claude_batch.cost_quote import build_quote, shapes_of
from airflow_provider_claude_batch.hooks.claude import DEFAULT_MODEL
from airflow_provider_claude_batch.policy import declared_argument, operator_class, rescue_plan
from airflow_provider_claude_batch.pricing import price_for
from airflow_provider_claude_batch.requests import PreparedRequests, RequestSourceError, RequestValidationError
from airflow_provider_claude_batch.routing import BATCH_WITH_RESCUE
from airflow_provider_claude_batch.shared_prefix import PrefixPlan, break_even_hit_rate, plan_shared_prefix
from airflow_provider_claude_batch.validation.arguments import is_templated

__all__ = ["CheckReport", "TaskCheck", "check_path", "render"]

_TEMPLATED_FIELDS = ("model", "max_tokens", "system", "request_params")


@dataclass
class TaskCheck:
    """One Claude task: how many of its requests were checked, and what they may cost at most."""

    dag_id: str
    task_id: str
    operator: str
    route: str
    checked: int | None = None
    """Requests prepared offline (None: they exist only at run time)."""
    note: str = ""
    quote_usd: Decimal | None = None
    input_tokens_at_most: int = 0
    output_tokens_at_most: int = 0
    unpriced: list[str] = field(default_factory=list)
    caching: str = ""
    """What ``cache_shared_prefix`` does (or would do) with these requests, and when it pays."""


@dataclass
class CheckReport:
    path: str
    problems: list[str] = field(default_factory=list)
    tasks: list[TaskCheck] = field(default_factory=list)


def check_path(path: str | Path) -> CheckReport:
    """Parse ``path`` (a DAG file or folder) and check every Claude task in it."""
    from airflow_provider_claude_batch.audit import _dagbag
    from airflow_provider_claude_batch.operators.base import ClaudeRequestsOperator
    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

    target = Path(path).resolve()
    bag = _dagbag(target)
    report = CheckReport(str(target))
    for file, error in sorted(bag.import_errors.items()):
        report.problems.append(f"{file}: {_last_line(error)}")
    for dag in sorted(bag.dags.values(), key=lambda d: d.dag_id):
        for task in sorted(dag.tasks, key=lambda t: t.task_id):
            cls = operator_class(task)
            if cls is None or not issubclass(cls, ClaudeRequestsOperator):
                continue
            route = "sync"
            if issubclass(cls, ClaudeBatchOperator):
                route = BATCH_WITH_RESCUE if declared_argument(task, "rescue") else "batch"
            checked = TaskCheck(dag.dag_id, task.task_id, cls.__name__, route)
            report.tasks.append(checked)
            where = f"{dag.dag_id}.{task.task_id}"
            if getattr(task, "is_mapped", False):
                checked.note = "mapped: its requests are known per map index at run time"
                report.problems.extend(f"{where}: {p}" for p in _mapped_arguments(task, cls))
                continue
            _check_task(task, checked, where, report)
    return report


def _check_task(task: Any, checked: TaskCheck, where: str, report: CheckReport) -> None:
    source = _offline_source(task)
    if source is not None:
        checked.note = source
        return
    try:
        prepared = task.prepare_offline(task.model or DEFAULT_MODEL)
    except RequestValidationError as error:
        report.problems.extend(f"{where}: {problem}" for problem in error.problems)
        return
    except (RequestSourceError, TypeError, ValueError, OSError) as error:
        report.problems.append(f"{where}: {error}")
        return
    checked.checked = prepared.count
    quote = build_quote(shapes_of(prepared.encoded), [], route=checked.route)
    checked.quote_usd = quote.usd
    checked.input_tokens_at_most = sum(m.input_tokens + sum(m.cache_write_tokens.values()) for m in quote.models)
    checked.output_tokens_at_most = sum(m.output_tokens for m in quote.models)
    checked.unpriced = list(quote.unpriced)
    cap = getattr(task, "max_cost_usd", None)
    output_usd = quote.usd - sum((m.input_usd or Decimal(0) for m in quote.models), Decimal(0))
    if cap is not None and output_usd > Decimal(str(cap)):
        report.problems.append(
            f"{where}: max_cost_usd={cap:g} refuses every run: max_tokens alone may cost ${output_usd:,.4f} "
            f"({checked.output_tokens_at_most:,} output tokens at {quote.route} prices); lower max_tokens or "
            "raise the cap"
        )
    if checked.route != "sync":
        checked.caching = caching_advice(task, prepared)
    notes = []
    if not task.model:
        notes.append(f"priced as {DEFAULT_MODEL} (model= is unset: the connection's model decides)")
    plan = rescue_plan(task, prepared.count)
    if plan is not None:
        fit = plan.fit_text() if plan.fits() else f"the rescue does not fit: {plan.shortfall()}"
        notes.append(f"quoted at the sync price, as if every request were rescued; {fit}")
    checked.note = "; ".join(notes)


def _offline_source(task: Any) -> str | None:
    """Why the task's requests cannot be read offline, or ``None`` when they can."""
    from airflow.sdk import XComArg
    from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION

    requests = task.requests
    if requests is SET_DURING_EXECUTION:
        return "requests are returned by the decorated function at run time: not checked"
    if isinstance(requests, XComArg):
        return "requests come from an upstream task at run time: not checked"
    if any(is_templated(getattr(task, name, None)) for name in ("requests", *_TEMPLATED_FIELDS)):
        return "templated: rendered at run time, not checked"
    if isinstance(requests, str) and urlsplit(requests).scheme not in ("", "file", "local"):
        return f"requests are read from {urlsplit(requests).scheme}:// at run time: not checked"
    return None


def _mapped_arguments(task: Any, cls: type) -> Iterable[str]:
    """The operator's own argument checks on a mapped task's ``partial()`` arguments."""
    kwargs = {key: value for key, value in task.partial_kwargs.items() if not is_templated(value)}
    try:
        cls(task_id=f"{task.task_id}__check", requests=None, **kwargs)
    except (TypeError, ValueError) as error:
        yield str(error)


def caching_advice(task: Any, prepared: PreparedRequests) -> str:
    """What ``cache_shared_prefix`` does with these requests (or would do), and when it pays; empty if nothing."""
    plan = task.cache_plan if task.cache_shared_prefix else plan_shared_prefix(_params(prepared))
    if plan is None:
        return ""
    sentences = []
    for group in plan.groups.values():
        if group.position is None:
            if task.cache_shared_prefix:
                sentences.append(f"cache_shared_prefix=True places nothing for {group.model}: {group.reason}")
            continue
        pays = _when_it_pays(group)
        if task.cache_shared_prefix:
            sentences.append(f"cache_shared_prefix: {group.describe()}; {pays}")
        else:
            sentences.append(
                f"cache_shared_prefix=True would cache a prefix of about {group.tokens:,} tokens (through "
                f"{group.where}) shared by {group.requests:,} {group.model} requests; {pays}"
            )
    return " ".join(f"{sentence}." for sentence in sentences)


def _when_it_pays(group: PrefixPlan) -> str:
    rate = break_even_hit_rate(group.model)
    if rate is None:
        return "no price for the model, so no saving is computed"
    price = price_for(group.model).at_batch_rate()
    later = group.requests - 1
    best = group.tokens * (later * (price.input - price.cache_read) - (price.cache_write_1h - price.input))
    return (
        f"it saves up to ${best / Decimal(1_000_000):,.4f} a run at batch prices when every later request reads "
        f"the cache, and pays once more than {rate:.0%} do (hits in a batch are best effort)"
    )


def _params(prepared: PreparedRequests) -> Iterator[dict[str, Any]]:
    for encoded in prepared.encoded:
        yield json.loads(encoded)["params"]


def _last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else error


def render(report: CheckReport) -> str:
    lines = [f"Claude tasks in {report.path}:"]
    for task in report.tasks:
        head = f"  {task.dag_id}.{task.task_id} ({task.operator}, {task.route})"
        if task.checked is None:
            lines.append(f"{head}: {task.note}")
            continue
        quote = f"at most ${task.quote_usd:,.4f}" if task.quote_usd is not None else "no quote"
        if task.unpriced:
            quote += f" (without {', '.join(task.unpriced)}: not in the price table)"
        lines.append(
            f"{head}: {task.checked:,} request(s) checked; cost {quote} "
            f"(at most {task.input_tokens_at_most:,} input and {task.output_tokens_at_most:,} output tokens)"
            + (f"; {task.note}" if task.note else "")
        )
        if task.caching:
            lines.append(f"    {task.caching}")
    if not report.tasks:
        lines.append("  (no Claude tasks)")
    if report.problems:
        lines += ["", f"{len(report.problems)} problem(s):", *(f"  - {problem}" for problem in report.problems)]
    else:
        lines += ["", "No problems found."]
    return "\n".join(lines)
