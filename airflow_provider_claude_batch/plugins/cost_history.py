"""What the landed manifests of the last days say: spend per day, requests by outcome, time to land.

Pure: no Airflow import. :func:`landed_task` reads one manifest (the ``return_value`` XCom of a
``ClaudeBatchOperator`` or ``ClaudeMessageOperator`` task, also ``manifest.json`` beside its
results), :func:`cost_history` folds many into the series the "Routing & cost" page charts:

* spend per day and DAG on the batch route, and what the same work would have cost synchronously;
* requests per day by outcome (both routes);
* how long batch tasks took from submission to landed results, as a distribution: the number a
  team needs to decide whether a job with a deadline could be batched;
* what the prompt cache saved, per route, at that route's prices.

Days are UTC calendar days of ``landed_at``: the day the results (and the bill) arrived.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

__all__ = [
    "DURATION_BUCKETS",
    "OUTCOMES",
    "CostHistory",
    "LandedTask",
    "cost_history",
    "duration_histogram",
    "landed_task",
    "percentile",
    "route_cost",
]

OUTCOMES = ("succeeded", "errored", "expired", "canceled", "invalid_output")
"""Row statuses of a landed task, in the order the charts stack them; anything else is "other"."""
DURATION_BUCKETS: tuple[tuple[float, str], ...] = (
    (60, "<1m"),
    (5 * 60, "1-5m"),
    (15 * 60, "5-15m"),
    (30 * 60, "15-30m"),
    (3600, "30-60m"),
    (2 * 3600, "1-2h"),
    (4 * 3600, "2-4h"),
    (8 * 3600, "4-8h"),
    (12 * 3600, "8-12h"),
    (24 * 3600, "12-24h"),
    (math.inf, ">24h"),
)
"""Upper bounds (seconds, exclusive) and labels of the time-to-land histogram: minutes to the 24-hour window."""
_COST_KEYS = ("batch_usd", "sync_usd", "prices_as_of")


def route_cost(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """A manifest's cost, with the difference between the routes named for what it is on its route.

    On the batch route the difference is ``saving_usd`` (money not spent). On the synchronous route
    nothing was saved: it is ``batching_would_save_usd``. Manifests written before the synchronous
    route named it so carry ``saving_usd`` there too; it is read as what batching would have saved.

    :param manifest: a landed manifest.
    """
    cost = manifest.get("cost")
    if not isinstance(cost, Mapping):
        return None
    picked: dict[str, Any] = {key: cost.get(key) for key in _COST_KEYS}
    difference = cost.get("batching_would_save_usd", cost.get("saving_usd"))
    route = "sync" if manifest.get("route") == "sync" else "batch"
    if route == "sync":
        picked["batching_would_save_usd"] = difference
    else:
        picked["saving_usd"] = cost.get("saving_usd")
    if f"cache_saving_{route}_usd" in cost:  # manifests older than prompt-cache accounting have none
        picked["cache_saving_usd"] = cost[f"cache_saving_{route}_usd"]
    return picked


@dataclass(frozen=True)
class LandedTask:
    """One task instance's landed results, as its manifest reports them."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    route: str
    """``batch`` or ``sync``."""
    landed_at: datetime
    submitted_at: datetime | None
    """When the first batch create was sent (batch route; absent in manifests older than the field)."""
    counts: Mapping[str, int]
    batch_usd: float
    sync_usd: float
    cache_saving_usd: float = 0.0
    """What the prompt cache saved, at the prices of the route the task ran on (negative: it cost more)."""

    @property
    def billed_usd(self) -> float:
        """What the work cost on the route it ran on."""
        return self.batch_usd if self.route == "batch" else self.sync_usd

    @property
    def seconds_to_land(self) -> float | None:
        """From the first create to the landed results; None without a submission time."""
        if self.submitted_at is None:
            return None
        return max((self.landed_at - self.submitted_at).total_seconds(), 0.0)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def landed_task(dag_id: str, run_id: str, task_id: str, map_index: int, manifest: Any) -> LandedTask | None:
    """The landed task a manifest describes, or None when ``manifest`` is not one of ours.

    :param dag_id: the task's DAG.
    :param run_id: the task's run.
    :param task_id: the task.
    :param map_index: its map index (-1 when unmapped).
    :param manifest: the ``return_value`` XCom (or ``manifest.json``) value.
    """
    if not isinstance(manifest, Mapping) or manifest.get("route") not in ("batch", "sync"):
        return None
    landed_at = _moment(manifest.get("landed_at"))
    cost = manifest.get("cost")
    if landed_at is None or not isinstance(cost, Mapping) or "results_uri" not in manifest:
        return None
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), Mapping) else {}
    return LandedTask(
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        route=str(manifest["route"]),
        landed_at=landed_at,
        submitted_at=_moment(manifest.get("submitted_at")),
        counts={str(k): int(_number(v)) for k, v in counts.items() if _number(v)},
        batch_usd=_number(cost.get("batch_usd")),
        sync_usd=_number(cost.get("sync_usd")),
        cache_saving_usd=_number(cost.get(f"cache_saving_{manifest['route']}_usd")),
    )


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(fraction, 0.0), 1.0)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def duration_histogram(seconds: Iterable[float]) -> list[tuple[str, int]]:
    """How many durations fall in each of :data:`DURATION_BUCKETS`, every bucket listed."""
    counts = [0] * len(DURATION_BUCKETS)
    for value in seconds:
        index = next(i for i, (upper, _) in enumerate(DURATION_BUCKETS) if value < upper)
        counts[index] += 1
    return [(label, count) for (_, label), count in zip(DURATION_BUCKETS, counts, strict=True)]


@dataclass
class CostHistory:
    """The series of the "Routing & cost" page over ``days`` (oldest first)."""

    days: list[date]
    dag_ids: list[str]
    """DAGs with landed tasks in the window (before any DAG filter), for the page's selector."""
    batch_spend: dict[str, list[float]]
    """Per DAG, per day: what batch-route tasks cost (at batch prices)."""
    batch_sync_equivalent: list[float]
    """Per day: what the same batch-route work would have cost on the Messages API."""
    outcomes: dict[str, list[int]]
    """Per row status, per day: requests landed, both routes."""
    seconds_to_land: list[float]
    """Batch-route tasks: seconds from the first create to the landed results."""
    sync_spend_usd: float = 0.0
    sync_batching_would_save_usd: float = 0.0
    tasks: dict[str, int] = field(default_factory=dict)
    """Landed task instances per route."""
    cache_saving: dict[str, float] = field(default_factory=dict)
    """Per route: what the prompt cache saved there."""
    without_submission_time: int = 0
    """Batch-route tasks whose manifest has no ``submitted_at`` (left out of the time-to-land chart)."""

    @property
    def batch_spend_usd(self) -> float:
        return sum(sum(values) for values in self.batch_spend.values())

    @property
    def batch_saving_usd(self) -> float:
        return sum(self.batch_sync_equivalent) - self.batch_spend_usd

    def time_to_land(self) -> dict[str, Any]:
        """The distribution: histogram buckets and the usual quantiles, in seconds."""
        values = self.seconds_to_land
        return {
            "count": len(values),
            "histogram": [{"bucket": label, "tasks": n} for label, n in duration_histogram(values)],
            "p50_seconds": percentile(values, 0.5),
            "p90_seconds": percentile(values, 0.9),
            "max_seconds": max(values) if values else None,
            "without_submission_time": self.without_submission_time,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON for the page's API: the same numbers the charts draw."""
        return {
            "days": [day.isoformat() for day in self.days],
            "dag_ids": self.dag_ids,
            "batch_route": {
                "spend_usd_by_dag": {dag: [round(v, 6) for v in values] for dag, values in self.batch_spend.items()},
                "sync_equivalent_usd": [round(v, 6) for v in self.batch_sync_equivalent],
                "spend_usd": round(self.batch_spend_usd, 6),
                "saving_usd": round(self.batch_saving_usd, 6),
                "cache_saving_usd": round(self.cache_saving.get("batch", 0.0), 6),
            },
            "sync_route": {
                "spend_usd": round(self.sync_spend_usd, 6),
                "batching_would_save_usd": round(self.sync_batching_would_save_usd, 6),
                "cache_saving_usd": round(self.cache_saving.get("sync", 0.0), 6),
            },
            "requests_by_outcome": self.outcomes,
            "tasks": self.tasks,
            "time_to_land": self.time_to_land(),
        }


def cost_history(tasks: Iterable[LandedTask], *, today: date, days: int = 30, dag_id: str | None = None) -> CostHistory:
    """Fold landed tasks into the page's series for the ``days`` days ending with ``today``.

    :param tasks: landed tasks (any order; those outside the window are ignored).
    :param today: the last day of the window (UTC).
    :param days: how many days the window has.
    :param dag_id: only this DAG (the selector lists every DAG of the window all the same).
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    window = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    position = {day: index for index, day in enumerate(window)}
    in_window = [task for task in tasks if task.landed_at.astimezone(timezone.utc).date() in position]
    history = CostHistory(
        days=window,
        dag_ids=sorted({task.dag_id for task in in_window}),
        batch_spend={},
        batch_sync_equivalent=[0.0] * days,
        outcomes={outcome: [0] * days for outcome in OUTCOMES},
        seconds_to_land=[],
    )
    for task in in_window:
        if dag_id is not None and task.dag_id != dag_id:
            continue
        index = position[task.landed_at.astimezone(timezone.utc).date()]
        history.tasks[task.route] = history.tasks.get(task.route, 0) + 1
        history.cache_saving[task.route] = history.cache_saving.get(task.route, 0.0) + task.cache_saving_usd
        for status, count in task.counts.items():
            name = status if status in OUTCOMES else "other"
            history.outcomes.setdefault(name, [0] * days)[index] += count
        if task.route == "sync":
            history.sync_spend_usd += task.sync_usd
            history.sync_batching_would_save_usd += task.sync_usd - task.batch_usd
            continue
        history.batch_spend.setdefault(task.dag_id, [0.0] * days)[index] += task.batch_usd
        history.batch_sync_equivalent[index] += task.sync_usd
        if task.seconds_to_land is None:
            history.without_submission_time += 1
        else:
            history.seconds_to_land.append(task.seconds_to_land)
    history.batch_spend = dict(sorted(history.batch_spend.items()))
    history.outcomes = {name: values for name, values in history.outcomes.items() if any(values)}
    return history
