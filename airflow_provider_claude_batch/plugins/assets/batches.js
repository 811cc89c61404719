// The "Claude Batches" pages: the fleet table, or one task instance's view (the task's "Claude batch" tab).
// Renders the plugin's JSON API and refreshes it; every value is escaped before it reaches the DOM.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var PLUGIN_PREFIX = "/claude-batch";  // task_page paths start with it; cfg.prefix is where we are mounted
  var DASH = "\u2013";
  var content = document.getElementById("content");
  document.getElementById("note").textContent = "Bars show " + cfg.progressNote.charAt(0).toLowerCase() +
    cfg.progressNote.slice(1) + " Refreshes every " + cfg.refreshSeconds + " s.";

  function esc(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return DASH; }
    var s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h) { return h + "h " + (m < 10 ? "0" : "") + m + "m"; }
    if (m) { return m + "m " + (s % 60 < 10 ? "0" : "") + (s % 60) + "s"; }
    return s + "s";
  }
  function usd(value) {
    if (value === null || value === undefined) { return DASH; }
    return "$" + Number(value).toFixed(value >= 1 ? 2 : 4);
  }
  function num(value) {
    return value === null || value === undefined ? DASH : Number(value).toLocaleString("en-US");
  }
  function counts(c) {
    var names = ["processing", "succeeded", "errored", "canceled", "expired"], parts = [];
    Object.keys(c || {}).forEach(function (k) { if (names.indexOf(k) < 0) { names.push(k); } });
    names.forEach(function (k) {
      if (c && c[k]) { parts.push('<span class="c-' + esc(k) + '">' + esc(k) + " " + num(c[k]) + "</span>"); }
    });
    return parts.length ? parts.join(" &middot; ") : '<span class="muted">' + DASH + "</span>";
  }
  function bar(w) {
    if (!w || w.elapsed_seconds === null || w.elapsed_seconds === undefined) {
      return '<span class="muted">' + DASH + "</span>";
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
        return '<code title="' + esc(b) + '">' + esc(b.length > 22 ? b.slice(0, 21) + "\u2026" : b) + "</code>";
      }).join("");
      var tokens = r.usage ? num(r.usage.input_tokens) + " / " + num(r.usage.output_tokens) : DASH;
      return '<tr class="batch-row" data-dag="' + esc(r.dag_id) + '" data-run="' + esc(r.run_id) + '" data-status="' +
        esc(r.status) + '"><td><b>' + esc(r.dag_id) + '</b><div class="mono muted">' + esc(r.run_id) +
        "</div></td><td>" +
        '<a href="' + esc(cfg.prefix + r.task_page.slice(PLUGIN_PREFIX.length)) + '">' + taskLabel(r) + "</a></td>" +
        '<td class="ids">' + ids + errors(r) + "</td><td>" + statusCell(r) + '</td><td class="counts">' +
        counts(r.request_counts) + "</td><td>" + bar(r.window) + expiry(r.window) +
        '</td><td class="num">' + tokens + '</td><td class="num">' + (r.cost ? usd(r.cost.batch_usd) : DASH) +
        '</td><td class="num saving">' + (r.cost ? usd(r.cost.saving_usd) : DASH) + "</td><td>" + results(r) +
        "</td></tr>";
    }).join("");
    return '<div class="scroll"><table><thead>' + head + "</thead><tbody>" + body + "</tbody></table></div>";
  }
  function costRows(row) {
    if (!row.cost) { return [["Cost (batch)", '<span class="muted">once the results land</span>'], ["Saving", DASH]]; }
    var rows;
    if (row.route === "sync") {
      // Nothing was saved on this route: what batching would have saved is a different number, named so.
      rows = [["Cost (sync)", usd(row.cost.sync_usd) + ' <span class="muted">(batch would be ' +
                usd(row.cost.batch_usd) + ")</span>"],
              ["Batching would have saved", '<span class="would-save">' + usd(row.cost.batching_would_save_usd) +
                '</span> <span class="muted">if nobody waits on it: see Routing &amp; cost</span>']];
    } else {
      rows = [["Cost (batch)", usd(row.cost.batch_usd) + ' <span class="muted">(sync would be ' +
                usd(row.cost.sync_usd) + ")</span>"],
              ["Saving", '<span class="saving">' + usd(row.cost.saving_usd) + "</span>"]];
    }
    if (row.cost.cache_saving_usd) {  // the cache's tokens at the input price, less what they cost
      rows.push(["Prompt cache saved", '<span class="cache-saving">' + usd(row.cost.cache_saving_usd) + "</span>"]);
    }
    return rows;
  }
  function taskView(row) {
    var w = row.window || {};
    var route = row.route === "sync" ? "synchronous Messages API (ClaudeMessageOperator)" : "Message Batches API";
    var kv = [
      ["Status", statusCell(row)], ["Route", esc(route)],
      ["Requests", '<span class="counts">' + counts(row.request_counts) + "</span>"]
    ];
    if (row.route !== "sync") {
      kv = kv.concat([
        ["24-hour window", bar(w)], ["Created", esc(w.created_at || DASH)],
        ["Expires", esc(w.expires_at || DASH) + (w.seconds_to_expiry !== null && w.seconds_to_expiry !== undefined
          ? " (in " + duration(w.seconds_to_expiry) + ")" : "")],
        ["Ended", esc(w.ended_at || DASH)]
      ]);
    }
    kv = kv.concat(
      [["Tokens in / out", row.usage ? num(row.usage.input_tokens) + " / " + num(row.usage.output_tokens) : DASH]],
      costRows(row),
      [["Results", results(row)], ["Connection", "<code>" + esc(row.conn_id) + "</code>"],
       ["Airflow", '<a href="' + esc(airflowTaskUrl(row)) + '" target="_top">task instance</a>' +
         (row.try_number ? " (try " + esc(row.try_number) + ")" : "")]]);
    var html = '<dl class="kv">' + kv.map(function (p) { return "<dt>" + p[0] + "</dt><dd>" + p[1] + "</dd>"; })
      .join("") + "</dl>" + errors(row);
    if (!row.batches.length) { return html; }
    var batches = row.batches.map(function (b) {
      return '<tr class="batch-row" data-status="' + esc(b.processing_status) + '"><td><code>' + esc(b.batch_id) +
        "</code></td><td>" + (b.error ? '<span class="err">' + esc(b.error) + "</span>"
        : '<span class="badge s-' + esc(b.processing_status) + '">' + esc(b.processing_status) + "</span>") +
        '</td><td class="counts">' + counts(b.request_counts) + "</td><td>" + esc(b.created_at || "") +
        "</td><td>" + esc(b.expires_at || "") + "</td><td>" + esc(b.ended_at || "") + "</td></tr>";
    }).join("");
    return html + "<h2>Batches</h2><table><thead><tr><th>Batch</th>" +
      "<th>Status</th><th>Requests</th><th>Created</th><th>Expires</th><th>Ended</th></tr></thead><tbody>" +
      batches + "</tbody></table>";
  }
  function url() {
    if (!cfg.task) { return cfg.prefix + "/api/batches"; }
    var t = cfg.task;
    return cfg.prefix + "/api/task/" + [t.dag_id, t.run_id, t.task_id].map(encodeURIComponent).join("/") +
      "?map_index=" + encodeURIComponent(t.map_index);
  }
  function render(data) {
    document.getElementById("summary").innerHTML = cfg.task ? "" : summary(data.rows);
    if (!cfg.task) {
      content.innerHTML = fleetTable(data.rows);
    } else if (data.row) {
      content.innerHTML = taskView(data.row);
    } else {
      // A mapped task opened without a map index: its mapped instances, each linking to its own view.
      content.innerHTML = '<p class="muted">' + esc(data.message) + "</p>" + fleetTable(data.rows);
    }
  }
  function refresh() {
    fetch(url(), {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        throw new Error("Not signed in to Airflow (HTTP " + response.status + "): open this page from the Airflow UI.");
      }
      return response.json().then(function (body) { return {status: response.status, body: body}; });
    }).then(function (answer) {
      if (answer.status === 404 && cfg.task) {
        // Not a Claude task (the tab shows on every task instance), or it has not submitted yet.
        content.innerHTML = '<div class="empty" id="not-claude">' + esc(answer.body.detail) + "</div>";
      } else if (answer.status >= 400) {
        throw new Error("HTTP " + answer.status + ": " + JSON.stringify(answer.body.detail));
      } else {
        render(answer.body);
      }
      document.body.setAttribute("data-loaded", "true");
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
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
