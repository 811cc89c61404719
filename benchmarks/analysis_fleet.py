"""The fleet scenario's table and targets (scenario 6), over the plain dicts of a results file.

Times a reader compares with the real API (delays, calls per minute) are shown in real-equivalent
units: a run compressed ``1 / scale`` times turns a measured ``d`` seconds into ``d / scale`` real
seconds, and one window of ``60 * scale`` s into a real minute. Event-loop lag, CPU and RSS are
shown as measured: the work of one refresh cycle is not compressed, only the time between cycles.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.markdown import cell, contender_label, fmt, markdown_table, median

FLEET_CONTENDERS = ("ours", "official", "common_ai")
# K up to which ours' status calls per refresh cycle must stay flat, and that flat ceiling.
FLAT_UP_TO_K = 1000
FLAT_CALLS_PER_CYCLE = 2
LIST_PAGE_BATCHES = 1000
FEWER_CALLS_THAN_OFFICIAL = 100
LAG_LIMIT_MS = 50


def fleet_keys(scenarios: dict[str, Any]) -> list[str]:
    return sorted((key for key in scenarios if key.startswith("fleet_k")), key=lambda key: int(key[7:]))


def _outcome(row: dict[str, Any], k: int) -> str:
    ended = median(row, "ended")
    text = f"{fmt(ended, 0)} / {k:,}"
    others = [
        f"{fmt(value, 0)} {name}"
        for name, key in (("timeout", "timed_out"), ("error", "errored"), ("cut off", "cut_off"))
        if (value := median(row, key))
    ]
    return text + (f" ({', '.join(others)})" if others else "")


def _times(ratio: float) -> str:
    return f"{fmt(ratio, 1 if ratio < 10 else 0)}x"


def _delay_max(row: dict[str, Any]) -> str:
    ratio = median(row, "delay_allowance_ratio_max")
    if ratio is None:
        return "-"
    return f"{fmt(median(row, 'delay_max_real_s'), 1)} ({100 * ratio:.0f}%)"


def fleet_table(scenarios: dict[str, Any]) -> list[str]:
    keys = fleet_keys(scenarios)
    if not keys:
        return []
    params = scenarios[keys[0]]["params"]
    scale = params["scale"]
    title = (
        f"### 6. Fleet: K deferred batches in one loop, the emulator limited to {params['limit_per_minute']} calls "
        f"a minute (budget {params['budget_per_minute']}); time compressed {1 / scale:g}x (a minute is "
        f"{60 * scale:g} s), batches run {params['batch_minutes']:g} min, deadline {params['deadline_minutes']:g} min"
    )
    rows = []
    for key in keys:
        k = scenarios[key]["params"]["k"]
        contenders = scenarios[key]["rows"]
        official_calls = median(contenders.get("official"), "status_calls")
        for contender in FLEET_CONTENDERS:
            row = contenders.get(contender)
            if not row:
                continue
            calls = median(row, "status_calls")
            gcs = f"{fmt(median(row, 'gc_full_collections'), 0)} ({fmt(median(row, 'gc_full_pause_max_ms'), 0)})"
            rows.append(
                [
                    f"{k:,}",
                    contender_label(contender),
                    _outcome(row, k),
                    cell(row, "rate_limited", 0),
                    f"{fmt(median(row, 'calls_sent'), 0)} ({fmt(median(row, 'calls_sent_per_batch'))})",
                    _times(official_calls / calls) if contender == "ours" and calls and official_calls else "-",
                    cell(row, "status_calls_per_cycle_max", 0),
                    cell(row, "peak_calls_per_minute", 0),
                    cell(row, "delay_median_real_s", 1),
                    _delay_max(row),
                    cell(row, "lag_max_ms", 0),
                    cell(row, "lag_p99_ms", 0),
                    cell(row, "lag_max_without_gc_ms", 0),
                    f"{fmt(median(row, 'lag_cpu_max_ms'), 0)} ({fmt(median(row, 'lag_cpu_max_without_gc_ms'), 0)})",
                    gcs,
                    cell(row, "peak_rss_growth_mb", 1),
                    cell(row, "cpu_s", 1, False),
                ]
            )
    headers = [
        "K",
        "contender",
        "ended (of K)",
        "429 answers",
        "API calls (per batch)",
        "official's status calls / ours",
        "status calls per cycle, max",
        "peak calls sent / min",
        "delay median s",
        "delay max s (% of allowance)",
        "lag max ms",
        "lag p99 ms",
        "lag max w/o GC ms",
        "loop CPU per tick max ms (w/o GC)",
        "full GCs (longest ms)",
        "RSS growth MiB",
        "CPU s",
    ]
    return [title, "", *markdown_table(headers, rows)]


def _cycles_note(row: dict[str, Any], k: int) -> str:
    def figure(key: str, digits: int = 0) -> str:
        return fmt(median(row, key), digits)

    return (
        f"mean {figure('status_calls_per_cycle_mean', 2)} a cycle over {figure('poll_cycles')}; the most in the "
        f"cycle at {figure('worst_cycle_started_s', 1)} s; once all {k:,} triggers had registered "
        f"({figure('all_triggers_started_s', 1)} s), at most {figure('status_calls_per_cycle_max_all_registered')}"
    )


def _frozen_wait_row(scenarios: dict[str, Any]) -> dict[str, Any] | None:
    """Ours with the startup heap frozen, from the wait scenario (no limit, same loop): the GC mitigation."""
    for key in sorted((k for k in scenarios if k.startswith("wait_k")), key=lambda k: -int(k[6:])):
        if "ours_frozen" in scenarios[key]["rows"]:
            return scenarios[key]["rows"]["ours_frozen"]
    return None


def _lag_note(row: dict[str, Any], frozen: dict[str, Any] | None) -> str:
    def figure(key: str) -> str:
        return fmt(median(row, key), 0)

    return (
        f"p99 {figure('lag_p99_ms')} ms; without GC pauses {figure('lag_max_without_gc_ms')} ms; full GCs "
        f"{figure('gc_full_collections')} (longest {figure('gc_full_pause_max_ms')} ms); the loop thread's CPU in "
        f"one tick at most {figure('lag_cpu_max_ms')} ms ({figure('lag_cpu_max_without_gc_ms')} outside "
        f"collections); the wait scenario with the startup heap frozen: {fmt(median(frozen, 'lag_max_ms'), 0)} ms"
    )


def fleet_targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """The fleet targets of issue 9, for ours, against the official provider of the same run."""
    ours = {
        scenarios[key]["params"]["k"]: scenarios[key]["rows"]["ours"]
        for key in fleet_keys(scenarios)
        if "ours" in scenarios[key]["rows"]
    }
    if not ours:
        return []
    targets: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, threshold: str, ratio: float | None, met: bool, note: str) -> None:
        status = "N/A" if measured is None else ("MET" if met else "MISSED")
        targets.append(
            {
                "target": name,
                "measured": measured,
                "threshold": threshold,
                "ratio": ratio,
                "status": status,
                "note": note,
            }
        )

    def by_k(key: str, digits: int = 0) -> str:
        return ", ".join(f"K={k:,}: {fmt(median(row, key), digits)}" for k, row in ours.items())

    ended = {k: median(row, "ended") or 0 for k, row in ours.items()}
    worst = min(ended[k] / k for k in ended)
    add("Fleet: every trigger ends", worst, "K of K", worst, worst >= 1, f"ended: {by_k('ended')}")
    refused = sum(median(row, "rate_limited") or 0 for row in ours.values())
    add(
        "Fleet: 0 answers of 429 with the budget under the limit",
        refused,
        "0",
        None,
        refused == 0,
        f"429 answers: {by_k('rate_limited')}",
    )
    flat = {k: median(row, "status_calls_per_cycle_max") for k, row in ours.items() if k <= FLAT_UP_TO_K}
    if flat:
        top = max(value or 0 for value in flat.values())
        add(
            f"Fleet: status calls per cycle flat up to K={FLAT_UP_TO_K:,}",
            top,
            f"<= {FLAT_CALLS_PER_CYCLE} a cycle",
            top / FLAT_CALLS_PER_CYCLE,
            top <= FLAT_CALLS_PER_CYCLE,
            f"most calls in one cycle: {by_k('status_calls_per_cycle_max')}",
        )
    for k, row in ours.items():
        if k <= FLAT_UP_TO_K:
            continue
        ceiling = math.ceil(k / LIST_PAGE_BATCHES) + 1
        most = median(row, "status_calls_per_cycle_max") or 0
        add(
            f"Fleet K={k:,}: status calls per cycle within ceil(K/1000)+1",
            most,
            f"<= {ceiling}",
            most / ceiling,
            most <= ceiling,
            _cycles_note(row, k),
        )
    compared = max((k for k in ours if k <= FLAT_UP_TO_K), default=None)
    if compared is not None:
        key = f"fleet_k{compared}"
        official = scenarios[key]["rows"].get("official")
        official_calls = median(official, "status_calls")
        our_calls = median(ours[compared], "status_calls")
        if official_calls and our_calls:
            fewer = official_calls / our_calls
            add(
                f"Fleet K={compared:,}: >= {FEWER_CALLS_THAN_OFFICIAL}x fewer status calls than official",
                our_calls,
                f">= {FEWER_CALLS_THAN_OFFICIAL}x fewer",
                fewer,
                fewer >= FEWER_CALLS_THAN_OFFICIAL,
                f"official sent {official_calls:,.0f} (429 answers included: "
                f"{fmt(median(official, 'rate_limited'), 0)}), "
                f"ended {fmt(median(official, 'ended'), 0)} of {compared:,}; ours {our_calls:,.0f}",
            )
        lag = median(ours[compared], "lag_max_ms")
        if lag is not None:
            add(
                f"Fleet K={compared:,}: event-loop lag max < {LAG_LIMIT_MS} ms",
                lag,
                f"< {LAG_LIMIT_MS} ms",
                lag / LAG_LIMIT_MS,
                lag < LAG_LIMIT_MS,
                _lag_note(ours[compared], _frozen_wait_row(scenarios)),
            )
    over = max((median(row, "delay_allowance_ratio_max") or math.inf) for row in ours.values())
    add(
        "Fleet: worst delay batch end -> event <= max(5 s, 10% of running time)",
        over,
        "<= 1.0 of the allowance",
        over,
        over <= 1.0,
        f"worst delay, real s: {by_k('delay_max_real_s', 1)}",
    )
    return targets
