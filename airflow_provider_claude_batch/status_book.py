"""How the status of many tracked batches is refreshed together: list pages first, ``retrieve`` for the rest.

Every Message Batches API call draws from one workspace-wide per-minute limit, so a fleet of
triggers that each retrieve their own batch spends K calls a cycle. Instead, one
:class:`StatusBook` per connection and event loop holds every batch being waited for, and a refresh
cycle reads ``list`` pages (newest first, up to 1,000 batches a page) until every batch due for a
look has been seen, or until the remaining ones are cheaper to ``retrieve`` one by one than to page
to. A cycle runs as often as the youngest tracked batch deserves (the adaptive schedule of
:mod:`~airflow_provider_claude_batch.polling`), never more often than the shortest poll interval.

A ``404`` right after a batch's creation is the API's propagation delay (anthropic-sdk-python#1432:
the batch completes), not a deleted batch: inside ``not_found_grace_seconds`` of its creation it
means "not visible yet" and the batch stays tracked; after that window it is a permanent error.

Pure: no I/O, no SDK, no Airflow. The asynchronous poller shared by triggers
(:mod:`~airflow_provider_claude_batch.hooks.poller`) and the synchronous one-shot refresh (sensor
pokes, the UI) are thin shells that make the calls this book asks for and report what came back.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_claude_batch.polling import BatchSnapshot, next_poll_delay, parse_iso

LIST_PAGE_LIMIT = 1000
DEFAULT_NOT_FOUND_GRACE_SECONDS = 300.0
# Pages a cycle reads beyond those its tracked batches could fill while it does not know how far down
# they are; towards batches whose creation time is known it pages on, up to the most a cycle reads.
EXTRA_LIST_PAGES = 2
MAX_LIST_PAGES = 20
DEFAULT_MAX_RETRIEVES_PER_CYCLE = 20
# Fallback retrieves asked for at once (the shell may run them concurrently).
RETRIEVES_AT_ONCE = 4


@dataclass(frozen=True)
class ListPage:
    """Call: one ``list`` page, newest first, after ``after_id`` (``None``: the first page)."""

    after_id: str | None


@dataclass(frozen=True)
class Retrieve:
    """Call: ``retrieve`` each of these batches; answer with one outcome per id, in order."""

    batch_ids: tuple[str, ...]


@dataclass(frozen=True)
class Page:
    """Answer to :class:`ListPage`: the batches' JSON as the API sent it."""

    batches: list[dict[str, Any]]
    has_more: bool


RefusalKind = Literal["not_found", "transient", "rejected_key", "unserved", "failed"]


@dataclass(frozen=True)
class Refused:
    """Answer: the call failed. ``kind`` says how the book treats it; ``message`` says what happened.

    ``not_found`` (404), ``transient`` (429, 5xx, timeouts: try later, honouring ``retry_after``),
    ``rejected_key`` (401/403: nothing of this connection can be watched), ``unserved`` (``list``
    is not available here), ``failed`` (anything else: permanent for that batch).
    """

    kind: RefusalKind
    message: str
    retry_after: float | None = None


@dataclass
class TrackedBatch:
    """One batch somebody waits for, and what the book knows of it."""

    batch_id: str
    min_interval: float
    max_interval: float
    first_tracked: float
    created_hint: float | None = None  # epoch seconds the waiter believes the batch was created
    snapshot: BatchSnapshot | None = None
    refreshed_at: float | None = None
    not_found_since: float | None = None
    error: str | None = None
    watchers: int = 0

    @property
    def created(self) -> float | None:
        """Creation time in epoch seconds: the API's when seen, else the waiter's hint."""
        if self.snapshot is not None and self.snapshot.created_at:
            return parse_iso(self.snapshot.created_at).timestamp()
        return self.created_hint

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.snapshot is not None and self.snapshot.ended)

    def due_at(self) -> float:
        """When this batch deserves its next look (a new one: one shortest interval after tracking)."""
        if self.refreshed_at is None:
            return self.first_tracked + self.min_interval
        age = self.refreshed_at - (self.created or self.first_tracked)
        return self.refreshed_at + next_poll_delay(age, self.min_interval, self.max_interval)


@dataclass
class Cycle:
    """One refresh: which batches were due, what the pages showed, where paging stands."""

    started: float
    due: set[str]
    max_pages: int
    seen: set[str] = field(default_factory=set)
    pages: int = 0
    after_id: str | None = None
    paging_done: bool = False
    list_unavailable: bool = False


@dataclass
class StatusBook:
    """Every tracked batch of one connection, and the decisions of each refresh cycle.

    :param not_found_grace_seconds: how long after creation a 404 means "not visible yet".
    :param max_retrieves_per_cycle: batches looked up one by one per cycle, at most (the rest wait
        for the next cycle, so a cycle never spends the whole request budget).
    """

    not_found_grace_seconds: float = DEFAULT_NOT_FOUND_GRACE_SECONDS
    max_retrieves_per_cycle: int = DEFAULT_MAX_RETRIEVES_PER_CYCLE
    tracked: dict[str, TrackedBatch] = field(default_factory=dict)
    cycles: int = 0
    last_cycle_at: float | None = None
    backoff_until: float = 0.0
    _backoff: float = 0.0
    _transient_in_cycle: bool = False
    changed: set[str] = field(default_factory=set)
    # The last transient failure ("HTTP 529 OverloadedError", ...) and how many cycles in a row had one.
    transient_problem: str | None = None
    transient_streak: int = 0

    # -- who waits -------------------------------------------------------------------------

    def track(
        self,
        batch_id: str,
        now: float,
        *,
        min_interval: float,
        max_interval: float,
        created_hint: float | None = None,
    ) -> TrackedBatch:
        """Start (or join) waiting for ``batch_id``; the shortest intervals of all its waiters apply."""
        entry = self.tracked.get(batch_id)
        if entry is None:
            entry = self.tracked[batch_id] = TrackedBatch(
                batch_id, min_interval, max_interval, first_tracked=now, created_hint=created_hint
            )
        else:
            entry.min_interval = min(entry.min_interval, min_interval)
            entry.max_interval = min(entry.max_interval, max_interval)
            if entry.created_hint is None:
                entry.created_hint = created_hint
        entry.watchers += 1
        return entry

    def untrack(self, batch_id: str) -> None:
        """One waiter of ``batch_id`` is gone; the batch is forgotten with its last waiter."""
        entry = self.tracked.get(batch_id)
        if entry is None:
            return
        entry.watchers -= 1
        if entry.watchers <= 0:
            del self.tracked[batch_id]
            self.changed.discard(batch_id)

    def has_unfinished(self) -> bool:
        return any(not entry.finished for entry in self.tracked.values())

    # -- when ------------------------------------------------------------------------------

    def next_cycle_at(self) -> float | None:
        """When the next refresh is due (``None``: nothing left to refresh)."""
        unfinished = [entry for entry in self.tracked.values() if not entry.finished]
        if not unfinished:
            return None
        moment = min(entry.due_at() for entry in unfinished)
        if self.last_cycle_at is not None:
            # However many batches join, cycles stay one shortest interval apart.
            moment = max(moment, self.last_cycle_at + min(entry.min_interval for entry in unfinished))
        return max(moment, self.backoff_until)

    # -- one cycle -------------------------------------------------------------------------

    def begin_cycle(self, now: float) -> Cycle:
        """A refresh of every unfinished batch due by ``now``, or due before the next cycle may start."""
        unfinished = {bid: entry for bid, entry in self.tracked.items() if not entry.finished}
        # The cycle after this one waits at least the shortest interval (next_cycle_at's floor): a batch
        # falling due before then is looked at now, not up to a whole floor past its due time.
        horizon = now + min((entry.min_interval for entry in unfinished.values()), default=0.0)
        due = {bid for bid, entry in unfinished.items() if entry.due_at() <= horizon}
        if not due:  # woken by the cycle floor or a backoff: look at the most overdue ones anyway
            due = set(unfinished)
        self._transient_in_cycle = False
        # Every tracked batch, due or not, may be listed ahead of the due ones: count them all.
        pages = min(math.ceil(len(self.tracked) / LIST_PAGE_LIMIT) + EXTRA_LIST_PAGES, MAX_LIST_PAGES)
        return Cycle(started=now, due=due, max_pages=pages)

    def observe_page(self, cycle: Cycle, snapshots: list[BatchSnapshot], has_more: bool, now: float) -> None:
        """A ``list`` page came back; decides whether the next page is worth its call."""
        cycle.pages += 1
        for snapshot in snapshots:
            if snapshot.batch_id in self.tracked:
                self.observe_snapshot(snapshot, now)
                cycle.seen.add(snapshot.batch_id)
        if snapshots:
            cycle.after_id = snapshots[-1].batch_id
        unseen = cycle.due - cycle.seen
        if not unseen or not has_more or not snapshots or cycle.pages >= MAX_LIST_PAGES:
            cycle.paging_done = True
            return
        oldest_listed = min((parse_iso(s.created_at).timestamp() for s in snapshots if s.created_at), default=-math.inf)
        # A batch created after the oldest one listed should have been on these pages: paging
        # further cannot find it (another workspace, or not visible yet); retrieve it instead.
        created = {bid: self.tracked[bid].created for bid in unseen}
        reachable = [bid for bid, moment in created.items() if moment is None or moment < oldest_listed]
        if cycle.pages >= cycle.max_pages:
            # Past the pages the tracked batches could fill (newer batches of other jobs, or of waiters
            # not registered yet, came first): page on only towards batches known to be further down.
            reachable = [bid for bid in reachable if created[bid] is not None]
        # One batch left costs one retrieve, no more than a page: stop paging.
        cycle.paging_done = len(reachable) <= 1

    def list_failed(self, cycle: Cycle) -> None:
        """``list`` itself is not served (a proxy, an old gateway): this cycle retrieves instead."""
        cycle.paging_done = True
        cycle.list_unavailable = True

    def fallback(self, cycle: Cycle) -> list[str]:
        """Due batches the pages did not show, most overdue first, at most ``max_retrieves_per_cycle``."""
        unseen = [bid for bid in cycle.due - cycle.seen if bid in self.tracked and not self.tracked[bid].finished]
        unseen.sort(key=lambda bid: (self.tracked[bid].due_at(), bid))
        return unseen[: self.max_retrieves_per_cycle]

    def observe_snapshot(self, snapshot: BatchSnapshot, now: float) -> None:
        entry = self.tracked.get(snapshot.batch_id)
        if entry is None:
            return
        if entry.snapshot is None or entry.snapshot.progress_key() != snapshot.progress_key():
            self.changed.add(snapshot.batch_id)
        entry.snapshot = snapshot
        entry.refreshed_at = now
        entry.not_found_since = None

    def observe_not_found(self, batch_id: str, now: float, detail: str) -> bool:
        """``retrieve`` answered 404. True while that is the propagation delay, False once permanent."""
        entry = self.tracked.get(batch_id)
        if entry is None:
            return False
        entry.refreshed_at = now
        first_time = entry.not_found_since is None
        if first_time:
            entry.not_found_since = now
            self.changed.add(batch_id)
        born = entry.created or entry.first_tracked
        if now - born < self.not_found_grace_seconds:
            return True
        self.observe_error(batch_id, not_found_message(batch_id, self.not_found_grace_seconds, detail))
        return False

    def observe_outcome(self, batch_id: str, outcome: dict[str, Any] | Refused, now: float) -> str:
        """What one ``retrieve`` answered; ``"stop"`` when the rest of the cycle is not worth its calls."""
        if not isinstance(outcome, Refused):
            self.observe_snapshot(BatchSnapshot.from_api(outcome), now)
        elif outcome.kind == "not_found":
            self.observe_not_found(batch_id, now, outcome.message)
        elif outcome.kind == "transient":
            self.observe_transient(now, outcome.retry_after, outcome.message)
            return "stop"
        elif outcome.kind == "rejected_key":
            self.fail_all(outcome.message)
            return "stop"
        else:
            self.observe_error(batch_id, f"Waiting for batch {batch_id} failed: {outcome.message}")
        return "go on"

    def observe_error(self, batch_id: str, message: str) -> None:
        """A permanent failure for one batch (its waiters end with it)."""
        entry = self.tracked.get(batch_id)
        if entry is not None and entry.error is None:
            entry.error = message
            self.changed.add(batch_id)

    def fail_all(self, message: str) -> None:
        """A permanent failure of the connection itself (key rejected, no access)."""
        for batch_id, entry in self.tracked.items():
            if not entry.finished:
                entry.error = message
                self.changed.add(batch_id)

    def observe_transient(self, now: float, retry_after: float | None, problem: str = "a transient error") -> None:
        """A call failed for a reason that passes (429, 5xx, connection): the next cycle waits.

        Every waiter is woken to say so in its own log (once per failing cycle, whatever the number of calls).
        """
        if not self._transient_in_cycle:
            self.transient_streak += 1
            self.changed.update(bid for bid, entry in self.tracked.items() if not entry.finished)
        self.transient_problem = problem
        self._transient_in_cycle = True
        floor = min((entry.min_interval for entry in self.tracked.values()), default=1.0)
        ceiling = max((entry.max_interval for entry in self.tracked.values()), default=600.0)
        self._backoff = min(max(self._backoff * 2, floor), ceiling)
        delay = self._backoff if retry_after is None else min(max(retry_after, floor), ceiling)
        self.backoff_until = max(self.backoff_until, now + delay)

    def end_cycle(self, cycle: Cycle, now: float) -> None:
        self.cycles += 1
        self.last_cycle_at = now
        if not self._transient_in_cycle:
            self._backoff = 0.0
            self.transient_problem = None
            self.transient_streak = 0

    def take_changed(self) -> set[str]:
        """Batches whose status, or error, changed since the last call (their waiters are woken)."""
        changed, self.changed = self.changed, set()
        return changed

    def pending_not_found(self, batch_ids: Iterable[str]) -> list[str]:
        """Which of ``batch_ids`` are inside their 404 grace window right now."""
        return [
            bid
            for bid in batch_ids
            if (entry := self.tracked.get(bid)) and entry.not_found_since is not None and entry.error is None
        ]


def cycle_calls(book: StatusBook, cycle: Cycle, now: float) -> Generator[ListPage | Retrieve, Any, None]:
    """The calls of one refresh cycle, as a generator: send each call's answer back in.

    ``ListPage`` is answered with a :class:`Page` or a :class:`Refused`; ``Retrieve`` with a list of
    outcomes (the batch's JSON or a :class:`Refused`), one per id. The asynchronous poller and the
    synchronous one-shot refresh both drive this one sequence of decisions.
    """
    while not cycle.paging_done:
        answer = yield ListPage(cycle.after_id)
        if isinstance(answer, Refused):
            if answer.kind == "transient":
                book.observe_transient(now, answer.retry_after, answer.message)
                return
            if answer.kind == "rejected_key":
                book.fail_all(answer.message)
                return
            book.list_failed(cycle)
            break
        book.observe_page(cycle, [BatchSnapshot.from_api(item) for item in answer.batches], answer.has_more, now)
    pending = book.fallback(cycle)
    for start in range(0, len(pending), RETRIEVES_AT_ONCE):
        chunk = tuple(pending[start : start + RETRIEVES_AT_ONCE])
        outcomes = yield Retrieve(chunk)
        for batch_id, outcome in zip(chunk, outcomes, strict=True):
            if book.observe_outcome(batch_id, outcome, now) == "stop":
                return


def not_found_message(batch_id: str, grace_seconds: float, where: str = "") -> str:
    """The permanent-404 wording shared by every place that waits for or lands a batch.

    :param batch_id: the batch.
    :param grace_seconds: the window in which a 404 was waited through.
    :param where: the connection and base URL (``Claude connection 'x' (https://...)``).
    """
    return (
        f"Batch {batch_id} was not found (404) for more than {grace_seconds:.0f}s after it was created: it was "
        f"deleted, or {where or 'the connection'} points at another workspace or base URL than the one that "
        "created it. A 404 within that window (extra not_found_grace_seconds on the connection) is the API's "
        "propagation delay and is waited through."
    )
