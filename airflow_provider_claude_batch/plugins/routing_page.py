"""The "Routing & cost" page: the routing audit of the deployed DAGs and three charts of the last days.

Pure: no Airflow import. :func:`render_routing_page` draws the charts from a
:class:`~.cost_history.CostHistory` (server-side SVG, :mod:`.charts`); the audit, which parses the
DAG folder and takes seconds, is loaded by the page's script as the HTML fragment
:func:`render_audit_fragment` makes from ``claude-batch audit --format json``.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from airflow_provider_claude_batch.plugins.charts import Series, bar_chart, compact_count, compact_usd
from airflow_provider_claude_batch.plugins.cost_history import CostHistory
from airflow_provider_claude_batch.plugins.pages import nav_links, render_document

__all__ = ["render_audit_fragment", "render_routing_page"]

_PALETTE_SIZE = 8
_CHART_WIDTH = 480  # three side by side on a wide screen, text still readable
_VERDICT_NOTES = {
    "OK": "on the route the rule gives",
    "VIOLATION": "batched, but something waits on it",
    "SAVING": "synchronous, but nobody waits on it: batching halves its cost",
}
# What a route means, shown beside its name (the rule's third route has conditions worth a tooltip).
_ROUTE_NOTES = {
    "batch with rescue": "batched; if it has not ended by the deadline minus the rescue lead, the rest runs "
    "synchronously, so the deadline holds",
}


def _usd(value: float | None) -> str:
    if value is None:
        return "\u2013"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _day_label(day: date) -> str:
    return day.strftime("%b %d")


def _cards(history: CostHistory) -> str:
    timing = history.time_to_land()
    cards = [
        ("batch-spend", _usd(history.batch_spend_usd), "spent on the batch route"),
        ("sync-equivalent", _usd(sum(history.batch_sync_equivalent)), "the same work synchronously"),
        ("batch-saving", _usd(history.batch_saving_usd), "saved by batching"),
        ("sync-spend", _usd(history.sync_spend_usd), "spent on the synchronous route"),
        ("would-save", _usd(history.sync_batching_would_save_usd), "batching would have saved there"),
        ("cache-saving", _usd(sum(history.cache_saving.values())), "saved by the prompt cache, both routes"),
        ("tasks", f"{history.tasks.get('batch', 0)} / {history.tasks.get('sync', 0)}", "landed tasks, batch / sync"),
        (
            "time-to-land",
            f"{_duration(timing['p50_seconds'])} / {_duration(timing['p90_seconds'])}",
            "batch time to land, median / p90",
        ),
    ]
    return "".join(
        f'<div class="card" id="card-{name}"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'
        for name, value, label in cards
    )


def _figure(name: str, svg: str, caption: str) -> str:
    return f'<figure class="chart" id="chart-{name}">{svg}<figcaption>{caption}</figcaption></figure>'


def _charts(history: CostHistory) -> str:
    labels = [_day_label(day) for day in history.days]
    every = max(1, len(labels) // 6)
    spend = [
        Series(dag, values, f"fill-{position % _PALETTE_SIZE}")
        for position, (dag, values) in enumerate(history.batch_spend.items())
    ]
    sync_line = Series("same work, synchronously", history.batch_sync_equivalent, "line")
    spend_svg = bar_chart(
        labels,
        spend,
        title="Spend per day on the batch route, by DAG",
        value_format=compact_usd,
        line=sync_line,
        width=_CHART_WIDTH,
        label_every=every,
        empty_text="No batch-route task landed in this period.",
    )
    outcomes = [Series(name, values, f"fill-{name}") for name, values in history.outcomes.items()]
    outcome_svg = bar_chart(
        labels,
        outcomes,
        title="Requests per day by outcome (both routes)",
        value_format=compact_count,
        width=_CHART_WIDTH,
        label_every=every,
    )
    timing = history.time_to_land()
    buckets = [item["bucket"] for item in timing["histogram"]]
    counts = [float(item["tasks"]) for item in timing["histogram"]]
    time_svg = bar_chart(
        buckets,
        [Series("batch tasks", counts, "fill-0")],
        title="Time from submission to landed results (batch route)",
        value_format=compact_count,
        width=_CHART_WIDTH,
        empty_text="No batch-route task with a submission time landed in this period.",
    )
    missing = timing["without_submission_time"]
    time_caption = (
        f"{timing['count']} batch task(s): median {_duration(timing['p50_seconds'])}, p90 "
        f"{_duration(timing['p90_seconds'])}, longest {_duration(timing['max_seconds'])}. One task in ten took "
        "longer than the p90: a job with a deadline shorter than that would miss it about as often on the batch "
        "route, whose only promise is 24 hours."
    )
    if missing:
        time_caption += f" {missing} older manifest(s) without a submission time are not counted."
    return (
        '<div class="charts">'
        + _figure(
            "spend",
            spend_svg,
            "Bars: what batch-route tasks cost, per DAG. Dashed line: what the same tokens would have cost on "
            "the Messages API. The gap is the saving.",
        )
        + _figure("outcomes", outcome_svg, "Rows landed per day, by status, on both routes.")
        + _figure("time-to-land", time_svg, html.escape(time_caption))
        + "</div>"
    )


def _dag_filter(history: CostHistory, selected: str | None) -> str:
    options = ['<option value="">all DAGs</option>']
    for dag in sorted({*history.dag_ids, *([selected] if selected else [])}):
        chosen = " selected" if dag == selected else ""
        options.append(f'<option value="{html.escape(dag)}"{chosen}>{html.escape(dag)}</option>')
    return (
        '<form class="filter" method="get"><label>DAG <select id="dag-filter" name="dag_id">'
        + "".join(options)
        + '</select></label><noscript> <button type="submit">show</button></noscript></form>'
    )


def render_routing_page(prefix: str, history: CostHistory, *, dag_id: str | None, generated_at: datetime) -> str:
    """The whole page: filter, summary cards, the audit's placeholder and the three charts.

    :param prefix: where the app is mounted (``/claude-batch``).
    :param history: the series of the window shown.
    :param dag_id: the DAG the page is filtered to, if any.
    :param generated_at: when the series were read (UTC), shown at the top.
    """
    prefix = prefix.rstrip("/")
    first, last = history.days[0], history.days[-1]
    scope = f"DAG {dag_id}" if dag_id else "every DAG you can read"
    body = (
        f'<div class="note">Routing: how each Claude task of the deployed DAG files is routed, against the rule '
        f"(<code>claude-batch audit</code>). Cost: every Claude task that landed from {first.isoformat()} to "
        f"{last.isoformat()} (UTC days), {html.escape(scope)}, from the manifests the tasks left.</div>"
        f"<p>{_dag_filter(history, dag_id)}</p>"
        f'<div class="summary" id="summary">{_cards(history)}</div>'
        '<h2>Routing audit</h2><div id="audit"><div class="empty">Auditing the DAG files&hellip;</div></div>'
        f"<h2>Last {len(history.days)} days</h2>{_charts(history)}"
    )
    return render_document(
        page="routing",
        title="Routing & cost",
        subtitle="Which Claude work is batched, what it costs, how long it takes",
        nav=nav_links(prefix, fleet=True, routing=False, status=f"as of {generated_at:%H:%M} UTC"),
        body=body,
        config={"prefix": prefix, "dagId": dag_id},
        script="routing.js",
    )


def _monthly(row: Mapping[str, Any], route: str) -> str:
    cost = row.get("monthly") or row.get("per_run")
    if not cost:
        return '<span class="muted">no estimate</span>'
    suffix = "/month" if row.get("monthly") else "/run"
    cell = html.escape(_usd(cost.get(f"{route}_usd")) + suffix)
    cache_saving = cost.get(f"cache_saving_{route}_usd") if route == row.get("route") else None
    if cache_saving:
        cell += f'<div class="muted cache-saving">prompt cache saves {html.escape(_usd(cache_saving) + suffix)}</div>'
    return cell


def _text(value: Any) -> str:
    return html.escape(str(value))


def _route(route: Any) -> str:
    note = _ROUTE_NOTES.get(str(route))
    return f'<span title="{_text(note)}">{_text(route)}</span>' if note else _text(route)


def _audit_row(row: Mapping[str, Any]) -> str:
    verdict = str(row.get("verdict"))
    reasons = "".join(f"<li>{_text(reason)}</li>" for reason in row.get("reasons") or [])
    note = _text(_VERDICT_NOTES.get(verdict, ""))
    return (
        f'<tr class="audit-row" data-dag="{_text(row.get("dag_id"))}" data-verdict="{_text(verdict)}">'
        f"<td><b>{_text(row.get('dag_id'))}</b></td>"
        f'<td>{_text(row.get("task_id"))}<div class="muted">{_text(row.get("operator"))}</div></td>'
        f"<td>{_route(row.get('route'))}</td><td>{_route(row.get('rule_route'))}</td>"
        f'<td><span class="badge v-{_text(verdict)}" title="{note}">{_text(verdict)}</span>'
        f'<ul class="reasons">{reasons}</ul></td><td>{_text(row.get("schedule"))}</td>'
        f'<td class="num">{_monthly(row, "sync")}</td><td class="num">{_monthly(row, "batch")}</td>'
        f"<td>{_text(row.get('usage_source') or 'none')}</td></tr>"
    )


def _sum(rows: list[Mapping[str, Any]], pick: Any) -> float:
    return sum(pick(row) for row in rows if row.get("monthly"))


def render_audit_fragment(
    document: Mapping[str, Any] | None,
    *,
    readable_dag_ids: Collection[str] | None,
    audited_at: str | None,
    error: str | None = None,
) -> str:
    """The audit table for the page: one row per Claude task of a DAG the user may read.

    :param document: the output of ``claude-batch audit --format json`` (None when it failed).
    :param readable_dag_ids: the DAGs the user may read (None: all).
    :param audited_at: when the audit ran (ISO), shown with a refresh button.
    :param error: why there is no audit, shown instead of the table.
    """
    refresh = '<button class="refresh" id="audit-refresh" type="button">audit again</button>'
    if document is None:
        return f'<div class="err" id="audit-error">{html.escape(error or "No audit.")}</div>{refresh}'
    rows = [
        row for row in document.get("tasks", []) if readable_dag_ids is None or row.get("dag_id") in readable_dag_ids
    ]
    body = [_audit_row(row) for row in rows]
    if not rows:
        body.append('<tr><td colspan="9" class="empty">No Claude tasks in the DAGs you can read.</td></tr>')

    def at(route_key: str) -> Any:
        # A batch with rescue is priced as a batch: only a rescued run pays the sync price, for what it rescued.
        return lambda row: float(row["monthly"]["sync_usd" if row[route_key] == "sync" else "batch_usd"])

    def saving_if(verdict: str) -> Any:
        return lambda row: float(row["monthly"]["saving_usd"]) if row.get("verdict") == verdict else 0.0

    def cache_saving(row: Mapping[str, Any]) -> float:
        return float(row["monthly"].get(f"cache_saving_{row['route']}_usd") or 0.0)

    totals = (
        f"Per month, over the scheduled tasks with an estimate: {html.escape(_usd(_sum(rows, at('route'))))} as "
        f"routed now, {html.escape(_usd(_sum(rows, at('rule_route'))))} routed by the rule; "
        f'<b id="left-on-table">{html.escape(_usd(_sum(rows, saving_if("SAVING"))))}</b> left on the table by '
        f"SAVING tasks; fixing the VIOLATIONs costs {html.escape(_usd(_sum(rows, saving_if('VIOLATION'))))}; "
        f'the prompt cache saves <b id="cache-saving">{html.escape(_usd(_sum(rows, cache_saving)))}</b>.'
    )
    errors = document.get("import_errors") or {}
    broken = (
        f'<p class="err">{len(errors)} DAG file(s) did not parse and are not audited: see Browse &gt; DAG import '
        "errors, or run <code>claude-batch audit</code>.</p>"
        if errors
        else ""
    )
    when = f"audited {_text(audited_at or 'just now')} from <code>{_text(document.get('dags_folder'))}</code>"
    return (
        '<div class="scroll"><table id="audit-table"><thead><tr><th>DAG</th><th>Task</th><th>Route</th><th>Rule</th>'
        "<th>Verdict and why</th><th>Schedule</th><th>On sync</th><th>On batch</th><th>Tokens from</th></tr>"
        f"</thead><tbody>{''.join(body)}</tbody></table></div><p>{totals}</p>{broken}"
        f'<p class="muted">{when}; prices as of {html.escape(str(_prices_as_of(document)))}. {refresh}</p>'
    )


def _prices_as_of(document: Mapping[str, Any]) -> Any:
    return (document.get("totals") or {}).get("prices_as_of", "?")
