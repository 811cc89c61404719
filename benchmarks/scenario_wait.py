"""Scenario 3, wait at scale: K deferred batches in ONE asyncio loop, the way a triggerer runs them.

K batches of one request each are created first (outside the measurement), then K triggers of
the contender run concurrently in one event loop (:mod:`benchmarks.trigger_loop`), while a 10 ms
ticker task measures event-loop lag and samples the thread count. Afterwards the emulator's
per-route call counters give the status calls (``list`` pages and ``retrieve`` calls) per batch,
and its ``ended_at`` per batch gives the delay from batch end to the trigger's event. The emulator
has no rate limit here (the fleet scenario has one).

Poll settings: the fixed-interval contenders (official, common-ai) poll every ``poll_interval``
seconds; ours keeps its adaptive schedule (9% of the batch's age, between a minimum and a
maximum) with its default minimum (5 s) and maximum (600 s) multiplied by the same factor that
turns the official default of 60 s into ``poll_interval`` (``scale = poll_interval / 60``), and its
default request budget of 50 calls per minute counts per ``60 * scale`` s. A run is therefore the
time-compressed picture of a batch ``1 / scale`` times longer."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

from benchmarks import trigger_loop
from benchmarks.measure import measured


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    count = int(params["k"])
    base_url = params["base_url"]
    poll_interval = float(params["poll_interval"])
    scale = poll_interval / trigger_loop.OFFICIAL_DEFAULT_POLL_SECONDS
    factory = trigger_loop.trigger_factory(contender, scale, end_time=time.time() + 3600)
    budget_per_window = None
    if contender in ("ours", "ours_frozen"):
        # The default budget (50 calls a minute), compressed with the rest: 50 calls per 60 * scale s.
        budget_per_window = trigger_loop.compress_budget(scale)
    trigger_loop.warm_up(factory, base_url, float(params["processing_seconds"]))
    batch_ids = trigger_loop.create_batches(base_url, count)
    created = trigger_loop.creation_times(base_url, batch_ids)
    calls_before = trigger_loop.status_calls(trigger_loop.emulator_state(base_url))
    frozen = 0
    if contender == "ours_frozen":
        # The mitigation for full-collection pauses: move the process's startup heap (Airflow, the
        # SDK, ~300,000 objects) out of the collector's reach, as Airflow's dag processor does.
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    with measured() as result:
        triggers = [factory(batch_id, created.get(batch_id)) for batch_id in batch_ids]
        run_stats = asyncio.run(trigger_loop.drive(triggers, batch_ids))
    state = trigger_loop.emulator_state(base_url)
    timings = trigger_loop.batch_timings(state, batch_ids)
    delays = [run_stats["fired_at"][batch_id] - timings[batch_id][1] for batch_id in batch_ids]
    status_calls = trigger_loop.status_calls(state) - calls_before
    figures: dict[str, Any] = {
        **result.as_dict(),
        "k": count,
        "poll_interval_s": poll_interval,
        "poll_scale": scale,
        "budget_calls_per_window": budget_per_window,
        **trigger_loop.lag_figures(run_stats["ticks"], run_stats["gc_pauses"]),
        "threads_created": run_stats["max_os_threads"] - result.os_threads_before,
        "python_threads_created": run_stats["max_python_threads"] - result.python_threads_before,
        "status_calls": status_calls,
        "status_calls_per_batch": status_calls / count,
        "delay_median_s": statistics.median(delays),
        "delay_max_s": max(delays),
        "delay_min_s": min(delays),
        "batch_running_s": statistics.median(ended - created for created, ended in timings.values()),
        "event_statuses": trigger_loop.count_values(run_stats["statuses"]),
    }
    figures["gc_frozen_objects"] = frozen
    if contender in ("ours", "ours_frozen"):
        polls = sum(run_stats["polls"])
        figures["polls"] = polls
        figures["status_calls_per_poll"] = status_calls / polls if polls else None
    figures["delay_fraction_max"] = figures["delay_max_s"] / figures["batch_running_s"]
    bad = {status for status in run_stats["statuses"] if status not in trigger_loop.ENDED_STATUSES}
    if bad:
        raise RuntimeError(f"{contender}: triggers fired {sorted(bad)} events: {run_stats['messages'][:3]}")
    return figures
