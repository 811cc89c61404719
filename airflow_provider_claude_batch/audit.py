"""The portfolio audit: which Claude tasks run on the right route, and what the wrong ones cost.

``claude-batch audit --dags-folder PATH`` parses the DAG files as Airflow does (a ``DagBag``, with
every installed cluster policy, except that the routing policy refuses nothing so that violating
DAGs are audited too) and, for every ``ClaudeBatchOperator`` and ``ClaudeMessageOperator`` task,
compares the route it runs on with the route the rule gives (:func:`~.routing.decide_route` on the
workload :func:`~.policy.workload_for_task` reads from the DAG file, exactly as the policy does):

* ``OK``: on the route the rule gives (a batch with a synchronous rescue runs as "batch with
  rescue": its deadline under 24 hours is kept by the rescue);
* ``VIOLATION``: batched although something waits on it, or although its rescue cannot finish the
  input inside its lead (the policy refuses it when enforced);
* ``SAVING``: synchronous although nobody waits on it: the batch discount left on the table.

Each task is priced from a per-run token estimate: the average of the manifests its past runs left
under ``$AIRFLOW_HOME/claude_batch_results/<dag>/<run>/<task>/`` when there are any, else the
operator's ``usage_estimate``. Monthly figures assume a 30-day month and the DAG's schedule (a
weekly DAG runs 30/7 times); a DAG without a periodic schedule is "manual" and priced per run. Prices
come from :mod:`~.pricing` only. This is the answer to "batch everything": it batches exactly the
latency-tolerant work and shows what that leaves on the table.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from airflow_provider_claude_batch.policy import (
    CONFIG_OPTION,
    CONFIG_SECTION,
    declared_argument,
    operator_class,
    workload_for_task,
)
from airflow_provider_claude_batch.pricing import (
    PRICES_AS_OF,
    PRICES_SOURCE,
    CostReport,
    TokenUsage,
    cost_of,
    monthly_cost,
)
from airflow_provider_claude_batch.routing import BATCH_WITH_RESCUE, decide_route
from airflow_provider_claude_batch.schedule import MONTH, schedule_period

__all__ = ["AuditReport", "TaskAudit", "audit_dags", "audit_folder", "render_json", "render_table"]

Verdict = Literal["OK", "VIOLATION", "SAVING"]
RESULTS_DIR = "claude_batch_results"
MANIFEST = "manifest.json"
_ENFORCE_ENV = f"AIRFLOW__{CONFIG_SECTION.upper()}__{CONFIG_OPTION.upper()}"


@dataclass
class TaskAudit:
    """One Claude task: its route, the rule's route, the verdict and what it costs."""

    dag_id: str
    task_id: str
    operator: str
    route: str
    """The route it runs on: "batch" or "batch with rescue" (ClaudeBatchOperator), "sync" (ClaudeMessageOperator)."""
    rule_route: str
    verdict: Verdict
    decided_by: str
    reasons: list[str]
    sources: list[str]
    schedule: str
    """The schedule as written (``"0 2 * * *"``, ``"every 6 hours"``) or ``"manual"``."""
    runs_per_month: float | None
    """None for a manual DAG: its costs are per run."""
    usage_source: str | None
    """Where the token estimate comes from: "declared", "measured (N runs)", or None (no estimate)."""
    usage_per_run: dict[str, TokenUsage] = field(default_factory=dict)
    per_run: CostReport | None = None
    monthly: CostReport | None = None

    @property
    def cost(self) -> CostReport | None:
        """Monthly cost for a scheduled task, per-run cost for a manual one; None without an estimate."""
        return self.monthly if self.runs_per_month is not None else self.per_run

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "operator": self.operator,
            "route": self.route,
            "rule_route": self.rule_route,
            "verdict": self.verdict,
            "decided_by": self.decided_by,
            "reasons": self.reasons,
            "sources": self.sources,
            "schedule": self.schedule,
            "runs_per_month": self.runs_per_month,
            "usage_source": self.usage_source,
            "usage_per_run": {model: usage.as_dict() for model, usage in self.usage_per_run.items()},
            "per_run": self.per_run.as_dict() if self.per_run else None,
            "monthly": self.monthly.as_dict() if self.monthly else None,
        }


@dataclass
class AuditReport:
    """Every Claude task of a DAG folder, plus the files that did not parse."""

    dags_folder: str
    tasks: list[TaskAudit]
    import_errors: dict[str, str] = field(default_factory=dict)

    def totals(self) -> dict[str, Any]:
        """Monthly sums over the scheduled, priced tasks; manual tasks are priced per run only."""
        scheduled = [t for t in self.tasks if t.monthly is not None]
        verdicts = {verdict: sum(t.verdict == verdict for t in self.tasks) for verdict in ("OK", "VIOLATION", "SAVING")}
        return {
            "tasks": len(self.tasks),
            "verdicts": verdicts,
            "priced_monthly": len(scheduled),
            "manual": sum(t.runs_per_month is None for t in self.tasks),
            "without_estimate": sum(t.usage_source is None for t in self.tasks),
            "monthly_usd_as_routed": _usd(sum((_at(t.monthly, t.route) for t in scheduled), Decimal(0))),
            "monthly_usd_routed_by_rule": _usd(sum((_at(t.monthly, t.rule_route) for t in scheduled), Decimal(0))),
            # What batching the SAVING tasks would save: the batch discount on their sync bill.
            "saving_left_on_the_table_usd_per_month": _usd(
                sum((t.monthly.saving_usd for t in scheduled if t.verdict == "SAVING"), Decimal(0))  # type: ignore[union-attr]
            ),
            # What moving the VIOLATION tasks to sync adds: the price of not making anybody wait.
            "cost_of_fixing_violations_usd_per_month": _usd(
                sum((t.monthly.saving_usd for t in scheduled if t.verdict == "VIOLATION"), Decimal(0))  # type: ignore[union-attr]
            ),
            # What the prompt cache saved, on the route each task runs on (from its measured usage).
            "cache_saving_usd_per_month": _usd(
                sum((t.monthly.cache_saving_on(t.route) for t in scheduled), Decimal(0))  # type: ignore[union-attr]
            ),
            "prices_as_of": PRICES_AS_OF.isoformat(),
            "prices_source": PRICES_SOURCE,
        }


# --------------------------------------------------------------------------------------------------
# Auditing
# --------------------------------------------------------------------------------------------------


def audit_folder(
    dags_folder: str | os.PathLike[str], airflow_home: str | os.PathLike[str] | None = None
) -> AuditReport:
    """Parse ``dags_folder`` as Airflow does and audit every Claude task in it.

    :param dags_folder: the folder of DAG files.
    :param airflow_home: where past runs left their manifests (``<home>/claude_batch_results``);
        defaults to ``$AIRFLOW_HOME``, else ``~/airflow``.
    """
    folder = Path(dags_folder).resolve()
    home = Path(airflow_home or os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    with _enforcement_off():
        bag = _dagbag(folder)
    dags = sorted(bag.dags.values(), key=lambda dag: dag.dag_id)
    return AuditReport(str(folder), audit_dags(dags, home / RESULTS_DIR), dict(sorted(bag.import_errors.items())))


def audit_dags(dags: Iterable[Any], results_root: Path | None = None) -> list[TaskAudit]:
    """Audit the Claude tasks of already-parsed DAGs.

    :param dags: DAG objects (from a ``DagBag``).
    :param results_root: the ``claude_batch_results`` folder to measure past runs from, if any.
    """
    from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
    from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator

    audits = []
    for dag in dags:
        for task in sorted(dag.tasks, key=lambda t: t.task_id):
            cls = operator_class(task)
            if cls is None or not issubclass(cls, (ClaudeBatchOperator, ClaudeMessageOperator)):
                continue
            route = "sync"
            if issubclass(cls, ClaudeBatchOperator):
                route = BATCH_WITH_RESCUE if declared_argument(task, "rescue") else "batch"
            audits.append(_audit_task(dag, task, cls.__name__, route, results_root))
    return audits


def _audit_task(dag: Any, task: Any, operator: str, route: str, results_root: Path | None) -> TaskAudit:
    workload, sources = workload_for_task(task)
    decision = decide_route(workload)
    verdict: Verdict = "OK"
    if (route == "sync") != (decision.route == "sync"):  # a rescue that is not needed is still a batch
        verdict = "SAVING" if route == "sync" else "VIOLATION"
    period = schedule_period(dag.timetable)
    runs = period.runs_per_month if period is not None else None
    usage, usage_source = _usage_per_run(dag.dag_id, task, results_root)
    audit = TaskAudit(
        dag_id=dag.dag_id,
        task_id=task.task_id,
        operator=operator,
        route=route,
        rule_route=decision.route,
        verdict=verdict,
        decided_by=decision.decided_by,
        reasons=list(decision.reasons),
        sources=sources,
        schedule=period.text if period is not None else "manual",
        runs_per_month=runs,
        usage_source=usage_source,
        usage_per_run=usage,
    )
    if usage:
        audit.per_run = cost_of(usage)
        audit.monthly = monthly_cost(usage, runs) if runs is not None else None
    return audit


def _usage_per_run(dag_id: str, task: Any, results_root: Path | None) -> tuple[dict[str, TokenUsage], str | None]:
    """Measured from past manifests when there are any, else the operator's ``usage_estimate``."""
    from airflow_provider_claude_batch.operators.base import results_path_part, usage_from_estimate

    runs = list(_measured_runs(results_root, results_path_part(dag_id), results_path_part(task.task_id)))
    if runs:
        models = sorted({model for run in runs for model in run})
        average = {
            model: TokenUsage(
                **{
                    kind: round(sum(getattr(run.get(model, TokenUsage()), kind) for run in runs) / len(runs))
                    for kind in TokenUsage().as_dict()
                }
            )
            for model in models
        }
        return average, f"measured ({len(runs)} run{'s' if len(runs) != 1 else ''})"
    estimate = declared_argument(task, "usage_estimate")
    if estimate:
        return usage_from_estimate(estimate, declared_argument(task, "model")), "declared"
    return {}, None


def _measured_runs(results_root: Path | None, dag_part: str, task_part: str) -> Iterator[dict[str, TokenUsage]]:
    """Per run, the usage summed over the task's manifests (one per map index for a mapped task)."""
    if results_root is None or not (results_root / dag_part).is_dir():
        return
    for run_dir in sorted((results_root / dag_part).iterdir()):
        task_dir = run_dir / task_part
        manifests = [task_dir / MANIFEST, *sorted(task_dir.glob(f"map_*/{MANIFEST}"))]
        totals: dict[str, TokenUsage] = {}
        for path in manifests:
            if not path.is_file():
                continue
            try:
                by_model = json.loads(path.read_text()).get("usage_by_model") or {}
                for model, usage in by_model.items():
                    totals[model] = totals.get(model, TokenUsage()) + TokenUsage.from_api(usage)
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # an unreadable manifest says nothing about usage; skip it
        if totals:
            yield totals


@contextmanager
def _enforcement_off() -> Iterator[None]:
    # The audit must see violating DAGs, not import errors: switch the routing policy off (it reads
    # the option on every call) while parsing, and put the environment back afterwards.
    previous = os.environ.get(_ENFORCE_ENV)
    os.environ[_ENFORCE_ENV] = "False"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_ENFORCE_ENV, None)
        else:
            os.environ[_ENFORCE_ENV] = previous


def _dagbag(folder: Path) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1 keeps it in airflow.models.dagbag
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    kwargs: dict[str, Any] = {"dag_folder": str(folder)}
    parameters = inspect.signature(DagBag).parameters
    if "include_examples" in parameters:
        kwargs["include_examples"] = False
    if "bundle_path" in parameters:
        kwargs["bundle_path"] = folder  # import errors keyed by path relative to the folder
    return DagBag(**kwargs)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _at(report: CostReport | None, route: str) -> Decimal:
    if report is None:
        return Decimal(0)
    # A batch with rescue is priced as a batch: only a rescued run pays the sync price, for what it rescued.
    return report.sync_usd if route == "sync" else report.batch_usd


def _usd(amount: Decimal) -> float:
    return round(float(amount), 6)


def _money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def _tokens(count: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if count >= size:
            return f"{count / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(count)


def _usage_text(audit: TaskAudit) -> str:
    if not audit.usage_per_run:
        return "no estimate"
    total = sum(audit.usage_per_run.values(), TokenUsage())
    models = ", ".join(audit.usage_per_run)
    return f"{_tokens(total.input_tokens)} in / {_tokens(total.output_tokens)} out ({models}; {audit.usage_source})"


def render_json(report: AuditReport) -> str:
    """The report as one JSON document: the same data the table shows."""
    document = {
        "dags_folder": report.dags_folder,
        "month_days": MONTH.days,
        "tasks": [task.as_dict() for task in report.tasks],
        "totals": report.totals(),
        "import_errors": report.import_errors,
    }
    return json.dumps(document, indent=2)


def render_table(report: AuditReport) -> str:
    """The report for people: one row per task, its reasons under it, the totals at the bottom."""
    header = ("DAG", "TASK", "ROUTE", "RULE", "VERDICT", "SCHEDULE", "RUNS/MONTH", "SYNC", "BATCH", "TOKENS/RUN")
    rows = []
    for task in report.tasks:
        cost = task.cost
        suffix = "/month" if task.runs_per_month is not None else "/run"
        rows.append(
            (
                task.dag_id,
                task.task_id,
                task.route,
                task.rule_route,
                task.verdict,
                task.schedule,
                f"{task.runs_per_month:.2f}" if task.runs_per_month is not None else "manual",
                _money(cost.sync_usd) + suffix if cost else "-",
                _money(cost.batch_usd) + suffix if cost else "-",
                _usage_text(task),
            )
        )
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [f"Claude tasks in {report.dags_folder}", ""]
    lines.append("  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * width for width in widths))
    for task, row in zip(report.tasks, rows, strict=True):
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        lines.extend(f"    why: {reason}" for reason in task.reasons)
        if cost is not None and cost.cache_saving_on(task.route):
            suffix = "/month" if task.runs_per_month is not None else "/run"
            lines.append(f"    caching: the prompt cache saves {_money(cost.cache_saving_on(task.route))}{suffix}")
    if not report.tasks:
        lines.append("(no ClaudeBatchOperator or ClaudeMessageOperator tasks found)")
    totals = report.totals()
    verdicts = totals["verdicts"]
    lines += [
        "",
        f"Totals: {totals['tasks']} task(s): {verdicts['OK']} OK, {verdicts['VIOLATION']} VIOLATION, "
        f"{verdicts['SAVING']} SAVING.",
        f"Per {MONTH.days}-day month, over the {totals['priced_monthly']} scheduled task(s) with a token estimate "
        f"({totals['manual']} manual task(s) are priced per run above; {totals['without_estimate']} have no estimate):",
        f"  monthly cost as routed now:          {_money(Decimal(str(totals['monthly_usd_as_routed'])))}",
        f"  monthly cost routed by the rule:     {_money(Decimal(str(totals['monthly_usd_routed_by_rule'])))}",
        "  saving left on the table (SAVING):   "
        f"{_money(Decimal(str(totals['saving_left_on_the_table_usd_per_month'])))}/month",
        "  cost of fixing violations:           "
        f"{_money(Decimal(str(totals['cost_of_fixing_violations_usd_per_month'])))}/month",
        f"  saved by the prompt cache:           {_money(Decimal(str(totals['cache_saving_usd_per_month'])))}/month",
        f"Prices as of {totals['prices_as_of']} ({totals['prices_source']}); batch is half the sync price.",
    ]
    if report.import_errors:
        lines += ["", f"{len(report.import_errors)} file(s) did not parse and were not audited:"]
        lines += [f"  {path}: {error.strip().splitlines()[-1]}" for path, error in report.import_errors.items()]
    return "\n".join(lines)
