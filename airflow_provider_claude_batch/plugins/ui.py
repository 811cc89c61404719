"""The "Claude Batches" Airflow UI plugin: the fleet page, a per-task tab, Routing & cost, and their JSON API.

Mounted on the api-server at ``/claude-batch`` (``fastapi_apps``), shown in the UI through
``external_views``: "Claude Batches" and "Claude Routing & Cost" under Browse, and a "Claude batch"
tab on every task instance. Every route, the HTML pages included, requires Airflow's authentication
and read access to the DAG's XComs: no credentials get 401. The UI's ``_token`` cookie is accepted,
so the pages work inside the UI's iframe and their scripts can call the JSON API.

Routes (under ``/claude-batch``):

* ``GET /``: the fleet page; ``GET /task/{dag_id}/{run_id}/{task_id}?map_index=``: one task instance;
* ``GET /routing?dag_id=``: the Routing & cost page; ``GET /routing/audit``: its audit table (HTML);
* ``GET /api/batches?dag_id=&limit=``: rows for every batch task the user may read;
* ``GET /api/task/{dag_id}/{run_id}/{task_id}?map_index=``: the row of one task instance (404 if none);
* ``GET /api/costs?days=&dag_id=``: the charts' series; ``GET /api/audit?refresh=``: the routing audit.

Registered through the ``airflow.plugins`` entry point (provider-info ``plugins`` is read only with
``[core] lazy_discover_providers = False``). Pages: :mod:`.pages`, :mod:`.routing_page`; data:
:mod:`.task_records`, :mod:`.monitor`, :mod:`.manifests`, :mod:`.cost_history`, :mod:`.audit_runner`.
See ``docs/monitoring.md``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from airflow_provider_claude_batch.links import PLUGIN_PREFIX
from airflow_provider_claude_batch.plugins.audit_runner import AuditRunner
from airflow_provider_claude_batch.plugins.cost_history import CostHistory, cost_history
from airflow_provider_claude_batch.plugins.manifests import landed_tasks
from airflow_provider_claude_batch.plugins.monitor import PROGRESS_NOTE, BatchStatusCache, build_rows
from airflow_provider_claude_batch.plugins.pages import ROUTING_PATH, parse_map_index, render_batches_page
from airflow_provider_claude_batch.plugins.routing_page import render_audit_fragment, render_routing_page
from airflow_provider_claude_batch.plugins.task_records import find_batch_tasks, synchronous_task

__all__ = ["ClaudeBatchPlugin", "app", "audit_runner", "create_app", "status_cache"]

REFRESH_SECONDS = 10
HISTORY_DAYS = 30
status_cache = BatchStatusCache()
"""One cache per api-server process: every browser polling the page shares its look-ups."""
audit_runner = AuditRunner()
"""One per api-server process: the DAG folder is audited at most every few minutes."""

MapIndexQuery = Annotated[str, Query(description="The map index; -1 or the UI's unfilled {MAP_INDEX}: unmapped")]


def _map_index(value: str) -> int:
    try:
        return parse_map_index(value)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def _readable(user: Any) -> set[str]:
    # Airflow's ReadableDagsFilterDep reads the auth manager from request.app.state, which in a mounted
    # sub-app is ours, not the api-server's: ask the auth manager directly.
    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path") or PLUGIN_PREFIX)


def _deployment() -> tuple[str, str]:
    """The DAG folder this api-server deploys and its AIRFLOW_HOME (where default results land)."""
    from airflow.configuration import conf

    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return str(conf.get("core", "dags_folder")), home


def create_app(cache: BatchStatusCache | None = None, auditor: AuditRunner | None = None) -> FastAPI:
    """The plugin's FastAPI app; every route requires read access to DAG XComs.

    :param cache: where live batch status is cached (a fresh one for tests).
    :param auditor: runs and caches the routing audit (a fresh one for tests).
    """
    lookups = cache or status_cache
    audits = auditor or audit_runner
    # On the app, so no route can be added without it. dag_id comes from the path when there is one.
    read_xcom = Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.XCOM))
    sub_app = FastAPI(
        title="Claude Batches",
        description="Claude tasks run by Airflow: batch status, the 24-hour window, routing and cost.",
        dependencies=[read_xcom],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @sub_app.get("/api/batches")
    def list_batches(
        session: SessionDep,
        user: GetUserDep,
        dag_id: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Every batch task the user may read, newest submission first."""
        records = find_batch_tasks(session, readable_dag_ids=_readable(user), dag_id=dag_id, limit=limit)
        return _payload(build_rows(records, lookups))

    @sub_app.get("/api/task/{dag_id}/{run_id}/{task_id}")
    def one_task(
        dag_id: str, run_id: str, task_id: str, session: SessionDep, map_index: MapIndexQuery = "-1"
    ) -> dict[str, Any]:
        """One task instance: its batches, status, window and cost; or its landed synchronous manifest."""
        index = _map_index(map_index)
        records = find_batch_tasks(session, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=index)
        if not records:
            records = synchronous_task(session, dag_id, run_id, task_id, index)
        if records:
            rows = build_rows(records, lookups)
            return {**_payload(rows), "row": rows[0]}
        # Asked without a map index, a mapped task answers with its mapped instances.
        mapped = find_batch_tasks(session, dag_id=dag_id, run_id=run_id, task_id=task_id) if index < 0 else []
        if mapped:
            message = f"{task_id} is a mapped task: {len(mapped)} mapped instance(s) submitted a batch."
            return {**_payload(build_rows(mapped, lookups)), "row": None, "message": message}
        where = f"{dag_id} / {run_id} / {task_id}" + (f" [{index}]" if index >= 0 else "")
        raise HTTPException(
            404,
            f"No Claude batch for {where}: this task is not a ClaudeBatchOperator or ClaudeMessageOperator "
            "task, or it has not submitted anything yet.",
        )

    @sub_app.get("/api/costs")
    def costs(
        session: SessionDep,
        user: GetUserDep,
        days: Annotated[int, Query(ge=1, le=90)] = HISTORY_DAYS,
        dag_id: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        """The series the Routing & cost page charts, from the manifests landed in the last ``days`` days."""
        return _history(session, _readable(user), days, dag_id or None, datetime.now(timezone.utc)).as_dict()

    @sub_app.get("/api/audit")
    def audit(user: GetUserDep, refresh: bool = False) -> dict[str, Any]:
        """``claude-batch audit`` of the api-server's DAG folder, limited to the DAGs the user may read."""
        outcome = audits.audit(*_deployment(), refresh=refresh)
        readable = _readable(user)
        tasks = [t for t in (outcome.document or {}).get("tasks", []) if t.get("dag_id") in readable]
        return {
            "audited_at": outcome.audited_at,
            "dags_folder": outcome.dags_folder,
            "error": outcome.error,
            "tasks": tasks,
        }

    @sub_app.get("/", response_class=HTMLResponse)
    def fleet_page(request: Request) -> HTMLResponse:
        page = render_batches_page(_prefix(request), None, refresh_seconds=REFRESH_SECONDS, progress_note=PROGRESS_NOTE)
        return HTMLResponse(page)

    @sub_app.get("/task/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse)
    def task_page(request: Request, dag_id: str, run_id: str, task_id: str, map_index: MapIndexQuery = "-1"):
        task = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": _map_index(map_index)}
        page = render_batches_page(_prefix(request), task, refresh_seconds=REFRESH_SECONDS, progress_note=PROGRESS_NOTE)
        return HTMLResponse(page)

    @sub_app.get(ROUTING_PATH, response_class=HTMLResponse)
    def routing_page(
        request: Request, session: SessionDep, user: GetUserDep, dag_id: Annotated[str | None, Query()] = None
    ) -> HTMLResponse:
        now = datetime.now(timezone.utc)
        history = _history(session, _readable(user), HISTORY_DAYS, dag_id or None, now)
        page = render_routing_page(_prefix(request), history, dag_id=dag_id or None, generated_at=now)
        return HTMLResponse(page)

    @sub_app.get(ROUTING_PATH + "/audit", response_class=HTMLResponse)
    def audit_fragment(user: GetUserDep, refresh: bool = False) -> HTMLResponse:
        outcome = audits.audit(*_deployment(), refresh=refresh)
        fragment = render_audit_fragment(
            outcome.document, readable_dag_ids=_readable(user), audited_at=outcome.audited_at, error=outcome.error
        )
        return HTMLResponse(fragment)

    return sub_app


def _history(session: Any, readable: Collection[str], days: int, dag_id: str | None, now: datetime) -> CostHistory:
    since = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=timezone.utc)
    tasks = landed_tasks(session, since=since, readable_dag_ids=readable)
    return cost_history(tasks, today=now.date(), days=days, dag_id=dag_id)


def _payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "refresh_seconds": REFRESH_SECONDS,
        "progress_note": PROGRESS_NOTE,
        "total": len(rows),
        "rows": rows,
    }


app = create_app()


class ClaudeBatchPlugin(AirflowPlugin):
    """Claude batch monitoring in the Airflow UI (fleet page, per-task tab, routing and cost, JSON API)."""

    name = "claude_batch"
    fastapi_apps = [{"app": app, "url_prefix": PLUGIN_PREFIX, "name": "Claude Batches"}]
    external_views = [
        {
            "name": "Claude Batches",
            "href": f"{PLUGIN_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "claude-batches",
        },
        {
            "name": "Claude Routing & Cost",
            "href": f"{PLUGIN_PREFIX}{ROUTING_PATH}",
            "destination": "nav",
            "category": "browse",
            "url_route": "claude-routing",
        },
        {
            # The UI fills {MAP_INDEX} only on a mapped task's page; parse_map_index reads it unfilled as -1.
            "name": "Claude batch",
            "href": f"{PLUGIN_PREFIX}/task/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "claude-batch-task",
        },
    ]
