"""Landed manifests from the metadata DB: the ``return_value`` XCom every Claude task leaves.

Both operators return their manifest, so the api-server reads the history of both routes from the
database it already has, wherever ``results_uri`` points (S3, a worker's disk). Only XCom rows whose
JSON mentions ``manifest_uri`` are fetched (a filter the database applies), then each is checked to
be a manifest by :func:`~.cost_history.landed_task`. Thin Airflow glue; the arithmetic is in
:mod:`.cost_history`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.plugins.cost_history import LandedTask, landed_task

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["MANIFEST_MARKER", "landed_tasks", "task_manifest"]

MANIFEST_KEY = "return_value"
MANIFEST_MARKER = "manifest_uri"
"""A key only our manifests have; matched in the XCom's JSON text (stored as an object or a string)."""
MAX_MANIFESTS = 20_000


def _manifest_rows(session: Session, *conditions: Any, limit: int) -> list[Any]:
    from airflow.models.xcom import XComModel
    from sqlalchemy import Text, cast, select

    query = select(XComModel).where(
        XComModel.key == MANIFEST_KEY, cast(XComModel.value, Text).like(f"%{MANIFEST_MARKER}%"), *conditions
    )
    return list(session.scalars(query.order_by(XComModel.timestamp.desc()).limit(limit)).all())


def landed_tasks(
    session: Session,
    *,
    since: datetime,
    readable_dag_ids: Collection[str] | None = None,
    limit: int = MAX_MANIFESTS,
) -> list[LandedTask]:
    """Every Claude task instance whose results landed (its manifest was written) since ``since``.

    :param session: a metadata DB session (the api-server's).
    :param since: the start of the window (the XCom's timestamp is when the manifest was returned).
    :param readable_dag_ids: only these DAGs (what the user may read); ``None`` for all.
    :param limit: at most this many, newest first.
    """
    from airflow.models.xcom import XComModel

    conditions = [XComModel.timestamp >= since]
    if readable_dag_ids is not None:
        if not readable_dag_ids:
            return []
        conditions.append(XComModel.dag_id.in_(list(readable_dag_ids)))
    tasks = []
    for row in _manifest_rows(session, *conditions, limit=limit):
        task = landed_task(row.dag_id, row.run_id, row.task_id, row.map_index, XComModel.deserialize_value(row))
        if task is not None:
            tasks.append(task)
    return tasks


def task_manifest(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
    """The manifest one task instance returned, or None (not a Claude task, or not landed yet).

    :param session: a metadata DB session.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param task_id: the task.
    :param map_index: the map index (-1 when unmapped).
    """
    from airflow.models.xcom import XComModel

    rows = _manifest_rows(
        session,
        XComModel.dag_id == dag_id,
        XComModel.run_id == run_id,
        XComModel.task_id == task_id,
        XComModel.map_index == map_index,
        limit=1,
    )
    value = XComModel.deserialize_value(rows[0]) if rows else None
    return value if landed_task(dag_id, run_id, task_id, map_index, value) is not None else None
