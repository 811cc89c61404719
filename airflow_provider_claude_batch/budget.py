"""The request budget: how many Message Batches API calls one process may make per rolling minute.

A workspace has one requests-per-minute limit shared by every batch endpoint (create, retrieve,
list, results, cancel, delete), and every process that talks to it (each triggerer, each task a
worker runs, each api-server) draws from it. Each process therefore keeps its own budget, set on the
connection (extra ``batch_requests_per_minute``), and the user divides the workspace's limit
between processes (``docs/deployment.md``). Calls never exceed the budget in any rolling window of
``window_seconds``, so a budget under the limit never meets a 429 from our own calls.

Work that a task is blocked on (creating a batch, downloading its results, cancelling) goes before
status refreshes: while a work call waits for a slot, no status call takes one. A 429 the API
answers anyway (another process, another tool on the same workspace) pauses the whole budget for the
``retry-after`` it gives, once, instead of letting every caller find out separately.

This module imports nothing from Airflow or the SDK; :mod:`~airflow_provider_claude_batch.hooks.budgeted`
plugs it into the HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

DEFAULT_REQUESTS_PER_MINUTE = 50
WINDOW_SECONDS = 60.0
# How long a status call that yields to waiting work sleeps before it looks again.
_YIELD_SECONDS = 0.05


class Priority(enum.IntEnum):
    """Which calls go first when the budget is short."""

    STATUS = 0  # retrieve / list to learn whether batches ended
    WORK = 1  # create, results download, cancel: a task is blocked on these


_current_priority: contextvars.ContextVar[Priority] = contextvars.ContextVar(
    "claude_batch_call_priority", default=Priority.STATUS
)


@contextlib.contextmanager
def call_priority(priority: Priority) -> Iterator[None]:
    """Every budgeted call made inside the block (in this thread or task) has ``priority``."""
    token = _current_priority.set(priority)
    try:
        yield
    finally:
        _current_priority.reset(token)


def current_priority() -> Priority:
    return _current_priority.get()


def parse_retry_after(seconds: str | None, milliseconds: str | None = None) -> float | None:
    """The server's ``retry-after-ms`` / ``retry-after`` headers as seconds, when they give a number."""
    for value, scale in ((milliseconds, 0.001), (seconds, 1.0)):
        if value:
            with contextlib.suppress(ValueError):
                return max(float(value) * scale, 0.0)
    return None


@dataclass
class BudgetStats:
    """What a budget has seen, for logs, tests and the benchmark."""

    granted: int = 0
    waited_seconds: float = 0.0
    rate_limited: int = 0  # 429 answers to budgeted calls
    paused_seconds: float = 0.0


@dataclass
class RequestBudget:
    """At most ``per_minute`` calls in any rolling ``window_seconds``; thread-safe, shared by event loops.

    :param per_minute: calls allowed per window.
    :param window_seconds: the rolling window (60 s against the real API; shorter only to rehearse
        on a time-scaled emulator).
    :param clock: monotonic seconds (tests pass a fake).
    """

    per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    window_seconds: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    stats: BudgetStats = field(default_factory=BudgetStats)
    _grants: deque[float] = field(default_factory=deque)
    _paused_until: float = 0.0
    _work_waiting: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if isinstance(self.per_minute, bool) or not isinstance(self.per_minute, int) or self.per_minute < 1:
            raise ValueError(f"batch_requests_per_minute must be a whole number of at least 1, got {self.per_minute!r}")
        if self.window_seconds <= 0:
            raise ValueError(f"the budget window must be positive, got {self.window_seconds!r}")

    def try_acquire(self, priority: Priority) -> float:
        """Take a slot now (returns 0.0) or say how many seconds to wait before asking again."""
        with self._lock:
            now = self.clock()
            if now < self._paused_until:
                return self._paused_until - now
            while self._grants and now - self._grants[0] >= self.window_seconds:
                self._grants.popleft()
            if len(self._grants) >= self.per_minute:
                return max(self._grants[0] + self.window_seconds - now, 0.001)
            if priority is Priority.STATUS and self._work_waiting:
                return _YIELD_SECONDS
            self._grants.append(now)
            self.stats.granted += 1
            return 0.0

    def pause(self, seconds: float) -> None:
        """Hold every call for ``seconds`` (the API answered 429 with this ``retry-after``)."""
        with self._lock:
            self.stats.rate_limited += 1
            until = self.clock() + max(seconds, 0.0)
            if until > self._paused_until:
                self.stats.paused_seconds += until - max(self._paused_until, self.clock())
                self._paused_until = until

    def note_rate_limited(self) -> None:
        """A 429 without a usable ``retry-after``: counted; the caller backs off on its own."""
        with self._lock:
            self.stats.rate_limited += 1

    def acquire(self, priority: Priority | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        """Block the calling thread until a slot is taken."""
        priority = current_priority() if priority is None else priority
        with self._waiting(priority):
            while (wait := self.try_acquire(priority)) > 0:
                self._count_wait(wait)
                sleep(wait)

    async def acquire_async(self, priority: Priority | None = None) -> None:
        """Wait (without blocking the event loop) until a slot is taken."""
        priority = current_priority() if priority is None else priority
        with self._waiting(priority):
            while (wait := self.try_acquire(priority)) > 0:
                self._count_wait(wait)
                await asyncio.sleep(wait)

    @contextlib.contextmanager
    def _waiting(self, priority: Priority) -> Iterator[None]:
        if priority is not Priority.WORK:
            yield
            return
        with self._lock:
            self._work_waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._work_waiting -= 1

    def _count_wait(self, seconds: float) -> None:
        with self._lock:
            self.stats.waited_seconds += seconds


_budgets: dict[tuple[str, ...], RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(key: tuple[str, ...], per_minute: int) -> RequestBudget:
    """The process-wide budget of one workspace credential (``key``); the lowest setting seen wins.

    Two connections with the same key and base URL draw from one workspace limit, so they share a budget.
    """
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = RequestBudget(per_minute=per_minute)
        elif per_minute < budget.per_minute:
            budget.per_minute = RequestBudget(per_minute=per_minute).per_minute
        return budget


def forget_budgets() -> None:
    """Drop every budget of this process (tests start each case from a full budget)."""
    with _budgets_lock:
        _budgets.clear()
