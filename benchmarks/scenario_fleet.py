"""Scenario 6, a nightly fleet: K deferred batches in one triggerer loop, the workspace limited to 60 calls a minute.

The emulator enforces one rolling limit across every batch endpoint (``rate_limit_rpm`` = 60 per
``rate_limit_window_seconds``); ours runs with its default request budget of 50 calls per window.
K one-request batches are created with the limit off (the setup's creates do not count), then the
limit is switched on (``POST /_emulator/config``) and K triggers of the contender run in one event
loop (:mod:`benchmarks.trigger_loop`) until each fired its event, or until the harness cuts the
run off two fixed polls after the triggers' deadline (a contender that cannot finish is reported
as such: how many of K ended, timed out, errored or were still waiting).

Time is compressed ``1 / scale`` times (:mod:`benchmarks.trigger_loop`): the emulator's window and
ours' budget window are ``60 * scale`` s, every poll interval is multiplied by ``scale``, and the
batches run ``batch_seconds`` (``batch_seconds / scale`` real seconds). Every call the process
sends to a batch endpoint is recorded client-side (:class:`CallLog`, below the SDK), which gives the
peak calls per (compressed) minute; the emulator's counters give the calls it served and the 429s
it answered; its ``ended_at`` per batch gives the delay from batch end to the trigger's event.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks import trigger_loop, workloads
from benchmarks.measure import measured

LIMIT_PER_MINUTE = 60
BATCHES_PATH = "/v1/messages/batches"
# The harness waits this many fixed polls past the triggers' deadline before it cuts a run off.
CUT_OFF_POLLS = 2
# The delay from a batch's end to its event may be this long at least (ours' shortest poll, real seconds) ...
DELAY_FLOOR_REAL_S = 5.0
# ... or this fraction of the batch's running time.
DELAY_FRACTION = 0.10
# Calls closer than this to a window's length apart count in two windows (see CallLog.peak_per_window).
STAMP_JITTER_S = 0.001


@dataclass
class CallLog:
    """Every Message Batches API call this process sends: when it was sent, what it was, its status.

    Installed below the SDK, in httpx2's transports, so every contender's calls are seen the same
    way, each SDK retry included.
    """

    calls: list[tuple[float, str, int]] = field(default_factory=list)

    def install(self) -> None:
        import httpx2

        log = self
        sync_send = httpx2.HTTPTransport.handle_request
        async_send = httpx2.AsyncHTTPTransport.handle_async_request

        def handle_request(transport: Any, request: Any) -> Any:
            sent = time.monotonic()
            response = sync_send(transport, request)
            log.note(sent, request, response.status_code)
            return response

        async def handle_async_request(transport: Any, request: Any) -> Any:
            sent = time.monotonic()
            response = await async_send(transport, request)
            log.note(sent, request, response.status_code)
            return response

        httpx2.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]
        httpx2.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]

    def note(self, sent: float, request: Any, status: int) -> None:
        path = request.url.path
        if path.startswith(BATCHES_PATH):
            self.calls.append((sent, _kind(request.method, path), status))

    def count(self, kinds: tuple[str, ...] | None = None, status: int | None = None) -> int:
        return sum(
            1 for _, kind, code in self.calls if (kinds is None or kind in kinds) and (status is None or code == status)
        )

    def peak_per_window(self, window: float, admitted_only: bool = False) -> int:
        """The most calls sent in any rolling ``window`` seconds (429 answers left out with ``admitted_only``).

        Calls are stamped as they reach the transport, a few microseconds after the budget granted them;
        a call sent a millisecond short of a window after another counts in a window of its own, so
        that this jitter cannot show a budget of 50 as 51.
        """
        stamps = sorted(stamp for stamp, _, code in self.calls if not (admitted_only and code == 429))
        peak = start = 0
        for end, stamp in enumerate(stamps):
            while stamps[start] <= stamp - window + STAMP_JITTER_S:
                start += 1
            peak = max(peak, end - start + 1)
        return peak


def _kind(method: str, path: str) -> str:
    rest = path[len(BATCHES_PATH) :].strip("/")
    if method == "GET" and not rest:
        return "list"
    if method == "GET" and "/" not in rest:
        return "retrieve"
    if method == "POST" and not rest:
        return "create"
    return rest.rpartition("/")[2] or method.lower()  # results, cancel


STATUS_KINDS = ("list", "retrieve")


def run(contender: str, params: dict[str, Any]) -> dict[str, Any]:
    count = int(params["k"])
    base_url = params["base_url"]
    scale = float(params["scale"])
    batch_seconds = float(params["batch_seconds"])
    deadline_seconds = float(params["deadline_seconds"])
    window = trigger_loop.REAL_MINUTE * scale
    ours = contender == "ours"
    budget = trigger_loop.compress_budget(scale) if ours else None
    trigger_loop.warm_up(trigger_loop.trigger_factory(contender, scale, time.time() + 3600), base_url, batch_seconds)
    batch_ids = trigger_loop.create_batches(base_url, count)
    created = trigger_loop.creation_times(base_url, batch_ids)
    trigger_loop.configure(base_url, rate_limit_rpm=LIMIT_PER_MINUTE, rate_limit_window_seconds=window)
    before = trigger_loop.emulator_state(base_url)
    log = CallLog()
    log.install()
    cycles: list[tuple[float, int]] = []  # (start, status calls) of each of ours' refresh cycles
    cut_off_after = deadline_seconds + CUT_OFF_POLLS * trigger_loop.OFFICIAL_DEFAULT_POLL_SECONDS * scale
    with measured() as result:
        factory = trigger_loop.trigger_factory(contender, scale, time.time() + deadline_seconds)
        triggers = [factory(batch_id, created.get(batch_id)) for batch_id in batch_ids]
        instrument = _count_cycles(log, cycles) if ours else None
        run_stats = asyncio.run(trigger_loop.drive(triggers, batch_ids, cut_off_after, before=instrument))
    state = trigger_loop.emulator_state(base_url)
    trigger_loop.configure(base_url, rate_limit_rpm=None)
    figures: dict[str, Any] = {
        **result.as_dict(),
        "k": count,
        "scale": scale,
        "window_s": window,
        "limit_per_window": LIMIT_PER_MINUTE,
        "budget_per_window": budget,
        "deadline_s": deadline_seconds,
        "cut_off_after_s": cut_off_after,
        **_outcomes(run_stats, count),
        **_calls(log, before, state, count, window),
        **_delays(run_stats, trigger_loop.batch_timings(state, batch_ids), scale),
        **trigger_loop.lag_figures(run_stats["ticks"], run_stats["gc_pauses"]),
        "threads_created": run_stats["max_os_threads"] - result.os_threads_before,
    }
    if cycles:
        figures.update(_cycle_figures(cycles, run_stats["all_started_at"]))
    return figures


def _cycle_figures(cycles: list[tuple[float, int]], all_started_at: float) -> dict[str, Any]:
    """Status calls per refresh cycle; separately once every trigger had registered with the poller.

    Until then (the loop starts one trigger per turn, about a millisecond each), the registered
    triggers wait for the oldest batches, listed behind newer ones whose triggers are not yet there.
    """
    calls = [count for _, count in cycles]
    settled = [count for started, count in cycles if started >= all_started_at]
    worst_start, _ = max(cycles, key=lambda cycle: cycle[1])
    return {
        "poll_cycles": len(cycles),
        "status_calls_per_cycle_max": max(calls),
        "status_calls_per_cycle_mean": statistics.mean(calls),
        "status_calls_per_cycle_max_all_registered": max(settled, default=None),
        "worst_cycle_started_s": worst_start - cycles[0][0],
        "all_triggers_started_s": all_started_at - cycles[0][0],
    }


async def _count_cycles(log: CallLog, cycles: list[tuple[float, int]]) -> None:
    """Wrap ours' shared poller of this loop so each refresh cycle's calls are counted."""
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.hooks.poller import shared_poller

    poller = await shared_poller(ClaudeHook(workloads.OURS_CONN_ID))
    refresh = poller.refresh

    async def counted() -> None:
        first, started = len(log.calls), time.monotonic()
        await refresh()
        cycles.append((started, len(log.calls) - first))

    poller.refresh = counted  # type: ignore[method-assign]


def _outcomes(run_stats: dict[str, Any], count: int) -> dict[str, Any]:
    statuses = list(run_stats["status_of"].values())
    ended = sum(1 for status in statuses if status in trigger_loop.ENDED_STATUSES)
    return {
        "ended": ended,
        "ended_fraction": ended / count,
        "timed_out": statuses.count("timeout"),
        "errored": statuses.count("error"),
        "cut_off": run_stats["cut_off"],
        "event_statuses": trigger_loop.count_values(statuses),
        "error_sample": next(
            (m for m, s in zip(run_stats["messages"], run_stats["statuses"], strict=True) if s == "error"), None
        ),
    }


def _calls(log: CallLog, before: dict[str, Any], after: dict[str, Any], count: int, window: float) -> dict[str, Any]:
    served = sum(after["calls"].get(route, 0) - before["calls"].get(route, 0) for route in after["calls"])
    rate_limited = after["rate_limited"] - before["rate_limited"]
    status_calls = log.count(STATUS_KINDS)
    return {
        "rate_limited": rate_limited,
        "calls_served": served,
        "calls_sent": len(log.calls),
        "calls_sent_per_batch": len(log.calls) / count,
        "status_calls": status_calls,
        "status_calls_per_batch": status_calls / count,
        "list_calls": log.count(("list",)),
        "retrieve_calls": log.count(("retrieve",)),
        "client_429s": log.count(status=429),
        "peak_calls_per_minute": log.peak_per_window(window),
        "peak_served_per_minute": log.peak_per_window(window, admitted_only=True),
    }


def _delays(run_stats: dict[str, Any], timings: dict[str, tuple[float, float | None]], scale: float) -> dict[str, Any]:
    """Delay from each ended batch's end to its event, in benchmark seconds and against its allowance."""
    delays = []
    over_allowance = []
    running = []
    for batch_id, status in run_stats["status_of"].items():
        created, ended = timings[batch_id]
        if status not in trigger_loop.ENDED_STATUSES or ended is None:
            continue
        delay = run_stats["fired_at"][batch_id] - ended
        allowance = max(DELAY_FLOOR_REAL_S * scale, DELAY_FRACTION * (ended - created))
        delays.append(delay)
        over_allowance.append(delay / allowance)
        running.append(ended - created)
    if not delays:
        return {"delay_median_s": None, "delay_max_s": None, "delay_allowance_ratio_max": None}
    return {
        "delay_median_s": statistics.median(delays),
        "delay_max_s": max(delays),
        "delay_allowance_ratio_max": max(over_allowance),
        "batch_running_s": statistics.median(running),
        "delay_median_real_s": statistics.median(delays) / scale,
        "delay_max_real_s": max(delays) / scale,
    }
