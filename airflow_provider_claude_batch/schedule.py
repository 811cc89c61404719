"""How often a DAG runs, read from its timetable: the routing policy and the audit both need it.

The routing rule reads a schedule period as ``refresh_every`` (a DAG that runs every 5 minutes
feeds consumers who expect results every 5 minutes), and the audit turns it into runs per month to
price a task. These want different numbers for irregular schedules: ``"0 9 * * 1-5"`` refreshes
every day on weekdays (the shortest gap, 1 day, is what consumers expect) but runs about 21 times a
month, not 30 (the mean gap, 1.4 days, is what is billed). :class:`SchedulePeriod` carries both.

Only the timetables whose period is known before any run are understood: cron and delta schedules,
several crons, and the time part of an asset-or-time schedule. Manual, ``@once``, ``@continuous``
(its period is however long a run takes), asset-triggered and event-list schedules give ``None``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_claude_batch.routing import format_duration

__all__ = ["MONTH", "SchedulePeriod", "schedule_period"]

MONTH = timedelta(days=30)
"""The month the audit prices: 30 days, so a weekly DAG runs 30/7 times a month."""

# Any fixed start gives the same gaps for regular crons; a fixed one keeps results reproducible.
_ANCHOR = datetime(2025, 1, 1, tzinfo=timezone.utc)
# Enough fires to average out irregular crons (weekdays, month ends) without walking every minute
# of a year for "* * * * *".
_MAX_FIRES = 2000
_HORIZON = timedelta(days=366)


@dataclass(frozen=True)
class SchedulePeriod:
    """How often a schedule fires.

    :param shortest: the shortest gap between two runs: how fresh consumers expect results to be.
    :param mean: the average gap: what the runs per month are computed from.
    :param text: the schedule as a person wrote it, e.g. ``"0 6 * * *"`` or ``"every 6 hours"``.
    """

    shortest: timedelta
    mean: timedelta
    text: str

    @property
    def runs_per_month(self) -> float:
        """Runs in a 30-day month, e.g. 30/7 for a weekly schedule."""
        return MONTH / self.mean


def schedule_period(timetable: Any) -> SchedulePeriod | None:
    """The period of a DAG's timetable (``dag.timetable``), or ``None`` when it is not periodic.

    :param timetable: the timetable of a DAG built from a file: a Task SDK timetable in Airflow 3.3,
        a core one in 3.1.
    """
    # Read by attribute rather than by class: the classes moved from airflow.timetables (3.1,
    # "_expression"/"_delta") to private airflow.sdk modules (3.3, "expression"/"delta").
    expression = _attribute(timetable, "expression")
    if isinstance(expression, str):
        return _from_fires(_cron_fires(expression), expression)
    delta = _attribute(timetable, "delta")
    if delta is not None:
        if isinstance(delta, timedelta):
            return SchedulePeriod(delta, delta, f"every {format_duration(delta)}") if delta > timedelta(0) else None
        # A relativedelta ("every month") has no fixed length: measure a year of it.
        return _from_fires([_ANCHOR + delta * step for step in range(13)], f"every {delta!r}")
    crons = _attribute(timetable, "timetables")  # MultipleCronTriggerTimetable
    if crons:
        expressions = [e for e in (_attribute(tt, "expression") for tt in crons) if isinstance(e, str)]
        # Merge the fires: two daily crons twelve hours apart refresh every twelve hours.
        fires = sorted({fire for expression in expressions for fire in _cron_fires(expression)})[:_MAX_FIRES]
        return _from_fires(fires, " + ".join(expressions))
    inner = getattr(timetable, "timetable", None)  # AssetOrTimeSchedule: its time part is periodic
    if inner is not None and inner is not timetable:
        return schedule_period(inner)
    return None


def _attribute(timetable: Any, name: str) -> Any:
    value = getattr(timetable, name, None)
    return value if value is not None else getattr(timetable, f"_{name}", None)


def _cron_fires(expression: str) -> list[datetime]:
    from croniter import croniter

    iterator = croniter(expression, _ANCHOR)
    fires: list[datetime] = []
    while len(fires) < _MAX_FIRES:
        fire = iterator.get_next(datetime)
        if fire - _ANCHOR > _HORIZON:
            break
        fires.append(fire)
    return fires


def _from_fires(fires: list[datetime], text: str) -> SchedulePeriod | None:
    if len(fires) < 2:
        return None  # e.g. a cron for one day of one year: no period to speak of
    gaps = [later - earlier for earlier, later in itertools.pairwise(fires)]
    return SchedulePeriod(min(gaps), (fires[-1] - fires[0]) / (len(fires) - 1), text)
