"""The rows of the "Claude Batches" pages: batch tasks (read by :mod:`.task_records`) with live batch status.

Live status comes from the Message Batches API through the same
refresh the triggers' shared poller makes (:func:`~airflow_provider_claude_batch.hooks.poller.refresh_statuses`:
a list page, ``retrieve`` only for what it does not show, within the connection's request budget),
cached briefly, with failures reported in the row instead of raised.

Rows are plain JSON-ready dicts built by :func:`build_row`, which takes the database record, the
batch snapshots and ``now``, so the page's arithmetic is tested without Airflow or a network.

The API counts every request of a batch as ``processing`` until the whole batch ends, so there is no
per-request progress to show: the bar is time elapsed in the 24-hour window, and says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_claude_batch.links import task_page_path
from airflow_provider_claude_batch.plugins.cost_history import route_cost
from airflow_provider_claude_batch.polling import BatchSnapshot, iso_or_none

__all__ = [
    "BATCH_WINDOW_SECONDS",
    "PROGRESS_NOTE",
    "BatchStatusCache",
    "TaskRecord",
    "build_row",
    "build_rows",
]

BATCH_WINDOW_SECONDS = 24 * 3600.0
DEFAULT_CONN_ID = "claude_default"
PROGRESS_NOTE = (
    "Time elapsed in the batch's 24-hour window, not progress: the API counts every request as "
    "processing until the whole batch ends, then reports the outcome of each."
)
# How long a looked-up status is reused: an ended batch never changes; a running one is re-read
# at most this often however many browsers poll; a failed look-up is retried as soon.
RUNNING_TTL_SECONDS = 10.0
ENDED_TTL_SECONDS = 3600.0
ERROR_TTL_SECONDS = 10.0
# Connections refreshed at once, and the time each call may take, so a page never waits on a slow API long.
MAX_CONCURRENT_LOOKUPS = 4
LOOKUP_TIMEOUT_SECONDS = 10.0
_STATUS_ORDER = ("canceling", "in_progress", "ended")


@dataclass
class TaskRecord:
    """One batch task instance as the metadata DB knows it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    batch_ids: list[str]
    state: str | None = None
    try_number: int | None = None
    operator: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    submitted_at: datetime | None = None
    manifest: dict[str, Any] | None = None
    conn_id: str = DEFAULT_CONN_ID


@dataclass
class Lookup:
    """The outcome of one status look-up: a snapshot or an error message, and when it was made."""

    snapshot: BatchSnapshot | None
    error: str | None
    fetched_at: float

    def fresh(self, now: float) -> bool:
        if self.error is not None:
            ttl = ERROR_TTL_SECONDS
        elif self.snapshot is not None and self.snapshot.ended:
            ttl = ENDED_TTL_SECONDS
        else:
            ttl = RUNNING_TTL_SECONDS
        return now - self.fetched_at < ttl


def _refresh_with_hook(
    conn_id: str, batch_ids: list[str], submitted_at: Mapping[str, float]
) -> dict[str, BatchSnapshot | str]:
    """One refresh of a connection's batches (a list page, retrieve for the rest), errors as text."""
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook
    from airflow_provider_claude_batch.hooks.poller import refresh_statuses

    hook = ClaudeHook(conn_id, timeout=LOOKUP_TIMEOUT_SECONDS, max_retries=0)
    looks = refresh_statuses(hook, batch_ids, dict(submitted_at))
    return {batch_id: look.snapshot or str(look.message) for batch_id, look in looks.items()}


@dataclass
class BatchStatusCache:
    """Live batch status with a short cache, one refresh per connection; errors come back as text.

    :param refresh: ``(conn_id, batch_ids, submitted_at) -> {batch_id: BatchSnapshot or a message}``;
        defaults to :func:`~airflow_provider_claude_batch.hooks.poller.refresh_statuses` (the shared
        poller's calls). ``submitted_at`` maps batch ids to when they were submitted (epoch seconds),
        so a 404 right after a submission reads "not visible yet", not "not found".
    :param clock: seconds, monotonic (tests pass a fake).
    :param max_workers: connections refreshed at once.
    """

    refresh: Callable[[str, list[str], Mapping[str, float]], Mapping[str, BatchSnapshot | str]] = _refresh_with_hook
    clock: Callable[[], float] = time.monotonic
    max_workers: int = MAX_CONCURRENT_LOOKUPS
    _entries: dict[tuple[str, str], Lookup] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup_many(
        self, keys: Iterable[tuple[str, str]], submitted_at: Mapping[str, float] | None = None
    ) -> dict[tuple[str, str], Lookup]:
        """The status of every ``(conn_id, batch_id)``, from the cache when fresh, else from the API.

        :param keys: the batches to show.
        :param submitted_at: when each batch id was submitted (epoch seconds), where known.
        """
        hints = submitted_at or {}
        wanted = list(dict.fromkeys(keys))
        now = self.clock()
        with self._lock:
            result = {key: entry for key in wanted if (entry := self._entries.get(key)) and entry.fresh(now)}
        by_conn: dict[str, list[str]] = {}
        for conn_id, batch_id in wanted:
            if (conn_id, batch_id) not in result:
                by_conn.setdefault(conn_id, []).append(batch_id)
        if by_conn:
            with ThreadPoolExecutor(max_workers=max(1, min(self.max_workers, len(by_conn)))) as pool:
                jobs = [(conn_id, ids, {b: hints[b] for b in ids if b in hints}) for conn_id, ids in by_conn.items()]
                for fetched in pool.map(self._fetch, jobs):
                    result.update(fetched)
            with self._lock:
                self._entries.update({key: result[key] for key in result if key[0] in by_conn})
                # Keep the cache bounded: forget what has not been asked for in a day.
                stale = [k for k, v in self._entries.items() if now - v.fetched_at > BATCH_WINDOW_SECONDS]
                for key in stale:
                    del self._entries[key]
        return result

    def _fetch(self, job: tuple[str, list[str], dict[str, float]]) -> dict[tuple[str, str], Lookup]:
        conn_id, batch_ids, submitted_at = job
        try:
            outcomes = self.refresh(conn_id, batch_ids, submitted_at)
        except Exception as error:  # shown in the rows: one bad connection must not break the page
            from airflow_provider_claude_batch.hooks.api_errors import api_error_summary

            outcomes = {bid: f"Could not read batch {bid}: {api_error_summary(error)}" for bid in batch_ids}
        fetched_at = self.clock()
        lookups = {}
        for bid in batch_ids:
            outcome = outcomes.get(bid, f"Could not read batch {bid}: no answer")
            if isinstance(outcome, BatchSnapshot):
                lookups[(conn_id, bid)] = Lookup(outcome, None, fetched_at)
            else:
                lookups[(conn_id, bid)] = Lookup(None, outcome, fetched_at)
        return lookups

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# -- rows --------------------------------------------------------------------------------------


def _parse(moment: str | datetime | None) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _summary_status(batches: list[dict[str, Any]], landed: bool) -> str:
    statuses = [b["processing_status"] for b in batches if b.get("processing_status")]
    if not statuses:
        return "ended" if landed else "unknown"
    for status in _STATUS_ORDER:
        if status in statuses:
            return status
    return statuses[0]


def _window(batches: list[dict[str, Any]], now: datetime, fallback_start: datetime | None) -> dict[str, Any]:
    """The 24-hour window of the task's batches: from the first creation to the last expiry."""
    created = [c for b in batches if (c := _parse(b.get("created_at")))]
    expires = [e for b in batches if (e := _parse(b.get("expires_at")))]
    ended = [e for b in batches if (e := _parse(b.get("ended_at")))]
    start = min(created) if created else fallback_start
    if start is None:
        return {"created_at": None, "expires_at": None, "ended_at": None, "elapsed_seconds": None}
    expiry = max(expires) if expires else start + timedelta(seconds=BATCH_WINDOW_SECONDS)
    all_ended = bool(batches) and len(ended) == len(batches)
    end = max(ended) if all_ended else None
    until = end or now
    window = max((expiry - start).total_seconds(), 1.0)
    elapsed = max((until - start).total_seconds(), 0.0)
    return {
        "created_at": iso_or_none(start),
        "expires_at": iso_or_none(expiry),
        "ended_at": iso_or_none(end),
        "elapsed_seconds": round(elapsed, 1),
        "window_seconds": round(window, 1),
        "fraction": round(min(elapsed / window, 1.0), 6),
        "seconds_to_expiry": None if end else round(max((expiry - now).total_seconds(), 0.0), 1),
    }


def build_row(record: TaskRecord, lookups: Mapping[tuple[str, str], Lookup], now: datetime) -> dict[str, Any]:
    """One JSON row of the pages: a batch task, its batches' live status and, once landed, its costs.

    :param record: the task as the metadata DB knows it.
    :param lookups: status look-ups by ``(conn_id, batch_id)``.
    :param now: the current time (aware).
    """
    batches: list[dict[str, Any]] = []
    errors: list[str] = []
    counts: dict[str, int] = {}
    for batch_id in record.batch_ids:
        lookup = lookups.get((record.conn_id, batch_id))
        if lookup is None or lookup.snapshot is None:
            error = lookup.error if lookup is not None else "not looked up"
            errors.append(error)
            batches.append({"batch_id": batch_id, "processing_status": None, "error": error})
            continue
        snapshot = lookup.snapshot.as_dict()
        snapshot.pop("results_url", None)  # the API's own URL; fetching it needs the key
        batches.append({**snapshot, "error": None})
        for name, value in lookup.snapshot.request_counts.items():
            counts[name] = counts.get(name, 0) + int(value)
    manifest = record.manifest or {}
    landed = bool(manifest)
    if landed and manifest.get("counts"):
        # Once landed, the rows are the truth (the API may have been unreachable since, or deleted).
        landed_counts = {k: int(v) for k, v in manifest["counts"].items() if int(v)}
        counts = landed_counts or counts
    usage = manifest.get("usage") or {}
    return {
        "dag_id": record.dag_id,
        "run_id": record.run_id,
        "task_id": record.task_id,
        "map_index": record.map_index,
        "task_state": record.state,
        "try_number": record.try_number,
        "operator": record.operator,
        "conn_id": record.conn_id,
        "batch_ids": list(record.batch_ids),
        "batches": batches,
        "status": _summary_status(batches, landed),
        "request_counts": counts,
        "request_total": sum(counts.values()) if counts else int(manifest.get("request_count") or 0),
        "window": _window(batches, now, _parse(record.submitted_at)),
        "submitted_at": iso_or_none(_parse(record.submitted_at)),
        "landed": landed,
        "landed_at": manifest.get("landed_at"),
        "usage": {k: int(v) for k, v in usage.items()} if usage else None,
        "cost": route_cost(manifest),
        "route": manifest.get("route"),
        "results_uri": manifest.get("results_uri"),
        "manifest_uri": manifest.get("manifest_uri"),
        "task_page": task_page_path(record.dag_id, record.run_id, record.task_id, record.map_index),
        "errors": errors,
    }


def build_rows(records: Iterable[TaskRecord], cache: BatchStatusCache, now: datetime | None = None) -> list[dict]:
    """Rows for ``records``, looking every batch up once (through ``cache``)."""
    records = list(records)
    submitted_at = {
        batch_id: moment.timestamp()
        for record in records
        if (moment := _parse(record.submitted_at)) is not None
        for batch_id in record.batch_ids
    }
    lookups = cache.lookup_many(((r.conn_id, b) for r in records for b in r.batch_ids), submitted_at)
    moment = now or datetime.now(timezone.utc)
    return [build_row(record, lookups, moment) for record in records]
