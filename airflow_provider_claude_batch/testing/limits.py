"""The Message Batches API's fleet limits: a rolling request limit, a processing-queue cap, a propagation delay.

The real service gives a workspace one requests-per-minute limit shared by every batch endpoint
(create, retrieve, list, results, cancel, delete), a cap on the requests waiting in its processing
queue, and, right after a create, a few seconds in which the new batch is not yet visible to
``retrieve`` and ``results`` (anthropic-sdk-python#1432). A fleet of DAGs meets all three at night.

Pure logic: no HTTP, no lock and no clock of its own (callers pass ``now``), so the rules read and
test as plain functions; :mod:`.emulator.store` keeps the state and answers with them.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Refusal", "RollingWindow", "is_propagating", "queue_refusal"]


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused with 429 ``rate_limit_error``, and when to retry (whole seconds)."""

    message: str
    retry_after: int

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


def _whole_seconds(delay: float) -> int:
    """``retry-after`` in whole seconds, rounded up, never 0 (a 0 would invite an immediate retry)."""
    return max(1, math.ceil(delay))


class RollingWindow:
    """When the calls admitted in the last ``window`` seconds were made, oldest first."""

    def __init__(self) -> None:
        self._stamps: deque[float] = deque()

    def admit(self, now: float, limit: int, window: float) -> Refusal | None:
        """Record a call at ``now``, or refuse it while ``limit`` calls are still in the window.

        A refused call is not recorded: it uses no slot, so a client that waits as told gets in.
        """
        while self._stamps and self._stamps[0] <= now - window:
            self._stamps.popleft()
        if len(self._stamps) < limit:
            self._stamps.append(now)
            return None
        wait = _whole_seconds(self._stamps[0] + window - now)
        return Refusal(
            f"This request would exceed the rate limit of {limit} requests per {window:g} s for the Message "
            "Batches API, one limit shared by create, retrieve, list, results, cancel and delete. "
            f"Retry after {wait} s.",
            wait,
        )

    def release(self, stamp: float) -> None:
        """Give back the slot of a call admitted at ``stamp`` that was refused later on (a full queue)."""
        with contextlib.suppress(ValueError):  # it may have left the window already
            self._stamps.remove(stamp)


def queue_refusal(adding: int, processing: Iterable[tuple[float, int]], cap: int, now: float) -> Refusal | None:
    """Refuse a create of ``adding`` requests if the processing queue would go above ``cap``.

    :param processing: ``(end time, requests)`` of every batch that has not ended: its requests
        count as queued (``processing``) until it ends, as the API's ``request_counts`` do.
    :param cap: the most requests the queue may hold.
    :param now: the emulator's clock; ``retry-after`` is counted from it.
    """
    ending = sorted(processing)
    queued = sum(count for _, count in ending)
    if queued + adding <= cap:
        return None
    must_free = queued + adding - cap
    freed = 0
    wait_until = now
    for end, count in ending:
        freed += count
        wait_until = end
        if freed >= must_free:
            break
    wait = _whole_seconds(wait_until - now)
    if adding > cap:
        advice = (
            f"This batch alone is above the limit: split it into batches of at most {cap:,} requests. "
            f"The queue empties in {wait} s."
        )
    else:
        advice = f"Retry after {wait} s, when earlier batches have ended."
    return Refusal(
        f"The Message Batches processing queue is full: {queued:,} requests are queued (still processing) and "
        f"this batch would add {adding:,}, above the limit of {cap:,} queued requests. {advice}",
        wait,
    )


def is_propagating(created: float, delay: float, now: float) -> bool:
    """Whether a batch created at ``created`` is still invisible to ``retrieve`` and ``results``."""
    return now < created + delay
