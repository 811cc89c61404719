"""The Routing & cost page's pure parts: manifests folded into daily series, SVG charts, the audit table.

No Airflow here: these modules import none (checked in a fresh interpreter), so they are tested on
their own with hand-made manifests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone

import pytest

from airflow_provider_claude_batch.plugins.charts import Series, bar_chart, compact_usd, nice_ticks
from airflow_provider_claude_batch.plugins.cost_history import (
    CostHistory,
    cost_history,
    duration_histogram,
    landed_task,
    percentile,
    route_cost,
)
from airflow_provider_claude_batch.plugins.pages import parse_map_index, render_batches_page
from airflow_provider_claude_batch.plugins.routing_page import render_audit_fragment, render_routing_page

TODAY = date(2026, 3, 30)
SVG = "{http://www.w3.org/2000/svg}"


def manifest(route: str, landed: datetime, *, batch: float, sync: float, submitted: datetime | None = None, **counts):
    cost = {"batch_usd": batch, "sync_usd": sync, "prices_as_of": "2026-01-01"}
    cost["saving_usd" if route == "batch" else "batching_would_save_usd"] = round(sync - batch, 6)
    return {
        "route": route,
        "results_uri": "file:///r/results.jsonl",
        "manifest_uri": "file:///r/manifest.json",
        "landed_at": landed.isoformat(),
        "submitted_at": submitted.isoformat() if submitted else None,
        "counts": counts or {"succeeded": 1},
        "cost": cost,
    }


def at(day: date, hour: int = 6, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def test_pure_modules_import_nothing_from_airflow():
    code = (
        "import sys\n"
        "import airflow_provider_claude_batch.plugins.routing_page\n"
        "import airflow_provider_claude_batch.plugins.audit_runner\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("value", "expected"), [("{MAP_INDEX}", -1), ("", -1), (None, -1), ("-1", -1), ("0", 0), (" 7 ", 7), (3, 3)]
)
def test_map_index_reads_the_uis_unfilled_placeholder_as_unmapped(value, expected):
    assert parse_map_index(value) == expected


@pytest.mark.parametrize("value", ["abc", "1.5", "-2", "{DAG_ID}"])
def test_map_index_refuses_anything_else_with_the_fix(value):
    with pytest.raises(ValueError, match="map_index must be"):
        parse_map_index(value)


def test_route_cost_names_the_difference_for_what_it_is_on_each_route():
    batch = route_cost(manifest("batch", at(TODAY), batch=1.0, sync=2.0))
    assert batch["saving_usd"] == 1.0 and "batching_would_save_usd" not in batch
    sync = route_cost(manifest("sync", at(TODAY), batch=1.0, sync=2.0))
    assert sync["batching_would_save_usd"] == 1.0 and "saving_usd" not in sync
    # A synchronous manifest written before the field was renamed: its "saving" was never made.
    legacy = {"route": "sync", "cost": {"batch_usd": 1.0, "sync_usd": 2.0, "saving_usd": 1.0}}
    assert route_cost(legacy) == {
        "batch_usd": 1.0,
        "sync_usd": 2.0,
        "prices_as_of": None,
        "batching_would_save_usd": 1.0,
    }
    assert route_cost({}) is None


def test_landed_task_accepts_only_our_manifests():
    assert landed_task("d", "r", "t", -1, {"results_uri": "x"}) is None  # no route
    assert landed_task("d", "r", "t", -1, [1, 2]) is None
    assert landed_task("d", "r", "t", -1, {**manifest("batch", at(TODAY), batch=1, sync=2), "landed_at": "?"}) is None
    task = landed_task("d", "r", "t", 3, manifest("batch", at(TODAY, 8), batch=1, sync=2, submitted=at(TODAY, 6)))
    assert task is not None and task.map_index == 3 and task.seconds_to_land == 7200 and task.billed_usd == 1


def test_cost_history_buckets_spend_by_utc_day_dag_and_route():
    late = at(TODAY - timedelta(days=1), 23, 59)
    tasks = [
        landed_task("nightly", "r1", "t", -1, manifest("batch", at(TODAY, 1), batch=0.5, sync=1.0, succeeded=40)),
        # One minute before midnight UTC: the day before.
        landed_task("nightly", "r2", "t", -1, manifest("batch", late, batch=0.25, sync=0.5, succeeded=38, errored=2)),
        landed_task("weekly", "r1", "a", 0, manifest("batch", at(TODAY, 9), batch=1.0, sync=2.0, expired=3)),
        landed_task("review", "r1", "t", -1, manifest("sync", at(TODAY, 10), batch=0.1, sync=0.2, succeeded=2)),
        # Outside the 30-day window: ignored.
        landed_task("nightly", "old", "t", -1, manifest("batch", at(TODAY - timedelta(days=30)), batch=9, sync=18)),
    ]
    history = cost_history(tasks, today=TODAY, days=30)
    assert history.days[0] == TODAY - timedelta(days=29) and history.days[-1] == TODAY and len(history.days) == 30
    assert history.dag_ids == ["nightly", "review", "weekly"]
    assert history.batch_spend["nightly"][-1] == 0.5 and history.batch_spend["nightly"][-2] == 0.25
    assert history.batch_spend["weekly"][-1] == 1.0 and "review" not in history.batch_spend  # sync is not batch spend
    assert history.batch_sync_equivalent[-1] == 3.0 and history.batch_sync_equivalent[-2] == 0.5
    assert history.batch_spend_usd == 1.75 and history.batch_saving_usd == 1.75
    assert history.sync_spend_usd == 0.2 and history.sync_batching_would_save_usd == pytest.approx(0.1)
    assert history.outcomes["succeeded"][-1] == 42 and history.outcomes["errored"][-2] == 2
    assert history.outcomes["expired"][-1] == 3 and "canceled" not in history.outcomes
    assert history.tasks == {"batch": 3, "sync": 1}
    assert history.without_submission_time == 3  # none of these batch manifests has submitted_at

    only = cost_history(tasks, today=TODAY, days=30, dag_id="weekly")
    assert list(only.batch_spend) == ["weekly"] and only.dag_ids == ["nightly", "review", "weekly"]
    assert only.as_dict()["batch_route"]["spend_usd"] == 1.0


def test_time_to_land_is_a_distribution_with_quantiles():
    landed = at(TODAY, 12)
    durations = [30, 90, 600, 3000, 5400, 20000, 90000]
    tasks = [
        landed_task("d", f"r{i}", "t", -1, manifest("batch", landed, batch=1, sync=2, submitted=landed - seconds))
        for i, seconds in enumerate(timedelta(seconds=s) for s in durations)
    ]
    timing = cost_history(tasks, today=TODAY).time_to_land()
    histogram = {item["bucket"]: item["tasks"] for item in timing["histogram"]}
    assert histogram["<1m"] == 1 and histogram["1-5m"] == 1 and histogram["5-15m"] == 1
    assert histogram["30-60m"] == 1 and histogram["1-2h"] == 1 and histogram["4-8h"] == 1
    assert histogram[">24h"] == 1 and sum(histogram.values()) == 7 and len(histogram) == 11
    assert timing["p50_seconds"] == 3000 and timing["max_seconds"] == 90000
    assert percentile([1, 2, 3, 4], 0.5) == 2.5 and percentile([], 0.9) is None
    assert duration_histogram([59.9, 60])[0:2] == [("<1m", 1), ("1-5m", 1)]


def test_nice_ticks_and_money_labels():
    assert nice_ticks(0.0044) == [0, 0.002, 0.004, 0.006]
    assert nice_ticks(93) == [0, 25, 50, 75, 100]
    assert nice_ticks(0) == [0, 1]
    assert [compact_usd(v) for v in (0, 0.0044, 0.35, 12.4, 1500)] == ["$0", "$0.0044", "$0.35", "$12", "$1.5k"]


def parse_svg(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_bar_chart_stacks_series_draws_the_line_and_escapes_names():
    svg = bar_chart(
        ["Mar 29", "Mar 30"],
        [Series("<nightly>", [1.0, 2.0], "fill-0"), Series("weekly", [0.0, 1.0], "fill-1")],
        title="Spend & more",
        value_format=compact_usd,
        line=Series("same work, synchronously", [2.0, 6.0], "line"),
    )
    root = parse_svg(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("data-series")]
    assert [(b.get("data-series"), b.get("data-category"), b.get("data-value")) for b in bars] == [
        ("<nightly>", "Mar 29", "1"),
        ("<nightly>", "Mar 30", "2"),
        ("weekly", "Mar 30", "1"),  # a zero value draws no bar
    ]
    # Stacked: weekly's bar on Mar 30 sits right on top of nightly's.
    nightly_30, weekly_30 = bars[1], bars[2]
    weekly_bottom = float(weekly_30.get("y")) + float(weekly_30.get("height"))
    assert weekly_bottom == pytest.approx(float(nightly_30.get("y")), abs=0.2)
    # Heights are proportional to the values: 2 of the axis's 6 for nightly on Mar 30.
    assert float(nightly_30.get("height")) == pytest.approx(2 * float(bars[0].get("height")), abs=0.2)
    assert [c.get("data-value") for c in root.iter(f"{SVG}circle")] == ["2", "6"]
    assert root.find(f"{SVG}polyline") is not None
    assert "&lt;nightly&gt;" in svg and "<nightly>" not in svg.replace('data-series="&lt;nightly&gt;"', "")
    assert "Mar 30 \u00b7 same work, synchronously: $6" in svg  # the tooltip of a line point
    assert root.get("aria-label") == "Spend & more"


def test_bar_chart_says_when_there_is_nothing_and_checks_lengths():
    root = parse_svg(bar_chart(["a", "b"], [], title="t", value_format=str, empty_text="Nothing here."))
    assert "Nothing here." in "".join(root.itertext())
    with pytest.raises(ValueError, match="has 1 values for 2 categories"):
        bar_chart(["a", "b"], [Series("s", [1.0], "fill-0")], title="t", value_format=str)


def test_routing_page_has_the_three_charts_cards_and_the_dag_filter():
    submitted = at(TODAY, 2)
    tasks = [
        landed_task("nightly", "r", "t", -1, manifest("batch", at(TODAY, 3), batch=0.5, sync=1.0, submitted=submitted)),
        landed_task("review", "r", "t", -1, manifest("sync", at(TODAY, 4), batch=0.1, sync=0.2)),
    ]
    page = render_routing_page(
        "/claude-batch", cost_history(tasks, today=TODAY), dag_id=None, generated_at=at(TODAY, 11)
    )
    for chart in ("chart-spend", "chart-outcomes", "chart-time-to-land"):
        assert f'id="{chart}"' in page
    assert page.count("<svg") == 3 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert re.search(r'id="card-batch-saving"><b>\$0\.5000</b>', page)
    assert re.search(r'id="card-would-save"><b>\$0\.1000</b>', page)
    assert re.search(r'id="card-time-to-land"><b>1h 00m / 1h 00m</b>', page)
    assert '<option value="nightly">nightly</option>' in page and '<option value="review">review</option>' in page
    assert 'href="/claude-batch/"' in page  # back to the fleet page
    assert '<span id="updated">as of 11:00 UTC</span>' in page


def test_audit_fragment_shows_only_readable_dags_with_verdicts_and_totals():
    document = {
        "dags_folder": "/dags",
        "tasks": [
            {"dag_id": "nightly", "task_id": "gen", "operator": "ClaudeBatchOperator", "route": "batch",
             "rule_route": "batch", "verdict": "OK", "reasons": ["nobody waits <on it>"], "schedule": "0 2 * * *",
             "usage_source": "declared", "monthly": {"batch_usd": 270.0, "sync_usd": 540.0, "saving_usd": 270.0}},
            {"dag_id": "report", "task_id": "sum", "operator": "ClaudeMessageOperator", "route": "sync",
             "rule_route": "batch", "verdict": "SAVING", "reasons": ["weekly"], "schedule": "@weekly",
             "usage_source": "measured (2 runs)", "monthly": {"batch_usd": 10.0, "sync_usd": 20.0, "saving_usd": 10.0}},
            {"dag_id": "report", "task_id": "sla", "operator": "ClaudeBatchOperator", "route": "batch with rescue",
             "rule_route": "batch with rescue", "verdict": "OK", "reasons": ["rescued before the 6h deadline"],
             "schedule": "@daily", "usage_source": "declared",
             "monthly": {"batch_usd": 30.0, "sync_usd": 60.0, "saving_usd": 30.0}},
            {"dag_id": "secret", "task_id": "x", "verdict": "OK", "route": "batch", "rule_route": "batch"},
        ],
        "totals": {"prices_as_of": "2026-01-01"},
        "import_errors": {"broken.py": "SyntaxError"},
    }  # fmt: skip
    fragment = render_audit_fragment(document, readable_dag_ids={"nightly", "report"}, audited_at="2026-03-30T10:00")
    assert fragment.count('class="audit-row"') == 3 and "secret" not in fragment
    assert '<span title="batched; if it has not ended by the deadline minus the rescue lead' in fragment
    assert 'data-verdict="SAVING"' in fragment and "nobody waits &lt;on it&gt;" in fragment
    assert "$540.00/month" in fragment and "$270.00/month" in fragment
    assert '<b id="left-on-table">$10.00</b>' in fragment  # what batching the SAVING task would save
    # A batch with rescue counts at the batch price (only a rescued run pays sync, for what it rescued).
    assert "$320.00 as routed now, $310.00 routed by the rule" in fragment
    assert "1 DAG file(s) did not parse" in fragment and "broken.py" not in fragment
    failed = render_audit_fragment(None, readable_dag_ids=None, audited_at=None, error="No DAG folder <here>")
    assert 'id="audit-error"' in failed and "No DAG folder &lt;here&gt;" in failed


def test_batch_pages_inline_their_assets_and_keep_values_out_of_the_markup():
    task = {"dag_id": "d</script>", "run_id": "r", "task_id": "t", "map_index": 2}
    page = render_batches_page("/claude-batch", task, refresh_seconds=10, progress_note="Time, not progress.")
    assert "<\\/script>" in page and "d</script>" not in page  # the config JSON cannot close its script
    assert "Claude batch \u00b7 t" in page and "/ map 2" in page
    assert "function refresh()" in page and ":root {" in page  # script and stylesheet inlined
    assert 'id="routing-link"' in page and 'id="fleet-link"' in page and "{{" not in page
    fleet = render_batches_page("/claude-batch", None, refresh_seconds=10, progress_note="n")
    assert 'id="fleet-link"' not in fleet and '<span class="meta"><a href="/claude-batch/routing"' in fleet


def test_an_empty_history_renders_empty_charts():
    page = render_routing_page("/claude-batch", cost_history([], today=TODAY), dag_id="gone", generated_at=at(TODAY))
    assert page.count("No batch-route task") >= 1 and '<option value="gone" selected>' in page
    assert isinstance(CostHistory, type)


def test_what_the_prompt_cache_saved_is_carded_charted_in_totals_and_in_the_audit_rows():
    cached = manifest("batch", at(TODAY, 3), batch=0.5, sync=1.0)
    cached["cost"] |= {"cache_saving_batch_usd": 0.25, "cache_saving_sync_usd": 0.5}
    synced = manifest("sync", at(TODAY, 4), batch=0.1, sync=0.2)
    synced["cost"] |= {"cache_saving_batch_usd": 0.01, "cache_saving_sync_usd": 0.02}
    assert route_cost(cached)["cache_saving_usd"] == 0.25 and route_cost(synced)["cache_saving_usd"] == 0.02
    assert "cache_saving_usd" not in route_cost(manifest("batch", at(TODAY), batch=1, sync=2))  # an older manifest
    tasks = [landed_task("nightly", "r", "t", -1, cached), landed_task("review", "r", "t", -1, synced)]
    assert [task.cache_saving_usd for task in tasks] == [0.25, 0.02]  # each at its own route's prices
    history = cost_history(tasks, today=TODAY)
    assert history.as_dict()["batch_route"]["cache_saving_usd"] == 0.25
    assert history.as_dict()["sync_route"]["cache_saving_usd"] == 0.02
    page = render_routing_page("/claude-batch", history, dag_id=None, generated_at=at(TODAY, 11))
    assert re.search(r'id="card-cache-saving"><b>\$0\.2700</b><span>saved by the prompt cache', page)

    monthly = {"batch_usd": 270.0, "sync_usd": 540.0, "saving_usd": 270.0}
    document = {
        "dags_folder": "/dags",
        "tasks": [
            {"dag_id": "nightly", "task_id": "gen", "route": "batch", "rule_route": "batch", "verdict": "OK",
             "monthly": {**monthly, "cache_saving_batch_usd": 30.0, "cache_saving_sync_usd": 60.0}},
            {"dag_id": "plain", "task_id": "x", "route": "batch", "rule_route": "batch", "verdict": "OK",
             "monthly": monthly},
        ],
        "totals": {"prices_as_of": "2026-01-01"},
    }  # fmt: skip
    fragment = render_audit_fragment(document, readable_dag_ids=None, audited_at=None)
    assert fragment.count("prompt cache saves $30.00/month") == 1  # on the route it runs on, for the task that caches
    assert 'the prompt cache saves <b id="cache-saving">$30.00</b>' in fragment
