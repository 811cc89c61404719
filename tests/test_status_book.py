"""The status book alone: which calls a refresh cycle makes for many tracked batches, and what it concludes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_claude_batch.status_book import (
    LIST_PAGE_LIMIT,
    ListPage,
    Page,
    Refused,
    Retrieve,
    StatusBook,
    cycle_calls,
)

T0 = 1_800_000_000.0


def batch_json(batch_id: str, created: float, status: str = "in_progress", processing: int = 1) -> dict:
    def iso(moment: float) -> str:
        return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")

    ended = status == "ended"
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": 0 if ended else processing,
            "succeeded": processing if ended else 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": iso(created),
        "expires_at": iso(created + 86_400),
        "ended_at": iso(created + 60) if ended else None,
        "results_url": f"https://api.example/v1/messages/batches/{batch_id}/results" if ended else None,
    }


class FakeWorkspace:
    """Batches newest first, served in pages the way the API's ``list`` does; counts the calls."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = sorted(batches, key=lambda b: b["created_at"], reverse=True)
        self.pages = 0
        self.retrieves = 0
        self.page_limit = LIST_PAGE_LIMIT

    def answer(self, call):
        if isinstance(call, ListPage):
            self.pages += 1
            ids = [b["id"] for b in self.batches]
            start = 0 if call.after_id is None else ids.index(call.after_id) + 1
            chunk = self.batches[start : start + self.page_limit]
            return Page(chunk, start + self.page_limit < len(self.batches))
        self.retrieves += len(call.batch_ids)
        by_id = {b["id"]: b for b in self.batches}
        return [by_id.get(bid) or Refused("not_found", "HTTP 404 NotFoundError") for bid in call.batch_ids]


def run(book: StatusBook, workspace: FakeWorkspace, now: float) -> None:
    cycle = book.begin_cycle(now)
    calls = cycle_calls(book, cycle, now)
    answer = None
    try:
        while True:
            answer = workspace.answer(calls.send(answer))
    except StopIteration:
        pass
    book.end_cycle(cycle, now)


def track_all(book: StatusBook, ids: list[str], now: float, **kwargs) -> None:
    for bid in ids:
        book.track(bid, now, min_interval=5.0, max_interval=600.0, **kwargs)


@pytest.mark.parametrize(("tracked", "pages"), [(1, 1), (300, 1), (1000, 1), (5000, 5)])
def test_one_page_covers_up_to_a_thousand_tracked_batches(tracked, pages):
    ids = [f"b{i:05d}" for i in range(tracked)]
    workspace = FakeWorkspace([batch_json(bid, T0 + i) for i, bid in enumerate(ids)])
    book = StatusBook()
    track_all(book, ids, T0 + tracked)
    run(book, workspace, T0 + tracked + 10)
    assert (workspace.pages, workspace.retrieves) == (pages, 0)
    assert all(book.tracked[bid].snapshot is not None for bid in ids)


def test_an_old_batch_behind_many_newer_ones_is_retrieved_not_paged_to():
    # The tracked batch sits behind 5,000 newer batches of other jobs: one page, then one retrieve.
    others = [batch_json(f"other{i}", T0 + 100 + i) for i in range(5000)]
    workspace = FakeWorkspace([batch_json("mine", T0), *others])
    book = StatusBook()
    book.track("mine", T0, min_interval=5.0, max_interval=600.0, created_hint=T0)
    run(book, workspace, T0 + 6000)
    assert (workspace.pages, workspace.retrieves) == (1, 1)
    assert book.tracked["mine"].snapshot.batch_id == "mine"


def test_batches_due_behind_newer_tracked_ones_are_paged_to_not_retrieved():
    # 4,000 younger tracked batches are listed ahead of 1,000 older ones, and only the older ones are
    # due: the pages must reach them (5 pages), not stop at a bound counted from the due ones alone
    # and leave 980 of them unlooked behind 20 retrieves.
    old = [f"old{i:04d}" for i in range(1000)]
    young = [f"new{i:04d}" for i in range(4000)]
    workspace = FakeWorkspace(
        [batch_json(bid, T0 + i) for i, bid in enumerate(old)]
        + [batch_json(bid, T0 + 2000 + i) for i, bid in enumerate(young)]
    )
    book = StatusBook()
    for bid in old:
        book.track(bid, T0 + 7000, min_interval=5.0, max_interval=600.0)
    for bid in young:
        book.track(bid, T0 + 7000, min_interval=60.0, max_interval=600.0)
    run(book, workspace, T0 + 7005)  # the old ones' first look is due, the young ones' is not
    assert (workspace.pages, workspace.retrieves) == (5, 0)
    assert all(book.tracked[bid].snapshot is not None for bid in old)


def test_batches_falling_due_within_the_cycle_floor_are_looked_at_in_the_same_cycle():
    # The young batches fall due first, the old ones half a second later: inside the floor that keeps
    # cycles one shortest interval (1 s) apart. Left to the next cycle, the old ones would be looked at
    # half a second past their due time (a whole floor at worst: 5 s with the default settings).
    old = [f"o{i:04d}" for i in range(1000)]
    young = [f"y{i:04d}" for i in range(1000)]
    workspace = FakeWorkspace([batch_json(bid, T0) for bid in old] + [batch_json(bid, T0 + 10) for bid in young])
    book = StatusBook()
    for bid in old + young:
        book.track(bid, T0 + 14, min_interval=1.0, max_interval=600.0)
    run(book, workspace, T0 + 15)  # the first look: the old ones are 15 s old, the young ones 5 s
    second = book.next_cycle_at()
    assert second == pytest.approx(T0 + 16)  # the young ones' 1 s floor; the old ones are due at T0 + 16.5
    run(book, workspace, second)
    assert {book.tracked[bid].refreshed_at for bid in old} == {second}
    assert workspace.pages == 4


def test_paging_stops_when_the_missing_batches_should_have_been_listed():
    # Created after the oldest listed batch, yet not on the page: another workspace, or not visible yet.
    workspace = FakeWorkspace([batch_json(f"b{i}", T0 + i) for i in range(1500)])
    book = StatusBook()
    track_all(book, ["b1499", "ghost1", "ghost2"], T0 + 2000)
    for ghost in ("ghost1", "ghost2"):
        book.tracked[ghost].created_hint = T0 + 1499.5
    run(book, workspace, T0 + 2010)
    assert workspace.pages == 1
    assert workspace.retrieves == 2


def test_the_fallback_is_bounded_per_cycle():
    workspace = FakeWorkspace([])  # nothing listed (say, list is filtered by a gateway)
    book = StatusBook(max_retrieves_per_cycle=3, not_found_grace_seconds=10_000)
    track_all(book, [f"g{i}" for i in range(10)], T0)
    run(book, workspace, T0 + 10)
    assert workspace.retrieves == 3


def test_cycles_are_one_shortest_interval_apart_however_many_batches_join():
    book = StatusBook()
    workspace = FakeWorkspace([batch_json(f"b{i}", T0) for i in range(50)])
    book.track("b0", T0, min_interval=5.0, max_interval=600.0)
    assert book.next_cycle_at() == T0 + 5.0
    run(book, workspace, T0 + 5.0)
    for i in range(1, 50):  # joining one after another, 0.1 s apart
        book.track(f"b{i}", T0 + 5.0 + i * 0.1, min_interval=5.0, max_interval=600.0)
    assert book.next_cycle_at() == pytest.approx(T0 + 10.0)


def test_an_old_batch_is_looked_at_less_often_than_a_young_one():
    book = StatusBook()
    book.track("old", T0, min_interval=5.0, max_interval=600.0, created_hint=T0 - 3600)
    run(book, FakeWorkspace([batch_json("old", T0 - 3600)]), T0 + 5)
    assert book.next_cycle_at() == pytest.approx(T0 + 5 + 324.45, abs=1)  # 9% of the batch's age


def test_a_404_right_after_creation_is_waited_through_then_becomes_permanent():
    book = StatusBook(not_found_grace_seconds=60)
    book.track("new", T0, min_interval=5.0, max_interval=600.0, created_hint=T0)
    run(book, FakeWorkspace([]), T0 + 5)
    entry = book.tracked["new"]
    assert entry.error is None and entry.not_found_since == T0 + 5
    assert book.pending_not_found(["new"]) == ["new"]
    run(book, FakeWorkspace([]), T0 + 59)
    assert entry.error is None
    run(book, FakeWorkspace([]), T0 + 61)
    assert "was not found (404) for more than 60s" in entry.error
    assert not book.has_unfinished()


def test_a_404_of_an_unknown_batch_counts_from_when_tracking_began():
    book = StatusBook(not_found_grace_seconds=0)
    book.track("typo", T0, min_interval=5.0, max_interval=600.0)
    run(book, FakeWorkspace([]), T0 + 5)
    assert "typo was not found (404)" in book.tracked["typo"].error


def test_transient_failures_back_off_and_honour_retry_after():
    book = StatusBook()
    book.track("b", T0, min_interval=5.0, max_interval=600.0)
    cycle = book.begin_cycle(T0 + 5)
    calls = cycle_calls(book, cycle, T0 + 5)
    assert isinstance(next(calls), ListPage)
    with pytest.raises(StopIteration):
        calls.send(Refused("transient", "HTTP 429 RateLimitError", retry_after=42))
    book.end_cycle(cycle, T0 + 5)
    assert book.next_cycle_at() == pytest.approx(T0 + 47)


def test_a_rejected_key_ends_every_wait():
    book = StatusBook()
    track_all(book, ["a", "b"], T0)
    cycle = book.begin_cycle(T0 + 5)
    calls = cycle_calls(book, cycle, T0 + 5)
    next(calls)
    with pytest.raises(StopIteration):
        calls.send(Refused("rejected_key", "The API key was rejected (401)"))
    assert {entry.error for entry in book.tracked.values()} == {"The API key was rejected (401)"}


def test_when_list_is_not_served_it_retrieves_instead():
    workspace = FakeWorkspace([batch_json("a", T0), batch_json("b", T0)])
    book = StatusBook()
    track_all(book, ["a", "b"], T0)
    cycle = book.begin_cycle(T0 + 5)
    calls = cycle_calls(book, cycle, T0 + 5)
    next(calls)
    retrieve = calls.send(Refused("unserved", "HTTP 400 BadRequestError"))
    assert isinstance(retrieve, Retrieve) and sorted(retrieve.batch_ids) == ["a", "b"]
    with pytest.raises(StopIteration):
        calls.send(workspace.answer(retrieve))
    assert all(entry.snapshot for entry in book.tracked.values())


def test_waiters_share_entries_and_the_last_one_out_forgets_the_batch():
    book = StatusBook()
    book.track("a", T0, min_interval=5.0, max_interval=600.0)
    book.track("a", T0, min_interval=1.0, max_interval=60.0)
    assert (book.tracked["a"].min_interval, book.tracked["a"].watchers) == (1.0, 2)
    book.untrack("a")
    assert "a" in book.tracked
    book.untrack("a")
    assert "a" not in book.tracked and book.next_cycle_at() is None


def test_changes_are_reported_once():
    book = StatusBook()
    track_all(book, ["a"], T0)
    run(book, FakeWorkspace([batch_json("a", T0)]), T0 + 5)
    assert book.take_changed() == {"a"}
    run(book, FakeWorkspace([batch_json("a", T0)]), T0 + 10)
    assert book.take_changed() == set()
    run(book, FakeWorkspace([batch_json("a", T0, status="ended")]), T0 + 15)
    assert book.take_changed() == {"a"}
    assert not book.has_unfinished()


def test_batches_known_to_be_further_down_are_paged_to_past_the_usual_bound():
    # 1,000 tracked batches sit behind 4,000 newer ones (other jobs, or waiters still registering):
    # their creation times are known (the operator passes them), so the cycle pages down to them
    # instead of retrieving twenty and leaving the rest for later cycles.
    newer = [batch_json(f"new{i}", T0 + 2000 + i) for i in range(4000)]
    ours = [f"b{i:04d}" for i in range(1000)]
    workspace = FakeWorkspace([*newer, *(batch_json(bid, T0 + i) for i, bid in enumerate(ours))])
    book = StatusBook()
    for i, bid in enumerate(ours):
        book.track(bid, T0 + 6000, min_interval=5.0, max_interval=600.0, created_hint=T0 + i)
    run(book, workspace, T0 + 6010)
    assert (workspace.pages, workspace.retrieves) == (5, 0)


def test_without_creation_times_the_usual_bound_holds_and_the_rest_is_retrieved():
    newer = [batch_json(f"new{i}", T0 + 2000 + i) for i in range(4000)]
    ours = [f"b{i:04d}" for i in range(1000)]
    workspace = FakeWorkspace([*newer, *(batch_json(bid, T0 + i) for i, bid in enumerate(ours))])
    book = StatusBook()
    track_all(book, ours, T0 + 6000)
    run(book, workspace, T0 + 6010)
    assert workspace.pages == 3 and workspace.retrieves == 20  # bounded: unknown batches may be anywhere
