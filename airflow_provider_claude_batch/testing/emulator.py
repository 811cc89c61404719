"""A local emulator of the Anthropic Message Batches and Messages APIs.

The unmodified ``anthropic`` SDK (sync and async) talks to it over real HTTP, so tests, the
benchmarks, the demo and users' own DAGs exercise the genuine client code paths: auth headers,
retries on 429/5xx with ``retry-after``, auto-pagination, absolute ``results_url`` following and
JSONL streaming. It deliberately imports nothing from Airflow so that it starts fast and can run
anywhere (``claude-batch emulator``, :class:`EmulatorServer`, or the pytest plugin).

State is advanced lazily whenever a batch is read, from timestamps alone, so thousands of
in-flight batches cost no background work.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import random
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .faults import (
    SUCCEEDED,
    FaultInjector,
    FaultRule,
    OutcomeDecision,
    OutcomeRule,
    completion_fraction,
    decide_outcome,
)
from .responder import (
    BASE62,
    NO_CACHE,
    CacheUsage,
    PromptCache,
    deep_params_error,
    generate_message,
    input_token_count,
    message_stream_events,
    shallow_params_error,
    stable_id,
)

__all__ = [
    "EmulatorClient",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "build_app",
    "load_config",
    "run_emulator",
]

DAY = 86_400.0
ARCHIVE_DAYS = 29
RESULT_CHUNK_BYTES = 64 * 1024
ENV_PREFIX = "CLAUDE_EMULATOR_"
_CUSTOM_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CUT_LOG_MESSAGE = "ASGI callable returned without completing response."
_STATUS_KINDS = ("succeeded", "errored", "canceled", "expired")
_MODELS = (
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ("claude-opus-4-8", "Claude Opus 4.8"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)


# ============================================================================================
# configuration


class EmulatorConfig(BaseModel):
    """Every knob of the emulator. Immutable: updates build a new validated instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    processing_seconds: float = Field(2.0, ge=0, description="Real seconds from create to end.")
    cancel_seconds: float = Field(0.5, ge=0, description="Real seconds a cancel stays 'canceling'.")
    time_scale: float = Field(1.0, gt=0, description="Divides the 24 h expiry and 29 d archive windows.")
    api_key: str | None = Field(None, description="If set, the only accepted key; else any key.")
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1)
    max_messages_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_requests_per_batch: int = Field(100_000, ge=1)
    outcomes: tuple[OutcomeRule, ...] = ()
    faults: tuple[FaultRule, ...] = ()
    error_rate: float = Field(0.0, ge=0, le=1)
    expire_rate: float = Field(0.0, ge=0, le=1)
    seed: int | None = None
    expires_after_seconds: float | None = Field(None, gt=0, description="Override of 86400/time_scale.")
    archive_after_seconds: float | None = Field(None, gt=0, description="Override of 29 d/time_scale.")

    @property
    def expiry_delta(self) -> float:
        """Seconds from creation to the 24-hour expiry, after time scaling."""
        return self.expires_after_seconds or DAY / self.time_scale

    @property
    def archive_delta(self) -> float:
        """Seconds from creation until results are archived (29 days, scaled)."""
        return self.archive_after_seconds or ARCHIVE_DAYS * DAY / self.time_scale

    def merged(self, partial: Mapping[str, Any]) -> EmulatorConfig:
        """A new config with ``partial`` applied on top (validated as a whole)."""
        return EmulatorConfig.model_validate({**self.model_dump(), **dict(partial)})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> EmulatorConfig:
        """Load a JSON config file (same keys as the model)."""
        return cls.model_validate(json.loads(Path(path).read_text()))

    @classmethod
    def env_overrides(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Scalar settings from ``CLAUDE_EMULATOR_<FIELD>`` variables (e.g. ``..._PROCESSING_SECONDS``)."""
        environ = os.environ if environ is None else environ
        scalars = {"outcomes", "faults"}
        found: dict[str, Any] = {}
        for name in cls.model_fields:
            value = environ.get(ENV_PREFIX + name.upper())
            if name not in scalars and value not in (None, ""):
                found[name] = value
        return found

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorConfig:
        """Defaults overridden by ``CLAUDE_EMULATOR_*`` variables."""
        return cls.model_validate(cls.env_overrides(environ))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> EmulatorConfig:
    """Defaults < JSON file (``path`` or ``CLAUDE_EMULATOR_CONFIG``) < env variables < ``overrides``.

    ``overrides`` whose value is None are ignored, so CLI flags left unset do not clobber.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    base = EmulatorConfig.from_file(path) if path else EmulatorConfig()
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return base.merged({**EmulatorConfig.env_overrides(environ), **explicit})


# ============================================================================================
# errors and small helpers


class ApiError(Exception):
    """An error answered with the API's envelope and status."""

    def __init__(self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = dict(headers or {})


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, "not_found_error", f"message_batch {batch_id!r} not found")


def iso(ts: float | None) -> str | None:
    """RFC 3339 with microseconds and ``Z``, like the API's timestamps."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _base62(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, r = divmod(n, 62)
        chars.append(BASE62[r])
    return "".join(reversed(chars))


def random_id(prefix: str, length: int = 24) -> str:
    """``prefix`` + base62 characters, like ``req_...`` and ``msg_...`` ids."""
    return prefix + "".join(random.choices(BASE62, k=length))


def error_envelope(kind: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The API's error body; the type sits at ``error.type``."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


# ============================================================================================
# batch state


@dataclass(eq=False)
class _Batch:
    """One stored batch. Status is derived from timestamps; outcomes are fixed once it ends."""

    id: str
    created: float
    config: EmulatorConfig
    custom_ids: list[str]
    params: list[dict[str, Any]]
    occurrences: list[int]
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


class EmulatorState:
    """All emulator state behind one lock (HTTP handlers and the test thread both use it)."""

    def __init__(self, config: EmulatorConfig | Mapping[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.config = _as_config(config)
        self._last_stamp = 0
        self._reset_state()

    # ---- lifecycle / admin ------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.batches: dict[str, _Batch] = {}
        self._order: list[str] = []
        self.calls: Counter[str] = Counter()
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
                self.config = _as_config(config)
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
            batches = [self._batch_summary(self._advance(b, now)) for b in self.batches.values()]
            return {
                "create_calls": self.calls["POST /v1/messages/batches"],
                "messages_calls": self.calls["POST /v1/messages"],
                "faults_injected": self.faults_injected,
                "batch_count": len(batches),
                "calls": dict(self.calls),
                "batches": batches,
                "now": iso(now),
                "config": self.config.model_dump(mode="json"),
            }

    @staticmethod
    def _batch_summary(b: _Batch) -> dict[str, Any]:
        return {
            "id": b.id,
            "request_count": len(b.custom_ids),
            "processing_status": b.status,
            "created_at": iso(b.created),
            "ended_at": iso(b.ended),
            "cancel_initiated_at": iso(b.cancel_initiated),
            "request_counts": _counts(b),
            "custom_ids_sample": b.custom_ids[:5],
        }

    # ---- per-call hooks ---------------------------------------------------------------------

    def count_call(self, key: str) -> None:
        with self.lock:
            self.calls[key] += 1

    def check_auth(self, headers: Mapping[str, str]) -> None:
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

    def pick_fault(self, method: str, path: str, *, streams_rows: bool) -> FaultRule | None:
        with self.lock:
            return self.injector.pick(method, path, streams_rows=streams_rows)

    # ---- batches ------------------------------------------------------------------------------

    def _new_batch_id(self) -> str:
        """Time-ordered ids (``msgbatch_01`` + 10 chars of µs stamp + 12 random), so lists sort."""
        stamp = max(self._last_stamp + 1, time.time_ns() // 1000)
        self._last_stamp = stamp
        return "msgbatch_01" + _base62(stamp, 10) + "".join(random.choices(BASE62, k=12))

    def create_batch(self, payload: Any, base_url: str) -> dict[str, Any]:
        """Validate like the real create call, store the batch, return it (``in_progress``)."""
        with self.lock:
            config = self.config
            requests = _validate_create(payload, config.max_requests_per_batch)
            custom_ids = [r["custom_id"] for r in requests]
            occurrences = []
            for cid in custom_ids:
                occurrences.append(self._seen[cid])
                self._seen[cid] += 1
            batch = _Batch(
                id=self._new_batch_id(),
                created=self.now(),
                config=config,
                custom_ids=custom_ids,
                params=[r["params"] for r in requests],
                occurrences=occurrences,
            )
            self.batches[batch.id] = batch
            self._order.append(batch.id)
            return _batch_json(batch, base_url)

    def _get(self, batch_id: str) -> _Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _not_found(batch_id)
        return self._advance(batch, self.now())

    def retrieve_batch(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self.lock:
            return _batch_json(self._get(batch_id), base_url, self.now())

    def list_batches(self, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
        """Newest first, cursor pagination compatible with the SDK's ``SyncPage``/``AsyncPage``."""
        limit = _parse_limit(query.get("limit"))
        after_id, before_id = query.get("after_id"), query.get("before_id")
        if after_id and before_id:
            raise _invalid("after_id and before_id cannot both be set")
        with self.lock:
            ids, has_more = _page(self._order, limit, after_id, before_id)
            now = self.now()
            data = [_batch_json(self._advance(self.batches[i], now), base_url, now) for i in ids]
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
                self._advance(batch, batch.cancel_initiated)
            return _batch_json(batch, base_url, self.now())

    def delete_batch(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch = self._get(batch_id)
            if batch.status != "ended":
                raise _invalid(
                    f"Message Batch {batch_id} is still {batch.status}: it can only be deleted once "
                    "processing has ended. Cancel it first, then delete it once it has ended."
                )
            del self.batches[batch_id]
            self._order.remove(batch_id)
            return {"id": batch_id, "type": "message_batch_deleted"}

    def open_results(self, batch_id: str) -> _Batch:
        """The ended, non-archived batch whose results may be streamed (else the API's error)."""
        with self.lock:
            now = self.now()
            batch = self._get(batch_id)
            if batch.ended is None:
                raise _invalid(
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

    def result_chunks(self, batch: _Batch, cut_after_rows: int | None = None) -> Iterator[bytes]:
        """JSONL in ~64 KB chunks, rendered lazily; stops after ``cut_after_rows`` rows if given.

        A download that runs to the end keeps the rendered chunks, and later full downloads replay
        them: rendering ran at ~100,000 lines/s, slower than the clients the benchmarks measure.
        """
        if cut_after_rows is None and batch.rendered is not None:
            yield from batch.rendered
            return
        if cut_after_rows is None:
            rendered: list[bytes] = []
            for chunk in self._render_chunks(batch, None):
                rendered.append(chunk)
                yield chunk
            batch.rendered = rendered
            return
        yield from self._render_chunks(batch, cut_after_rows)

    def _render_chunks(self, batch: _Batch, cut_after_rows: int | None) -> Iterator[bytes]:
        total = len(batch.custom_ids)
        stop = total if cut_after_rows is None else min(total, cut_after_rows)
        index = 0
        while index < stop:
            lines: list[bytes] = []
            size = 0
            with self.lock:
                while index < stop and size < RESULT_CHUNK_BYTES:
                    line = _render_line(batch, index)
                    lines.append(line)
                    size += len(line)
                    index += 1
            yield b"".join(lines)

    def _advance(self, batch: _Batch, now: float) -> _Batch:
        """Bring a batch up to ``now``: end it (fixing every request's outcome) when due."""
        if batch.ended is None and now >= batch.end_time():
            self._finalize(batch, batch.end_time())
        return batch

    def _finalize(self, batch: _Batch, end: float) -> None:
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
                outcomes.append(self._process(cid, batch.occurrences[i], batch.params[i], batch.config))
        batch.outcomes = outcomes
        batch.counts = dict(Counter(decision.kind for decision, _ in outcomes))
        batch.ended = end

    def _process(
        self, custom_id: str, occurrence: int, params: dict[str, Any], config: EmulatorConfig
    ) -> tuple[OutcomeDecision, CacheUsage]:
        """Outcome of one request the 'model' got to: invalid params, configured rules, success."""
        problem = deep_params_error(params)
        if problem is not None:
            return OutcomeDecision("errored", "invalid_request_error", problem), NO_CACHE
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
        return decision, self.cache.account(params)

    # ---- Messages API -------------------------------------------------------------------------

    def create_message(self, payload: Any) -> dict[str, Any]:
        """The synchronous Messages API: all validation is immediate (400)."""
        problem = shallow_params_error(payload) or deep_params_error(payload)
        if problem is not None:
            raise _invalid(problem)
        with self.lock:
            cache = self.cache.account(payload)
        return generate_message(payload, message_id=random_id("msg_"), service_tier="standard", cache=cache)

    @staticmethod
    def count_tokens(payload: Any) -> dict[str, Any]:
        """``/v1/messages/count_tokens``: the same estimate the usage numbers use."""
        probe = {**payload, "max_tokens": 1} if isinstance(payload, dict) else payload
        problem = shallow_params_error(probe)
        if problem is not None:
            raise _invalid(problem)
        return {"input_tokens": input_token_count(payload)}


def _as_config(config: EmulatorConfig | Mapping[str, Any] | None) -> EmulatorConfig:
    if config is None:
        return EmulatorConfig()
    if isinstance(config, EmulatorConfig):
        return config
    return EmulatorConfig.model_validate(dict(config))


def _counts(batch: _Batch) -> dict[str, int]:
    """``request_counts``: everything ``processing`` until the batch ends (as the API does)."""
    if batch.ended is None:
        return {"processing": len(batch.custom_ids), **dict.fromkeys(_STATUS_KINDS, 0)}
    return {"processing": 0, **{k: batch.counts.get(k, 0) for k in _STATUS_KINDS}}


def _batch_json(batch: _Batch, base_url: str, now: float | None = None) -> dict[str, Any]:
    """The ``MessageBatch`` object; ``results_url`` points back at this emulator once ended."""
    ended = batch.ended is not None
    archived = ended and now is not None and now >= batch.archives
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status,
        "request_counts": _counts(batch),
        "ended_at": iso(batch.ended),
        "created_at": iso(batch.created),
        "expires_at": iso(batch.expires),
        "archived_at": iso(batch.archives) if archived else None,
        "cancel_initiated_at": iso(batch.cancel_initiated),
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def _render_line(batch: _Batch, index: int) -> bytes:
    """One JSONL result line in the API's shape (``errored`` carries the full error envelope)."""
    assert batch.outcomes is not None
    decision, cache = batch.outcomes[index]
    custom_id = batch.custom_ids[index]
    result: dict[str, Any]
    if decision.kind == "succeeded":
        message = generate_message(
            batch.params[index],
            message_id=stable_id("msg_", batch.id, custom_id),
            service_tier="batch",
            cache=cache,
            invalid_output=decision.invalid_output,
        )
        result = {"type": "succeeded", "message": message}
    elif decision.kind == "errored":
        request_id = stable_id("req_", batch.id, custom_id)
        envelope = error_envelope(decision.error_type or "api_error", decision.message or "", request_id)
        result = {"type": "errored", "error": envelope}
    else:
        result = {"type": decision.kind}
    return _LINE_ENCODER.encode({"custom_id": custom_id, "result": result}).encode() + b"\n"


def _validate_create(payload: Any, max_requests: int) -> list[dict[str, Any]]:
    """Create-time (schema) validation with the API's ``requests.<i>.<field>: ...`` messages."""
    if not isinstance(payload, dict):
        raise _invalid("Input should be a valid dictionary")
    if "requests" not in payload:
        raise _invalid("requests: Field required")
    requests = payload["requests"]
    if not isinstance(requests, list):
        raise _invalid("requests: Input should be a valid list")
    if not requests:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise _invalid(f"requests: List should have at most {max_requests} items after validation, not {len(requests)}")
    seen: set[str] = set()
    for i, request in enumerate(requests):
        problem = _request_error(i, request, seen)
        if problem is not None:
            raise _invalid(problem)
    return requests


def _request_error(index: int, request: Any, seen: set[str]) -> str | None:
    """The first schema problem of ``requests[index]`` (custom_id rules, then shallow params)."""
    where = f"requests.{index}"
    if not isinstance(request, dict):
        return f"{where}: Input should be a valid dictionary"
    if "custom_id" not in request:
        return f"{where}.custom_id: Field required"
    custom_id = request["custom_id"]
    if not isinstance(custom_id, str):
        return f"{where}.custom_id: Input should be a valid string"
    if not custom_id:
        return f"{where}.custom_id: String should have at least 1 character"
    if len(custom_id) > 64:
        return f"{where}.custom_id: String should have at most 64 characters"
    if not _CUSTOM_ID_RE.fullmatch(custom_id):
        return f"{where}.custom_id: String should match pattern '{_CUSTOM_ID_PATTERN}'"
    if custom_id in seen:
        return f"{where}.custom_id: Duplicate custom_id {custom_id!r}: custom_id must be unique within a batch"
    seen.add(custom_id)
    if "params" not in request:
        return f"{where}.params: Field required"
    return shallow_params_error(request["params"], f"{where}.params.", batch=True)


def _parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise _invalid("limit: Input should be a valid integer") from None
    if limit < 1:
        raise _invalid("limit: Input should be greater than or equal to 1")
    if limit > 1000:
        raise _invalid("limit: Input should be less than or equal to 1000")
    return limit


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


# ============================================================================================
# HTTP layer


class RequestIdMiddleware:
    """Gives every request a ``req_...`` id and every response the ``request-id`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = random_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class RowStreamResponse(Response):
    """Chunked JSONL body that can be cut mid-stream to simulate a dropped connection.

    Returning without the final empty chunk makes uvicorn close the socket, so the client sees
    an incomplete chunked transfer, exactly like a connection lost mid-download.
    """

    def __init__(self, chunks: Iterator[bytes], *, cut: bool = False) -> None:
        super().__init__(media_type="application/binary")
        self._chunks = chunks
        self._cut = cut

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in self._chunks:
                if gone.is_set():
                    return  # the client hung up: stop rendering rows nobody will read
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0)  # yield: lets other requests and disconnect detection run
            if self._cut:
                await asyncio.sleep(0.01)  # let the rows reach the socket before it is closed
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (uvicorn otherwise drops our sends silently)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


class _DropCutNoise(logging.Filter):
    """Hide uvicorn's error line for the connections we cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_LOG_MESSAGE


def _base_url(request: Request) -> str:
    """The emulator's own base URL as the client reached it (for absolute ``results_url``)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _error_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id")
    body = error_envelope(error.kind, error.message, request_id)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes with 413 after draining the rest."""
    request.state.body_read = True
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        too_large = too_large or size > limit
        if not too_large:
            parts.append(chunk)
    if too_large:
        raise ApiError(413, "request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit}).")
    return b"".join(parts)


async def _read_json(request: Request, limit: int) -> Any:
    body = await _read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"Request body is not valid JSON: {exc}") from None


async def _drain(request: Request) -> None:
    """Consume an unread body so the connection stays usable after an early error answer."""
    if getattr(request.state, "body_read", False):
        return
    request.state.body_read = True
    async for _ in request.stream():
        pass


Handler = Callable[[Request, "FaultRule | None"], Awaitable[Response]]


def _api_route(state: EmulatorState, method: str, template: str, handler: Handler, *, rows: bool = False) -> Route:
    """Wrap an API handler with call counting, auth and fault injection (in that order)."""
    key = f"{method} {template}"

    async def endpoint(request: Request) -> Response:
        state.count_call(key)
        try:
            state.check_auth(request.headers)
            fault = state.pick_fault(method, request.url.path, streams_rows=rows)
            if fault is not None and fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            immediate = fault is not None and not fault.store and fault.cut_after_rows is None
            if immediate:
                raise _fault_error(fault)
            response = await handler(request, fault)
            if fault is not None and fault.store and fault.cut_after_rows is None:
                raise _fault_error(fault)  # the work is done, but the answer is "lost"
            return response
        except ApiError as error:
            await _drain(request)
            return _error_response(request, error)

    return Route(template, endpoint, methods=[method])


def _fault_error(fault: FaultRule | None) -> ApiError:
    assert fault is not None
    status, kind, message = fault.error_body()
    return ApiError(status, kind, message, fault.headers())


def _api_routes(state: EmulatorState) -> list[Route]:
    """The ``/v1`` routes of the Message Batches and Messages APIs."""

    async def create(request: Request, fault: FaultRule | None) -> Response:
        payload = await _read_json(request, state.config.max_body_bytes)
        return JSONResponse(state.create_batch(payload, _base_url(request)))

    async def list_(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.list_batches(request.query_params, _base_url(request)))

    async def retrieve(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.retrieve_batch(request.path_params["message_batch_id"], _base_url(request)))

    async def cancel(request: Request, fault: FaultRule | None) -> Response:
        await _drain(request)
        return JSONResponse(state.cancel_batch(request.path_params["message_batch_id"], _base_url(request)))

    async def delete(request: Request, fault: FaultRule | None) -> Response:
        return JSONResponse(state.delete_batch(request.path_params["message_batch_id"]))

    async def results(request: Request, fault: FaultRule | None) -> Response:
        batch = state.open_results(request.path_params["message_batch_id"])
        cut = fault.cut_after_rows if fault is not None else None
        return RowStreamResponse(state.result_chunks(batch, cut), cut=cut is not None)

    async def messages(request: Request, fault: FaultRule | None) -> Response:
        payload = await _read_json(request, state.config.max_messages_body_bytes)
        message = state.create_message(payload)
        if isinstance(payload, dict) and payload.get("stream") is True:
            return StreamingResponse(_sse(message), media_type="text/event-stream; charset=utf-8")
        return JSONResponse(message)

    async def count_tokens(request: Request, fault: FaultRule | None) -> Response:
        payload = await _read_json(request, state.config.max_messages_body_bytes)
        return JSONResponse(state.count_tokens(payload))

    async def models(request: Request, fault: FaultRule | None) -> Response:
        data = [_model_json(model_id, name) for model_id, name in _MODELS]
        return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def model(request: Request, fault: FaultRule | None) -> Response:
        model_id = request.path_params["model_id"]
        name = dict(_MODELS).get(model_id)
        if name is None:
            raise ApiError(404, "not_found_error", f"model: {model_id}")
        return JSONResponse(_model_json(model_id, name))

    table: list[tuple[str, str, Handler, bool]] = [
        ("POST", "/v1/messages/batches", create, False),
        ("GET", "/v1/messages/batches", list_, False),
        ("GET", "/v1/messages/batches/{message_batch_id}", retrieve, False),
        ("POST", "/v1/messages/batches/{message_batch_id}/cancel", cancel, False),
        ("DELETE", "/v1/messages/batches/{message_batch_id}", delete, False),
        ("GET", "/v1/messages/batches/{message_batch_id}/results", results, True),
        ("POST", "/v1/messages", messages, False),
        ("POST", "/v1/messages/count_tokens", count_tokens, False),
        ("GET", "/v1/models", models, False),
        ("GET", "/v1/models/{model_id}", model, False),
    ]
    return [_api_route(state, method, path, handler, rows=rows) for method, path, handler, rows in table]


def _model_json(model_id: str, name: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": "2025-01-01T00:00:00Z",
        "lifecycle": "active",
    }


async def _sse(message: dict[str, Any]) -> AsyncIterator[bytes]:
    """Server-sent events for a streamed Messages API reply."""
    for event, data in message_stream_events(message):
        yield f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _admin_routes(state: EmulatorState) -> list[Route]:
    """``/_emulator/*``: unauthenticated control plane for tests and demos."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "batch_count": len(state.batches)})

    async def get_state(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def get_config(request: Request) -> Response:
        return JSONResponse(state.config.model_dump(mode="json"))

    async def set_config(request: Request) -> Response:
        partial = await _read_json(request, 16 * 1024 * 1024)
        if not isinstance(partial, dict):
            raise _invalid("config update must be a JSON object")
        try:
            config = state.configure(partial)
        except ValidationError as exc:
            raise _invalid(f"invalid emulator config: {exc}") from None
        return JSONResponse(config.model_dump(mode="json"))

    async def reset(request: Request) -> Response:
        body = await _read_json(request, 1024 * 1024)
        state.reset(config=bool(isinstance(body, dict) and body.get("config")))
        return JSONResponse({"status": "reset", "config": state.config.model_dump(mode="json")})

    async def advance(request: Request) -> Response:
        body = await _read_json(request, 1024 * 1024)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise _invalid("seconds: Input should be a valid number")
        return JSONResponse({"clock_offset": state.advance(seconds), "now": iso(state.now())})

    def admin(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return _error_response(request, error)

        return endpoint

    return [
        Route("/_emulator/health", admin(health), methods=["GET"]),
        Route("/_emulator/state", admin(get_state), methods=["GET"]),
        Route("/_emulator/config", admin(get_config), methods=["GET"]),
        Route("/_emulator/config", admin(set_config), methods=["POST"]),
        Route("/_emulator/reset", admin(reset), methods=["POST"]),
        Route("/_emulator/advance", admin(advance), methods=["POST"]),
    ]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods still answer with the API's error envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = {404: "not_found_error", 405: "invalid_request_error"}.get(status, "api_error")
    message = "Not found" if status == 404 else (getattr(exc, "detail", None) or "error")
    return _error_response(request, ApiError(status, kind, str(message)))


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error_response(request, ApiError(500, "api_error", f"Internal server error: {exc!r}"))


def build_app(state: EmulatorState | None = None) -> Starlette:
    """The emulator's ASGI application (serve it with any ASGI server)."""
    state = state or EmulatorState()
    logging.getLogger("uvicorn.error").addFilter(_DropCutNoise())
    app = Starlette(
        routes=[*_api_routes(state), *_admin_routes(state)],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: _http_exception, Exception: _server_error},
    )
    app.state.emulator = state
    return app


# ============================================================================================
# runners


def _bind(host: str, port: int) -> socket.socket:
    """Bind (and so reserve) the port up front, so ``port=0`` yields a known free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto is TCP, and without it every response pays ~40 ms of Nagle/delayed-ACK latency.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn_config(app: ASGIApp, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http="h11",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=2,
    )


class EmulatorServer:
    """The emulator on a background thread: ``with EmulatorServer() as emu: ... emu.url``."""

    def __init__(
        self,
        config: EmulatorConfig | Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.emulator_state = EmulatorState(config)
        self.app = build_app(self.emulator_state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL to give the SDK, e.g. ``http://127.0.0.1:41234``."""
        return _url(self.host, self.port)

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator_state.config

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Bind, start uvicorn on a daemon thread and wait until it accepts connections."""
        if self._thread is not None:
            return self
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, quiet=True))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"claude-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator failed to start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Shut uvicorn down and join its thread (idempotent)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def configure(self, **partial: Any) -> EmulatorConfig:
        """Partially update the config (same as ``POST /_emulator/config``)."""
        return self.emulator_state.configure(partial)

    def reset(self, config: bool | EmulatorConfig | Mapping[str, Any] = False) -> None:
        """Drop batches and counters; ``config=True`` restores defaults, a config replaces it."""
        self.emulator_state.reset(config)

    def state(self) -> dict[str, Any]:
        """Same document as ``GET /_emulator/state``."""
        return self.emulator_state.snapshot()

    def advance(self, seconds: float) -> float:
        """Move the emulator clock forward by ``seconds``."""
        return self.emulator_state.advance(seconds)


def run_emulator(
    config: EmulatorConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (exits cleanly on both)."""
    state = EmulatorState(config)
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    server = uvicorn.Server(_uvicorn_config(build_app(state), quiet=False))
    # uvicorn re-raises the signal it caught after a graceful shutdown; make that a no-op.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready(url)
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


class EmulatorClient:
    """Control an emulator running elsewhere (another process) over its admin endpoints."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/health")

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/state")

    def configure(self, **partial: Any) -> dict[str, Any]:
        return self._call("POST", "/_emulator/config", partial)

    def reset(self, config: bool = False) -> dict[str, Any]:
        return self._call("POST", "/_emulator/reset", {"config": config})

    def advance(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/_emulator/advance", {"seconds": seconds})

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Poll ``/_emulator/health`` until it answers (for freshly spawned processes)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
