"""The emulator's state: every batch and counter behind one lock, and the operations behind the API's routes.

HTTP handlers and the test thread both use it; :mod:`.app` only reads requests and writes answers.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from ..faults import FaultInjector, FaultRule
from ..limits import Refusal, RollingWindow, is_propagating, queue_refusal
from ..responder.hashing import BASE62, request_digest, stable_id
from ..responder.message import generate_message
from ..responder.params import deep_params_error, shallow_params_error
from ..responder.prompt import PromptCache, input_token_count
from .config import EmulatorConfig, as_config
from .lifecycle import Batch, advance, batch_json, request_counts
from .models import request_model_error
from .results import result_chunks
from .validation import parse_limit, validate_create
from .wire import ApiError, base62, invalid, iso, not_found

__all__ = ["CREATE_ROUTE", "EmulatorState"]

CREATE_ROUTE = "POST /v1/messages/batches"


class EmulatorState:
    """All emulator state behind one lock (HTTP handlers and the test thread both use it)."""

    def __init__(self, config: EmulatorConfig | Mapping[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.config = as_config(config)
        self._last_stamp = 0
        self._reset_state()

    # ---- lifecycle / admin ------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.batches: dict[str, Batch] = {}
        self._order: list[str] = []
        self.calls: Counter[str] = Counter()
        self.rate_limited = 0
        self.queue_refused = 0
        self._window = RollingWindow()
        self._seen: Counter[str] = Counter()
        self.cache = PromptCache()
        self.injector = FaultInjector(list(self.config.faults), self.config.seed)
        self._faults_before = 0
        self.clock_offset = 0.0

    def now(self) -> float:
        """Wall clock plus the admin ``advance`` offset."""
        return time.time() + self.clock_offset

    def configure(self, partial: Mapping[str, Any]) -> EmulatorConfig:
        """Apply a partial config; fault budgets and the RNG restart when faults or seed change."""
        with self.lock:
            self.config = self.config.merged(partial)
            if "faults" in partial or "seed" in partial:
                self._faults_before += self.injector.injected
                self.injector = FaultInjector(list(self.config.faults), self.config.seed)
            return self.config

    def reset(self, config: bool | EmulatorConfig | Mapping[str, Any] = False) -> None:
        """Drop batches and counters; also restore the default config if ``config`` is truthy."""
        with self.lock:
            if config is True:
                self.config = EmulatorConfig()
            elif config:
                self.config = as_config(config)
            self._reset_state()

    def advance(self, seconds: float) -> float:
        """Move the emulator's clock forward (expiry/archival tests without waiting)."""
        with self.lock:
            self.clock_offset += float(seconds)
            return self.clock_offset

    @property
    def faults_injected(self) -> int:
        return self._faults_before + self.injector.injected

    def snapshot(self) -> dict[str, Any]:
        """The admin ``/_emulator/state`` document."""
        with self.lock:
            now = self.now()
            batches = [self._batch_summary(advance(b, now, self.cache)) for b in self.batches.values()]
            return {
                "create_calls": self.calls[CREATE_ROUTE],
                "messages_calls": self.calls["POST /v1/messages"],
                "faults_injected": self.faults_injected,
                "batch_count": len(batches),
                "calls": dict(self.calls),
                "rate_limited": self.rate_limited,
                "queue_refused": self.queue_refused,
                "prompt_cache": self.cache.stats(),
                "batches": batches,
                "now": iso(now),
                "config": self.config.model_dump(mode="json"),
            }

    @staticmethod
    def _batch_summary(b: Batch) -> dict[str, Any]:
        return {
            "id": b.id,
            "request_count": len(b.custom_ids),
            "processing_status": b.status,
            "created_at": iso(b.created),
            "ended_at": iso(b.ended),
            "cancel_initiated_at": iso(b.cancel_initiated),
            "request_counts": request_counts(b),
            "custom_ids_sample": b.custom_ids[:5],
        }

    # ---- per-call hooks ---------------------------------------------------------------------

    def admit(self, route: str, headers: Mapping[str, str], *, batch_endpoint: bool) -> float | None:
        """Let a call in, as the API's front door does: auth first, then the rolling rate limit.

        A call refused for the rate limit counts only in ``rate_limited``: it is not in ``calls`` (so
        a refused create is no create) and takes no slot. Returns the stamp of the slot the call
        took in the window (None if it took none), which a create refused for a full queue gives back.
        """
        with self.lock:
            try:
                self._check_auth(headers)
            except ApiError:
                self.calls[route] += 1
                raise
            limit = self.config.rate_limit_rpm
            stamp = None
            if batch_endpoint and limit is not None:
                stamp = self.now()
                refusal = self._window.admit(stamp, limit, self.config.rate_limit_window_seconds)
                if refusal is not None:
                    self.rate_limited += 1
                    raise _rate_limit_error(refusal)
            self.calls[route] += 1
            return stamp

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        """``x-api-key`` or ``Authorization: Bearer``; any key unless the config pins one."""
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise ApiError(
                401,
                "authentication_error",
                "Missing API key: send it in the x-api-key header or as Authorization: Bearer <key>",
            )
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(401, "authentication_error", "invalid x-api-key")

    def pick_fault(self, method: str, path: str, query: str = "", *, streams_rows: bool) -> FaultRule | None:
        with self.lock:
            return self.injector.pick(method, path, query, streams_rows=streams_rows)

    # ---- batches ------------------------------------------------------------------------------

    def _new_batch_id(self) -> str:
        """Time-ordered ids (``msgbatch_01`` + 10 chars of µs stamp + 12 random), so lists sort."""
        stamp = max(self._last_stamp + 1, time.time_ns() // 1000)
        self._last_stamp = stamp
        return "msgbatch_01" + base62(stamp, 10) + "".join(random.choices(BASE62, k=12))

    def create_batch(
        self, payload: Any, base_url: str, admitted: float | None = None, betas: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Validate like the real create call, check the processing queue, store the batch (``in_progress``).

        :param admitted: the rate-limit slot :meth:`admit` gave the call; a create refused for a full
            queue gives it back and leaves ``calls``, as a refused call counts for nothing.
        :param betas: the call's ``anthropic-beta`` values, which apply to every request of the batch.
        """
        with self.lock:
            config = self.config
            requests = validate_create(payload, config.max_requests_per_batch)
            if config.max_queued_requests is not None:
                self._check_queue(len(requests), config.max_queued_requests, admitted)
            custom_ids = [r["custom_id"] for r in requests]
            occurrences = []
            for cid in custom_ids:
                occurrences.append(self._seen[cid])
                self._seen[cid] += 1
            batch = Batch(
                id=self._new_batch_id(),
                created=self.now(),
                config=config,
                custom_ids=custom_ids,
                params=[r["params"] for r in requests],
                occurrences=occurrences,
                betas=betas,
            )
            self.batches[batch.id] = batch
            self._order.append(batch.id)
            return batch_json(batch, base_url)

    def _check_queue(self, adding: int, cap: int, admitted: float | None) -> None:
        now = self.now()
        processing = [
            (batch.end_time(), len(batch.custom_ids))
            for batch in self.batches.values()
            if batch.ended is None and advance(batch, now, self.cache).ended is None
        ]
        refusal = queue_refusal(adding, processing, cap, now)
        if refusal is None:
            return
        self.queue_refused += 1
        self.calls[CREATE_ROUTE] -= 1
        if admitted is not None:
            self._window.release(admitted)
        raise _rate_limit_error(refusal)

    def _get(self, batch_id: str, *, propagated: bool = False) -> Batch:
        """The batch, advanced to now. ``propagated``: also 404 while it is too new to be seen (#1432)."""
        batch = self.batches.get(batch_id)
        now = self.now()
        if batch is None or (propagated and is_propagating(batch.created, batch.config.propagation_delay_seconds, now)):
            raise not_found(batch_id)
        return advance(batch, now, self.cache)

    def retrieve_batch(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self.lock:
            return batch_json(self._get(batch_id, propagated=True), base_url, self.now())

    def list_batches(self, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
        """Newest first, cursor pagination compatible with the SDK's ``SyncPage``/``AsyncPage``."""
        limit = parse_limit(query.get("limit"))
        after_id, before_id = query.get("after_id"), query.get("before_id")
        if after_id and before_id:
            raise invalid("after_id and before_id cannot both be set")
        with self.lock:
            ids, has_more = _page(self._order, limit, after_id, before_id)
            now = self.now()
            data = [batch_json(advance(self.batches[i], now, self.cache), base_url, now) for i in ids]
        return {
            "data": data,
            "has_more": has_more,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }

    def cancel_batch(self, batch_id: str, base_url: str) -> dict[str, Any]:
        """``in_progress`` -> ``canceling``; canceling/ended batches come back unchanged."""
        with self.lock:
            batch = self._get(batch_id)
            if batch.status == "in_progress":
                batch.cancel_initiated = self.now()
                advance(batch, batch.cancel_initiated, self.cache)
            return batch_json(batch, base_url, self.now())

    def delete_batch(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self._get(batch_id)
            if batch.status != "ended":
                raise invalid(
                    f"Message Batch {batch_id} is still {batch.status}: it can only be deleted once "
                    "processing has ended. Cancel it first, then delete it once it has ended."
                )
            del self.batches[batch_id]
            self._order.remove(batch_id)
            return {"id": batch_id, "type": "message_batch_deleted"}

    def open_results(self, batch_id: str) -> Batch:
        """The ended, non-archived batch whose results may be streamed (else the API's error)."""
        with self.lock:
            now = self.now()
            batch = self._get(batch_id, propagated=True)
            if batch.ended is None:
                raise invalid(
                    f"Message Batch {batch_id} has not finished processing (processing_status: "
                    f"{batch.status}); results are available once it has ended."
                )
            if now >= batch.archives:
                raise ApiError(
                    404,
                    "not_found_error",
                    f"The results of Message Batch {batch_id} are no longer available: it was "
                    f"archived at {iso(batch.archives)} (results are kept 29 days after creation).",
                )
            return batch

    def result_chunks(self, batch: Batch, cut_after_rows: int | None = None) -> Iterator[bytes]:
        """The results JSONL in ~64 KB chunks (:func:`.results.result_chunks`), cut after ``cut_after_rows``."""
        return result_chunks(batch, self.lock, cut_after_rows)

    # ---- Messages API -------------------------------------------------------------------------

    def create_message(self, payload: Any) -> dict[str, Any]:
        """The synchronous Messages API: all validation is immediate (400; 404 for a model it does not serve)."""
        problem = shallow_params_error(payload) or deep_params_error(payload)
        if problem is not None:
            raise invalid(problem)
        refused = request_model_error(payload, self.config.extra_models)
        if refused is not None:
            raise refused
        with self.lock:
            cache = self.cache.account(payload, now=self.now(), time_scale=self.config.time_scale)
        digest = request_digest(payload)
        message_id = stable_id("msg_", digest)
        return generate_message(payload, message_id=message_id, service_tier="standard", cache=cache, digest=digest)

    def count_tokens(self, payload: Any) -> dict[str, Any]:
        """``/v1/messages/count_tokens``: the same estimate the usage numbers use."""
        probe = {**payload, "max_tokens": 1} if isinstance(payload, dict) else payload
        problem = shallow_params_error(probe)
        if problem is not None:
            raise invalid(problem)
        refused = request_model_error(probe, self.config.extra_models)
        if refused is not None:
            raise refused
        return {"input_tokens": input_token_count(payload)}


def _rate_limit_error(refusal: Refusal) -> ApiError:
    return ApiError(429, "rate_limit_error", refusal.message, refusal.headers())


def _page(order: list[str], limit: int, after_id: str | None, before_id: str | None) -> tuple[list[str], bool]:
    """Ids of one page, newest first. ``order`` is oldest-first and ids sort by creation time.

    ``after_id`` pages towards older batches, ``before_id`` towards newer ones (the page nearest
    the cursor); ``has_more`` refers to the requested direction, as the API documents.
    """
    if before_id:
        start = bisect.bisect_right(order, before_id)
        chunk = order[start : start + limit]
        return list(reversed(chunk)), start + limit < len(order)
    end = bisect.bisect_left(order, after_id) if after_id else len(order)
    begin = max(0, end - limit)
    return list(reversed(order[begin:end])), begin > 0
