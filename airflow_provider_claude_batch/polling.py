"""When to look at a batch again, and how to describe what was seen.

Batches take anywhere from minutes to 24 hours, and the API keeps every request counted as
``processing`` until the whole batch ends, so there is no progress to watch, only the end to
notice. Polling is therefore adaptive: the wait between two looks is a fixed fraction of the time
the batch has already run (so the end is noticed within that fraction of the batch's running time),
bounded below so short batches are noticed fast and above so nobody waits hours past the end.

This module imports nothing from Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# The wait between two looks, as a fraction of the batch's age. The promise is that a batch's end is
# noticed within 10% of its running time (until the cap applies); the look itself, the refresh
# cycle's other calls and the event loop take time too, so the schedule keeps a tenth of that as margin.
POLL_FRACTION = 0.09
DEFAULT_MIN_POLL_SECONDS = 5.0
DEFAULT_MAX_POLL_SECONDS = 600.0
BATCH_STATES_ENDED = frozenset({"ended"})
REQUEST_COUNT_NAMES = ("processing", "succeeded", "errored", "canceled", "expired")
# The batch window is 24 hours; waiting a little longer lets the API's own expiry end a batch (and
# its completed requests land) before our deadline does.
DEFAULT_WAIT_TIMEOUT = timedelta(hours=25)


def next_poll_delay(elapsed: float, min_delay: float, max_delay: float) -> float:
    """Seconds to wait before the next look at a batch that has run for ``elapsed`` seconds."""
    return min(max(elapsed * POLL_FRACTION, min_delay), max_delay)


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``1h02m05s``; short and unambiguous for log lines."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class BatchSnapshot:
    """What one look at a batch showed, in plain values (it travels in trigger events)."""

    batch_id: str
    processing_status: str
    request_counts: dict[str, int]
    created_at: str | None = None
    expires_at: str | None = None
    ended_at: str | None = None
    results_url: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> BatchSnapshot:
        """From the API's JSON of a ``MessageBatch`` (no SDK model is built: a fleet's pages are large)."""
        counts = data.get("request_counts") or {}
        return cls(
            batch_id=data["id"],
            processing_status=data["processing_status"],
            request_counts={name: int(counts.get(name) or 0) for name in REQUEST_COUNT_NAMES},
            created_at=_normal_iso(data.get("created_at")),
            expires_at=_normal_iso(data.get("expires_at")),
            ended_at=_normal_iso(data.get("ended_at")),
            results_url=data.get("results_url"),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSnapshot:
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "processing_status": self.processing_status,
            "request_counts": dict(self.request_counts),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "ended_at": self.ended_at,
            "results_url": self.results_url,
        }

    @property
    def ended(self) -> bool:
        return self.processing_status in BATCH_STATES_ENDED

    @property
    def total(self) -> int:
        return sum(self.request_counts.values())

    def progress_key(self) -> tuple[Any, ...]:
        """Changes exactly when a progress line is worth logging."""
        return (self.processing_status, tuple(sorted(self.request_counts.items())))

    def describe(self) -> str:
        counts = ", ".join(f"{name} {value}" for name, value in self.request_counts.items() if value)
        return f"batch {self.batch_id} is {self.processing_status} ({counts or 'no requests'})"


def iso_or_none(value: datetime | None) -> str | None:
    """ISO 8601 text of a timestamp, ``None`` kept as ``None``."""
    return value.isoformat() if value is not None else None


def parse_iso(value: str) -> datetime:
    """An ISO 8601 / RFC 3339 timestamp (``Z`` accepted on every Python we support), timezone-aware."""
    moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _normal_iso(value: str | None) -> str | None:
    return parse_iso(value).isoformat() if value else None


def seconds_until(moment_iso: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` to an ISO timestamp, ``None`` when unknown."""
    if not moment_iso:
        return None
    return (parse_iso(moment_iso) - now).total_seconds()
