"""The shared status poller: one per connection and event loop, refreshing every tracked batch together.

Every :class:`~airflow_provider_claude_batch.triggers.batch.ClaudeBatchTrigger` of a triggerer (and
the worker-side wait, which runs the same trigger) registers the batches it waits for with the
poller of its connection and awaits their end; one background task refreshes them all with the
calls :class:`~airflow_provider_claude_batch.status_book.StatusBook` asks for (``list`` pages,
``retrieve`` for the rest). K deferred tasks cost about one call a cycle, not K. The poller holds
nothing that must survive: a trigger re-instantiated on another triggerer registers with that
triggerer's poller, which rebuilds its book from whoever registers. The synchronous
:func:`refresh_statuses` makes one cycle of the same decisions for sensor pokes and the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anthropic

from airflow_provider_claude_batch.connection_errors import ConnectionTarget, explain
from airflow_provider_claude_batch.hooks.api_errors import TRANSIENT_API_ERRORS, api_error_summary, retry_after_seconds
from airflow_provider_claude_batch.polling import BatchSnapshot
from airflow_provider_claude_batch.status_book import (
    LIST_PAGE_LIMIT,
    ListPage,
    Page,
    Refused,
    StatusBook,
    cycle_calls,
)

if TYPE_CHECKING:
    from airflow_provider_claude_batch.hooks.claude import ClaudeHook

log = logging.getLogger(__name__)

# Waiters woken per turn of the event loop after a refresh (each then runs its trigger's reaction).
WAKE_SLICE = 50


@dataclass(eq=False)  # identity, not value: watches are kept in sets
class Watch:
    """What one waiter sees of its batches: their snapshots, permanent errors, and a wake-up on change."""

    batch_ids: list[str]
    book: StatusBook
    cycles: int = 0
    _changed: bool = False
    _waiter: asyncio.Future[None] | None = None

    def snapshots(self) -> dict[str, BatchSnapshot]:
        return {
            bid: entry.snapshot
            for bid in self.batch_ids
            if (entry := self.book.tracked.get(bid)) is not None and entry.snapshot is not None
        }

    def error(self) -> str | None:
        """The first permanent error of one of the batches (the waiter ends with it)."""
        for bid in self.batch_ids:
            entry = self.book.tracked.get(bid)
            if entry is not None and entry.error is not None:
                return entry.error
        return None

    def unfinished(self) -> list[str]:
        snapshots = self.snapshots()
        return [bid for bid in self.batch_ids if bid not in snapshots or not snapshots[bid].ended]

    def transient_problem(self) -> tuple[str, int] | None:
        """The failure that kept the last refresh cycles from completing, and for how many cycles."""
        if self.book.transient_problem is None:
            return None
        return self.book.transient_problem, self.book.transient_streak

    def not_visible_yet(self) -> list[str]:
        """Batches answering 404 inside their grace window right now."""
        return self.book.pending_not_found(self.batch_ids)

    async def changed(self, timeout: float | None) -> None:
        """Return when a batch of this watch changed (since the last return), or after ``timeout`` seconds.

        A bare future and a timer, not ``asyncio.wait_for``: a triggerer waits on a thousand watches,
        and a task per wait is garbage the collector must walk.
        """
        if self._changed:
            self._changed = False
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        self._changed = False

    def wake(self) -> None:
        self._changed = True
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class BatchStatusPoller:
    """Refreshes the batches every watch of one connection waits for, in one background task.

    :param client: the connection's asynchronous client (SDK retries off: the book backs off itself).
    :param book: the decisions (what is tracked, when to look, how).
    :param target: the connection and base URL, as errors name them.
    """

    def __init__(self, client: anthropic.AsyncAnthropic, book: StatusBook, target: ConnectionTarget) -> None:
        self.client = client
        self.book = book
        self.target = target
        self._watches: dict[str, set[Watch]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watch(
        self,
        batch_ids: Iterable[str],
        *,
        min_interval: float,
        max_interval: float,
        created_hint: float | None = None,
    ) -> AsyncIterator[Watch]:
        """Track ``batch_ids`` for the duration of the block (cancelled or not, the book stays consistent)."""
        watch = Watch(list(dict.fromkeys(batch_ids)), self.book)
        now = time.time()
        for bid in watch.batch_ids:
            self.book.track(bid, now, min_interval=min_interval, max_interval=max_interval, created_hint=created_hint)
            self._watches.setdefault(bid, set()).add(watch)
        self._ensure_running()
        self._wakeup.set()
        try:
            yield watch
        finally:
            for bid in watch.batch_ids:
                self.book.untrack(bid)
                watchers = self._watches.get(bid)
                if watchers is not None:
                    watchers.discard(watch)
                    if not watchers:
                        del self._watches[bid]
            self._wakeup.set()  # the loop re-reads the book: with nothing left to watch, it ends

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="claude-batch-status-poller")

    async def _run(self) -> None:
        try:
            while (moment := self.book.next_cycle_at()) is not None:
                delay = moment - time.time()
                if delay > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    continue
                await self.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a defect here must end every wait loudly, not hang it
            log.exception("The Claude batch status poller failed")
            self.book.fail_all(f"The batch status poller failed: {type(error).__name__}: {error}")
            self._notify()

    async def refresh(self) -> None:
        """One cycle: the pages the book wants, then the retrieves it falls back to."""
        now = time.time()
        cycle = self.book.begin_cycle(now)
        calls = cycle_calls(self.book, cycle, now)
        answer: Any = None
        with contextlib.suppress(StopIteration):
            while True:
                call = calls.send(answer)
                if isinstance(call, ListPage):
                    answer = await _answer(self._list_page(call.after_id), self.target)
                else:
                    calls_ = (_answer(self._retrieve(bid), self.target) for bid in call.batch_ids)
                    answer = list(await asyncio.gather(*calls_))
        self.book.end_cycle(cycle, time.time())
        for watch in {w for bid in cycle.due for w in self._watches.get(bid, ())}:
            watch.cycles += 1
        # A cycle may change a thousand batches at once (their first look, their end): their waiters
        # are woken a slice per turn of the loop, so that one turn never runs a thousand reactions.
        changed = self._changed_watches()
        for start in range(0, len(changed), WAKE_SLICE):
            if start:
                await asyncio.sleep(0)
            for watch in changed[start : start + WAKE_SLICE]:
                watch.wake()

    def _changed_watches(self) -> list[Watch]:
        return [watch for bid in self.book.take_changed() for watch in self._watches.get(bid, ())]

    def _notify(self) -> None:
        for watch in self._changed_watches():
            watch.wake()

    async def _list_page(self, after_id: str | None) -> Page:
        query: dict[str, Any] = {"limit": LIST_PAGE_LIMIT}
        if after_id is not None:
            query["after_id"] = after_id
        raw = await self.client.messages.batches.with_raw_response.list(**query)
        return _page(raw.http_response.json())

    async def _retrieve(self, batch_id: str) -> dict[str, Any]:
        raw = await self.client.messages.batches.with_raw_response.retrieve(batch_id)
        return raw.http_response.json()


async def _answer(call: Awaitable[Any], target: ConnectionTarget) -> Any:
    """The call's result, or the :class:`Refused` its API error stands for."""
    try:
        return await call
    except anthropic.APIError as error:
        return refusal(error, target)


def refusal(error: anthropic.APIError, target: ConnectionTarget) -> Refused:
    """How the status book should treat an API error of a ``list`` or ``retrieve``.

    A rejected key, a forbidden workspace or a host that is not an Anthropic API end every wait of
    the connection, in the wording every other place uses (:mod:`~..connection_errors`).
    """
    summary = api_error_summary(error)
    explained = explain(error, target)
    if isinstance(error, TRANSIENT_API_ERRORS):
        return Refused("transient", explained or summary, retry_after_seconds(error))
    if explained is not None:
        return Refused("rejected_key", f"{explained} (While waiting for batches.)")
    if isinstance(error, anthropic.NotFoundError):
        return Refused("not_found", f"{target}")
    if isinstance(error, anthropic.BadRequestError):
        return Refused("unserved", summary)
    return Refused("failed", f"{summary}: {error}")


def _page(body: dict[str, Any]) -> Page:
    return Page(list(body.get("data") or []), bool(body.get("has_more")))


# One poller per (event loop, connection settings): weakly keyed, so a closed loop takes its pollers along.
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, BatchStatusPoller]] = (
    weakref.WeakKeyDictionary()
)


async def shared_poller(hook: ClaudeHook) -> BatchStatusPoller:
    """The poller of ``hook``'s connection on the running event loop (created on first use)."""
    settings = await hook.asettings()
    per_loop = _pollers.setdefault(asyncio.get_running_loop(), {})
    poller = per_loop.get(settings)
    if poller is None:
        client = await hook.get_async_conn(max_retries=0)
        book = StatusBook(not_found_grace_seconds=settings.not_found_grace_seconds)
        poller = per_loop.setdefault(settings, BatchStatusPoller(client, book, hook.target))
    return poller


@dataclass(frozen=True)
class StatusLook:
    """What one synchronous refresh learned of a batch: its snapshot, or why there is none.

    ``pending`` says the reason passes (a 404 inside the grace window, only transient errors): look again.
    """

    snapshot: BatchSnapshot | None = None
    message: str | None = None
    pending: bool = False


def refresh_statuses(
    hook: ClaudeHook,
    batch_ids: Iterable[str],
    created_hints: dict[str, float] | None = None,
) -> dict[str, StatusLook]:
    """One synchronous refresh of ``batch_ids`` (sensor pokes, the UI): the same calls the shared poller makes.

    :param hook: the connection to use (its synchronous client and request budget).
    :param batch_ids: the batches to look at.
    :param created_hints: when each batch is believed to have been created (epoch seconds), for the grace window.
    """
    hints = created_hints or {}
    ids = list(dict.fromkeys(batch_ids))
    book = StatusBook(not_found_grace_seconds=hook.settings.not_found_grace_seconds, max_retrieves_per_cycle=len(ids))
    now = time.time()
    for bid in ids:
        book.track(bid, now, min_interval=0.0, max_interval=0.0, created_hint=hints.get(bid))
    calls = cycle_calls(book, book.begin_cycle(now), now)
    answer: Any = None
    with contextlib.suppress(StopIteration):
        while True:
            call = calls.send(answer)
            if isinstance(call, ListPage):
                answer = _sync_answer(lambda page=call: _page(hook.list_batches_json(page.after_id)), hook.target)
            else:
                answer = [_sync_answer(partial(hook.retrieve_batch_json, bid), hook.target) for bid in call.batch_ids]
    return {bid: _look_of(book, bid) for bid in ids}


def _sync_answer(call: Callable[[], Any], target: ConnectionTarget) -> Any:
    try:
        return call()
    except anthropic.APIError as error:
        return refusal(error, target)


def _look_of(book: StatusBook, batch_id: str) -> StatusLook:
    entry = book.tracked[batch_id]
    if entry.snapshot is not None:
        return StatusLook(snapshot=entry.snapshot)
    if entry.error is not None:
        return StatusLook(message=entry.error)
    if entry.not_found_since is not None:
        return StatusLook(
            message=f"Batch {batch_id} is not visible yet: it answers 404 moments after its creation "
            "(the API's propagation delay).",
            pending=True,
        )
    return StatusLook(
        message=f"No status for batch {batch_id} yet: the API answered only transient errors.", pending=True
    )
