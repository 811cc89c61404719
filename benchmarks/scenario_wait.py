"""Scenario 3, wait at scale: K deferred batches in ONE asyncio loop, the way a triggerer runs them.

K batches of one request each are created first (outside the measurement), then K triggers of
the contender run concurrently in one event loop, each consumed with ``async for`` as the
triggerer's ``run_trigger`` does, while a 10 ms ticker task measures how late the loop wakes it
(event-loop lag) and samples the thread count. Afterwards the emulator's per-route call counters
give the status calls per batch, and its ``ended_at`` per batch gives the delay from batch end to
the trigger's event.

Poll settings: the fixed-interval contenders (official, common-ai) poll every ``poll_interval``
seconds; ours keeps its adaptive schedule (10% of the batch's age, between a minimum and a
maximum) with its default minimum (5 s) and maximum (600 s) multiplied by the same factor that
turns the official default of 60 s into ``poll_interval`` (``scale = poll_interval / 60``). A run
is therefore the time-compressed picture of a batch ``1 / scale`` times longer.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import threading
import time
import urllib.request
from datetime import datetime
from typing import Any

from benchmarks import workloads
from benchmarks.measure import measured, os_thread_count

TICK_SECONDS = 0.01
THREAD_SAMPLE_EVERY = 10  # ticks
OFFICIAL_DEFAULT_POLL_SECONDS = 60.0
STATUS_ROUTE = "GET /v1/messages/batches/{message_batch_id}"


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    count = int(params["k"])
    base_url = params["base_url"]
    poll_interval = float(params["poll_interval"])
    scale = poll_interval / OFFICIAL_DEFAULT_POLL_SECONDS
    build = {"ours": _ours, "ours_frozen": _ours, "official": _official, "common_ai": _common_ai}[contender]
    factory = build(scale, poll_interval)  # imports the contender's modules
    _warm_up(factory, base_url, float(params["processing_seconds"]))
    batch_ids = _create_batches(base_url, count)
    calls_before = _emulator_state(base_url)["calls"].get(STATUS_ROUTE, 0)
    frozen = 0
    if contender == "ours_frozen":
        # The mitigation for full-collection pauses: move the process's startup heap (Airflow, the
        # SDK, ~300,000 objects) out of the collector's reach, as Airflow's dag processor does.
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    with measured() as result:
        triggers = [factory(batch_id) for batch_id in batch_ids]
        run_stats = asyncio.run(_drive(triggers, batch_ids))
    state = _emulator_state(base_url)
    measured_batches = [batch for batch in state["batches"] if batch["id"] in set(batch_ids)]
    ended_at = {batch["id"]: _timestamp(batch["ended_at"]) for batch in measured_batches}
    delays = [run_stats["fired_at"][batch_id] - ended_at[batch_id] for batch_id in batch_ids]
    status_calls = state["calls"].get(STATUS_ROUTE, 0) - calls_before
    figures: dict[str, Any] = {
        **result.as_dict(),
        "k": count,
        "poll_interval_s": poll_interval,
        "poll_scale": scale,
        **lag_figures(run_stats["ticks"], run_stats["gc_pauses"]),
        "threads_created": run_stats["max_os_threads"] - result.os_threads_before,
        "python_threads_created": run_stats["max_python_threads"] - result.python_threads_before,
        "status_calls": status_calls,
        "status_calls_per_batch": status_calls / count,
        "delay_median_s": statistics.median(delays),
        "delay_max_s": max(delays),
        "delay_min_s": min(delays),
        "batch_running_s": statistics.median(
            _timestamp(b["ended_at"]) - _timestamp(b["created_at"]) for b in measured_batches
        ),
        "event_statuses": dict(_count(run_stats["statuses"])),
    }
    figures["gc_frozen_objects"] = frozen
    if contender in ("ours", "ours_frozen"):
        polls = sum(run_stats["polls"])
        figures["polls"] = polls
        figures["status_calls_per_poll"] = status_calls / polls if polls else None
    figures["delay_fraction_max"] = figures["delay_max_s"] / figures["batch_running_s"]
    bad = {status for status in run_stats["statuses"] if status not in ("ended", "success")}
    if bad:
        raise RuntimeError(f"{contender}: triggers fired {sorted(bad)} events: {run_stats['messages'][:3]}")
    return figures


def _ours(scale: float, poll_interval: float) -> Any:
    from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS
    from airflow_provider_claude_batch.triggers.batch import ClaudeBatchTrigger

    end_time = time.time() + 3600

    def factory(batch_id: str) -> Any:
        return ClaudeBatchTrigger(
            batch_ids=[batch_id],
            claude_conn_id=workloads.OURS_CONN_ID,
            end_time=end_time,
            min_poll_interval=DEFAULT_MIN_POLL_SECONDS * scale,
            max_poll_interval=DEFAULT_MAX_POLL_SECONDS * scale,
        )

    return factory


def _official(scale: float, poll_interval: float) -> Any:
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    end_time = time.time() + 3600

    def factory(batch_id: str) -> Any:
        return AnthropicBatchTrigger(
            conn_id=workloads.OFFICIAL_CONN_ID, batch_id=batch_id, poll_interval=poll_interval, end_time=end_time
        )

    return factory


def _common_ai(scale: float, poll_interval: float) -> Any:
    from airflow.providers.common.ai.triggers.llm_batch import LLMBatchTrigger

    end_time = time.time() + 3600

    def factory(batch_id: str) -> Any:
        return LLMBatchTrigger(
            llm_conn_id=workloads.COMMON_AI_CONN_ID,
            adapter="anthropic",
            batch_id=batch_id,
            poll_interval=poll_interval,  # type: ignore[arg-type]
            end_time=end_time,
            timeout=3600,
            cancel_on_kill=True,
            cancel_on_timeout=True,
        )

    return factory


async def _drive(triggers: list[Any], batch_ids: list[str]) -> dict[str, Any]:
    """Run every trigger to its event concurrently, with the lag ticker alongside.

    Garbage-collector pauses are recorded too (``gc.callbacks``), so a lag can be attributed: a
    full (generation 2) collection walks the whole heap of the process, Airflow's own objects
    included, and stops every thread, the event loop's with them.
    """
    loop = asyncio.get_running_loop()
    ticks: list[tuple[float, float]] = []  # (start, end) of each tick, loop time
    pauses: list[tuple[int, float, float]] = []  # (generation, start, end) of each collection
    stats: dict[str, Any] = {
        "ticks": ticks,
        "gc_pauses": pauses,
        "fired_at": {},
        "statuses": [],
        "messages": [],
        "polls": [],
        "max_os_threads": os_thread_count(),
        "max_python_threads": threading.active_count(),
    }
    done = asyncio.Event()
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
        else:
            pauses.append((info["generation"], gc_started[0], time.monotonic()))

    async def ticker() -> None:
        count = 0
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(TICK_SECONDS)
            ticks.append((before, loop.time()))
            count += 1
            if count % THREAD_SAMPLE_EVERY == 0:
                stats["max_os_threads"] = max(stats["max_os_threads"], os_thread_count())
                stats["max_python_threads"] = max(stats["max_python_threads"], threading.active_count())

    async def run_trigger(trigger: Any, batch_id: str) -> None:
        async for event in trigger.run():
            stats["fired_at"].setdefault(batch_id, time.time())
            payload = event.payload
            stats["statuses"].append(payload.get("status"))
            stats["messages"].append(payload.get("message"))
            if "polls" in payload:
                stats["polls"].append(payload["polls"])

    gc.callbacks.append(on_gc)
    tick_task = asyncio.create_task(ticker())
    try:
        pairs = zip(triggers, batch_ids, strict=True)
        await asyncio.gather(*(run_trigger(trigger, batch_id) for trigger, batch_id in pairs))
    finally:
        done.set()
        await tick_task
        gc.callbacks.remove(on_gc)
    stats["max_os_threads"] = max(stats["max_os_threads"], os_thread_count())
    return stats


def lag_figures(ticks: list[tuple[float, float]], pauses: list[tuple[int, float, float]]) -> dict[str, float]:
    """Event-loop lag of each tick (how late the 10 ms sleep woke up), with and without GC pauses.

    ``asyncio``'s loop clock is ``time.monotonic``, the clock the GC callback records, so the time
    a collection overlapped a tick can be taken out of that tick's lag.
    """
    lags = []
    lags_without_gc = []
    ordered = sorted((start, end) for _, start, end in pauses)
    for start, end in ticks:
        lag = max(end - start - TICK_SECONDS, 0.0)
        in_gc = sum(max(min(end, gc_end) - max(start, gc_start), 0.0) for gc_start, gc_end in ordered)
        lags.append(lag)
        lags_without_gc.append(max(lag - in_gc, 0.0))
    lags.sort()
    lags_without_gc.sort()
    full = [end - start for generation, start, end in pauses if generation == 2]
    return {
        "lag_max_ms": 1000 * (lags[-1] if lags else 0.0),
        "lag_p99_ms": 1000 * _percentile(lags, 0.99),
        "lag_p50_ms": 1000 * _percentile(lags, 0.50),
        "lag_max_without_gc_ms": 1000 * (lags_without_gc[-1] if lags_without_gc else 0.0),
        "lag_p99_without_gc_ms": 1000 * _percentile(lags_without_gc, 0.99),
        "ticks": len(lags),
        "gc_full_collections": len(full),
        "gc_full_pause_max_ms": 1000 * max(full, default=0.0),
        "gc_pause_total_ms": 1000 * sum(end - start for _, start, end in pauses),
    }


def _warm_up(factory: Any, base_url: str, processing_seconds: float) -> None:
    """Run one trigger to its event against an already-ended batch, before the baseline.

    Modules the trigger imports on its first poll (the SDK's resources, the async transport) are
    then loaded, so RSS growth is what K waiting triggers cost, not what importing costs. The
    warm-up runs in its own event loop: nothing it built (clients, pools, executor threads) is
    reused by the measured loop.
    """
    _configure(base_url, processing_seconds=0)
    try:
        [batch_id] = _create_batches(base_url, 1, prefix="warmup")
        asyncio.run(_drive([factory(batch_id)], [batch_id]))
    finally:
        _configure(base_url, processing_seconds=processing_seconds)


def _configure(base_url: str, **config: Any) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{base_url}/_emulator/config",
        data=json.dumps(config).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with opener.open(request, timeout=60) as response:
        response.read()


def _create_batches(base_url: str, count: int, prefix: str = "") -> list[str]:
    """``count`` one-request batches, created with a plain HTTP client closed before measuring."""
    import httpx2

    headers = {"content-type": "application/json", "x-api-key": workloads.API_KEY, "anthropic-version": "2023-06-01"}
    batch_ids = []
    with httpx2.Client(base_url=base_url, timeout=60) as client:
        for index in range(count):
            body = workloads.create_body(workloads.full_requests(1, prefix=f"{prefix}{index:08d}"))
            response = client.post("/v1/messages/batches", content=body, headers=headers)
            response.raise_for_status()
            batch_ids.append(response.json()["id"])
    return batch_ids


def _emulator_state(base_url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/_emulator/state", timeout=60) as response:
        return json.loads(response.read())


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def _count(values: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
