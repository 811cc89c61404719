"""``ClaudeBatchLink``: the task's button to its batch page in the Airflow UI (the monitoring plugin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["PLUGIN_PREFIX", "ClaudeBatchLink", "api_base_url", "task_page_path"]

PLUGIN_PREFIX = "/claude-batch"
"""Where the monitoring plugin's FastAPI app is mounted on the api-server."""


def task_page_path(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The per-task page's path, e.g. ``/claude-batch/task/nightly/manual__2025.../summarise?map_index=-1``.

    :param dag_id: the DAG id.
    :param run_id: the run id (quoted: run ids hold ``:`` and ``+``).
    :param task_id: the task id.
    :param map_index: the map index, -1 for an unmapped task.
    """
    index = -1 if map_index is None else int(map_index)
    parts = "/".join(quote(str(part), safe="") for part in (dag_id, run_id, task_id))
    return f"{PLUGIN_PREFIX}/task/{parts}?map_index={index}"


def api_base_url() -> str:
    """``[api] base_url`` without its trailing slash ("" when unset: links stay relative to the UI)."""
    try:
        from airflow.sdk import conf
    except ImportError:  # pragma: no cover - older task SDKs
        from airflow.configuration import conf  # type: ignore[no-redef]
    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


class ClaudeBatchLink(BaseOperatorLink):
    """The "Claude batch" button: opens the batch's page (status, counts, 24-hour window, cost) for this task.

    Airflow computes extra links when a task ends; ``ClaudeBatchOperator`` also pushes this link's
    XCom right after submitting, so the button works while the task is deferred.
    """

    name = "Claude batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey | Any) -> str:
        path = task_page_path(ti_key.dag_id, ti_key.run_id, ti_key.task_id, getattr(ti_key, "map_index", -1))
        return f"{api_base_url()}{path}"
