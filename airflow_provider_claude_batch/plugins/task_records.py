"""Claude task instances from the metadata DB: batch tasks, and any task's landed manifest and details.

A batch task is a task instance with both a ``batch_ids`` XCom and the "Claude batch" link's XCom,
which ``ClaudeBatchOperator`` pushes together right after submitting (a TaskFlow task returning a
dict with a ``batch_ids`` key pushes the first alone). Its ``return_value`` manifest, once the
results have landed, adds tokens, cost, saving and where the results are. Thin Airflow glue: the
rows are built by :mod:`.monitor`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.links import ClaudeBatchLink
from airflow_provider_claude_batch.plugins.manifests import task_manifest
from airflow_provider_claude_batch.plugins.monitor import TaskRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["BATCH_IDS_KEY", "attach_task_details", "find_batch_tasks", "synchronous_task"]

BATCH_IDS_KEY = "batch_ids"
MANIFEST_KEY = "return_value"
LINK_XCOM_KEY = ClaudeBatchLink().xcom_key


def find_batch_tasks(
    session: Session,
    *,
    readable_dag_ids: Collection[str] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    map_index: int | None = None,
    limit: int = 200,
) -> list[TaskRecord]:
    """Batch task instances, newest submission first.

    :param session: a metadata DB session (the api-server's).
    :param readable_dag_ids: only these DAGs (what the user may read); ``None`` for all.
    :param dag_id: only this DAG.
    :param run_id: only this run.
    :param task_id: only this task.
    :param map_index: only this map index.
    :param limit: at most this many task instances.
    """
    from airflow.models.xcom import XComModel
    from sqlalchemy import exists, select
    from sqlalchemy.orm import aliased

    # A batch_ids XCom alone is not enough: a TaskFlow task returning a dict with a "batch_ids" key
    # (multiple_outputs) pushes one too. ClaudeBatchOperator pushes its link's XCom with it.
    link = aliased(XComModel)
    pushed_link = exists().where(
        link.key == LINK_XCOM_KEY,
        link.dag_id == XComModel.dag_id,
        link.run_id == XComModel.run_id,
        link.task_id == XComModel.task_id,
        link.map_index == XComModel.map_index,
    )
    query = select(XComModel).where(XComModel.key == BATCH_IDS_KEY, pushed_link)
    if readable_dag_ids is not None:
        if not readable_dag_ids:
            return []
        query = query.where(XComModel.dag_id.in_(list(readable_dag_ids)))
    for column, value in (
        (XComModel.dag_id, dag_id),
        (XComModel.run_id, run_id),
        (XComModel.task_id, task_id),
        (XComModel.map_index, map_index),
    ):
        if value is not None:
            query = query.where(column == value)
    rows = session.scalars(query.order_by(XComModel.timestamp.desc()).limit(limit)).all()
    records: dict[tuple[str, str, str, int], TaskRecord] = {}
    for row in rows:
        ids = XComModel.deserialize_value(row)
        if isinstance(ids, str):
            ids = [ids]
        key = (row.dag_id, row.run_id, row.task_id, row.map_index)
        records[key] = TaskRecord(
            dag_id=row.dag_id,
            run_id=row.run_id,
            task_id=row.task_id,
            map_index=row.map_index,
            batch_ids=[str(b) for b in ids or []],
            submitted_at=row.timestamp,
        )
    attach_task_details(session, records)
    return list(records.values())


def attach_task_details(session: Session, records: Mapping[tuple[str, str, str, int], TaskRecord]) -> None:
    """Fill in each record's task instance (state, try, operator), landed manifest and rendered connection.

    :param session: a metadata DB session.
    :param records: the records, by ``(dag_id, run_id, task_id, map_index)``.
    """
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from sqlalchemy import select, tuple_

    if not records:
        return
    keys = list(records)
    ti_key = tuple_(TI.dag_id, TI.run_id, TI.task_id, TI.map_index)
    for ti in session.scalars(select(TI).where(ti_key.in_(keys))).all():
        record = records.get((ti.dag_id, ti.run_id, ti.task_id, ti.map_index))
        if record is not None:
            record.state = str(ti.state.value if hasattr(ti.state, "value") else ti.state) if ti.state else None
            record.try_number = ti.try_number
            record.operator = ti.operator
            record.start_date = ti.start_date
            record.end_date = ti.end_date
    xcom_key = tuple_(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index)
    manifests = session.scalars(select(XComModel).where(XComModel.key == MANIFEST_KEY, xcom_key.in_(keys))).all()
    for row in manifests:
        value = XComModel.deserialize_value(row)
        record = records.get((row.dag_id, row.run_id, row.task_id, row.map_index))
        if record is not None and isinstance(value, dict) and "results_uri" in value:
            record.manifest = value
    # The connection is a templated field: its rendered value says which account the batch is on.
    rtif_key = tuple_(RTIF.dag_id, RTIF.run_id, RTIF.task_id, RTIF.map_index)
    for rtif in session.scalars(select(RTIF).where(rtif_key.in_(keys))).all():
        record = records.get((rtif.dag_id, rtif.run_id, rtif.task_id, rtif.map_index))
        conn_id = (rtif.rendered_fields or {}).get("claude_conn_id")
        if record is not None and isinstance(conn_id, str) and conn_id:
            record.conn_id = conn_id


def synchronous_task(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[TaskRecord]:
    """A task with a landed manifest but no batch: a ``ClaudeMessageOperator`` task (route ``sync``).

    :param session: a metadata DB session.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param task_id: the task.
    :param map_index: the map index (-1 when unmapped).
    """
    if task_manifest(session, dag_id, run_id, task_id, map_index) is None:
        return []
    record = TaskRecord(dag_id, run_id, task_id, map_index, batch_ids=[])
    attach_task_details(session, {(dag_id, run_id, task_id, map_index): record})
    return [record]
