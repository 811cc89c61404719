"""The synchronous rescue of a deadline-bound batch: whether it can finish in time, and what it re-runs.

A hard deadline under 24 hours cannot trust a batch alone: the Message Batches API promises only that
results arrive within 24 hours. It can trust a batch plus a synchronous rescue. The batch is
submitted; if it has not ended ``lead`` before the deadline, it is cancelled, what it completed is
kept, and every request without a final row worth keeping runs on the Messages API, at most
``max_concurrency`` at a time. The deadline is then kept by the synchronous path.

That is a promise only if the rescue can finish the *whole* input inside its lead, since the batch
may have finished nothing. :class:`RescuePlan` estimates it from the request count, the concurrency
and a per-request time, and phrases the shortfall when it cannot. The estimate is about time only:
:func:`~airflow_provider_claude_batch.routing.decide_route` routes on it, and no price enters it.

Pure: no Airflow, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta

from airflow_provider_claude_batch.durations import format_duration
from airflow_provider_claude_batch.results import ResultRow, is_transient

__all__ = ["DEFAULT_RESCUE_CONCURRENCY", "DEFAULT_SECONDS_PER_REQUEST", "RESCUE_ROUTES", "RescuePlan", "needs_rescue"]

RESCUE_ROUTES = ("sync",)
"""Where a rescue can finish the work: the synchronous Messages API."""
DEFAULT_RESCUE_CONCURRENCY = 8
"""As ``ClaudeMessageOperator``'s ``max_concurrency``: the rescue is that operator's engine."""
DEFAULT_SECONDS_PER_REQUEST = 30.0
"""One Messages API call of about a thousand output tokens, with room for the SDK's retries."""


@dataclass(frozen=True)
class RescuePlan:
    """How a rescue would finish the input: inside ``lead``, ``max_concurrency`` requests at a time."""

    lead: timedelta
    """Time kept before the deadline for the synchronous finish: cancel, land what completed, send the rest."""
    max_concurrency: int = DEFAULT_RESCUE_CONCURRENCY
    """The most requests the rescue has in flight at once."""
    seconds_per_request: float = DEFAULT_SECONDS_PER_REQUEST
    """How long one request takes on the Messages API, the SDK's retries included."""
    request_count: int | None = None
    """Requests in the input; None until they are read (from an XCom, a file or a decorated function)."""

    def __post_init__(self) -> None:
        if not isinstance(self.lead, timedelta) or self.lead <= timedelta(0):
            raise ValueError(
                f"a rescue's lead must be a positive timedelta, e.g. timedelta(hours=1); got {self.lead!r}"
            )
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ValueError(
                f"a rescue's max_concurrency must be a whole number of at least 1; got {self.max_concurrency!r}"
            )
        seconds = self.seconds_per_request
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
            raise ValueError(f"a rescue's seconds_per_request must be a positive number of seconds; got {seconds!r}")
        count = self.request_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"a rescue's request_count must be a whole number or None; got {count!r}")

    def counted(self, request_count: int) -> RescuePlan:
        """The same plan for an input of ``request_count`` requests."""
        return dataclasses.replace(self, request_count=request_count)

    def time_needed(self, count: int | None = None) -> timedelta | None:
        """How long sending ``count`` requests (default: the whole input) takes; None when not counted yet."""
        count = self.request_count if count is None else count
        if count is None:
            return None
        waves = math.ceil(count / self.max_concurrency)
        return timedelta(seconds=waves * self.seconds_per_request)

    def capacity(self) -> int:
        """The most requests the rescue can send inside its lead."""
        waves = math.floor(self.lead.total_seconds() / self.seconds_per_request)
        return waves * self.max_concurrency

    def fits(self) -> bool | None:
        """Whether the whole input plausibly fits the lead; None when it is not counted yet and one request fits."""
        if self.capacity() == 0:
            return False
        needed = self.time_needed()
        return None if needed is None else needed <= self.lead

    def effort(self) -> str:
        """``"400 requests, 8 at a time at about 30 seconds each, take about 25 minutes"``."""
        count = self.request_count or 0
        needed = self.time_needed() or timedelta(0)
        return (
            f"{count:,} request{'s' if count != 1 else ''}, {self.max_concurrency} at a time at about "
            f"{self._per_request()} each, take about {format_duration(needed)}"
        )

    def fit_text(self) -> str:
        """Why the rescue fits (or how it will be checked), in the rule's words."""
        lead = format_duration(self.lead)
        if self.request_count is None:
            return (
                f"the requests are counted when the task runs: the rescue_lead of {lead} holds up to "
                f"{self.capacity():,} requests at {self.max_concurrency} at a time and about {self._per_request()} "
                "each, and a larger input is refused then, before anything is submitted"
            )
        return (
            f"the rescue can plausibly finish the whole input inside its lead: {self.effort()}, within the "
            f"rescue_lead of {lead}"
        )

    def shortfall(self) -> str:
        """Why the rescue cannot plausibly finish the whole input inside its lead, with the numbers."""
        lead = format_duration(self.lead)
        if self.capacity() == 0:
            return f"one request takes about {self._per_request()}, longer than the rescue_lead of {lead}"
        return f"{self.effort()}, more than the rescue_lead of {lead}"

    def remedies(self) -> list[str]:
        """What would make the whole input fit: a longer lead, more concurrency, a smaller input."""
        count = self.request_count or 0
        remedies = [f"raise rescue_lead to at least {format_duration(self.time_needed(max(count, 1)) or self.lead)}"]
        waves = math.floor(self.lead.total_seconds() / self.seconds_per_request)
        if waves and count:
            remedies.append(
                f"raise rescue_max_concurrency to at least {math.ceil(count / waves)} (within the organisation's "
                "Messages API rate limits)"
            )
        if self.capacity():
            remedies.append(f"send at most {self.capacity():,} requests per task")
        return remedies

    def _per_request(self) -> str:
        return format_duration(timedelta(seconds=self.seconds_per_request))


def needs_rescue(row: ResultRow) -> bool:
    """Whether a landed row is not worth keeping: canceled, expired, or errored for a transient reason.

    A succeeded row is never sent again (that would pay twice), nor one that errored for a permanent
    reason (it would fail the same way), nor an answer that failed its output schema (a model answer).
    """
    return row.status == "canceled" or is_transient(row)
