"""The api-server's REST API as the e2e harnesses use it: the admin's token, DAG runs, task instances, logs.

:class:`RestCalls` is a mixin of :class:`~harness.AirflowHarness`: it needs the harness's HTTP
client (``_http``), token (``_token``), admin credentials, ``wait_for`` and ``log_tails``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from processes import HarnessError

TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class RestCalls:
    """Authenticated calls to the api-server, and waits on what they answer."""

    _http: httpx.Client | None
    _token: str | None
    admin_user: str
    admin_password: str
    wait_for: Callable[..., Any]
    log_tails: Callable[..., str]

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            raise HarnessError("the harness is not started")
        return self._http

    @property
    def token(self) -> str:
        if self._token is None:
            raise HarnessError("not logged in yet")
        return self._token

    def fetch_token(self, username: str | None = None, password: str | None = None) -> str:
        """A JWT from ``POST /auth/token`` (the admin's by default; SimpleAuthManager and FAB alike)."""
        body = {"username": username or self.admin_user, "password": password or self.admin_password}
        response = self.http.post("/auth/token", json=body)
        if response.status_code not in (200, 201):
            raise HarnessError(f"POST /auth/token answered {response.status_code}: {response.text}")
        return str(response.json()["access_token"])

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """One call to the api-server, with the admin's bearer token unless ``auth=False``.

        :param method: the HTTP method.
        :param path: the path, e.g. ``/api/v2/dags``.
        :param auth: send ``Authorization: Bearer <token>``.
        """
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.http.request(method, path, headers=headers, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated call that must succeed; returns the decoded JSON body."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise HarnessError(f"{method} {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> dict[str, Any]:
        """Until the dag-processor has serialised ``dag_id`` (fails at once on an import error)."""

        def parsed() -> dict[str, Any] | None:
            errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                raise HarnessError(f"DAG import errors: {json.dumps(errors, indent=2)[:4000]}")
            response = self.request("GET", f"/api/v2/dags/{dag_id}")
            return response.json() if response.status_code == 200 else None

        return self.wait_for(parsed, timeout=timeout, what=f"DAG {dag_id} to be parsed")

    def trigger_dag(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Create a manual run; returns its run id."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        return str(self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, oldest first (scheduled ones included)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns"
        return list(self.api("GET", path, params={"limit": 100, "order_by": "run_after"})["dag_runs"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}")

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}")

    def ti_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self.task_instance(dag_id, run_id, task_id).get("state")

    def task_instances(self, dag_id: str, run_id: str = "~", **filters: Any) -> list[dict[str, Any]]:
        """Task instances of one run, or of every run with ``run_id="~"``, every page of them.

        :param filters: query parameters of the list endpoint, e.g. ``state="deferred"``.
        """
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", path, params={**filters, "limit": 100, "offset": len(found)})
            found.extend(page["task_instances"])
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def set_ti_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """``PATCH`` a task instance's state, as a user marking it in the UI does."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}"
        return self.api("PATCH", path, json={"new_state": state})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        params = {"deserialize": True, "stringify": False, "map_index": map_index}
        return self.api("GET", path, params=params)["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log through the REST API (worker and trigger parts merged), as text."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        params = {"full_content": True, "map_index": map_index}
        body = self.api("GET", path, params=params, headers={"Accept": "application/json"})
        content = body.get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(item) if not isinstance(item, str) else item for item in content)
        return str(content)

    def wait_for_state(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout: float = 120
    ) -> str:
        """Until the task instance reaches one of ``states``; a different terminal state fails early."""
        wanted = set(states)

        def reached() -> str | None:
            state = self.ti_state(dag_id, run_id, task_id)
            if state in wanted:
                return state
            if state in TERMINAL_TI_STATES:
                raise HarnessError(
                    f"{dag_id}/{run_id}/{task_id} ended {state}, not {sorted(wanted)}.\n"
                    f"Task log:\n{self.task_log(dag_id, run_id, task_id)[-4000:]}\n{self.log_tails()}"
                )
            return None

        return self.wait_for(reached, timeout=timeout, what=f"{dag_id}/{run_id}/{task_id} in {sorted(wanted)}")


def _q(value: str) -> str:
    return quote(value, safe="")
