"""Running DAGs for real in tests: ``dag.test()`` plus reads of what it left in the metadata DB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DagRunOutcome:
    """Task states and XComs of one finished ``dag.test()`` run."""

    state: str
    task_states: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    rendered: dict[str, dict[str, Any]]

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_id, key))


def register_dag(dag: Any) -> None:
    """Serialise a DAG built in a test into the metadata DB, as the dag-processor would.

    Airflow 3.3's ``dag.test()`` runs only DAGs it finds serialised in a bundle.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.1 keeps them in airflow.models.dagbag
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def run_dag(dag: Any) -> DagRunOutcome:
    """Run ``dag`` once with ``dag.test()`` and collect its outcome from the metadata DB."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    register_dag(dag)
    dag_run = dag.test()
    with create_session() as session:
        task_instances = dag_run.get_task_instances(session=session)
        states = {
            ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state) for ti in task_instances
        }
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        xcoms = {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}
        rendered_rows = session.scalars(
            select(RenderedTaskInstanceFields).where(
                RenderedTaskInstanceFields.dag_id == dag.dag_id,
                RenderedTaskInstanceFields.run_id == dag_run.run_id,
            )
        ).all()
        rendered = {row.task_id: row.rendered_fields for row in rendered_rows}
        return DagRunOutcome(str(dag_run.state), states, xcoms, rendered)


def _label(ti: Any) -> str:
    return ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
