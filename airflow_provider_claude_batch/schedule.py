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
    """The period of an SDK timetable (``dag.timetable``), or ``None`` when it is not periodic.

    :param timetable: a Task SDK timetable, as a DAG built from a file holds it.
    """
    # Private SDK modules, the only place the mixins live in Airflow 3.3 (reference airflow3.md §9);
    # imported here so that importing this module stays free of Airflow.
    from airflow.sdk.definitions.timetables._cron import CronMixin
    from airflow.sdk.definitions.timetables._delta import DeltaMixin

    if isinstance(timetable, DeltaMixin):
        # A relativedelta ("every month") has no fixed length; measure it from the anchor.
        delta = timetable.delta if isinstance(timetable.delta, timedelta) else (_ANCHOR + timetable.delta) - _ANCHOR
        if delta <= timedelta(0):
            return None
        return SchedulePeriod(delta, delta, f"every {format_duration(delta)}")
    if isinstance(timetable, CronMixin):
        return _from_fires(_cron_fires(timetable.expression), timetable.expression)
    crons = getattr(timetable, "timetables", None)  # MultipleCronTriggerTimetable
    if crons:
        expressions = [tt.expression for tt in crons if isinstance(tt, CronMixin)]
        # Merge the fires: two crons an hour apart make an hourly refresh, not two daily ones.
        fires = sorted({fire for expression in expressions for fire in _cron_fires(expression)})[:_MAX_FIRES]
        return _from_fires(fires, " + ".join(expressions))
    inner = getattr(timetable, "timetable", None)  # AssetOrTimeSchedule: the time part is periodic
    if inner is not None and inner is not timetable:
        return schedule_period(inner)
    return None


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
