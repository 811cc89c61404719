"""The "Claude Batches" Airflow UI plugin: a fleet page, a per-task page and their JSON API.

Mounted on the api-server at ``/claude-batch`` (``fastapi_apps``), shown in the UI through
``external_views``: "Claude Batches" under Browse, and a "Claude batch" tab on task instances.
Every route, the HTML pages included, requires Airflow's authentication and read access to the
DAG's XComs: no credentials get 401. The UI's ``_token`` cookie is accepted, so the pages work
inside the UI's iframe and their JavaScript can poll the JSON.

Routes (under ``/claude-batch``):

* ``GET /``: the fleet page; ``GET /task/{dag_id}/{run_id}/{task_id}?map_index=``: one task;
* ``GET /api/batches?dag_id=&limit=``: rows for every batch task the user may read;
* ``GET /api/task/{dag_id}/{run_id}/{task_id}?map_index=``: the row of one task (404 if none).

Registered through the ``airflow.plugins`` entry point (provider-info ``plugins`` is read only with
``[core] lazy_discover_providers = False``). See ``docs/monitoring.md``.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from airflow_provider_claude_batch.links import PLUGIN_PREFIX
from airflow_provider_claude_batch.plugins.monitor import PROGRESS_NOTE, BatchStatusCache, build_rows, find_batch_tasks

__all__ = ["ClaudeBatchPlugin", "app", "create_app", "status_cache"]

REFRESH_SECONDS = 10
status_cache = BatchStatusCache()
"""One cache per api-server process: every browser polling the page shares its look-ups."""


def create_app(cache: BatchStatusCache | None = None) -> FastAPI:
    """The plugin's FastAPI app; every route requires read access to DAG XComs.

    :param cache: where live batch status is cached (a fresh one for tests).
    """
    lookups = cache or status_cache
    # On the app, so no route can be added without it. dag_id comes from the path when there is one.
    read_xcom = Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.XCOM))
    sub_app = FastAPI(
        title="Claude Batches",
        description="Claude Message Batches submitted by Airflow tasks: status, 24-hour window, cost.",
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
        # Only DAGs this user may read. (Airflow's ReadableDagsFilterDep reads the auth manager from
        # request.app.state, which in a mounted sub-app is ours, not the api-server's.)
        readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
        records = find_batch_tasks(session, readable_dag_ids=readable, dag_id=dag_id, limit=limit)
        rows = build_rows(records, lookups)
        return _payload(rows)

    @sub_app.get("/api/task/{dag_id}/{run_id}/{task_id}")
    def one_task(
        dag_id: str,
        run_id: str,
        task_id: str,
        session: SessionDep,
        map_index: Annotated[int, Query()] = -1,
    ) -> dict[str, Any]:
        """The row of one task instance (its batches, status, window, cost)."""
        records = find_batch_tasks(session, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
        if not records:
            raise HTTPException(404, f"No Claude batch recorded for {dag_id}/{run_id}/{task_id}[{map_index}]")
        rows = build_rows(records, lookups)
        return {**_payload(rows), "row": rows[0]}

    @sub_app.get("/", response_class=HTMLResponse)
    def fleet_page(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page(request.scope.get("root_path", PLUGIN_PREFIX), task=None))

    @sub_app.get("/task/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse)
    def task_page(
        request: Request, dag_id: str, run_id: str, task_id: str, map_index: Annotated[int, Query()] = -1
    ) -> HTMLResponse:
        task = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index}
        return HTMLResponse(render_page(request.scope.get("root_path", PLUGIN_PREFIX), task=task))

    return sub_app


def _payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "refresh_seconds": REFRESH_SECONDS,
        "progress_note": PROGRESS_NOTE,
        "total": len(rows),
        "rows": rows,
    }


def render_page(root_path: str, task: dict[str, Any] | None) -> str:
    """The fleet page (``task=None``) or one task's page: static HTML whose script renders the JSON.

    :param root_path: where the app is mounted (``/claude-batch``), for the script's API calls.
    :param task: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` of the per-task page.
    """
    prefix = (root_path or PLUGIN_PREFIX).rstrip("/")
    config = {
        "prefix": prefix,
        "task": task,
        "refreshSeconds": REFRESH_SECONDS,
        "progressNote": PROGRESS_NOTE,
    }
    if task is None:
        title = "Claude Batches"
        subtitle = "Message Batches submitted by Airflow tasks"
    else:
        title = f"Claude batch · {task['task_id']}"
        subtitle = f"{task['dag_id']} / {task['run_id']}" + (
            f" / map {task['map_index']}" if task["map_index"] >= 0 else ""
        )
    # </ cannot close the script element from inside the JSON.
    config_json = json.dumps(config).replace("</", "<\\/")
    return (
        _PAGE.replace("{{TITLE}}", html.escape(title))
        .replace("{{SUBTITLE}}", html.escape(subtitle))
        .replace("{{CONFIG}}", config_json)
        .replace("{{FLEET_URL}}", html.escape(prefix + "/"))
    )


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  :root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#fff; --soft:#f6f8fa; --accent:#c15f3c;
          --ok:#1a7f37; --warn:#9a6700; --bad:#cf222e; --run:#0969da; }
  @media (prefers-color-scheme: dark) {
    :root { --fg:#e6edf3; --muted:#8d96a0; --line:#30363d; --bg:#0d1117; --soft:#161b22; --accent:#e07a54;
            --ok:#3fb950; --warn:#d29922; --bad:#f85149; --run:#4493f8; }
  }
  * { box-sizing: border-box; }
  body { margin:0; padding:16px 20px; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
         color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:baseline; gap:16px; flex-wrap:wrap; margin-bottom:12px; }
  h1 { font-size:20px; margin:0; } h1 .mark { color:var(--accent); }
  .sub { color:var(--muted); }
  .meta { margin-left:auto; color:var(--muted); font-size:12px; }
  .note { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:8px 10px;
          color:var(--muted); font-size:12px; margin-bottom:12px; }
  .summary { display:flex; gap:10px; flex-wrap:wrap; margin-bottom:12px; }
  .card { border:1px solid var(--line); border-radius:6px; padding:8px 12px; min-width:120px; }
  .card b { display:block; font-size:18px; }
  .card span { color:var(--muted); font-size:12px; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { font-size:12px; color:var(--muted); font-weight:600; background:var(--soft); position:sticky; top:0; }
  td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
  code, .mono { font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
  a { color:var(--run); text-decoration:none; } a:hover { text-decoration:underline; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600;
           border:1px solid currentColor; white-space:nowrap; }
  .s-in_progress { color:var(--run); } .s-ended { color:var(--ok); } .s-canceling { color:var(--warn); }
  .s-unknown { color:var(--muted); } .t-failed, .t-upstream_failed { color:var(--bad); }
  .t-success { color:var(--ok); } .t-deferred { color:#7c3aed; }
  .t-running, .t-queued, .t-scheduled { color:var(--run); }
  .state { display:block; margin-top:3px; font-size:12px; }
  .scroll { overflow-x:auto; }
  .bar { position:relative; width:150px; height:10px; border-radius:5px; background:var(--soft);
         border:1px solid var(--line); overflow:hidden; cursor:help; }
  .bar > i { position:absolute; left:0; top:0; bottom:0; background:var(--run); }
  .bar.ended > i { background:var(--ok); } .bar.late > i { background:var(--warn); }
  .barlabel { font-size:12px; color:var(--muted); margin-top:3px; white-space:nowrap; }
  .counts { font-size:12px; white-space:nowrap; } .counts .c-succeeded { color:var(--ok); }
  .counts .c-errored, .counts .c-expired { color:var(--bad); } .counts .c-canceled { color:var(--warn); }
  .err { color:var(--bad); font-size:12px; }
  .muted { color:var(--muted); }
  .empty { padding:24px; text-align:center; color:var(--muted); }
  .ids code { display:block; }
  button.copy { font-size:11px; padding:0 6px; margin-left:4px; cursor:pointer; background:var(--soft);
                color:var(--fg); border:1px solid var(--line); border-radius:4px; }
  dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0 0 16px; }
  dl.kv dt { color:var(--muted); } dl.kv dd { margin:0; }
  h2 { font-size:15px; margin:20px 0 8px; }
</style>
</head>
<body>
<header>
  <h1><span class="mark">&#9670;</span> {{TITLE}}</h1>
  <span class="sub">{{SUBTITLE}}</span>
  <span class="meta"><a href="{{FLEET_URL}}" id="fleet-link">All batches</a> &middot;
    <span id="updated">loading&hellip;</span></span>
</header>
<div class="note" id="note"></div>
<div class="summary" id="summary"></div>
<div id="content"><div class="empty">Loading&hellip;</div></div>
<script id="config" type="application/json">{{CONFIG}}</script>
<script>
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var PLUGIN_PREFIX = "/claude-batch";  // task_page paths start with it; cfg.prefix is where we are mounted
  var content = document.getElementById("content");
  document.getElementById("note").textContent = "Bars show " + cfg.progressNote.charAt(0).toLowerCase() +
    cfg.progressNote.slice(1) + " Refreshes every " + cfg.refreshSeconds + " s.";
  if (!cfg.task) { document.getElementById("fleet-link").style.display = "none"; }

  function esc(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "\\u2013"; }
    var s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h) { return h + "h " + (m < 10 ? "0" : "") + m + "m"; }
    if (m) { return m + "m " + (s % 60 < 10 ? "0" : "") + (s % 60) + "s"; }
    return s + "s";
  }
  function usd(value) {
    if (value === null || value === undefined) { return "\\u2013"; }
    return "$" + Number(value).toFixed(value >= 1 ? 2 : 4);
  }
  function num(value) {
    return value === null || value === undefined ? "\\u2013" : Number(value).toLocaleString("en-US");
  }
  function counts(c) {
    var names = ["processing", "succeeded", "errored", "canceled", "expired"], parts = [];
    Object.keys(c || {}).forEach(function (k) { if (names.indexOf(k) < 0) { names.push(k); } });
    names.forEach(function (k) {
      if (c && c[k]) { parts.push('<span class="c-' + esc(k) + '">' + esc(k) + " " + num(c[k]) + "</span>"); }
    });
    return parts.length ? parts.join(" &middot; ") : '<span class="muted">\\u2013</span>';
  }
  function bar(w, status) {
    if (!w || w.elapsed_seconds === null || w.elapsed_seconds === undefined) {
      return '<span class="muted">\\u2013</span>';
    }
    var pct = Math.max(0.5, Math.min(100, (w.fraction || 0) * 100)), cls = "bar";
    if (w.ended_at) { cls += " ended"; } else if (w.fraction > 0.75) { cls += " late"; }
    var tip = cfg.progressNote + " Created " + (w.created_at || "?") + "; expires " + (w.expires_at || "?") + ".";
    var label = w.ended_at ? "ended after " + duration(w.elapsed_seconds)
      : duration(w.elapsed_seconds) + " of " + duration(w.window_seconds);
    return '<div class="' + cls + '" title="' + esc(tip) + '" data-fraction="' + esc(w.fraction) + '">' +
      '<i style="width:' + pct.toFixed(2) + '%"></i></div><div class="barlabel">' + esc(label) + "</div>";
  }
  function expiry(w) {
    if (!w || w.seconds_to_expiry === null || w.seconds_to_expiry === undefined) { return ""; }
    return '<div class="barlabel">expires in ' + esc(duration(w.seconds_to_expiry)) + "</div>";
  }
  function statusCell(row) {
    return '<span class="badge s-' + esc(row.status) + '">' + esc(row.status.replace("_", " ")) + "</span>" +
      '<span class="state t-' + esc(row.task_state) + '">task ' + esc(row.task_state || "unknown") + "</span>";
  }
  function results(row) {
    if (!row.results_uri) { return '<span class="muted">not landed yet</span>'; }
    var uri = String(row.results_uri), link = /^https?:/.test(uri) ? '<a href="' + esc(uri) + '">results</a>'
      : '<code title="' + esc(uri) + '">' + esc(uri.split("/").slice(-2).join("/")) + "</code>";
    return link + '<button class="copy" data-copy="' + esc(uri) + '" title="Copy ' + esc(uri) + '">copy</button>';
  }
  function taskLabel(row) {
    return esc(row.task_id) + (row.map_index >= 0 ? ' <span class="muted">[' + esc(row.map_index) + "]</span>" : "");
  }
  function airflowTaskUrl(row) {
    return "/dags/" + encodeURIComponent(row.dag_id) + "/runs/" + encodeURIComponent(row.run_id) + "/tasks/" +
      encodeURIComponent(row.task_id) + (row.map_index >= 0 ? "/mapped/" + row.map_index : "");
  }
  function errors(row) {
    return (row.errors || []).map(function (e) { return '<div class="err">' + esc(e) + "</div>"; }).join("");
  }
  function summary(rows) {
    var running = 0, requests = 0, cost = 0, saving = 0;
    rows.forEach(function (r) {
      if (r.status === "in_progress" || r.status === "canceling") { running += 1; }
      requests += r.request_total || 0;
      if (r.cost) { cost += r.cost.batch_usd || 0; saving += r.cost.saving_usd || 0; }
    });
    return [["tasks", rows.length], ["running", running], ["requests", num(requests)],
            ["landed cost", usd(cost)], ["saved vs. sync", usd(saving)]].map(function (p) {
      return '<div class="card"><b>' + esc(p[1]) + "</b><span>" + esc(p[0]) + "</span></div>";
    }).join("");
  }
  function fleetTable(rows) {
    if (!rows.length) {
      return '<div class="empty">No Claude batches yet. ' +
        "Tasks of ClaudeBatchOperator appear here once they submit.</div>";
    }
    var head = "<tr><th>DAG / run</th><th>Task</th><th>Batches</th><th>Status</th><th>Requests</th>" +
      "<th>24-hour window</th><th>Tokens in / out</th><th>Cost</th><th>Saving</th><th>Results</th></tr>";
    var body = rows.map(function (r) {
      var ids = r.batch_ids.map(function (b) {
        return '<code title="' + esc(b) + '">' + esc(b.length > 22 ? b.slice(0, 21) + "\\u2026" : b) + "</code>";
      }).join("");
      var tokens = r.usage ? num(r.usage.input_tokens) + " / " + num(r.usage.output_tokens) : "\\u2013";
      return '<tr class="batch-row" data-dag="' + esc(r.dag_id) + '" data-run="' + esc(r.run_id) + '" data-status="' +
        esc(r.status) + '"><td><b>' + esc(r.dag_id) + '</b><div class="mono muted">' + esc(r.run_id) +
        "</div></td><td>" +
        '<a href="' + esc(cfg.prefix + r.task_page.slice(PLUGIN_PREFIX.length)) + '">' + taskLabel(r) + "</a></td>" +
        '<td class="ids">' + ids + errors(r) + "</td><td>" + statusCell(r) + '</td><td class="counts">' +
        counts(r.request_counts) + "</td><td>" + bar(r.window, r.status) + expiry(r.window) +
        '</td><td class="num">' + tokens + '</td><td class="num">' + (r.cost ? usd(r.cost.batch_usd) : "\\u2013") +
        '</td><td class="num saving">' + (r.cost ? usd(r.cost.saving_usd) : "\\u2013") + "</td><td>" + results(r) +
        "</td></tr>";
    }).join("");
    return '<div class="scroll"><table><thead>' + head + "</thead><tbody>" + body + "</tbody></table></div>";
  }
  function taskView(row) {
    var w = row.window || {};
    var kv = [
      ["Status", statusCell(row)], ["Requests", '<span class="counts">' + counts(row.request_counts) + "</span>"],
      ["24-hour window", bar(w, row.status)],
      ["Created", esc(w.created_at || "\\u2013")],
      ["Expires", esc(w.expires_at || "\\u2013") + (w.seconds_to_expiry !== null && w.seconds_to_expiry !== undefined
        ? " (in " + duration(w.seconds_to_expiry) + ")" : "")],
      ["Ended", esc(w.ended_at || "\\u2013")],
      ["Tokens in / out", row.usage ? num(row.usage.input_tokens) + " / " + num(row.usage.output_tokens) : "\\u2013"],
      ["Cost (batch)", row.cost ? usd(row.cost.batch_usd) + ' <span class="muted">(sync would be ' +
        usd(row.cost.sync_usd) + ")</span>" : '<span class="muted">once the results land</span>'],
      ["Saving", row.cost ? '<span class="saving">' + usd(row.cost.saving_usd) + "</span>" : "\\u2013"],
      ["Results", results(row)], ["Connection", "<code>" + esc(row.conn_id) + "</code>"],
      ["Airflow", '<a href="' + esc(airflowTaskUrl(row)) + '" target="_top">task instance</a> (try ' +
        esc(row.try_number) + ")"]
    ].map(function (p) { return "<dt>" + p[0] + "</dt><dd>" + p[1] + "</dd>"; }).join("");
    var batches = row.batches.map(function (b) {
      return '<tr class="batch-row" data-status="' + esc(b.processing_status) + '"><td><code>' + esc(b.batch_id) +
        "</code></td><td>" + (b.error ? '<span class="err">' + esc(b.error) + "</span>"
        : '<span class="badge s-' + esc(b.processing_status) + '">' + esc(b.processing_status) + "</span>") +
        '</td><td class="counts">' + counts(b.request_counts) + "</td><td>" + esc(b.created_at || "") +
        "</td><td>" + esc(b.expires_at || "") + "</td><td>" + esc(b.ended_at || "") + "</td></tr>";
    }).join("");
    return '<dl class="kv">' + kv + "</dl>" + errors(row) + "<h2>Batches</h2><table><thead><tr><th>Batch</th>" +
      "<th>Status</th><th>Requests</th><th>Created</th><th>Expires</th><th>Ended</th></tr></thead><tbody>" +
      batches + "</tbody></table>";
  }
  function url() {
    if (!cfg.task) { return cfg.prefix + "/api/batches"; }
    var t = cfg.task;
    return cfg.prefix + "/api/task/" + [t.dag_id, t.run_id, t.task_id].map(encodeURIComponent).join("/") +
      "?map_index=" + encodeURIComponent(t.map_index);
  }
  function refresh() {
    fetch(url(), {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        throw new Error("Not signed in to Airflow (HTTP " + response.status + "): open this page from the Airflow UI.");
      }
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      if (cfg.task) {
        document.getElementById("summary").innerHTML = "";
        content.innerHTML = taskView(data.row);
      } else {
        document.getElementById("summary").innerHTML = summary(data.rows);
        content.innerHTML = fleetTable(data.rows);
      }
      document.body.setAttribute("data-loaded", "true");
      document.getElementById("updated").textContent = "updated " + new Date(data.generated_at).toLocaleTimeString();
    }).catch(function (error) {
      document.getElementById("updated").innerHTML = '<span class="err">' + esc(error.message) + "</span>";
    });
  }
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.matches && target.matches("button.copy") && navigator.clipboard) {
      navigator.clipboard.writeText(target.getAttribute("data-copy"));
    }
  });
  refresh();
  setInterval(refresh, cfg.refreshSeconds * 1000);
})();
</script>
</body>
</html>
"""


app = create_app()


class ClaudeBatchPlugin(AirflowPlugin):
    """Claude batch monitoring in the Airflow UI (fleet page, per-task tab, JSON API)."""

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
            "name": "Claude batch",
            "href": f"{PLUGIN_PREFIX}/task/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "claude-batch-task",
        },
    ]
