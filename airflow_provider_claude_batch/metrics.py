"""Airflow metrics of landed Claude results, through Airflow's own stats client (StatsD/OpenTelemetry).

Emitted once per task when its results land (``ClaudeRequestsOperator.finish``), by both operators,
with the tag ``route`` (``batch`` or ``sync``):

* ``claude_batch.submitted``: requests the task sent (one per landed row);
* ``claude_batch.succeeded`` / ``claude_batch.errored``: rows per outcome (``errored`` also counts
  rows that expired, were canceled or failed validation: every row that did not succeed);
* ``claude_batch.tokens.input`` / ``claude_batch.tokens.output``: tokens billed.

With ``[metrics] statsd_on`` (or ``otel_on``) unset, Airflow's stats client drops them at no cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["METRIC_PREFIX", "emit_landed_metrics", "stats_client"]

METRIC_PREFIX = "claude_batch"
log = logging.getLogger(__name__)


def stats_client() -> Any:
    """Airflow's ``Stats``: the Task SDK's public module on 3.2+, the deprecated shim before."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # pragma: no cover - Airflow 3.1
        from airflow.stats import Stats  # type: ignore[no-redef]
    return Stats


def emit_landed_metrics(manifest: Mapping[str, Any]) -> dict[str, int]:
    """Emit the counters of one landed manifest; returns what was emitted (for logs and tests).

    Never raises: a metrics backend that is down or misconfigured must not fail a task whose
    results have already landed.

    :param manifest: the manifest ``finish`` wrote (``request_count``, ``counts``, ``usage``, ``route``).
    """
    counts = dict(manifest.get("counts") or {})
    usage = dict(manifest.get("usage") or {})
    submitted = int(manifest.get("request_count") or 0)
    succeeded = int(counts.get("succeeded", 0))
    values = {
        f"{METRIC_PREFIX}.submitted": submitted,
        f"{METRIC_PREFIX}.succeeded": succeeded,
        f"{METRIC_PREFIX}.errored": submitted - succeeded,
        f"{METRIC_PREFIX}.tokens.input": int(usage.get("input_tokens", 0)),
        f"{METRIC_PREFIX}.tokens.output": int(usage.get("output_tokens", 0)),
    }
    tags = {"route": str(manifest.get("route") or "unknown")}
    try:
        stats = stats_client()
        for name, value in values.items():
            stats.incr(name, count=value, tags=tags)
    except Exception as error:  # the results are safe; losing a metric is the lesser harm
        log.warning("Could not emit Claude metrics (%s: %s)", type(error).__name__, error)
    return values
