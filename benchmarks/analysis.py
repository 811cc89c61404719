"""Turning repetitions into figures: medians and noise, derived figures, targets, the Markdown table.

Pure functions over plain dicts (the JSON the suite writes), so a results file can be re-rendered
or re-checked without running anything: ``python -m benchmarks --render benchmarks/results/latest.json``.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from airflow_provider_claude_batch.polling import (
    DEFAULT_MAX_POLL_SECONDS,
    DEFAULT_MIN_POLL_SECONDS,
    POLL_FRACTION,
    next_poll_delay,
)
from benchmarks.analysis_fleet import fleet_table, fleet_targets
from benchmarks.markdown import (
    cell,
    contender_label,
    fmt,
    markdown_table,
    median,
    ratio_text,
    status_text,
)

ANCHORS = ("official", "common_ai", "raw")
DAY = 86_400.0
FIXED_POLL_SECONDS = 60.0
# Fixed thread pools a process may start while polling: asyncio's default executor (used for
# getaddrinfo when a connection opens) holds at most min(32, cpus + 4) threads, plus asgiref's one
# thread for the connection lookup. A thread *per poll* would show thousands.
POOL_THREADS_SLACK = 1


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min, max and relative spread of every numeric figure over the repetitions."""
    figures: dict[str, Any] = {}
    keys = [key for key, value in runs[0].items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    for key in keys:
        values = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
        if not values:
            continue
        median = statistics.median(values)
        figures[key] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "spread": (max(values) - min(values)) / median if median else 0.0,
        }
    return figures


def polling_schedule(
    duration: float = DAY,
    min_poll: float = DEFAULT_MIN_POLL_SECONDS,
    max_poll: float = DEFAULT_MAX_POLL_SECONDS,
) -> list[float]:
    """When ``ClaudeBatchTrigger`` looks at a batch created at 0 (first look at once), up to ``duration``.

    The trigger waits ``next_poll_delay(age)`` after each look; the last time returned is the
    first look at or after ``duration`` (the one that sees the batch ended).
    """
    times = [0.0]
    while times[-1] < duration:
        times.append(times[-1] + next_poll_delay(times[-1], min_poll, max_poll))
    return times


def polling_analysis() -> dict[str, Any]:
    """Status calls over a 24-hour batch, and the worst delay from a batch's end to its event.

    A batch ending at ``T`` is seen at the first look at or after ``T``; the delay is that look
    minus ``T``. The worst case for a given T is a batch ending just after a look: the delay is
    then the whole next wait, ``next_poll_delay(age)`` (10% of the age in the adaptive range).
    """
    schedule = polling_schedule()
    calls_24h = len(schedule)
    worst_fraction = 0.0
    worst_fraction_long = 0.0
    long_from = DEFAULT_MIN_POLL_SECONDS / POLL_FRACTION
    worst_absolute = 0.0
    for look, following in itertools.pairwise(schedule):
        # a batch ending an instant after ``look`` is seen at ``following``
        ended = look + 1e-6 if look else 1e-6
        delay = following - ended
        fraction = delay / ended
        worst_absolute = max(worst_absolute, delay)
        worst_fraction = max(worst_fraction, fraction) if ended >= 1.0 else worst_fraction
        if ended >= long_from:
            worst_fraction_long = max(worst_fraction_long, fraction)
    return {
        "min_poll_s": DEFAULT_MIN_POLL_SECONDS,
        "max_poll_s": DEFAULT_MAX_POLL_SECONDS,
        "fraction": POLL_FRACTION,
        "calls_24h_adaptive": calls_24h,
        "calls_24h_fixed_60s": int(DAY / FIXED_POLL_SECONDS),
        "calls_ratio": calls_24h / (DAY / FIXED_POLL_SECONDS),
        "calls_1h_adaptive": len(polling_schedule(3600.0)),
        "calls_1h_fixed_60s": 60,
        "worst_delay_fraction_long": worst_fraction_long,
        "worst_delay_fraction_from_1s": worst_fraction,
        "worst_delay_absolute_s": worst_absolute,
        "fixed_60s_worst_delay_fraction_at_10min": FIXED_POLL_SECONDS / 600.0,
        "long_from_s": long_from,
    }


def worker_time(scenarios: dict[str, Any], wait_key: str | None) -> dict[str, Any]:
    """Seconds a worker slot is held per batch, derived from the submit and land medians.

    Deferrable tasks hold the slot only to submit and to land (the wait is in the triggerer);
    a non-deferrable task also holds it for the batch's whole running time plus the polling delay.
    The official provider returns only the batch id, so its landing is the user's own task streaming
    ``stream_batch_results`` (scenario 2), also on a worker. Batch wall times: the emulated batch of
    scenario 3, and 1 hour and 24 hours (the API's window).
    """
    submit = scenarios.get("submit", {}).get("rows", {})
    land = scenarios.get("land", {}).get("rows", {})
    emulated = None
    if wait_key and wait_key in scenarios:
        rows = scenarios[wait_key].get("rows", {})
        emulated = median(rows.get("ours"), "batch_running_s")
    walls = {"1 h batch": 3600.0, "24 h batch": DAY}
    if emulated:
        walls = {f"emulated {emulated:.0f} s batch": emulated, **walls}

    def adaptive_delay(wall: float) -> float:
        schedule = polling_schedule(wall)
        return schedule[-1] - wall if len(schedule) > 1 else 0.0

    entries = []
    for contender, mode in (
        ("ours", "deferrable"),
        ("ours", "non-deferrable"),
        ("official", "deferrable"),
        ("official", "non-deferrable"),
        ("common_ai", "deferrable"),
    ):
        submit_s = median(submit.get(contender), "wall_s")
        land_s = median(land.get(contender), "wall_s")
        if submit_s is None or land_s is None:
            continue
        per_wall = {}
        for label, wall in walls.items():
            waiting = 0.0
            if mode == "non-deferrable":
                # the expected delay of a fixed 60 s poll is half the interval; ours' is adaptive
                waiting = wall + (adaptive_delay(wall) if contender == "ours" else FIXED_POLL_SECONDS / 2)
            held = submit_s + waiting + land_s
            per_wall[label] = {"worker_s": held, "fraction_of_wall": held / wall}
        entries.append(
            {"contender": contender, "mode": mode, "submit_s": submit_s, "land_s": land_s, "per_wall": per_wall}
        )
    return {"walls": walls, "entries": entries}


def check_targets(scenarios: dict[str, Any], big_k: str | None) -> list[dict[str, Any]]:
    """Each target of the issue against the best anchor of the same run."""
    targets: list[dict[str, Any]] = []

    def add(
        name: str, measured: float | None, threshold: str, ratio: float | None, met: bool | None, note: str
    ) -> None:
        targets.append(
            {
                "target": name,
                "measured": measured,
                "threshold": threshold,
                "ratio": ratio,
                "status": status_text(met),
                "note": note,
            }
        )

    land = scenarios.get("land", {}).get("rows", {})
    ours_land = median(land.get("ours"), "wall_s")
    anchors = {c: median(land.get(c), "wall_s") for c in ("official", "common_ai")}
    anchors = {c: v for c, v in anchors.items() if v}
    if ours_land and anchors:
        best, best_wall = min(anchors.items(), key=lambda item: item[1])
        speedup = best_wall / ours_land
        add(
            "Land: >= 5x faster than the best anchor",
            ours_land,
            ">= 5.0x",
            speedup,
            speedup >= 5,
            f"best anchor: {best} {best_wall:.2f} s; ours {ours_land:.2f} s",
        )
    raw_land = median(land.get("raw"), "wall_s")
    if ours_land and raw_land:
        ratio = ours_land / raw_land
        add(
            "Land: within 2x of the raw floor",
            ours_land,
            "<= 2.0x floor",
            ratio,
            ratio <= 2,
            f"raw floor {raw_land:.2f} s",
        )
    ours_keys = [key for key in land if key == "ours" or key.startswith("ours@")]
    growths = {key: median(land[key], "peak_rss_growth_mb") for key in ours_keys}
    growths = {k: v for k, v in growths.items() if v is not None}
    if growths:
        worst = max(growths.values())
        sizes = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(growths.items()))
        add(
            "Land: peak RSS growth < 64 MB at every size",
            worst,
            "< 64 MiB",
            worst / 64,
            worst < 64,
            f"MiB by size: {sizes}",
        )

    submit = scenarios.get("submit", {}).get("rows", {})
    ours_submit = median(submit.get("ours"), "wall_s")
    raw_submit = median(submit.get("raw"), "wall_s")
    if ours_submit and raw_submit:
        ratio = ours_submit / raw_submit
        add(
            "Submit: within 1.5x of the raw floor",
            ours_submit,
            "<= 1.5x floor",
            ratio,
            ratio <= 1.5,
            f"raw floor {raw_submit:.2f} s",
        )
    growth = median(submit.get("ours"), "peak_rss_growth_mb")
    body = median(submit.get("ours"), "body_bytes")
    if growth is not None and body:
        ratio = growth / (body / (1024 * 1024))
        add(
            "Submit: peak RSS growth < 1.5x the body",
            growth,
            "< 1.5x body",
            ratio,
            ratio < 1.5,
            f"body {body / 1048576:.1f} MiB",
        )

    if big_k and big_k in scenarios:
        rows = scenarios[big_k]["rows"]
        k = scenarios[big_k]["params"]["k"]
        ours_rss = median(rows.get("ours"), "peak_rss_growth_mb")
        official_rss = median(rows.get("official"), "peak_rss_growth_mb")
        if ours_rss is not None and official_rss is not None:
            ratio = official_rss / max(ours_rss, 0.1)
            add(
                f"Wait K={k}: RSS growth >= 10x smaller than official",
                ours_rss,
                ">= 10x smaller",
                ratio,
                ratio >= 10,
                f"official {official_rss:.1f} MiB",
            )
        lag = median(rows.get("ours"), "lag_max_ms")
        lag_without_gc = median(rows.get("ours"), "lag_max_without_gc_ms")
        gc_pause = median(rows.get("ours"), "gc_full_pause_max_ms")
        if lag is not None:
            official_lag = median(rows.get("official"), "lag_max_ms")
            frozen_lag = median(rows.get("ours_frozen"), "lag_max_ms")
            add(
                f"Wait K={k}: event-loop lag max < 50 ms",
                lag,
                "< 50 ms",
                lag / 50,
                lag < 50,
                f"without GC pauses {fmt(lag_without_gc, 0)} ms; longest full GC {fmt(gc_pause, 0)} ms; "
                f"with the startup heap frozen {fmt(frozen_lag, 0)} ms; official {fmt(official_lag, 0)} ms",
            )
        threads = median(rows.get("ours"), "threads_created")
        polls = median(rows.get("ours"), "polls")
        if threads is not None:
            cap = min(32, (scenarios[big_k]["params"].get("cpus") or 2) + 4) + POOL_THREADS_SLACK
            add(
                f"Wait K={k}: no thread per poll",
                threads,
                f"<= {cap} (fixed pools)",
                threads / cap,
                threads <= cap,
                f"{threads:.0f} threads for {polls:.0f} polls" if polls else "",
            )
        per_poll = median(rows.get("ours"), "status_calls_per_poll")
        if per_poll is not None:
            add(
                f"Wait K={k}: at most one status call per batch per poll",
                per_poll,
                "<= 1.0",
                per_poll,
                per_poll <= 1.0,
                "emulator call counter / polls reported by the triggers",
            )
        fraction = median(rows.get("ours"), "delay_fraction_max")
        if fraction is not None:
            add(
                f"Wait K={k}: delay batch end -> event <= 10% of running time",
                fraction,
                "<= 0.10",
                fraction / 0.1,
                fraction <= 0.10,
                f"worst batch; median delay {median(rows.get('ours'), 'delay_median_s'):.2f} s",
            )
    poll = scenarios.get("polling_24h")
    if poll:
        add(
            "24 h batch: fewer status calls than a fixed 60 s poll",
            poll["calls_24h_adaptive"],
            "< 1440",
            poll["calls_ratio"],
            poll["calls_24h_adaptive"] < poll["calls_24h_fixed_60s"],
            f"worst delay {poll['worst_delay_fraction_long']:.0%} of running time "
            f"(batches of {poll['long_from_s']:.0f} s or more)",
        )
    return targets + fleet_targets(scenarios)


# -- Markdown ------------------------------------------------------------------------------------


def _submit_table(submit: dict[str, Any]) -> list[str]:
    rows = submit["rows"]
    body = median(rows.get("ours"), "body_bytes") or 0
    title = (
        f"### 1. Submit {submit['params']['count']:,} requests (create body {body / 1048576:.1f} MiB), "
        f"{submit['params']['reps']} repetitions"
    )
    table = []
    for key in ("ours", "ours_operator", "ours_operator_cap", "ours_operator_cache", "official", "common_ai", "raw"):
        row = rows.get(key)
        if not row:
            continue
        wall = median(row, "wall_s")
        growth = median(row, "peak_rss_growth_mb")
        body_mib = (median(row, "body_bytes") or 0) / 1048576
        table.append(
            [
                contender_label(key),
                cell(row, "wall_s"),
                *(ratio_text(wall, median(rows.get(anchor), "wall_s")) for anchor in ANCHORS),
                cell(row, "peak_rss_growth_mb", 1),
                fmt(growth / body_mib if growth is not None and body_mib else None),
                cell(row, "cpu_s", 2, False),
            ]
        )
    headers = ["contender", "wall s", "x official", "x common-ai", "x raw", "peak RSS growth MiB", "/ body", "CPU s"]
    lines = [title, "", *markdown_table(headers, table)]
    ours = rows.get("ours")
    if ours and "prepare_s" in ours.get("summary", {}):
        lines.append(
            f"Ours: validate + serialise {cell(ours, 'prepare_s', 2, False)} s, streamed POST "
            f"{cell(ours, 'post_s', 2, False)} s. Every contender's own validation is inside the timed region."
        )
        lines.append("")
    return lines


def _land_table(land: dict[str, Any]) -> list[str]:
    rows = land["rows"]
    params = land["params"]
    title = f"### 2. Land {params['count']:,} results ({params['mix']}), {params['reps']} repetitions"
    sized = sorted((key for key in rows if "@" in key), key=lambda key: int(key.partition("@")[2]))
    table = []
    for key in ["ours", "official", "common_ai", "raw", *sized]:
        row = rows.get(key)
        if not row:
            continue
        wall = median(row, "wall_s")
        ratios = [ratio_text(wall, median(rows.get(anchor), "wall_s")) if "@" not in key else "-" for anchor in ANCHORS]
        table.append(
            [
                contender_label(key),
                cell(row, "wall_s"),
                fmt(median(row, "rows_per_s"), 0),
                *ratios,
                cell(row, "peak_rss_growth_mb", 1),
                cell(row, "cpu_s", 2, False),
            ]
        )
    headers = ["contender", "wall s", "rows/s", "x official", "x common-ai", "x raw", "peak RSS growth MiB", "CPU s"]
    return [title, "", *markdown_table(headers, table)]


def _wait_table(wait: dict[str, Any]) -> list[str]:
    params = wait["params"]
    rows = wait["rows"]
    title = (
        f"### 3. Wait: K = {params['k']:,} deferred batches in one event loop "
        f"(batches run {params['processing_seconds']:g} s; fixed poll {params['poll_interval']:g} s; "
        f"ours adaptive, min {params['ours_min_poll']:.2f} s, max {params['ours_max_poll']:.0f} s)"
    )
    official_rss = median(rows.get("official"), "peak_rss_growth_mb")
    common_ai_rss = median(rows.get("common_ai"), "peak_rss_growth_mb")
    table = []
    for contender in ("ours", "ours_frozen", "official", "common_ai"):
        row = rows.get(contender)
        if not row:
            continue
        rss = median(row, "peak_rss_growth_mb")
        fraction = median(row, "delay_fraction_max")
        gcs = f"{fmt(median(row, 'gc_full_collections'), 0)} ({fmt(median(row, 'gc_full_pause_max_ms'), 0)})"
        delay_max = f"{fmt(median(row, 'delay_max_s'))} ({fmt(100 * fraction if fraction is not None else None, 1)}%)"
        table.append(
            [
                contender_label(contender),
                cell(row, "peak_rss_growth_mb", 1),
                ratio_text(rss, official_rss),
                ratio_text(rss, common_ai_rss),
                cell(row, "lag_max_ms", 0),
                cell(row, "lag_p99_ms", 0),
                cell(row, "lag_max_without_gc_ms", 0),
                gcs,
                cell(row, "threads_created", 0),
                cell(row, "status_calls_per_batch", 2),
                cell(row, "delay_median_s"),
                delay_max,
                cell(row, "cpu_s", 1, False),
            ]
        )
    headers = [
        "contender",
        "RSS growth MiB",
        "x official",
        "x common-ai",
        "lag max ms",
        "lag p99 ms",
        "lag max w/o GC ms",
        "full GCs (longest ms)",
        "threads created",
        "status calls / batch",
        "delay median s",
        "delay max s (% of run)",
        "CPU s",
    ]
    return [title, "", *markdown_table(headers, table)]


def _polling_text(poll: dict[str, Any]) -> list[str]:
    return [
        "### Polling schedule over a 24-hour batch (analytic, default settings)",
        "",
        f"Ours waits {poll['fraction']:.0%} of the batch's age between looks, between {poll['min_poll_s']:g} s and "
        f"{poll['max_poll_s']:g} s: **{poll['calls_24h_adaptive']} status calls over a 24-hour batch**, against "
        f"{poll['calls_24h_fixed_60s']:,} for a fixed 60 s poll ({poll['calls_ratio']:.0%}); over a 1-hour batch, "
        f"{poll['calls_1h_adaptive']} against {poll['calls_1h_fixed_60s']}. Worst delay from a batch's end to its "
        f"event: {poll['worst_delay_fraction_long']:.0%} of its running time for batches of "
        f"{poll['long_from_s']:.0f} s or more (shorter ones: at most {poll['min_poll_s']:g} s), and never more than "
        f"{poll['worst_delay_absolute_s']:.0f} s.",
        "",
    ]


def _worker_table(worker: dict[str, Any]) -> list[str]:
    walls = list(worker["walls"])
    table = []
    for entry in worker["entries"]:
        held = [
            f"{fmt(entry['per_wall'][wall]['worker_s'], 1)} ({entry['per_wall'][wall]['fraction_of_wall']:.1%})"
            for wall in walls
        ]
        table.append(
            [contender_label(entry["contender"]), entry["mode"], fmt(entry["submit_s"]), fmt(entry["land_s"]), *held]
        )
    headers = ["contender", "mode", "submit s", "land s", *(f"worker s, {wall} (of wall)" for wall in walls)]
    return ["### 4. Worker time per batch (derived from scenarios 1 and 2)", "", *markdown_table(headers, table)]


def _emulator_table(emulator: dict[str, Any]) -> list[str]:
    params = emulator["params"]
    title = (
        f"### 5. Emulator: accept {params['count']:,} requests and serve their results, {params['reps']} repetitions"
    )
    table = []
    for key, row in emulator["rows"].items():
        table.append(
            [
                contender_label(key),
                cell(row, "create_s"),
                cell(row, "render_s"),
                fmt(median(row, "render_rows_per_s"), 0),
                cell(row, "replay_s"),
                fmt(median(row, "replay_rows_per_s"), 0),
                cell(row, "wall_s"),
            ]
        )
    headers = ["contender", "create s", "first download s", "rows/s", "replayed download s", "rows/s", "wall s"]
    return [title, "", *markdown_table(headers, table)]


def render_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one table per scenario, then the targets."""
    scenarios = results["scenarios"]
    meta = results["meta"]
    lines = [
        f"Run {meta['date']} on {meta['machine']['summary']}; {meta['mode']} mode, {meta['duration_s']:.0f} s.",
        "Medians over the repetitions, (min-max) where they differ; ratios are row / anchor, same run.",
        "",
    ]
    if "submit" in scenarios:
        lines += _submit_table(scenarios["submit"])
    if "land" in scenarios:
        lines += _land_table(scenarios["land"])
    for key in sorted((k for k in scenarios if k.startswith("wait_k")), key=lambda k: int(k[6:])):
        lines += _wait_table(scenarios[key])
    lines += fleet_table(scenarios)
    if "polling_24h" in scenarios:
        lines += _polling_text(scenarios["polling_24h"])
    if scenarios.get("worker_time", {}).get("entries"):
        lines += _worker_table(scenarios["worker_time"])
    if scenarios.get("emulator", {}).get("rows"):
        lines += _emulator_table(scenarios["emulator"])
    targets = results.get("targets") or []
    if targets:
        table = [
            [t["target"], fmt(t["measured"]), t["threshold"], fmt(t["ratio"]), f"**{t['status']}**", t["note"]]
            for t in targets
        ]
        lines += [
            "### Targets",
            "",
            *markdown_table(["target", "measured", "threshold", "ratio", "status", "note"], table),
        ]
    errors = results.get("errors") or []
    if errors:
        lines += ["### Errors", "", *(f"- {error['where']}: {error['error']}" for error in errors), ""]
    return "\n".join(lines)
