"""The "Claude Batches" plugin without a browser: Airflow's own API app in-process, real auth, real data.

The app is Airflow's ``create_app("core")`` (which mounts every plugin, ours through its
``airflow.plugins`` entry point) with SimpleAuthManager, driven by ``fastapi.testclient``. The data
comes from a real ``dag.test()`` run of ``ClaudeBatchOperator`` against the emulator, plus the pure
row builder fed with hand-made snapshots.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from airflow_support import run_dag
from support import REPO_ROOT, TEST_API_KEY

from airflow_provider_claude_batch.links import ClaudeBatchLink, task_page_path
from airflow_provider_claude_batch.metrics import emit_landed_metrics
from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator
from airflow_provider_claude_batch.plugins.monitor import (
    BatchStatusCache,
    Lookup,
    TaskRecord,
    build_row,
)
from airflow_provider_claude_batch.polling import BatchSnapshot

PASSWORD = "ui-test-password"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def snapshot(batch_id: str, status: str, created: datetime, ended: datetime | None = None, **counts: int):
    full = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts}
    return BatchSnapshot(
        batch_id=batch_id,
        processing_status=status,
        request_counts=full,
        created_at=created.isoformat(),
        expires_at=(created + timedelta(hours=24)).isoformat(),
        ended_at=ended.isoformat() if ended else None,
        results_url=f"https://api.example.invalid/v1/messages/batches/{batch_id}/results",
    )


# -- the row builder (pure) --------------------------------------------------------------------


def test_running_row_shows_elapsed_time_in_the_24h_window_not_fake_progress():
    record = TaskRecord("nightly", "run1", "summarise", -1, ["b1"], state="deferred")
    lookups = {
        ("claude_default", "b1"): Lookup(
            snapshot("b1", "in_progress", NOW - timedelta(hours=6), processing=40), None, 0
        )
    }
    row = build_row(record, lookups, NOW)
    assert row["status"] == "in_progress" and row["task_state"] == "deferred"
    assert row["request_counts"]["processing"] == 40 and row["request_total"] == 40
    assert row["window"]["fraction"] == pytest.approx(0.25)
    assert row["window"]["seconds_to_expiry"] == pytest.approx(18 * 3600)
    assert row["landed"] is False and row["cost"] is None and row["results_uri"] is None
    assert row["task_page"] == "/claude-batch/task/nightly/run1/summarise?map_index=-1"
    assert "results_url" not in row["batches"][0]  # the API's URL would need the key


def test_landed_row_takes_counts_tokens_and_cost_from_the_manifest():
    manifest = {
        "results_uri": "file:///data/out/results.jsonl",
        "request_count": 3,
        "counts": {"succeeded": 2, "errored": 1, "expired": 0, "canceled": 0, "invalid_output": 0},
        "usage": {"input_tokens": 300, "output_tokens": 90, "cache_creation_input_tokens": 0},
        "cost": {"batch_usd": 0.0021, "sync_usd": 0.0042, "saving_usd": 0.0021, "prices_as_of": "2026-01-01"},
        "route": "batch",
        "landed_at": NOW.isoformat(),
    }
    record = TaskRecord("d", "r", "t", 2, ["b1", "b2"], state="success", manifest=manifest)
    created = NOW - timedelta(hours=2)
    lookups = {
        ("claude_default", "b1"): Lookup(
            snapshot("b1", "ended", created, created + timedelta(hours=1), succeeded=2), None, 0
        ),
        ("claude_default", "b2"): Lookup(None, "Could not read batch b2: HTTP 404 NotFoundError", 0),
    }
    row = build_row(record, lookups, NOW)
    assert row["landed"] and row["status"] == "ended"
    assert row["request_counts"] == {"succeeded": 2, "errored": 1} and row["request_total"] == 3
    assert row["usage"]["output_tokens"] == 90
    assert row["cost"]["saving_usd"] == 0.0021
    assert row["errors"] == ["Could not read batch b2: HTTP 404 NotFoundError"]
    assert row["task_page"].endswith("?map_index=2")


def test_status_cache_reuses_fresh_lookups_and_reports_errors_instead_of_raising():
    calls: list[tuple[str, list[str]]] = []
    clock = [0.0]

    def refresh(conn_id: str, batch_ids: list[str], submitted_at: dict[str, float]) -> dict:
        calls.append((conn_id, list(batch_ids)))
        if conn_id == "down":
            raise ConnectionError("down")
        return {
            bid: "Batch x was not found" if bid == "gone" else snapshot(bid, "in_progress", NOW, processing=1)
            for bid in batch_ids
        }

    cache = BatchStatusCache(refresh=refresh, clock=lambda: clock[0])
    first = cache.lookup_many([("c", "a"), ("c", "gone"), ("c", "a"), ("down", "b")])
    assert first[("c", "a")].snapshot is not None
    assert first[("c", "gone")].error == "Batch x was not found"
    assert first[("down", "b")].error == "Could not read batch b: ConnectionError"
    assert sorted(calls) == [("c", ["a", "gone"]), ("down", ["b"])]  # one refresh per connection
    cache.lookup_many([("c", "a")])
    assert len(calls) == 2  # served from the cache
    clock[0] = 60.0
    cache.lookup_many([("c", "a")])
    assert calls[-1] == ("c", ["a"])  # a running batch is looked at again after the TTL


def test_task_page_path_quotes_run_ids():
    path = task_page_path("dag", "manual__2026-01-01T00:00:00+00:00", "t", None)
    assert path == "/claude-batch/task/dag/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t?map_index=-1"


def test_metrics_are_emitted_through_airflows_stats(monkeypatch):
    from airflow_provider_claude_batch import metrics

    sent: list[tuple[str, int, dict]] = []

    class FakeStats:
        @staticmethod
        def incr(name, count=1, rate=None, *, tags=None):
            sent.append((name, count, tags))

    monkeypatch.setattr(metrics, "stats_client", lambda: FakeStats)
    manifest = {
        "route": "batch",
        "request_count": 5,
        "counts": {"succeeded": 4, "errored": 1},
        "usage": {"input_tokens": 100, "output_tokens": 40},
    }
    emit_landed_metrics(manifest)
    assert {(name, count) for name, count, _ in sent} == {
        ("claude_batch.submitted", 5),
        ("claude_batch.succeeded", 4),
        ("claude_batch.errored", 1),
        ("claude_batch.tokens.input", 100),
        ("claude_batch.tokens.output", 40),
    }
    assert all(tags == {"route": "batch"} for _, _, tags in sent)


def test_metrics_never_fail_a_task(monkeypatch):
    from airflow_provider_claude_batch import metrics

    def broken():
        raise RuntimeError("statsd misconfigured")

    monkeypatch.setattr(metrics, "stats_client", broken)
    assert emit_landed_metrics({"request_count": 1, "counts": {"succeeded": 1}})["claude_batch.submitted"] == 1


def test_the_real_stats_client_is_airflows():
    from airflow_provider_claude_batch.metrics import stats_client

    assert callable(stats_client().incr)


# -- the app, in Airflow's own API server app ----------------------------------------------------


@pytest.fixture
def api_client(airflow_db, claude_conn, claude_emulator, monkeypatch, tmp_path):
    """Airflow's core API app with SimpleAuthManager (admin) and our plugin mounted."""
    from fastapi.testclient import TestClient

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "ui-plugin-test-secret-" + "0123456789abcdef" * 4)
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.app import create_app

    from airflow_provider_claude_batch.plugins import ui

    ui.status_cache.clear()
    api_app.purge_cached_app()
    with TestClient(create_app("core")) as client:
        yield client
    api_app.purge_cached_app()


def token(client) -> str:
    response = client.post("/auth/token", json={"username": "admin", "password": PASSWORD})
    assert response.status_code in (200, 201), response.text
    return response.json()["access_token"]


def landed_run(claude_emulator, tmp_path):
    from airflow.sdk import DAG

    claude_emulator.configure(processing_seconds=0.3)
    with DAG("ui_plugin_landed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        ClaudeBatchOperator(
            task_id="batch",
            requests=[f"Summarise item {i}" for i in range(3)],
            model="claude-haiku-4-5",
            max_tokens=32,
            min_poll_interval=0.05,
            max_poll_interval=0.2,
            results_uri=f"file://{tmp_path}/out",
        )
    return run_dag(dag)


ENDPOINTS = (
    "/claude-batch/",
    "/claude-batch/api/batches",
    "/claude-batch/api/task/d/r/t?map_index=-1",
    "/claude-batch/task/d/r/t?map_index=-1",
)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_requires_authentication(api_client, path):
    assert api_client.get(path).status_code == 401
    assert api_client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_api_lists_a_landed_batch_with_cost_and_the_extra_link(api_client, claude_emulator, tmp_path):
    outcome = landed_run(claude_emulator, tmp_path)
    assert outcome.task_states == {"batch": "success"}
    manifest = outcome.xcom("batch")
    # The link's XCom was pushed at submission (so it shows while deferred) and points at our page.
    link = outcome.xcom("batch", ClaudeBatchLink().xcom_key)
    assert link.endswith(task_page_path("ui_plugin_landed", outcome_run_id(outcome), "batch", -1))

    headers = {"Authorization": f"Bearer {token(api_client)}"}
    body = api_client.get("/claude-batch/api/batches", headers=headers).json()
    assert {"generated_at", "refresh_seconds", "progress_note", "total", "rows"} <= set(body)
    [row] = [r for r in body["rows"] if r["dag_id"] == "ui_plugin_landed"]
    assert row["batch_ids"] == [manifest["batch_id"]]
    assert row["status"] == "ended" and row["task_state"] == "success" and row["landed"] is True
    assert row["request_counts"] == {"succeeded": 3} and row["request_total"] == 3
    assert row["cost"]["batch_usd"] == manifest["cost"]["batch_usd"]
    assert row["cost"]["saving_usd"] == manifest["cost"]["saving_usd"]
    assert row["usage"]["input_tokens"] == manifest["usage"]["input_tokens"]
    assert row["results_uri"] == manifest["results_uri"]
    assert row["window"]["ended_at"] and row["window"]["elapsed_seconds"] > 0 and row["window"]["fraction"] < 0.01
    assert row["batches"][0]["processing_status"] == "ended" and row["errors"] == []
    assert TEST_API_KEY not in json.dumps(body)

    one = api_client.get(row["task_page"].replace("/task/", "/api/task/"), headers=headers)
    assert one.status_code == 200 and one.json()["row"]["batch_ids"] == row["batch_ids"]
    missing = api_client.get("/claude-batch/api/task/ui_plugin_landed/nope/batch", headers=headers)
    assert missing.status_code == 404

    # The UI's session cookie works too: that is what the iframe and the page's script send.
    api_client.cookies.set("_token", token(api_client))
    page = api_client.get(row["task_page"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "ui_plugin_landed" in page.text and "<script" in page.text and "http" not in _external_refs(page.text)
    assert api_client.get("/claude-batch/").status_code == 200


def test_the_plugin_is_registered_with_its_views(api_client):
    headers = {"Authorization": f"Bearer {token(api_client)}"}
    plugins = api_client.get("/api/v2/plugins", headers=headers).json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "claude_batch"]
    views = {view["name"]: view for view in ours["external_views"]}
    assert views["Claude Batches"]["destination"] == "nav" and views["Claude Batches"]["category"] == "browse"
    assert views["Claude Batches"]["href"] == "/claude-batch/"
    assert views["Claude batch"]["destination"] == "task_instance"
    assert "{DAG_ID}" in views["Claude batch"]["href"] and "{MAP_INDEX}" in views["Claude batch"]["href"]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/claude-batch"


def outcome_run_id(outcome) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(XComModel.dag_id == "ui_plugin_landed").order_by(XComModel.timestamp.desc())
        ).first()
        return row.run_id


def _external_refs(page: str) -> str:
    """Every src=/href= value of a page, to check it loads nothing from elsewhere (no CDN)."""
    import re

    return " ".join(re.findall(r'(?:src|href)="([^"]+)"', page))


# -- the task tab, the sync route and Routing & cost, through Airflow's own API app ----------------


def ui_href(href: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """The iframe URL the Airflow UI (3.1 to 3.3) makes from an external view's href.

    It fills each placeholder its route has a value for: {MAP_INDEX} only on a mapped task's page
    (``.../mapped/<n>``). 3.3 URL-encodes the ids (3.1 does not; our run ids need no encoding there).
    """
    from urllib.parse import quote

    url = href.replace("{DAG_ID}", quote(dag_id, safe="")).replace("{RUN_ID}", quote(run_id, safe=""))
    url = url.replace("{TASK_ID}", quote(task_id, safe=""))
    return url if map_index is None else url.replace("{MAP_INDEX}", str(map_index))


@pytest.fixture
def tabs_run(api_client, claude_emulator, tmp_path):
    """One run with an unmapped and a mapped batch task, a synchronous task and a plain task."""
    from airflow.sdk import DAG, task

    from airflow_provider_claude_batch.operators.message import ClaudeMessageOperator

    claude_emulator.configure(processing_seconds=0.3)
    fast = {"min_poll_interval": 0.05, "max_poll_interval": 0.2, "model": "claude-haiku-4-5", "max_tokens": 32}
    with DAG("ui_tabs", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        ClaudeBatchOperator(task_id="unmapped", requests=["Summarise a", "Summarise b"], **fast)
        ClaudeBatchOperator.partial(task_id="mapped", **fast).expand(requests=[["Audit x"], ["Audit y", "Audit z"]])
        ClaudeMessageOperator(task_id="review", requests=["Review this diff"], model="claude-haiku-4-5", max_tokens=32)

        @task
        def plain() -> dict[str, list[str]]:
            # A dict return pushes one XCom per key (multiple_outputs), "batch_ids" included: not a batch task.
            return {"batch_ids": ["not-a-batch"]}

        plain()
    outcome = run_dag(dag)
    assert set(outcome.task_states.values()) == {"success"}, outcome.task_states
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_id = session.scalars(select(XComModel.run_id).where(XComModel.dag_id == "ui_tabs")).first()
    return {"run_id": run_id, "headers": {"Authorization": f"Bearer {token(api_client)}"}}


def test_the_tab_works_on_unmapped_and_mapped_tasks_as_the_ui_fills_its_url(api_client, tabs_run):
    headers, run_id = tabs_run["headers"], tabs_run["run_id"]
    plugins = api_client.get("/api/v2/plugins", headers=headers).json()["plugins"]
    [href] = [v["href"] for p in plugins if p["name"] == "claude_batch" for v in p["external_views"]
              if v["destination"] == "task_instance"]  # fmt: skip

    # Unmapped: the UI leaves {MAP_INDEX} in the URL. Airflow 3.3.2 answered this with int_parsing.
    page = ui_href(href, "ui_tabs", run_id, "unmapped", None)
    assert "map_index={MAP_INDEX}" in page
    html_page = api_client.get(page, headers=headers)
    assert html_page.status_code == 200 and '"map_index": -1' in html_page.text
    api = api_client.get(page.replace("/task/", "/api/task/"), headers=headers)
    assert api.status_code == 200, api.text
    assert api.json()["row"]["task_id"] == "unmapped" and api.json()["row"]["map_index"] == -1
    assert api.json()["row"]["request_counts"] == {"succeeded": 2}

    # Mapped: the UI fills the map index from its route; each instance has its own batch.
    for index, count in ((0, 1), (1, 2)):
        mapped = ui_href(href, "ui_tabs", run_id, "mapped", index).replace("/task/", "/api/task/")
        row = api_client.get(mapped, headers=headers).json()["row"]
        assert row["map_index"] == index and row["request_counts"] == {"succeeded": count}
        assert row["task_page"].endswith(f"?map_index={index}")

    # A mapped task asked without a map index lists its instances instead of failing.
    listing = api_client.get(ui_href(href, "ui_tabs", run_id, "mapped", None).replace("/task/", "/api/task/"),
                             headers=headers).json()  # fmt: skip
    assert listing["row"] is None and sorted(r["map_index"] for r in listing["rows"]) == [0, 1]
    assert "mapped task" in listing["message"]

    bad = api_client.get(f"/claude-batch/api/task/ui_tabs/{run_id}/unmapped?map_index=first", headers=headers)
    assert bad.status_code == 422 and "map_index must be a whole number" in bad.json()["detail"]


def test_the_tab_of_a_synchronous_task_says_what_batching_would_have_saved(api_client, tabs_run):
    headers, run_id = tabs_run["headers"], tabs_run["run_id"]
    body = api_client.get(f"/claude-batch/api/task/ui_tabs/{run_id}/review?map_index={{MAP_INDEX}}", headers=headers)
    assert body.status_code == 200, body.text
    row = body.json()["row"]
    assert row["route"] == "sync" and row["batch_ids"] == [] and row["task_state"] == "success"
    assert "saving_usd" not in row["cost"]  # nothing was saved on the synchronous route
    assert row["cost"]["batching_would_save_usd"] == pytest.approx(row["cost"]["sync_usd"] - row["cost"]["batch_usd"])
    assert row["cost"]["batching_would_save_usd"] > 0


def test_the_tab_of_a_task_that_is_not_claude_explains_instead_of_erroring(api_client, tabs_run):
    headers, run_id = tabs_run["headers"], tabs_run["run_id"]
    missing = api_client.get(f"/claude-batch/api/task/ui_tabs/{run_id}/plain?map_index={{MAP_INDEX}}", headers=headers)
    assert missing.status_code == 404
    assert "not a ClaudeBatchOperator or ClaudeMessageOperator task" in missing.json()["detail"]
    fleet = api_client.get("/claude-batch/api/batches?dag_id=ui_tabs", headers=headers).json()["rows"]
    assert {row["task_id"] for row in fleet} == {"unmapped", "mapped"}


def test_costs_api_and_routing_page_sum_the_landed_manifests(api_client, tabs_run):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    headers = tabs_run["headers"]
    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == "ui_tabs", XComModel.key == "return_value")
        ).all()
        manifests = [XComModel.deserialize_value(r) for r in rows]
    # Every run of the DAG in this database (each test that uses tabs_run adds one): the page sums them all.
    manifests = [m for m in manifests if isinstance(m, dict) and "manifest_uri" in m]
    batch = [m for m in manifests if m["route"] == "batch"]
    sync = [m for m in manifests if m["route"] == "sync"]
    runs = len(sync)
    assert runs >= 1 and len(batch) == 3 * runs
    assert all(m["submitted_at"] <= m["landed_at"] for m in manifests)

    costs = api_client.get("/claude-batch/api/costs?dag_id=ui_tabs", headers=headers).json()
    assert len(costs["days"]) == 30 and "ui_tabs" in costs["dag_ids"]
    assert costs["batch_route"]["spend_usd"] == pytest.approx(sum(m["cost"]["batch_usd"] for m in batch), abs=1e-6)
    assert sum(costs["batch_route"]["sync_equivalent_usd"]) == pytest.approx(
        sum(m["cost"]["sync_usd"] for m in batch), abs=1e-6
    )
    assert costs["sync_route"]["batching_would_save_usd"] == pytest.approx(
        sum(m["cost"]["batching_would_save_usd"] for m in sync), abs=1e-6
    )
    assert sum(costs["requests_by_outcome"]["succeeded"]) == 6 * runs  # 2 + 1 + 2 batched, 1 synchronous
    assert costs["tasks"] == {"batch": 3 * runs, "sync": runs} and costs["time_to_land"]["count"] == 3 * runs

    page = api_client.get("/claude-batch/routing?dag_id=ui_tabs", headers=headers)
    assert page.status_code == 200 and page.text.count("<svg") == 3
    assert '<option value="ui_tabs" selected>' in page.text
    assert api_client.get("/claude-batch/routing").status_code == 401


def test_routing_audit_parses_the_deployed_dag_folder_in_a_child_process(api_client, monkeypatch):
    from airflow.models.dagbag import DagBag
    from airflow_support import register_dag

    from airflow_provider_claude_batch.plugins import ui

    examples = REPO_ROOT / "dags_examples"
    # Deployed: the dag-processor has them in the database, which is what says who may read them.
    for dag in DagBag(dag_folder=str(examples)).dags.values():
        register_dag(dag)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(examples))
    ui.audit_runner._cached.clear()
    headers = {"Authorization": f"Bearer {token(api_client)}"}
    fragment = api_client.get("/claude-batch/routing/audit", headers=headers)
    assert fragment.status_code == 200, fragment.text
    assert fragment.text.count('class="audit-row"') == 3 and str(examples) in fragment.text
    assert 'data-dag="pre_merge_review" data-verdict="OK"' in fragment.text
    document = api_client.get("/claude-batch/api/audit", headers=headers).json()
    assert {t["dag_id"] for t in document["tasks"]} == {
        "nightly_test_generation",
        "compliance_audit",
        "pre_merge_review",
    }
    assert document["audited_at"] in fragment.text  # one audit, cached, answered both

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/nonexistent/dags")
    gone = api_client.get("/claude-batch/routing/audit", headers=headers)
    assert 'id="audit-error"' in gone.text and "has no DAG folder at /nonexistent/dags" in gone.text
