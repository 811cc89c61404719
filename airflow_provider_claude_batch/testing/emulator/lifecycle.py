"""One stored batch and its lifecycle: status derived from timestamps, outcomes fixed once it ends.

A batch is advanced lazily whenever it is read (:func:`advance`), from timestamps alone, so
thousands of in-flight batches cost no background work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..faults import SUCCEEDED, OutcomeDecision, cache_found, completion_fraction, decide_outcome
from ..responder.params import deep_params_error
from ..responder.prompt import NO_CACHE, CacheUsage, PromptCache
from .config import EmulatorConfig
from .models import request_model_error
from .wire import iso

__all__ = ["Batch", "advance", "batch_json", "request_counts"]

_STATUS_KINDS = ("succeeded", "errored", "canceled", "expired")


@dataclass(eq=False)
class Batch:
    """One stored batch. Status is derived from timestamps; outcomes are fixed once it ends."""

    id: str
    created: float
    config: EmulatorConfig
    custom_ids: list[str]
    params: list[dict[str, Any]]
    occurrences: list[int]
    betas: tuple[str, ...] = ()  # the create call's anthropic-beta values: they apply to every request
    cancel_initiated: float | None = None
    ended: float | None = None
    outcomes: list[tuple[OutcomeDecision, CacheUsage]] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    # The results file once rendered in full: an ended batch's results never change, and the API
    # serves a stored file, so later downloads replay it instead of re-rendering every line.
    rendered: list[bytes] | None = None

    @property
    def expires(self) -> float:
        return self.created + self.config.expiry_delta

    @property
    def archives(self) -> float:
        return self.created + self.config.archive_delta

    def end_time(self) -> float:
        """When processing ends: natural end, cancel completion, or expiry (whichever first)."""
        if self.cancel_initiated is not None:
            return min(self.cancel_initiated + self.config.cancel_seconds, self.expires)
        return min(self.created + self.config.processing_seconds, self.expires)

    @property
    def status(self) -> str:
        if self.ended is not None:
            return "ended"
        return "canceling" if self.cancel_initiated is not None else "in_progress"


def advance(batch: Batch, now: float, cache: PromptCache) -> Batch:
    """Bring a batch up to ``now``: end it (fixing every request's outcome) when due."""
    if batch.ended is None and now >= batch.end_time():
        _finalize(batch, batch.end_time(), cache)
    return batch


def _finalize(batch: Batch, end: float, cache: PromptCache) -> None:
    """Decide each request: completed before the cutoff -> its outcome; else canceled/expired."""
    canceled = batch.cancel_initiated is not None
    cutoff = batch.cancel_initiated if canceled else batch.expires
    assert cutoff is not None
    leftover = OutcomeDecision("canceled" if canceled else "expired")
    processing = batch.config.processing_seconds
    all_done = batch.created + processing <= cutoff
    outcomes: list[tuple[OutcomeDecision, CacheUsage]] = []
    for i, cid in enumerate(batch.custom_ids):
        if not all_done and batch.created + processing * completion_fraction(cid) > cutoff:
            outcomes.append((leftover, NO_CACHE))
        else:
            outcomes.append(_process(cid, batch.occurrences[i], batch.params[i], batch, cache, end))
    batch.outcomes = outcomes
    batch.counts = dict(Counter(decision.kind for decision, _ in outcomes))
    batch.ended = end


def _process(
    custom_id: str, occurrence: int, params: dict[str, Any], batch: Batch, cache: PromptCache, end: float
) -> tuple[OutcomeDecision, CacheUsage]:
    """Outcome of one request the 'model' got to: invalid params, a model it cannot serve, configured rules, success."""
    config = batch.config
    problem = deep_params_error(params)
    if problem is not None:
        return OutcomeDecision("errored", "invalid_request_error", problem), NO_CACHE
    refused = request_model_error(params, config.extra_models, batch.betas)
    if refused is not None:
        return OutcomeDecision("errored", refused.kind, refused.message), NO_CACHE
    decision = SUCCEEDED
    if config.outcomes or config.error_rate or config.expire_rate:
        decision = decide_outcome(
            custom_id,
            occurrence,
            list(config.outcomes),
            error_rate=config.error_rate,
            expire_rate=config.expire_rate,
            seed=config.seed,
        )
    if decision.kind != "succeeded":
        return decision, NO_CACHE
    found = cache_found(custom_id, occurrence, config.cache_hit_rate, config.seed)
    return decision, cache.account(params, now=end, time_scale=config.time_scale, found=found)


def request_counts(batch: Batch) -> dict[str, int]:
    """``request_counts``: everything ``processing`` until the batch ends (as the API does)."""
    if batch.ended is None:
        return {"processing": len(batch.custom_ids), **dict.fromkeys(_STATUS_KINDS, 0)}
    return {"processing": 0, **{k: batch.counts.get(k, 0) for k in _STATUS_KINDS}}


def batch_json(batch: Batch, base_url: str, now: float | None = None) -> dict[str, Any]:
    """The ``MessageBatch`` object; ``results_url`` points back at this emulator once ended."""
    ended = batch.ended is not None
    archived = ended and now is not None and now >= batch.archives
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status,
        "request_counts": request_counts(batch),
        "ended_at": iso(batch.ended),
        "created_at": iso(batch.created),
        "expires_at": iso(batch.expires),
        "archived_at": iso(batch.archives) if archived else None,
        "cancel_initiated_at": iso(batch.cancel_initiated),
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }
