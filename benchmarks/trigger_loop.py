"""K triggers in ONE asyncio loop, as a triggerer runs them: the machinery the wait and fleet scenarios share.

Each contender's trigger is built by a factory (:func:`trigger_factory`), the triggers are consumed
with ``async for`` as the triggerer's ``run_trigger`` does (:func:`drive`), while a 10 ms ticker task
measures how late the loop wakes it (event-loop lag) and ``gc.callbacks`` records garbage-collector
pauses. The batches are created beforehand over plain HTTP, and the emulator is configured and read
through its admin endpoints.

**Time compression.** A run is the picture of a real one compressed ``1 / scale`` times: every
interval the contenders use (the official default poll of 60 s, ours' adaptive minimum of 5 s and
maximum of 600 s, ours' progress log every 600 s) is multiplied by ``scale``, and so is the window of
ours' request budget (:func:`compress_budget`) when a scenario limits the emulator.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

from benchmarks import workloads
from benchmarks.measure import os_thread_count

TICK_SECONDS = 0.01
THREAD_SAMPLE_EVERY = 10  # ticks
OFFICIAL_DEFAULT_POLL_SECONDS = 60.0
REAL_MINUTE = 60.0
BATCHES_ROUTE = "GET /v1/messages/batches"
RETRIEVE_ROUTE = "GET /v1/messages/batches/{message_batch_id}"
STATUS_ROUTES = (BATCHES_ROUTE, RETRIEVE_ROUTE)
# Event statuses that mean "the batch ended": ours says ``ended``, the anchors ``success``.
ENDED_STATUSES = ("ended", "success")

# (batch id, when it was created) -> trigger; ours is told the creation time, as the operator tells it.
TriggerFactory = Callable[[str, float | None], Any]


def trigger_factory(contender: str, scale: float, end_time: float) -> TriggerFactory:
    """Builds one trigger of ``contender`` per batch id, its intervals compressed by ``scale``.

    Imports the contender's modules (before any baseline is taken).
    """
    poll_interval = OFFICIAL_DEFAULT_POLL_SECONDS * scale
    if contender in ("ours", "ours_frozen"):
        from airflow_provider_claude_batch.polling import DEFAULT_MAX_POLL_SECONDS, DEFAULT_MIN_POLL_SECONDS
        from airflow_provider_claude_batch.triggers.batch import DEFAULT_PROGRESS_LOG_SECONDS, ClaudeBatchTrigger

        return lambda batch_id, created=None: ClaudeBatchTrigger(
            batch_ids=[batch_id],
            claude_conn_id=workloads.OURS_CONN_ID,
            end_time=end_time,
            min_poll_interval=DEFAULT_MIN_POLL_SECONDS * scale,
            max_poll_interval=DEFAULT_MAX_POLL_SECONDS * scale,
            progress_log_interval=DEFAULT_PROGRESS_LOG_SECONDS * scale,
            submitted_at=created,
        )
    if contender == "official":
        from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

        return lambda batch_id, created=None: AnthropicBatchTrigger(
            conn_id=workloads.OFFICIAL_CONN_ID, batch_id=batch_id, poll_interval=poll_interval, end_time=end_time
        )
    if contender == "common_ai":
        from airflow.providers.common.ai.triggers.llm_batch import LLMBatchTrigger

        # common-ai's operator refuses polls under 30 s; its trigger, driven directly here, takes what it is given.
        return lambda batch_id, created=None: LLMBatchTrigger(
            llm_conn_id=workloads.COMMON_AI_CONN_ID,
            adapter="anthropic",
            batch_id=batch_id,
            poll_interval=poll_interval,  # type: ignore[arg-type]
            end_time=end_time,
            timeout=int(end_time - time.time()),
            cancel_on_kill=True,
            cancel_on_timeout=True,
        )
    raise ValueError(f"unknown contender {contender!r}")


def compress_budget(scale: float) -> int:
    """Make ours' request budget count per ``60 * scale`` s instead of per minute; returns its calls per window.

    The budget is the process-wide one every hook of ours' benchmark connection draws from (its
    ``window_seconds`` is a public field, 60 s in production); the calls allowed per window stay the
    connection's ``batch_requests_per_minute``.
    """
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

    budget = ClaudeHook(workloads.OURS_CONN_ID).settings.budget
    budget.window_seconds = REAL_MINUTE * scale
    return budget.per_minute


async def drive(
    triggers: list[Any], batch_ids: list[str], cut_off_after: float | None = None, before: Any = None
) -> dict[str, Any]:
    """Run every trigger to its event concurrently, with the lag ticker alongside.

    Garbage-collector pauses are recorded too (``gc.callbacks``), so a lag can be attributed: a
    full (generation 2) collection walks the whole heap of the process, Airflow's own objects
    included, and stops every thread, the event loop's with them.

    :param cut_off_after: seconds after which triggers still running are cancelled (those without an
        event yet are counted under ``cut_off``), so that a contender that cannot finish never hangs the run.
    :param before: an awaitable run in the loop before the triggers start (to reach loop-bound state).
    """
    loop = asyncio.get_running_loop()
    # (start, end) of each tick in loop time, and the loop thread's CPU seconds over it
    ticks: list[tuple[float, float, float]] = []
    pauses: list[tuple[int, float, float]] = []  # (generation, start, end) of each collection
    stats: dict[str, Any] = {
        "ticks": ticks,
        "gc_pauses": pauses,
        "fired_at": {},
        "statuses": [],
        "status_of": {},
        "messages": [],
        "polls": [],
        "max_os_threads": os_thread_count(),
        "max_python_threads": threading.active_count(),
        "cut_off": 0,
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
            before_tick, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(TICK_SECONDS)
            ticks.append((before_tick, loop.time(), time.thread_time() - cpu_before))
            count += 1
            if count % THREAD_SAMPLE_EVERY == 0:
                stats["max_os_threads"] = max(stats["max_os_threads"], os_thread_count())
                stats["max_python_threads"] = max(stats["max_python_threads"], threading.active_count())

    async def run_trigger(trigger: Any, batch_id: str) -> None:
        async for event in trigger.run():
            stats["fired_at"].setdefault(batch_id, time.time())
            payload = event.payload
            stats["statuses"].append(payload.get("status"))
            stats["status_of"].setdefault(batch_id, payload.get("status"))
            stats["messages"].append(payload.get("message"))
            if "polls" in payload:
                stats["polls"].append(payload["polls"])

    if before is not None:
        stats["before"] = await before
    gc.callbacks.append(on_gc)
    tick_task = asyncio.create_task(ticker())
    try:
        tasks = []
        for trigger, batch_id in zip(triggers, batch_ids, strict=True):
            # As the triggerer's ``create_triggers`` does: one new trigger per turn of the loop.
            await asyncio.sleep(0)
            tasks.append(asyncio.create_task(run_trigger(trigger, batch_id)))
        stats["all_started_at"] = time.monotonic()
        finished, pending = await asyncio.wait(tasks, timeout=cut_off_after)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # A trigger may still be running after its event (common-ai closes its client afterwards).
        stats["cut_off"] = len(triggers) - len(stats["status_of"])
        for task in finished:
            task.result()  # a trigger that raised fails the run loudly
    finally:
        done.set()
        await tick_task
        gc.callbacks.remove(on_gc)
    stats["max_os_threads"] = max(stats["max_os_threads"], os_thread_count())
    return stats


def lag_figures(ticks: list[tuple[float, float, float]], pauses: list[tuple[int, float, float]]) -> dict[str, float]:
    """Event-loop lag of each tick (how late the 10 ms sleep woke up), with and without GC pauses.

    ``asyncio``'s loop clock is ``time.monotonic``, the clock the GC callback records, so the time
    a collection overlapped a tick can be taken out of that tick's lag. The loop thread's own CPU
    time over a tick is the part of the lag the process spent computing (collections included):
    unlike the wall-clock lag, it does not grow when a busy machine keeps the process off a core.
    """
    lags = []
    lags_without_gc = []
    cpu = sorted(busy for _, _, busy in ticks)
    cpu_without_gc = []
    worst_at = worst = 0.0
    ordered = sorted((start, end) for _, start, end in pauses)
    for start, end, busy in ticks:
        lag = max(end - start - TICK_SECONDS, 0.0)
        in_gc = sum(max(min(end, gc_end) - max(start, gc_start), 0.0) for gc_start, gc_end in ordered)
        lags.append(lag)
        lags_without_gc.append(max(lag - in_gc, 0.0))
        cpu_without_gc.append(max(busy - in_gc, 0.0))
        if lag - in_gc > worst:
            worst, worst_at = lag - in_gc, start - ticks[0][0]
    lags.sort()
    lags_without_gc.sort()
    full = [end - start for generation, start, end in pauses if generation == 2]
    return {
        "lag_max_ms": 1000 * (lags[-1] if lags else 0.0),
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "lag_p50_ms": 1000 * percentile(lags, 0.50),
        "lag_max_without_gc_ms": 1000 * (lags_without_gc[-1] if lags_without_gc else 0.0),
        "lag_p99_without_gc_ms": 1000 * percentile(lags_without_gc, 0.99),
        "lag_max_without_gc_at_s": worst_at,  # when the worst lag outside collections began, from the first tick
        "lag_cpu_max_ms": 1000 * (cpu[-1] if cpu else 0.0),
        "lag_cpu_p99_ms": 1000 * percentile(cpu, 0.99),
        "lag_cpu_max_without_gc_ms": 1000 * max(cpu_without_gc, default=0.0),
        "ticks": len(lags),
        "gc_collections": len(pauses),
        "gc_full_collections": len(full),
        "gc_full_pause_max_ms": 1000 * max(full, default=0.0),
        "gc_pause_total_ms": 1000 * sum(end - start for _, start, end in pauses),
    }


def warm_up(factory: TriggerFactory, base_url: str, processing_seconds: float) -> None:
    """Run one trigger to its event against an already-ended batch, before the baseline.

    Modules the trigger imports on its first poll (the SDK's resources, the async transport) are
    then loaded, so RSS growth is what K waiting triggers cost, not what importing costs. The
    warm-up runs in its own event loop: nothing it built (clients, pools, executor threads) is
    reused by the measured loop.
    """
    configure(base_url, processing_seconds=0)
    try:
        [batch_id] = create_batches(base_url, 1, prefix="warmup")
        asyncio.run(drive([factory(batch_id, None)], [batch_id]))
    finally:
        configure(base_url, processing_seconds=processing_seconds)


def configure(base_url: str, **config: Any) -> None:
    """Change the emulator's settings (``POST /_emulator/config``)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{base_url}/_emulator/config",
        data=json.dumps(config).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with opener.open(request, timeout=60) as response:
        response.read()


def create_batches(base_url: str, count: int, prefix: str = "") -> list[str]:
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


def creation_times(base_url: str, batch_ids: list[str]) -> dict[str, float]:
    """When each of ``batch_ids`` was created (epoch seconds), read before anything is measured."""
    return {batch_id: created for batch_id, (created, _) in batch_timings(emulator_state(base_url), batch_ids).items()}


def emulator_state(base_url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/_emulator/state", timeout=60) as response:
        return json.loads(response.read())


def status_calls(state: dict[str, Any]) -> int:
    """Status looks the emulator served: ``list`` pages and ``retrieve`` calls."""
    return sum(state["calls"].get(route, 0) for route in STATUS_ROUTES)


def batch_timings(state: dict[str, Any], batch_ids: list[str]) -> dict[str, tuple[float, float | None]]:
    """``(created, ended)`` epoch seconds of each of ``batch_ids`` (``ended`` is ``None`` while running)."""
    wanted = set(batch_ids)
    return {
        batch["id"]: (timestamp(batch["created_at"]), timestamp(batch["ended_at"]) if batch["ended_at"] else None)
        for batch in state["batches"]
        if batch["id"] in wanted
    }


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def count_values(values: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
